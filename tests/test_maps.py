"""Tests of globeflow.maps: projection, density grids, the static PNG and the HTML page."""

from __future__ import annotations

import io
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from globeflow import maps
from globeflow.maps import LogDensityGrid, equal_earth, equal_earth_inverse, kde_grid, render_html, render_png
from globeflow.sphere import EARTH_RADIUS_KM

LIMA, PARIS = (-12.05, -77.04), (48.86, 2.35)


def vmf_grid(mu_deg, sigma_km: float, resolution_deg: float = 1.0) -> LogDensityGrid:
    """The exact vMF log-density (nats/sr) on a global grid, κ = (R/σ)²."""
    kappa = (EARTH_RADIUS_KM / sigma_km) ** 2
    n = int(180 / resolution_deg)
    lat = -90 + resolution_deg * (np.arange(n) + 0.5)
    lon = -180 + resolution_deg * (np.arange(2 * n) + 0.5)
    glat, glon = np.radians(np.meshgrid(lat, lon, indexing="ij"))
    m_lat, m_lon = np.radians(mu_deg)
    cos = np.sin(glat) * np.sin(m_lat) + np.cos(glat) * np.cos(m_lat) * np.cos(glon - m_lon)
    log_c = math.log(kappa / (2 * math.pi * -math.expm1(-2 * kappa)))
    return LogDensityGrid.from_array(log_c + kappa * (cos - 1))


def test_equal_earth_round_trip_and_equal_area():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-89.9, 89.9, 500), rng.uniform(-179.9, 179.9, 500)
    back_lat, back_lon, inside = equal_earth_inverse(*equal_earth(lat, lon))
    assert inside.all()
    np.testing.assert_allclose(back_lat, lat, atol=1e-8)
    np.testing.assert_allclose(back_lon, lon, atol=1e-8)
    # equal area: projected area of a small cell / its area on the sphere is the same everywhere
    d = 1e-4
    ratios = []
    for la in (0.0, 30.0, 60.0, 80.0):
        x0, y0 = equal_earth(la, 10.0)
        dx_dlon = equal_earth(la, 10.0 + d)[0] - x0
        dy_dlat = equal_earth(la + d, 10.0)[1] - y0  # y does not depend on lon: |J| = dx/dλ · dy/dφ
        ratios.append(abs(dx_dlon * dy_dlat) / (math.cos(math.radians(la)) * math.radians(d) ** 2))
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-3)
    assert ratios[0] == pytest.approx(1.0, rel=1e-3)  # unit sphere: area preserved exactly
    assert not equal_earth_inverse(np.array([maps.X_MAX]), np.array([maps.Y_MAX * 0.9]))[2][0]


def test_grid_probabilities_and_hpd_thresholds():
    grid = vmf_grid(LIMA, 500.0)
    assert grid.cell_probabilities().sum() == pytest.approx(1.0, abs=2e-3)
    for mass in (0.5, 0.9):
        inside = grid.values >= grid.hpd_threshold(mass)
        assert grid.cell_probabilities()[inside].sum() == pytest.approx(mass, abs=0.02)
    # bilinear lookup wraps in longitude and matches cell centres
    assert grid.sample_at(np.array([0.5]), np.array([-179.5]))[0] == pytest.approx(grid.values[90, 0])
    assert np.isfinite(grid.sample_at(np.array([0.0]), np.array([180.0]))).all()
    with pytest.raises(ValueError, match="shape"):
        LogDensityGrid.from_array(np.zeros((10, 10)))


def test_kde_grid_is_normalised_and_peaks_at_the_samples():
    rng = np.random.default_rng(1)
    samples = np.column_stack([rng.normal(PARIS[0], 2, 400), rng.normal(PARIS[1], 3, 400)])
    grid = kde_grid(samples, resolution_deg=2.0)
    assert grid.cell_probabilities().sum() == pytest.approx(1.0, abs=0.01)
    i, j = np.unravel_index(np.argmax(grid.values), grid.values.shape)
    assert abs(grid.lat_deg[i] - PARIS[0]) < 4 and abs(grid.lon_deg[j] - PARIS[1]) < 4


def _near(img: np.ndarray, frame, latlon, colour, radius: int, tol: int = 12) -> int:
    """Number of pixels within ``radius`` px of ``latlon`` whose colour is within ``tol`` of ``colour``."""
    cx, cy = (int(round(float(v))) for v in frame.to_px(*latlon))
    patch = img[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1, :3].astype(int)
    return int((np.abs(patch - np.array(colour)).max(axis=-1) <= tol).sum())


