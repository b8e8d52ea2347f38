"""Offline reverse geocoding with GeoNames cities ≥ 1000 (via ``reverse_geocoder``).

As the official OSV-5M/PLONK metric: the nearest GeoNames place gives the
country code ``cc``, ``admin1`` (region), ``admin2`` (area) and ``name`` (city).
Runs in single-process mode (no worker pool). Data: GeoNames, CC BY 4.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Place:
    """The nearest GeoNames place (strings as in ``rg_cities1000.csv``)."""

    cc: str
    admin1: str
    admin2: str
    name: str


@lru_cache(maxsize=1)
def _geocoder():
    import reverse_geocoder

    return reverse_geocoder.RGeocoder(mode=1, verbose=False)


def reverse_geocode(latlon_deg: np.ndarray) -> list[Place]:
    """(N, 2) degrees → N nearest places. Non-finite rows raise a ValueError naming the row."""
    latlon = np.asarray(latlon_deg, dtype=np.float64).reshape(-1, 2)
    if len(latlon) == 0:
        return []
    bad = ~np.isfinite(latlon).all(axis=1)
    if bad.any():
        raise ValueError(f"reverse_geocode: non-finite coordinates at rows {np.flatnonzero(bad)[:10].tolist()}")
    rows = _geocoder().query([tuple(p) for p in latlon])
    return [Place(r["cc"], r["admin1"], r["admin2"], r["name"]) for r in rows]


def country_codes(latlon_deg: np.ndarray) -> np.ndarray:
    """(N, 2) degrees → (N,) ISO 3166-1 alpha-2 codes of the nearest GeoNames place."""
    return np.array([p.cc for p in reverse_geocode(latlon_deg)], dtype=object)


def country_probabilities(latlon_deg: np.ndarray, top_k: int | None = None) -> dict[str, float]:
    """Share of the (K, 2) samples falling in each country, sorted by decreasing probability."""
    codes = country_codes(latlon_deg)
    if len(codes) == 0:
        return {}
    values, counts = np.unique(codes.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")[: top_k or None]
    return {str(values[i]): float(counts[i] / len(codes)) for i in order}
