"""The text-model recipe: captions, licence filter, author split, training rows and configuration.

Training rows (all embedded by ``minilm-l6`` and cached in the user cache):

- gazetteer forms (:mod:`globeflow.text.gazetteer`) of the selected places;
- permitted captions (licence BY or BY-SA only; NonCommercial / NoDerivs captions are
  evaluation-only), repeated ``caption_repeat`` times because they are few but in-domain;
- ``prior_rows`` MP-16 Flickr photo locations under the null (zero) condition, so the
  unconditional branch (used by classifier-free guidance) learns where photos are taken.

Captions are ``TITLE. DESCRIPTION. TAGS`` (empty fields skipped), exactly as
``globeflow predict --texts CSV --text-columns TITLE,DESCRIPTION,TAGS`` forms them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from globeflow.columns import resolve_columns
from globeflow.data.sources import text_of
from globeflow.training import TrainConfig, val_mask

ROOT = Path(__file__).resolve().parents[3]
SHARED = ROOT.parent / "shared" / "data"
CAPTIONS = SHARED / "yfcc4k_text" / "captions.csv"
MP16 = SHARED / "mp16" / "coordinates_100k.csv"
FAMOUS = ROOT / "data" / "text" / "famous_places.csv"  # evaluation only: never a training string
NATURAL_EARTH = ROOT / "data" / "text" / "natural_earth_places.csv"  # scripts/vendor_natural_earth.py
TEXT_COLUMNS = ("TITLE", "DESCRIPTION", "TAGS")
PERMITTED_LICENSES = ("Attribution License", "Attribution-ShareAlike License")
TEST_FRAC, TEST_SPLIT_SEED = 0.25, 1  # share of AUTHORs held out for the report (stable hash)
NAME_TEST_FRAC, NAME_SPLIT_SEED = 0.05, 2  # share of place names held out for the report
NAME_VAL_FRAC, NAME_VAL_SEED = 0.02, 3  # share of place names held out to calibrate guidance on unseen names
MODEL_ID = "globeflow/text-minilm-l6"


@dataclass(frozen=True)
class Captions:
    """Captions as parallel arrays: id, author, text, license (N,) str and latlon (N, 2) degrees."""

    id: np.ndarray
    author: np.ndarray
    text: np.ndarray
    license: np.ndarray
    latlon: np.ndarray

    def __len__(self) -> int:
        return len(self.id)

    def select(self, mask: np.ndarray) -> "Captions":
        return Captions(self.id[mask], self.author[mask], self.text[mask], self.license[mask], self.latlon[mask])


def load_captions(path: str | Path = CAPTIONS) -> Captions:
    """Read a captions CSV (IMG_ID, AUTHOR, TITLE, DESCRIPTION, TAGS, LAT, LON, LICENSE).

    Rows without coordinates or with an empty text are dropped (and logged by count).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = reader.fieldnames or []
    cols = resolve_columns(header)
    upper = {h.upper(): h for h in header}
    needed = [c for c in ("id", "lat", "lon", "group") if c not in cols] + \
        [c for c in (*TEXT_COLUMNS, "LICENSE") if c not in upper]
    if needed:
        raise ValueError(f"{path}: missing columns {needed}; have {header}")
    fields = [upper[c] for c in TEXT_COLUMNS]
    keep = []
    for r in rows:
        try:
            lat, lon = float(r[cols["lat"]]), float(r[cols["lon"]])
        except (TypeError, ValueError):
            continue
        text = text_of(r, fields)
        if text and np.isfinite([lat, lon]).all() and abs(lat) <= 90:
            keep.append((r[cols["id"]], r[cols["group"]], text, r[upper["LICENSE"]].strip(), lat, lon))
    if not keep:
        raise ValueError(f"{path}: no usable captions")
    ids, authors, texts, licenses, lats, lons = zip(*keep)
    return Captions(np.array(ids, str), np.array(authors, str), np.array(texts, str), np.array(licenses, str),
                    np.stack([lats, lons], axis=1).astype(np.float64))


def permitted(licenses: np.ndarray) -> np.ndarray:
    """Bool (N,): licence allows training a redistributed model (CC BY or CC BY-SA, no NC, no ND)."""
    return np.isin(np.asarray(licenses, dtype=str), PERMITTED_LICENSES)


def test_authors(captions: Captions) -> np.ndarray:
    """Bool (N,): captions of the authors held out for the report (stable hash of AUTHOR)."""
    return val_mask(captions.author, TEST_FRAC, TEST_SPLIT_SEED)


