"""Regenerate tests/data/osv5m_select_{model,base}.csv and osv5m_select_expected.json.

Source: /work/shared/data/osv5m_sample/select.csv = public GitHub repository gastruc/osv5m,
game/select.csv (MIT): 50 OpenStreetView-5M test images with true coordinates, the
predictions of two models ("model": columns pred_*, "base": columns *_base), and the
per-image distance (km) and GeoGuessr score that the OSV-5M authors computed.

The expected summaries are computed here WITHOUT globeflow, in two independent ways:
  1. from the published per-image `distance` / `score` columns of select.csv;
  2. with geopy's great_circle (radius 6371 km), geopy 2.5.0.
Admin accuracy is computed from the published reverse-geocoded labels of select.csv
(pred_city/…, city/…) with the official composite-key rule: a level counts only where
the truth label at that level is non-empty; keys join name, admin2, admin1, cc with "_".
Run: .venv/bin/python tests/data/make_osv5m_expected.py /work/shared/data/osv5m_sample/select.csv
"""

import csv
import json
import math
import statistics
import sys
from pathlib import Path

from geopy.distance import great_circle

HERE = Path(__file__).resolve().parent
RADII = (1, 25, 200, 750, 2500)
CHAIN = {"country": ["country"], "region": ["region", "country"], "area": ["area", "region", "country"],
         "city": ["city", "area", "region", "country"]}


def summary(distances, scores):
    out = {"n": len(distances), "geoscore": statistics.fmean(scores), "mean_km": statistics.fmean(distances),
           "median_km": statistics.median(distances)}
    out.update({f"acc_{r}km": sum(d < r for d in distances) / len(distances) for r in RADII})
    return out


def admin(rows, prefix):
    out = {}
    for level, chain in CHAIN.items():
        kept = [r for r in rows if r[level]]
        hits = sum("_".join(r[f"{prefix}{c}"] for c in chain) == "_".join(r[c] for c in chain) for r in kept)
        out[f"{level}_acc"], out[f"{level}_n"] = hits / len(kept), len(kept)
    return out


def main(src: str) -> None:
    rows = list(csv.DictReader(open(src, newline="", encoding="utf-8")))
    expected = {}
    for tag, suffix in (("model", ""), ("base", "_base")):
        with open(HERE / f"osv5m_select_{tag}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "pred_lat", "pred_lon", "true_lat", "true_lon", "city", "area", "region", "country"])
            for r in rows:
                w.writerow([r["id"], r["pred_lat" + suffix], r["pred_lon" + suffix], r["true_lat"], r["true_lon"],
                            r["city"], r["area"], r["region"], r["country"]])
        published = summary([float(r["distance" + suffix]) for r in rows], [float(r["score" + suffix]) for r in rows])
        geo_d = [great_circle((float(r["pred_lat" + suffix]), float(r["pred_lon" + suffix])),
                              (float(r["true_lat"]), float(r["true_lon"])), radius=6371.0).km for r in rows]
        geopy_summary = summary(geo_d, [5000 * math.exp(-d / 1492.7) for d in geo_d])
        relabelled = [{**r, **{f"p_{lv}": r[f"pred_{lv}{suffix}"] for lv in CHAIN}} for r in rows]
        expected[tag] = {"published_columns": published, "geopy": geopy_summary, "admin": admin(relabelled, "p_")}
    (HERE / "osv5m_select_expected.json").write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/osv5m_sample/select.csv")
