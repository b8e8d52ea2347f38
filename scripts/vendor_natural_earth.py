"""Write data/text/natural_earth_places.csv: named physical places and US parks from Natural Earth.

    python scripts/vendor_natural_earth.py DIR [--out data/text/natural_earth_places.csv]

DIR holds Natural Earth 1:10m GeoJSON layers (as in github.com/martynafford/natural-earth-geojson,
folders 10m/physical and 10m/cultural; the regions' polygons come there as a .7z, extract it first):

- ne_10m_geography_regions_points.json (capes, islands, waterfalls),
- ne_10m_geography_regions_elevation_points.json (peaks, depressions, plateaus),
- ne_10m_geography_regions_polys.json (ranges, deserts, plateaus, islands, coasts, …),
- ne_10m_parks_and_protected_lands_point.json and _area.json (US National Park Service units).

Points keep their coordinates; every polygon (a region has an extent) gives POINTS_PER_AREA points drawn
uniformly on the sphere inside it (fixed seed), so a model trained on them spreads "Sahara" over the
Sahara. Names get their usual English spelling ("Mts." → "Mountains"); parks also get
"<name> <unit type>" ("Mesa Verde National Park"). Natural Earth is public domain
(https://www.naturalearthdata.com/about/terms-of-use/). Needs shapely (only this script does).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np

POINTS_PER_AREA = 8
ABBREVIATIONS = {r"\bMts\b\.?": "Mountains", r"\bRa\.": "Range", r"\bMt\.": "Mount", r"\bPk\.": "Peak",
                 r"\bI\.$": "Island", r"\bIs\.$": "Islands", r"\bPen\.": "Peninsula", r"\bPlat\.": "Plateau",
                 r"\bC\.": "Cape", r"\bPt\.": "Point", r"\bL\.": "Lake", r"\bR\.": "River", r"\bDes\.": "Desert"}
UNIT_SUFFIX = re.compile(r"(\s+(?:[A-Z]{2,}|N|&|E))+$")  # NPS unit codes after a park's name: NHP, N PRES, NM
OUT = Path(__file__).resolve().parents[1] / "data" / "text" / "natural_earth_places.csv"


def readable(name: str) -> str:
    """Natural Earth label → the usual spelling: abbreviations expanded, ALL CAPS title-cased, spaces tidied."""
    name = " ".join(name.replace(" .", ".").split())
    for pattern, word in ABBREVIATIONS.items():
        name = re.sub(pattern, word, name)
    return name.title() if name.isupper() else name


def names_of(props: dict) -> list[str]:
    """Distinct readable names of a feature: name, then name_en / namealt / name_alt when they differ."""
    out: list[str] = []
    for key in ("name", "name_en", "namealt", "name_alt"):
        value = props.get(key)
        if value and str(value).strip():
            for part in str(value).split("/"):
                text = readable(part.strip())
                if text and text not in out:
                    out.append(text)
    return out


def interior_points(geometry: dict, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 2) lat, lon degrees drawn uniformly by area inside a GeoJSON (Multi)Polygon in lon/lat."""
    from shapely.geometry import Point, shape
    from shapely.prepared import prep

    geom = shape(geometry)
    inside = prep(geom)
    lon0, lat0, lon1, lat1 = geom.bounds
    z0, z1 = np.sin(np.radians(lat0)), np.sin(np.radians(lat1))
    found: list[tuple[float, float]] = []
    for _ in range(200):
        lon = rng.uniform(lon0, lon1, 256)
        lat = np.degrees(np.arcsin(rng.uniform(z0, z1, 256)))  # uniform in area, not in latitude
        found += [(a, o) for a, o in zip(lat, lon) if inside.contains(Point(o, a))]
        if len(found) >= count:
            return np.array(found[:count])
    p = geom.representative_point()  # slivers: one point that is certainly inside
    return np.array(found + [(p.y, p.x)] * (count - len(found)))[:count]


def rows_of(path: Path, layer: str, rng: np.random.Generator) -> list[dict]:
    rows = []
    for feature in json.loads(path.read_text(encoding="utf-8"))["features"]:
        props, geometry = feature["properties"], feature["geometry"]
        names = names_of(props)
        if layer.startswith("parks"):  # "Valley Forge NHP" → "Valley Forge", "Valley Forge National Historical Park"
            base = UNIT_SUFFIX.sub("", props["name"])
            names = list(dict.fromkeys([base, *(n for n in names if n != props["name"])]))
            names += [f"{base} {props['unit_type']}"] if props.get("unit_type") else []
        if not names or geometry is None:
            continue
        if geometry["type"] == "Point":
            lon, lat = geometry["coordinates"][:2]
            points = np.array([[lat, lon]])
        else:
            points = interior_points(geometry, POINTS_PER_AREA, rng)
        kind = str(props.get("featurecla") or props.get("unit_type") or "").strip().lower()
        rows += [{"name": n, "lat": f"{a:.4f}", "lon": f"{o:.4f}", "kind": kind, "layer": layer}
                 for n in names for a, o in points]
    return rows


LAYERS = {"regions_points": "ne_10m_geography_regions_points.json",
          "elevation_points": "ne_10m_geography_regions_elevation_points.json",
          "regions_polys": "ne_10m_geography_regions_polys.json",
          "parks_points": "ne_10m_parks_and_protected_lands_point.json",
          "parks_areas": "ne_10m_parks_and_protected_lands_area.json"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for layer, name in LAYERS.items():
        found = list(args.folder.rglob(name))
        if not found:
            raise SystemExit(f"{args.folder}: no {name}")
        rows += rows_of(found[0], layer, rng)
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["name", "lat", "lon", "kind", "layer"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{args.out}: {len(rows)} rows, {len({r['name'] for r in rows})} names")


if __name__ == "__main__":
    main()