def test_names(names: np.ndarray) -> np.ndarray:
    """Bool (P,): places whose name is held out for the report (stable hash of the name)."""
    return val_mask(np.char.lower(np.asarray(names, dtype=str)), NAME_TEST_FRAC, NAME_SPLIT_SEED)


def val_names(names: np.ndarray) -> np.ndarray:
    """Bool (P,): places whose name is held out of training to calibrate the guidance on names the model
    has not seen (stable hash of the name; never a report test name)."""
    return val_mask(np.char.lower(np.asarray(names, dtype=str)), NAME_VAL_FRAC, NAME_VAL_SEED) & ~test_names(names)


@dataclass(frozen=True)
class Famous:
    """Famous places and natural sites (data/text/famous_places.csv): text, kind, country (N,) str, latlon (N, 2) degrees."""

    text: np.ndarray
    latlon: np.ndarray
    kind: np.ndarray
    country: np.ndarray


def load_famous(path: str | Path = FAMOUS) -> Famous:
    """The famous-places list written before training (held out of training by exact string)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows (expected text,lat,lon,kind,country)")
    col = lambda k: np.array([r[k].strip() for r in rows], dtype=str)  # noqa: E731
    return Famous(col("text"), np.array([[float(r["lat"]), float(r["lon"])] for r in rows]), col("kind"),
                  col("country"))


def load_natural_earth(path: str | Path = NATURAL_EARTH) -> tuple[list[str], np.ndarray]:
    """Named physical places and US parks from Natural Earth (public domain): texts (R,) and latlon
    (R, 2) degrees; a region (a polygon) appears as several rows of points inside it."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows (expected name,lat,lon,kind,layer)")
    return [r["name"] for r in rows], np.array([[float(r["lat"]), float(r["lon"])] for r in rows])


def load_airports() -> tuple[list[str], np.ndarray]:
    """Airports with an IATA code from the ``airportsdata`` package (MIT licence; 7,884 in 2026-09):
    their names as written there ("Kilimanjaro International Airport"), texts (R,), and latlon (R, 2)
    degrees."""
    try:
        import airportsdata
    except ImportError as err:
        raise RuntimeError("airport rows need the package airportsdata (pip install airportsdata)") from err
    rows = sorted(airportsdata.load("IATA").values(), key=lambda r: r["iata"])
    return [r["name"] for r in rows], np.array([[float(r["lat"]), float(r["lon"])] for r in rows])


def not_famous(texts) -> np.ndarray:
    """Bool (N,): texts that are not, case-insensitively, one of the famous-places strings."""
    held = {t.lower() for t in load_famous().text.tolist()}
    return np.array([str(t).lower() not in held for t in texts], dtype=bool)


def default_config(steps: int = 4000, cond_hidden: int = 0, cond_layers: int = 0, fourier_features: int = 0,
                   fourier_scale: int = 0) -> TrainConfig:
    """The text model's training configuration (rfm, width 128, depth 3; with ``cond_hidden`` a
    conditioning MLP of ``cond_layers`` hidden layers, with ``fourier_features`` Fourier position
    features up to ``fourier_scale`` rad⁻¹; see :class:`globeflow.network.NetworkConfig`)."""
    return TrainConfig(family="rfm", dim=128, depth=3, expansion=4, cond_hidden=cond_hidden,
                       cond_layers=cond_layers, fourier_features=fourier_features, fourier_scale=fourier_scale,
                       steps=steps, batch_size=1024, lr=2e-3,
                       weight_decay=0.05, warmup_steps=200, ema_decay=0.999, cond_drop=0.1,
                       val_every=10 ** 9, checkpoint_every=max(1, steps // 4), log_every=50, val_max=1)


@dataclass
class Rows:
    """Training rows before stacking: texts (to embed) with latlon (degrees) and a kind tag."""

    text: list[str] = field(default_factory=list)
    latlon: list[np.ndarray] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)

    def add(self, text, latlon, kind: str) -> None:
        text = list(text)
        self.text += text
        self.latlon.append(np.asarray(latlon, dtype=np.float64).reshape(-1, 2))
        self.kind += [kind] * len(text)

    def counts(self) -> dict[str, int]:
        kinds, n = np.unique(np.array(self.kind, dtype=str), return_counts=True)
        return {str(k): int(c) for k, c in zip(kinds, n)}


def prior_locations(rows: int, seed: int = 0, path: Path = MP16) -> np.ndarray:
    """(rows, 2) degrees: a fixed random subset of the MP-16 photo locations."""
    ll = np.loadtxt(path, delimiter=",", skiprows=1)
    return ll[np.random.default_rng(seed).choice(len(ll), min(rows, len(ll)), replace=False)]
