"""`globeflow predict` offline on the embedded default: 50 real photos plus bad files."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from globeflow import cli, maps
from globeflow.checkpoints import DEFAULT_MODELS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "im2gps3k"
pytestmark = [
    pytest.mark.skipif(not SHARED.exists(), reason=f"shared photos missing at {SHARED}"),
    pytest.mark.skipif(not (DEFAULT_MODELS["image"] / "model.safetensors").exists(), reason="no default model"),
]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    names = sorted(p.name for p in (SHARED / "images").iterdir())[:50]
    for name in names:
        shutil.copy(SHARED / "images" / name, folder / name)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image at all")
    data = (SHARED / "images" / names[0]).read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (20, 20)).save(folder / "tiny.png")
    return folder, names


def test_predict_50_photos_with_bad_files(photo_dir, tmp_path, capsys):
    folder, names = photo_dir
    out = tmp_path / "results.csv"
    code = cli.main(["predict", str(folder), "--metadata", str(SHARED / "metadata.csv"), "--out", str(out),
                     "--maps", str(tmp_path / "maps"), "--samples", "256", "--no-progress"])
    assert code == 0
    rows = list(csv.DictReader(open(out)))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(names)  # one row per decodable photo
    assert {"path", "pred_lat", "pred_lon", "guess_country", "best_guess_rule", "radius50_km", "radius90_km",
            "area50_km2", "area90_km2", "localizability", "top_country", "top_country_prob", "model", "encoder",
            "true_lat", "true_lon"} == set(rows[0])
    # the best guess's country is its own column, apart from the most probable country
    assert all(len(r["guess_country"]) == 2 and "same samples" in r["best_guess_rule"] for r in rows)
    for r in rows:
        assert -90 <= float(r["pred_lat"]) <= 90 and float(r["radius50_km"]) < float(r["radius90_km"])
    assert sum(r["true_lat"] != "" for r in rows) >= 45  # truth passed through from metadata.csv
    skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(open(tmp_path / "results.skipped.csv"))}
    assert set(skipped) == {"empty.jpg", "notes.jpg", "truncated.jpg", "tiny.png"}
    printed = capsys.readouterr().out
    assert "50 processed, 4 skipped" in printed
    assert "guess in  most probable" in printed and "describe the same 256 samples at guidance w = " in printed
    assert "nicolas-dufour/PLONK_YFCC" in printed  # the offline model says what it is and where skill is
    # the maps: land visible, density (KDE of the samples) visible, best guess marked
    pngs = sorted((tmp_path / "maps").glob("*.png"))
    assert len(pngs) == 50
    img = np.asarray(Image.open(pngs[0]).convert("RGB")).astype(int)
    close = lambda colour, tol=8: (np.abs(img - np.array(colour)).max(-1) <= tol).sum()  # noqa: E731
    assert close(maps.LAND) > 5000 and close(maps.OCEAN) > 5000
    assert close(maps.BEST_GUESS, 30) > 10
    painted = (np.abs(img - np.array(maps.LAND)).max(-1) > 8) & (np.abs(img - np.array(maps.OCEAN)).max(-1) > 8)
    assert painted.sum() > 20000  # the density layer tints a large part of the map


def test_predict_usage_errors(tmp_path):
    assert cli.main(["predict"]) == 2
    assert cli.main(["predict", "x.jpg", "--text", "Paris"]) == 2
    assert cli.main(["predict", "x.jpg", "--out", str(tmp_path / "r.txt")]) == 2


def test_predict_nothing_readable_exits_1(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    assert cli.main(["predict", str(tmp_path / "a.jpg"), "--no-progress"]) == 1


def test_predict_defaults_to_the_sample_count_the_model_was_calibrated_with(photo_dir, tmp_path, capsys):
    from globeflow.geolocator import Geolocator

    folder, names = photo_dir
    geo = Geolocator.from_pretrained()
    assert geo.info.default_samples == 128 and "128 own samples" in geo.info.training["credible_masses_fit"]
    out = tmp_path / "one.json"
    assert cli.main(["predict", str(folder / names[0]), "--out", str(out), "--no-progress"]) == 0
    assert "describe the same 128 samples" in capsys.readouterr().out
    assert cli.main(["predict", str(folder / names[0]), "--samples", "0"]) == 2
