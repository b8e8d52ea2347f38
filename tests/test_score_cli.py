"""``globeflow score`` reproduces the OSV-5M authors' published per-image distances and scores."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from globeflow.cli import main

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = json.loads((DATA / "osv5m_select_expected.json").read_text())
POINT_KEYS = ("n", "geoscore", "mean_km", "median_km", "acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km")


def _score_json(capsys, *args) -> tuple[int, dict, str]:
    code = main(["score", *map(str, args), "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else {}), captured.err


@pytest.mark.parametrize("tag", ["model", "base"])
def test_score_reproduces_published_and_geopy_summaries(capsys, tag):
    code, out, _ = _score_json(capsys, DATA / f"osv5m_select_{tag}.csv")
    assert code == 0 and out["n_skipped"] == 0
    for source in ("published_columns", "geopy"):
        for key in POINT_KEYS:
            assert out[key] == pytest.approx(EXPECTED[tag][source][key], rel=1e-9, abs=1e-9), (source, key)


@pytest.mark.parametrize("tag", ["model", "base"])
def test_score_admin_from_labels_and_from_coordinates(capsys, tag, tmp_path):
    code, out, _ = _score_json(capsys, DATA / f"osv5m_select_{tag}.csv", "--admin")
    assert code == 0 and out["admin_truth"] == "labels"
    for key, value in EXPECTED[tag]["admin"].items():
        assert out[key] == pytest.approx(value), key
    # without label columns the truth is reverse-geocoded; select.csv labels are GeoNames names,
    # so the result is the same
    plain = tmp_path / "coords_only.csv"
    with open(DATA / f"osv5m_select_{tag}.csv", newline="") as src, open(plain, "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, ["PRED_LAT", "pred_lon", "True_Lat", "true_lon"])
        writer.writeheader()
        for r in reader:
            writer.writerow({"PRED_LAT": r["pred_lat"], "pred_lon": r["pred_lon"],
                             "True_Lat": r["true_lat"], "true_lon": r["true_lon"]})
    code, out2, _ = _score_json(capsys, plain, "--admin")
    assert code == 0 and out2["admin_truth"] == "reverse-geocoded"
    for key, value in EXPECTED[tag]["admin"].items():
        assert out2[key] == pytest.approx(value), key


def test_bad_rows_are_skipped_and_counted(capsys, tmp_path):
    rows = (DATA / "osv5m_select_model.csv").read_text().splitlines()
    bad = [
        "x1,,170.1,-43.9,170.1,,,,",           # missing pred_lat
        "x2,abc,170.1,-43.9,170.1,,,,",        # not a number
        "x3,nan,170.1,-43.9,170.1,,,,",        # NaN
        "x4,12.0,inf,-43.9,170.1,,,,",         # infinite
        "x5,95.0,10.0,-43.9,170.1,,,,",        # latitude out of range
        "x6,12.0,10.0",                        # short row
    ]
    path = tmp_path / "with_bad_rows.csv"
    path.write_text("\n".join(rows[:3] + bad + rows[3:]) + "\n")
    code, out, err = _score_json(capsys, path)
    assert code == 0 and out["n_skipped"] == len(bad) and out["n"] == 50
    assert "skipped 6 row(s)" in err and "lines 4, 5, 6, 7, 8, 9" in err
    for key in POINT_KEYS:
        assert out[key] == pytest.approx(EXPECTED["model"]["published_columns"][key], rel=1e-9, abs=1e-9)


def test_usage_errors_exit_2_and_name_the_problem(capsys, tmp_path):
    assert main(["score", str(tmp_path / "nope.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    path = tmp_path / "cols.csv"
    path.write_text("lat,lon,pred_lat\n1,2,3\n")
    assert main(["score", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pred_lon" in err and "true_lat" in err and "true_lon" in err
    empty = tmp_path / "empty.csv"
    empty.write_text("pred_lat,pred_lon,true_lat,true_lon\n,,,\n")
    assert main(["score", str(empty), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 0 and "no valid rows" in captured.err


def test_readable_table_through_the_console_script():
    result = subprocess.run([sys.executable, "-m", "globeflow.cli", "score", str(DATA / "osv5m_select_model.csv")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    published = EXPECTED["model"]["published_columns"]
    assert f"{published['geoscore']:.1f}" in result.stdout
    assert f"{published['median_km']:.1f} km" in result.stdout
    assert "accuracy < 2500 km" in result.stdout and f"{100 * published['acc_2500km']:.1f} %" in result.stdout