def test_png_shows_land_density_guess_and_truth(tmp_path):
    grid = vmf_grid(LIMA, 600.0)
    samples = np.array([[-10.0, -75.0], [-14.0, -70.0], [-5.0, -80.0]])
    out = tmp_path / "map.png"
    data = render_png(grid, samples, best_guess=PARIS, truth=(40.0, -100.0), title="Lima test", out_path=out)
    assert out.read_bytes() == data
    img = Image.open(io.BytesIO(data))
    img.verify()
    img = np.asarray(Image.open(out).convert("RGB"))
    frame = maps.image_frame(1200, "Lima test")
    assert img.shape == (frame.top + frame.height + 40, 1200 + 24, 3)
    assert _near(img, frame, (15.0, 19.0), maps.LAND, 10, tol=6) > 200  # Chad: land, no density
    assert _near(img, frame, (0.0, -140.0), maps.OCEAN, 10, tol=6) > 200  # Pacific: ocean
    # density near Lima: strong reds from the ramp (not land, not ocean)
    cx, cy = (int(round(float(v))) for v in frame.to_px(-12.0, -72.0))
    patch = img[cy - 4 : cy + 5, cx - 4 : cx + 5].astype(int)
    assert ((patch[..., 0] - patch[..., 2]) > 80).mean() > 0.5
    assert _near(img, frame, PARIS, maps.BEST_GUESS, 8) > 20
    assert _near(img, frame, (40.0, -100.0), maps.TRUTH, 8) > 20
    assert _near(img, frame, (-40.0, 100.0), maps.BEST_GUESS, 8, tol=40) == 0  # nothing marked elsewhere


def test_png_without_density_uses_a_kde_of_the_samples():
    rng = np.random.default_rng(2)
    samples = np.column_stack([rng.normal(-25, 3, 300), rng.normal(134, 4, 300)])  # Australia
    img = np.asarray(maps.render_image(None, samples, best_guess=(-25.0, 134.0), width=800).convert("RGB"))
    frame = maps.image_frame(800)
    cx, cy = (int(round(float(v))) for v in frame.to_px(-20.0, 134.0))
    patch = img[cy - 3 : cy + 4, cx - 3 : cx + 4].astype(int)
    reddish = (patch[..., 0] - patch[..., 2]) > 60
    dots = np.abs(patch - np.array(maps.SAMPLE)).max(-1) < 90
    assert (reddish | dots).mean() > 0.6


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[dict] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append(dict(attrs))


def test_html_is_self_contained_and_complete(tmp_path):
    from globeflow.prediction import Mode

    modes = [Mode(-12.0, -77.0, 0.6, 320.0, "PE"), Mode(48.8, 2.3, 0.3, 150.0, "FR")]
    doc = render_html(vmf_grid(LIMA, 600.0), np.array([[-12.0, -77.0]]), best_guess=(-12.0, -77.0),
                      truth=(-13.0, -76.0), modes=modes, title="<Lima & co>", out_path=tmp_path / "m.html")
    assert (tmp_path / "m.html").read_text(encoding="utf-8") == doc
    assert "http://" not in doc and "https://" not in doc
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", doc)  # only inline data
    parser = _Collector()
    parser.feed(doc)
    assert {"svg", "script", "image", "path"} <= set(parser.tags)
    tips = [a["data-tip"] for a in parser.attrs if "data-tip" in a]
    assert len(tips) == 4 and any("mass 60.0 %" in t and "PE" in t for t in tips)
    assert "&lt;Lima &amp; co&gt;" in doc and "<Lima & co>" not in doc
    image = next(a for t, a in zip(parser.tags, parser.attrs) if t == "image")
    assert image["href"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("argv, message", [
    (["map", "x.jpg"], "--out"),
    (["map", "x.jpg", "--out", "m.png", "--truth", "north"], "--truth must be LAT,LON"),
    (["map", "x.jpg", "--out", "m.png", "--truth", "95,0"], "out of range"),
    (["map", "x.jpg", "--out", "m.png", "--grid-resolution", "7"], "--grid-resolution"),
    (["map", "--out", "m.png"], "exactly one of PHOTO or --text"),
])
def test_map_command_usage_errors(argv, message, capsys):
    from globeflow.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


SHARED = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared"
PHOTO_DIR = SHARED / "data" / "im2gps3k" / "images"


@pytest.mark.slow  # 81 s measured while the 2 cores were shared by other jobs (load ~11)
@pytest.mark.skipif(not PHOTO_DIR.is_dir(), reason=f"real photos not found at {PHOTO_DIR}")
def test_map_command_draws_a_real_photo_with_the_model_density(tmp_path, capsys):
    from globeflow.cli import main

    photo = sorted(PHOTO_DIR.iterdir())[3]
    png, page = tmp_path / "map.png", tmp_path / "map.html"
    argv = ["map", str(photo), "--out", str(png), "--html", str(page), "--truth", "40.7,-74.0",
            "--num-samples", "200", "--seed", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "best guess" in out and "error" in out and str(png) in out
    img = Image.open(png)
    img.verify()
    img = np.asarray(Image.open(png).convert("RGB"))
    frame = maps.image_frame(1200, "title")
    assert _near(img, frame, (40.7, -74.0), maps.TRUTH, 8) > 20
    assert ((img[..., 0].astype(int) - img[..., 2]) > 70).mean() > 0.01  # the density layer
    doc = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in doc and "https://" not in doc
    assert main(["map", str(tmp_path / "missing.jpg"), "--out", str(png)]) == 1
    assert "cannot use" in capsys.readouterr().err
