"""Offline world maps of a predicted distribution: a static PNG and a self-contained HTML page.

Projection: Equal Earth (Šavrič, Patterson & Jenny 2018), an equal-area
pseudocylindrical projection, so equal map areas hold equal probability for a
uniform density and the eye reads mass correctly; implemented here in numpy
(and in the page's JavaScript for the pointer read-out). Land: Natural Earth
1:110m country polygons (public domain) committed in
``globeflow/assets/naturalearth``. Rendering uses Pillow only (a core
dependency): nothing is downloaded, no tile server, no CDN.

Layers, bottom to top: ocean, land and borders, the density (colour ∝ log
density inside its 99 % highest-density region, with the 50 % and 90 %
highest-density contours), samples, modes (numbered rings), best guess (blue
diamond) and truth (green disc) when known.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import map_coordinates

from globeflow.sphere import EARTH_RADIUS_KM

# Equal Earth polynomial coefficients and extent (unit sphere)
_A1, _A2, _A3, _A4 = 1.340264, -0.081106, 0.000893, 0.003796
_M = math.sqrt(3.0) / 2.0
X_MAX = math.pi / (_M * _A1)  # ≈ 2.7066, at lon ±180°, lat 0
Y_MAX = (math.pi / 3) * (_A1 + _A2 * (math.pi / 3) ** 2 + (math.pi / 3) ** 6 * (_A3 + _A4 * (math.pi / 3) ** 2))

OCEAN = (214, 230, 242)
LAND = (236, 231, 216)
BORDER = (176, 166, 146)
OUTLINE = (120, 140, 160)
SAMPLE = (45, 45, 110)
BEST_GUESS = (0, 90, 255)
TRUTH = (0, 165, 70)
MODE = (20, 20, 20)
CONTOUR_50 = (110, 0, 40)
CONTOUR_90 = (225, 80, 40)
# YlOrRd-like ramp for the density, low → high
_RAMP = np.array([(255, 240, 170), (254, 190, 90), (250, 120, 50), (215, 40, 35), (140, 0, 40)], dtype=np.float64)


# ---------------------------------------------------------------- projection
def equal_earth(lat_deg: np.ndarray, lon_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Degrees → Equal Earth (x, y) on the unit sphere; x ∈ [−X_MAX, X_MAX], y ∈ [−Y_MAX, Y_MAX]."""
    lam = np.radians(np.asarray(lon_deg, dtype=np.float64))
    theta = np.arcsin(_M * np.sin(np.radians(np.asarray(lat_deg, dtype=np.float64))))
    t2 = theta**2
    t6 = t2**3
    x = lam * np.cos(theta) / (_M * (_A1 + 3 * _A2 * t2 + t6 * (7 * _A3 + 9 * _A4 * t2)))
    y = theta * (_A1 + _A2 * t2 + t6 * (_A3 + _A4 * t2))
    return x, y


