"""``globeflow score``: point metrics for a CSV of predictions made by any tool."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from globeflow.columns import resolve_columns
from globeflow.metrics import LEVELS, admin_accuracy, point_metrics

HELP = "score point predictions (GeoScore, distances, accuracy at 1–2500 km, optional admin accuracy)"
DESCRIPTION = """Score a CSV of point predictions from any tool.

Needs the columns pred_lat, pred_lon, true_lat, true_lon (degrees; matched case-insensitively).
Rows with missing, non-numeric or out-of-range values are skipped and counted (n_skipped).
With --admin, country/region/area/city accuracy is computed by offline reverse geocoding
(GeoNames cities ≥ 1000) with the official composite keys; the truth comes from the columns
country, region, area, city when present, else from reverse-geocoding true_lat/true_lon.

Examples:
  globeflow score predictions.csv
  globeflow score predictions.csv --json --admin
"""

REQUIRED = ("pred_lat", "pred_lon", "true_lat", "true_lon")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", type=Path, help="CSV with pred_lat, pred_lon, true_lat, true_lon")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--admin", action="store_true",
                        help="add country/region/area/city accuracy by offline reverse geocoding")


def _coordinate(text: str | None, limit: float) -> float | None:
    """A finite float within ±limit, else None."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and abs(value) <= limit else None


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, list[str]], list[int]]:
    """Read a predictions CSV → pred (N, 2), true (N, 2) degrees, admin labels, skipped line numbers.

    Raises FileNotFoundError or KeyError (naming the missing columns) on usage errors.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        cols = resolve_columns(header, REQUIRED + LEVELS)
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise KeyError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})")
        pred, true, skipped = [], [], []
        labels: dict[str, list[str]] = {lv: [] for lv in LEVELS if lv in cols}
        for line, row in enumerate(reader, start=2):
            values = [_coordinate(row.get(cols[c]), 90.0 if c.endswith("lat") else 360.0) for c in REQUIRED]
            if any(v is None for v in values):
                skipped.append(line)
                continue
            pred.append(values[:2])
            true.append(values[2:])
            for lv in labels:
                labels[lv].append(row.get(cols[lv]) or "")
    return np.array(pred, dtype=np.float64).reshape(-1, 2), np.array(true, dtype=np.float64).reshape(-1, 2), labels, skipped


def score(path: Path, admin: bool = False) -> tuple[dict, list[int]]:
    """All metrics for one predictions CSV as a flat dict, and the skipped line numbers."""
    pred, true, labels, skipped = read_predictions(path)
    out = point_metrics(pred, true)
    out["n_skipped"] = len(skipped)
    if admin and len(pred):
        out.update(admin_accuracy(pred, true_deg=true, true_labels=labels or None))
        out["admin_truth"] = "labels" if labels else "reverse-geocoded"
    return out, skipped


def _json_safe(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _table(result: dict) -> str:
    rows = [("images scored", f"{result['n']}"), ("rows skipped", f"{result['n_skipped']}"),
            ("GeoScore (mean, 0–5000)", f"{result['geoscore']:.1f}"),
            ("mean distance", f"{result['mean_km']:.1f} km"), ("median distance", f"{result['median_km']:.1f} km")]
    rows += [(f"accuracy < {k[4:-2]} km", f"{100 * v:.1f} %") for k, v in result.items()
             if k.startswith("acc_")]
    for lv in LEVELS:
        if f"{lv}_acc" in result:
            rows.append((f"{lv} accuracy", f"{100 * result[f'{lv}_acc']:.1f} % of {result[f'{lv}_n']}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run(args: argparse.Namespace) -> int:
    path: Path = args.predictions
    if not path.is_file():
        print(f"globeflow score: predictions file not found: {path}", file=sys.stderr)
        return 2
    try:
        result, skipped = score(path, admin=args.admin)
    except KeyError as err:
        print(f"globeflow score: {err.args[0]}", file=sys.stderr)
        return 2
    except (UnicodeDecodeError, csv.Error) as err:
        print(f"globeflow score: cannot read {path} as CSV: {err}", file=sys.stderr)
        return 2
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (" …" if len(skipped) > 10 else "")
        print(f"globeflow score: skipped {len(skipped)} row(s) with missing or invalid coordinates "
              f"(lines {shown})", file=sys.stderr)
    if result["n"] == 0:
        print(f"globeflow score: no valid rows in {path}", file=sys.stderr)
        if args.json:
            print(json.dumps({k: _json_safe(v) for k, v in result.items()}))
        return 1
    if args.json:
        print(json.dumps({k: _json_safe(v) for k, v in result.items()}))
    else:
        print(_table(result))
    return 0