def equal_earth_inverse(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal Earth (x, y) → (lat, lon) degrees and a mask of points inside the map outline."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    yc = np.clip(y, -Y_MAX, Y_MAX)
    theta = yc / _A1
    for _ in range(12):  # Newton on y(θ)
        t2 = theta**2
        t6 = t2**3
        f = theta * (_A1 + _A2 * t2 + t6 * (_A3 + _A4 * t2)) - yc
        theta = theta - f / (_A1 + 3 * _A2 * t2 + t6 * (7 * _A3 + 9 * _A4 * t2))
    t2 = theta**2
    t6 = t2**3
    lam = _M * x * (_A1 + 3 * _A2 * t2 + t6 * (7 * _A3 + 9 * _A4 * t2)) / np.cos(theta)
    lat = np.degrees(np.arcsin(np.clip(np.sin(theta) / _M, -1, 1)))
    inside = (np.abs(lam) <= math.pi) & (np.abs(y) <= Y_MAX)
    return lat, np.degrees(lam), inside


@dataclass(frozen=True)
class Frame:
    """Pixel placement of the map: ``width`` × ``height`` px, origin at (left, top)."""

    width: int
    left: int = 0
    top: int = 0

    @property
    def height(self) -> int:
        return int(round(self.width * Y_MAX / X_MAX))

    @property
    def scale(self) -> float:  # pixels per projected unit
        return self.width / (2 * X_MAX)

    def to_px(self, lat_deg, lon_deg) -> tuple[np.ndarray, np.ndarray]:
        """Degrees → pixel (column, row) floats."""
        x, y = equal_earth(lat_deg, lon_deg)
        return self.left + (x + X_MAX) * self.scale, self.top + (Y_MAX - y) * self.scale


# ---------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class LogDensityGrid:
    """A log-density on a global lat/lon grid: ``values`` (H, W) nats per steradian at cell centres.

    ``lat_deg`` (H,) ascending from the south, ``lon_deg`` (W,) ascending from
    −180 (the convention of ``Geolocator.log_prob_grid``), equally spaced.
    """

    values: np.ndarray
    lat_deg: np.ndarray
    lon_deg: np.ndarray

    @classmethod
    def from_array(cls, values: np.ndarray) -> LogDensityGrid:
        """(180/res, 360/res) array with rows south → north and columns from −180° → grid."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 2 * v.shape[0]:
            raise ValueError(f"log-density grid must have shape (180/res, 360/res); got {v.shape}")
        res = 180.0 / v.shape[0]
        return cls(v, -90 + res * (np.arange(v.shape[0]) + 0.5), -180 + res * (np.arange(v.shape[1]) + 0.5))

    @property
    def resolution_deg(self) -> float:
        return float(180.0 / len(self.lat_deg))

    def cell_probabilities(self) -> np.ndarray:
        """(H, W) probability of each cell, density × cell area (sums to ≈ 1 for a normalised density)."""
        half = math.radians(self.resolution_deg) / 2
        lat = np.radians(self.lat_deg)
        area = math.radians(self.resolution_deg) * (np.sin(lat + half) - np.sin(lat - half))
        return np.exp(self.values) * area[:, None]

    def hpd_threshold(self, mass: float) -> float:
        """Log-density τ such that cells with values ≥ τ hold ``mass`` of the grid's probability."""
        p = self.cell_probabilities().ravel()
        order = np.argsort(-self.values.ravel(), kind="stable")
        cum = np.cumsum(p[order]) / p.sum()
        return float(self.values.ravel()[order[min(np.searchsorted(cum, mass), len(cum) - 1)]])

    def sample_at(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """Bilinear interpolation at degree coordinates (longitudes wrap around)."""
        res = self.resolution_deg
        padded = np.concatenate([self.values[:, -1:], self.values, self.values[:, :1]], axis=1)
        rows = (np.asarray(lat_deg) - self.lat_deg[0]) / res
        cols = (np.mod(np.asarray(lon_deg) + 180.0, 360.0) - 180.0 - self.lon_deg[0]) / res + 1
        return map_coordinates(padded, [rows.ravel(), cols.ravel()], order=1, mode="nearest").reshape(rows.shape)


def kde_grid(samples_deg: np.ndarray, *, bandwidth_km: float | None = None,
             resolution_deg: float = 1.0) -> LogDensityGrid:
    """A vMF kernel density estimate of (K, 2) degree samples on a global grid (nats per steradian).

    ``bandwidth_km`` defaults to the median distance from a sample to its 10th
    nearest neighbour (at least 50 km): narrow for tight clouds, broad for
    diffuse ones.
    """
    x = _xyz(np.asarray(samples_deg, dtype=np.float64).reshape(-1, 2))
    if len(x) == 0:
        raise ValueError("kde_grid: no samples")
    if bandwidth_km is None:
        q = x[:: max(1, len(x) // 500)]
        ang = np.sort(np.arccos(np.clip(q @ x.T, -1, 1)), axis=1)
        bandwidth_km = max(50.0, float(np.median(ang[:, min(10, len(x) - 1)])) * EARTH_RADIUS_KM)
    kappa = (EARTH_RADIUS_KM / bandwidth_km) ** 2
    log_c = math.log(kappa / (2 * math.pi)) - math.log(-math.expm1(-2 * kappa))
    n_lat = int(round(180 / resolution_deg))
    lat = -90 + resolution_deg * (np.arange(n_lat) + 0.5)
    lon = -180 + resolution_deg * (np.arange(2 * n_lat) + 0.5)
    glat, glon = np.meshgrid(lat, lon, indexing="ij")
    cells = _xyz(np.stack([glat.ravel(), glon.ravel()], -1)).astype(np.float32)
    xt = x.T.astype(np.float32)
    out = np.empty(len(cells))
    for s in range(0, len(cells), 8192):  # float32: log-density error ≲ κ·1e-7, far below what a map shows
        e = np.float32(kappa) * (cells[s : s + 8192] @ xt - np.float32(1.0))
        m = e.max(axis=1, keepdims=True)
        out[s : s + 8192] = (m[:, 0] + np.log(np.exp(e - m).mean(axis=1)))
    return LogDensityGrid((out + log_c).reshape(glat.shape), lat, lon)


def _xyz(latlon_deg: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(latlon_deg[:, 0]), np.radians(latlon_deg[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)


@lru_cache(maxsize=1)
def land_rings() -> tuple[np.ndarray, ...]:
    """Natural Earth 1:110m polygon rings as (N, 2) arrays of (lon, lat) degrees."""
    src = resources.files("globeflow") / "assets" / "naturalearth" / "ne_110m_countries.geojson"
    data = json.loads(src.read_text(encoding="utf-8"))
    rings = []
    for feature in data["features"]:
        for polygon in feature["geometry"]["coordinates"]:
            rings.extend(np.asarray(ring, dtype=np.float64) for ring in polygon)
    return tuple(rings)


# ---------------------------------------------------------------- raster layers
@lru_cache(maxsize=4)
def _pixel_latlon(width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lat/lon (degrees) of every pixel centre of a ``width``-px map, and the inside-map mask."""
    frame = Frame(width)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(frame.height) + 0.5)
    return equal_earth_inverse(cols / frame.scale - X_MAX, Y_MAX - rows / frame.scale)


def density_layer(density: LogDensityGrid, width: int) -> Image.Image:
    """RGBA image (``width`` px wide) of the density in its 99 % HPD region with 50/90 % contours."""
    lat, lon, inside = _pixel_latlon(width)
    v = density.sample_at(lat, lon)
    lo, hi = density.hpd_threshold(0.99), float(density.values.max())
    t = np.clip((v - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    pos = t * (len(_RAMP) - 1)
    i = np.minimum(pos.astype(int), len(_RAMP) - 2)
    rgb = _RAMP[i] + (pos - i)[..., None] * (_RAMP[i + 1] - _RAMP[i])
    shown = inside & (v >= lo)
    alpha = np.where(shown, 45 + 185 * t, 0)  # faint where unlikely: land stays readable
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    for mass, colour, thick in ((0.9, CONTOUR_90, 1), (0.5, CONTOUR_50, 2)):
        region = inside & (v >= density.hpd_threshold(mass))
        interior = region.copy()
        for d in range(1, thick + 1):
            for axis in (0, 1):
                interior &= np.roll(region, d, axis) & np.roll(region, -d, axis)
        rgba[region & ~interior] = (*colour, 255)
    return Image.fromarray(rgba.astype(np.uint8), "RGBA")


def _base_map(width: int, ss: int = 2) -> Image.Image:
    """Ocean, land and borders at ``width`` px, drawn at ``ss``× and downsampled (anti-aliasing)."""
    frame = Frame(width * ss)
    img = Image.new("RGB", (frame.width, frame.height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    lat = np.linspace(-90, 90, 181)
    left = frame.to_px(lat, np.full_like(lat, -180.0))
    right = frame.to_px(lat[::-1], np.full_like(lat, 180.0))
    outline = list(zip(np.r_[left[0], right[0]], np.r_[left[1], right[1]]))
    draw.polygon(outline, fill=OCEAN)
    for ring in land_rings():
        px, py = frame.to_px(ring[:, 1], ring[:, 0])
        draw.polygon(list(zip(px, py)), fill=LAND, outline=BORDER, width=ss)
    draw.line(outline + outline[:1], fill=OUTLINE, width=ss)
    return img.resize((width, Frame(width).height), Image.LANCZOS)


@lru_cache(maxsize=2)
def _base_map_cached(width: int) -> Image.Image:
    return _base_map(width)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _diamond(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill) -> None:
    pts = [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]
    draw.polygon(pts, fill=(255, 255, 255))
    inner = [(x, y - r + 2), (x + r - 2, y), (x, y + r - 2), (x - r + 2, y)]
    draw.polygon(inner, fill=fill)


def image_frame(width: int = 1200, title: str = "") -> Frame:
    """Where :func:`render_image` places the map inside its canvas (for locating pixels)."""
    return Frame(width, 12, 40 if title else 12)


def render_image(density: LogDensityGrid | None, samples_deg: np.ndarray | None, *,
                 best_guess: tuple[float, float] | None, truth: tuple[float, float] | None = None,
                 modes: Sequence | None = None, title: str = "", width: int = 1200,
                 max_samples: int = 2000) -> Image.Image:
    """The full static map as a PIL RGB image (see :func:`render_png`)."""
    frame = image_frame(width, title)
    pad, head, foot = frame.left, frame.top, 40
    canvas = Image.new("RGB", (width + 2 * pad, head + frame.height + foot), (255, 255, 255))
    canvas.paste(_base_map_cached(width), (pad, head))
    samples = None if samples_deg is None else np.asarray(samples_deg, dtype=np.float64).reshape(-1, 2)
    if density is None and samples is not None and len(samples):
        density = kde_grid(samples)
    if density is not None:
        layer = density_layer(density, width)
        canvas.paste(layer, (pad, head), layer)
    draw = ImageDraw.Draw(canvas, "RGBA")
    if samples is not None and len(samples):
        step = max(1, len(samples) // max_samples)
        sx, sy = frame.to_px(samples[::step, 0], samples[::step, 1])
        for x, y in zip(sx, sy):
            draw.ellipse((x - 1.6, y - 1.6, x + 1.6, y + 1.6), fill=(*SAMPLE, 150))
    font = _font(14)
    for k, mode in enumerate(modes or [], start=1):
        x, y = (float(v) for v in frame.to_px(mode.lat, mode.lon))
        draw.ellipse((x - 7, y - 7, x + 7, y + 7), outline=MODE, width=2)
        draw.text((x + 8, y - 18), str(k), fill=MODE, font=font, stroke_width=2, stroke_fill=(255, 255, 255))
    if best_guess is not None:  # under the truth: where they meet, the diamond's corners show around it
        x, y = (float(v) for v in frame.to_px(*best_guess))
        _diamond(draw, x, y, 10, BEST_GUESS)
    if truth is not None:
        x, y = (float(v) for v in frame.to_px(*truth))
        draw.ellipse((x - 8, y - 8, x + 8, y + 8), fill=(255, 255, 255))
        draw.ellipse((x - 6, y - 6, x + 6, y + 6), fill=TRUTH)
    if title:
        draw.text((pad, 10), title, fill=(20, 20, 20), font=_font(20))
    _legend(draw, pad, head + frame.height + 10, density is not None, truth is not None, bool(modes))
    return canvas


def _legend(draw: ImageDraw.ImageDraw, x: int, y: int, density: bool, truth: bool, modes: bool) -> None:
    font = _font(14)
    items = [("diamond", BEST_GUESS, "best guess")]
    if truth:
        items.append(("disc", TRUTH, "truth"))
    if modes:
        items.append(("ring", MODE, "modes (1 = largest)"))
    items.append(("dot", SAMPLE, "samples"))
    if density:
        items += [("line", CONTOUR_50, "50 % region"), ("line", CONTOUR_90, "90 % region"),
                  ("ramp", None, "density (log scale)")]
    for kind, colour, label in items:
        if kind == "diamond":
            _diamond(draw, x + 7, y + 8, 8, colour)
        elif kind == "disc":
            draw.ellipse((x + 1, y + 2, x + 13, y + 14), fill=colour)
        elif kind == "ring":
            draw.ellipse((x + 1, y + 2, x + 13, y + 14), outline=colour, width=2)
        elif kind == "dot":
            draw.ellipse((x + 4, y + 5, x + 10, y + 11), fill=colour)
        elif kind == "line":
            draw.line((x, y + 8, x + 16, y + 8), fill=colour, width=3)
        else:
            for k in range(30):
                c = _RAMP[min(int(k / 30 * len(_RAMP)), len(_RAMP) - 1)]
                draw.line((x + k, y + 2, x + k, y + 14), fill=tuple(int(v) for v in c))
            x += 14
        draw.text((x + 20, y), label, fill=(40, 40, 40), font=font)
        x += 28 + int(draw.textlength(label, font=font))
    draw.text((x + 10, y), "land: Natural Earth", fill=(130, 130, 130), font=font)


def render_png(density: LogDensityGrid | None, samples_deg: np.ndarray | None, *,
               best_guess: tuple[float, float] | None, truth: tuple[float, float] | None = None,
               modes: Sequence | None = None, title: str = "", out_path: str | Path | None = None,
               width: int = 1200) -> bytes:
    """A static Equal Earth PNG of the density (or a KDE of the samples when ``density`` is None).

    ``samples_deg`` (K, 2) degrees; ``best_guess``/``truth`` (lat, lon) degrees;
    ``modes`` objects with ``lat``/``lon`` (e.g. ``Prediction.modes``). Writes
    ``out_path`` when given and returns the PNG bytes.
    """
    img = render_image(density, samples_deg, best_guess=best_guess, truth=truth, modes=modes, title=title,
                       width=width)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    data = buf.getvalue()
    if out_path is not None:
        Path(out_path).write_bytes(data)
    return data


# ---------------------------------------------------------------- interactive HTML
@lru_cache(maxsize=2)
def _land_path(width: int) -> str:
    """SVG path data of all land rings in the pixel space of a ``width``-px map."""
    frame = Frame(width)
    parts = []
    for ring in land_rings():
        px, py = frame.to_px(ring[:, 1], ring[:, 0])
        parts.append("M" + "L".join(f"{x:.1f} {y:.1f}" for x, y in zip(px, py)) + "Z")
    return "".join(parts)


def _outline_path(width: int) -> str:
    frame = Frame(width)
    lat = np.linspace(-90, 90, 91)
    xs, ys = frame.to_px(np.r_[lat, lat[::-1]], np.r_[np.full(91, -180.0), np.full(91, 180.0)])
    return "M" + "L".join(f"{x:.1f} {y:.1f}" for x, y in zip(xs, ys)) + "Z"


def _fmt_latlon(lat: float, lon: float) -> str:
    return f"{abs(lat):.3f}°{'N' if lat >= 0 else 'S'}, {abs(lon):.3f}°{'E' if lon >= 0 else 'W'}"


def render_html(density: LogDensityGrid | None, samples_deg: np.ndarray | None, *,
                best_guess: tuple[float, float] | None, truth: tuple[float, float] | None = None,
                modes: Sequence | None = None, title: str = "", out_path: str | Path | None = None,
                width: int = 1000, max_samples: int = 1000) -> str:
    """A self-contained interactive HTML map (inline SVG + JS, no network): pan, zoom, tooltips.

    Same arguments as :func:`render_png`. The density is an inline PNG overlay
    in the same projection. Writes ``out_path`` when given; returns the HTML.
    """
    frame = Frame(width)
    samples = None if samples_deg is None else np.asarray(samples_deg, dtype=np.float64).reshape(-1, 2)
    if density is None and samples is not None and len(samples):
        density = kde_grid(samples)
    layers = []
    if density is not None:
        buf = io.BytesIO()
        density_layer(density, width).save(buf, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        layers.append(f'<image href="{uri}" x="0" y="0" width="{width}" height="{frame.height}" '
                      'preserveAspectRatio="none" style="image-rendering:auto"/>')
    if samples is not None and len(samples):
        step = max(1, len(samples) // max_samples)
        sx, sy = frame.to_px(samples[::step, 0], samples[::step, 1])
        dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6"/>' for x, y in zip(sx, sy))
        layers.append(f'<g class="gf-samples" fill="rgb{SAMPLE}" fill-opacity="0.55">{dots}</g>')
    marks = []
    for k, mode in enumerate(modes or [], start=1):
        x, y = frame.to_px(mode.lat, mode.lon)
        tip = (f"Mode {k}: {_fmt_latlon(mode.lat, mode.lon)}<br>mass {100 * mode.mass:.1f} %, "
               f"50 % radius {mode.radius_km:,.0f} km" + (f"<br>country {mode.country}" if getattr(mode, "country", "") else ""))
        marks.append(f'<g class="gf-mark gf-mode" data-x="{x:.1f}" data-y="{y:.1f}" data-tip="{html.escape(tip)}">'
                     f'<circle r="12" fill="none" pointer-events="all"/>'
                     f'<circle r="7" fill="none" stroke="rgb{MODE}" stroke-width="2"/>'
                     f'<text x="9" y="-8" class="gf-label">{k}</text></g>')
    if best_guess is not None:
        x, y = frame.to_px(*best_guess)
        tip = f"Best guess: {_fmt_latlon(*best_guess)}"
        marks.append(f'<g class="gf-mark gf-best" data-x="{x:.1f}" data-y="{y:.1f}" data-tip="{html.escape(tip)}">'
                     f'<path d="M0 -10L10 0L0 10L-10 0Z" fill="white"/><path d="M0 -8L8 0L0 8L-8 0Z" fill="rgb{BEST_GUESS}"/></g>')
    if truth is not None:
        x, y = frame.to_px(*truth)
        tip = f"Truth: {_fmt_latlon(*truth)}"
        marks.append(f'<g class="gf-mark gf-truth" data-x="{x:.1f}" data-y="{y:.1f}" data-tip="{html.escape(tip)}">'
                     f'<circle r="8" fill="white"/><circle r="6" fill="rgb{TRUTH}"/></g>')
    legend = [f'<span><span class="gf-key" style="background:rgb{BEST_GUESS};height:10px;width:10px;'
              f'transform:rotate(45deg)"></span>best guess</span>']
    if truth is not None:
        legend.append(f'<span><span class="gf-key" style="background:rgb{TRUTH};height:10px;width:10px;'
                      f'border-radius:50%"></span>truth</span>')
    if density is not None:
        legend += [f'<span><span class="gf-key" style="background:rgb{c}"></span>{m} % region</span>'
                   for c, m in ((CONTOUR_50, 50), (CONTOUR_90, 90))]
    doc = _HTML_TEMPLATE.format(legend="".join(legend),
        title=html.escape(title or "globeflow map"), width=width, height=frame.height,
        outline=_outline_path(width), land=_land_path(width), layers="".join(layers), marks="".join(marks),
        ocean=f"rgb{OCEAN}", land_fill=f"rgb{LAND}", border=f"rgb{BORDER}", outline_col=f"rgb{OUTLINE}",
        js=_JS.replace("@XMAX@", repr(X_MAX)).replace("@YMAX@", repr(Y_MAX)).replace("@WIDTH@", str(width)),
    )
    if out_path is not None:
        Path(out_path).write_text(doc, encoding="utf-8")
    return doc


_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<!-- Land: Natural Earth 1:110m (public domain). Self-contained: no external resources. -->
<style>
body{{margin:0;font:14px system-ui,sans-serif;background:#fff;color:#222}}
.gf{{position:relative;max-width:{width}px;margin:0 auto;padding:8px}}
.gf h1{{font-size:17px;margin:2px 0 6px}}
.gf svg{{width:100%;height:auto;display:block;cursor:grab;touch-action:none;background:#fff;border:1px solid #ddd;border-radius:4px}}
.gf svg.gf-drag{{cursor:grabbing}}
.gf-label{{font:bold 13px system-ui,sans-serif;paint-order:stroke;stroke:white;stroke-width:3px}}
.gf-mark{{cursor:pointer}}
.gf-tip{{position:absolute;pointer-events:none;background:rgba(20,20,20,.88);color:#fff;padding:5px 8px;border-radius:4px;font-size:13px;display:none;white-space:nowrap;z-index:2}}
.gf-bar{{display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin-top:6px;font-size:13px}}
.gf-bar button{{font:inherit;padding:1px 9px}}
.gf-key{{display:inline-block;width:14px;height:4px;vertical-align:middle;margin-right:4px}}
.gf-coord{{margin-left:auto;color:#555;font-variant-numeric:tabular-nums}}
</style></head><body>
<div class="gf" id="gf">
<h1>{title}</h1>
<svg id="gf-svg" viewBox="0 0 {width} {height}" role="img" aria-label="{title}">
<path d="{outline}" fill="{ocean}"/>
<g id="gf-world"><path d="{land}" fill="{land_fill}" stroke="{border}" stroke-width="0.6" vector-effect="non-scaling-stroke" stroke-linejoin="round"/>
{layers}
<path d="{outline}" fill="none" stroke="{outline_col}" stroke-width="1" vector-effect="non-scaling-stroke"/>
{marks}</g>
</svg>
<div class="gf-tip" id="gf-tip"></div>
<div class="gf-bar">
<button id="gf-in" title="zoom in">+</button><button id="gf-out" title="zoom out">&minus;</button><button id="gf-reset">reset</button>
{legend}
<span class="gf-coord" id="gf-coord">drag to pan, wheel to zoom</span>
</div></div>
<script>{js}</script>
</body></html>
"""

_JS = r"""
(function(){
  "use strict";
  var XMAX=@XMAX@, YMAX=@YMAX@, W=@WIDTH@, H=W*YMAX/XMAX, S=W/(2*XMAX);
  var A1=1.340264, A2=-0.081106, A3=0.000893, A4=0.003796, M=Math.sqrt(3)/2;
  var svg=document.getElementById("gf-svg"), tip=document.getElementById("gf-tip"), coord=document.getElementById("gf-coord");
  var view={x:0,y:0,w:W,h:H};
  function apply(){
    svg.setAttribute("viewBox",view.x+" "+view.y+" "+view.w+" "+view.h);
    var k=view.w/W;
    svg.querySelectorAll(".gf-mark").forEach(function(g){
      g.setAttribute("transform","translate("+g.dataset.x+" "+g.dataset.y+") scale("+k+")");});
    svg.querySelectorAll(".gf-samples circle").forEach(function(c){c.setAttribute("r",1.6*Math.max(k,0.15));});
  }
  function toSvg(ev){
    var r=svg.getBoundingClientRect();
    return {x:view.x+(ev.clientX-r.left)/r.width*view.w, y:view.y+(ev.clientY-r.top)/r.height*view.h};
  }
  function inverse(px,py){  // Equal Earth inverse, Newton on theta
    var x=px/S-XMAX, y=YMAX-py/S, t=y/A1, i, t2, t6;
    if(Math.abs(y)>YMAX) return null;
    for(i=0;i<12;i++){t2=t*t;t6=t2*t2*t2;
      t-=(t*(A1+A2*t2+t6*(A3+A4*t2))-y)/(A1+3*A2*t2+t6*(7*A3+9*A4*t2));}
    t2=t*t;t6=t2*t2*t2;
    var lam=M*x*(A1+3*A2*t2+t6*(7*A3+9*A4*t2))/Math.cos(t);
    if(Math.abs(lam)>Math.PI) return null;
    return {lat:Math.asin(Math.sin(t)/M)*180/Math.PI, lon:lam*180/Math.PI};
  }
  function zoom(f,cx,cy){
    var nw=Math.min(W,Math.max(W/64,view.w*f)), k=nw/view.w;
    view.x=cx-(cx-view.x)*k; view.y=cy-(cy-view.y)*k; view.w=nw; view.h=nw*H/W; clamp(); apply();
  }
  function clamp(){
    view.x=Math.min(Math.max(view.x,-view.w/2),W-view.w/2); view.y=Math.min(Math.max(view.y,-view.h/2),H-view.h/2);
  }
  svg.addEventListener("wheel",function(ev){ev.preventDefault();var p=toSvg(ev);zoom(ev.deltaY>0?1.25:0.8,p.x,p.y);},{passive:false});
  var drag=null;
  svg.addEventListener("pointerdown",function(ev){drag={x:ev.clientX,y:ev.clientY,vx:view.x,vy:view.y};svg.classList.add("gf-drag");svg.setPointerCapture(ev.pointerId);});
  svg.addEventListener("pointerup",function(){drag=null;svg.classList.remove("gf-drag");});
  svg.addEventListener("pointermove",function(ev){
    var r=svg.getBoundingClientRect();
    if(drag){view.x=drag.vx-(ev.clientX-drag.x)/r.width*view.w;view.y=drag.vy-(ev.clientY-drag.y)/r.height*view.h;clamp();apply();}
    var p=toSvg(ev), ll=inverse(p.x,p.y);
    coord.textContent=ll?(Math.abs(ll.lat).toFixed(2)+"\u00b0"+(ll.lat>=0?"N":"S")+", "+Math.abs(ll.lon).toFixed(2)+"\u00b0"+(ll.lon>=0?"E":"W")):"";
  });
  svg.querySelectorAll(".gf-mark").forEach(function(g){
    g.addEventListener("pointerenter",function(){tip.innerHTML=g.dataset.tip;tip.style.display="block";});
    g.addEventListener("pointerleave",function(){tip.style.display="none";});
    g.addEventListener("pointermove",function(ev){
      var box=document.getElementById("gf").getBoundingClientRect();
      tip.style.left=(ev.clientX-box.left+14)+"px"; tip.style.top=(ev.clientY-box.top+10)+"px";});
  });
  var c=function(){var r=svg.getBoundingClientRect();return {x:view.x+view.w/2,y:view.y+view.h/2,r:r};};
  document.getElementById("gf-in").onclick=function(){var p=c();zoom(0.7,p.x,p.y);};
  document.getElementById("gf-out").onclick=function(){var p=c();zoom(1/0.7,p.x,p.y);};
  document.getElementById("gf-reset").onclick=function(){view={x:0,y:0,w:W,h:H};apply();};
  apply();
})();
"""
