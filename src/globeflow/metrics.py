"""Evaluation metrics for geolocation (numpy; degrees in, km / nats out).

Distances use the haversine formula on a sphere of radius 6371 km and the
GeoGuessr score 5000·exp(−d/1492.7), as the official OSV-5M/PLONK code.
Administrative accuracy follows the official composite keys (country ``cc``,
region ``admin1_cc``, area ``admin2_admin1_cc``, city ``name_admin2_admin1_cc``)
from offline reverse geocoding; see docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from globeflow.credible import credible_region
from globeflow.geocoding import Place, reverse_geocode

EARTH_RADIUS_KM = 6371.0
GEOSCORE_SCALE_KM = 1492.7
RADII_KM = (1, 25, 200, 750, 2500)
LEVELS = ("country", "region", "area", "city")
MASSES = (0.5, 0.8, 0.9, 0.95)


# ---------------------------------------------------------------- distances

def haversine_km(a_deg: np.ndarray, b_deg: np.ndarray, radius_km: float = EARTH_RADIUS_KM) -> np.ndarray:
    """Great-circle distance (km) between broadcastable (..., 2) lat/lon arrays in degrees."""
    a = np.radians(np.asarray(a_deg, dtype=np.float64))
    b = np.radians(np.asarray(b_deg, dtype=np.float64))
    dlat = b[..., 0] - a[..., 0]
    dlon = b[..., 1] - a[..., 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(a[..., 0]) * np.cos(b[..., 0]) * np.sin(dlon / 2) ** 2
    return 2 * radius_km * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def geoscore(d_km: np.ndarray) -> np.ndarray:
    """GeoGuessr score per item: 5000·exp(−d / 1492.7 km)."""
    return 5000.0 * np.exp(-np.asarray(d_km, dtype=np.float64) / GEOSCORE_SCALE_KM)


def accuracy_at(d_km: np.ndarray, radii: Sequence[float] = RADII_KM) -> dict[str, float]:
    """Share of items with distance strictly below each radius → {"acc_1km": ..., ...}."""
    d = np.asarray(d_km, dtype=np.float64)
    return {f"acc_{r:g}km": float(np.mean(d < r)) if d.size else math.nan for r in radii}


def point_metrics(pred_deg: np.ndarray, true_deg: np.ndarray, radii: Sequence[float] = RADII_KM) -> dict:
    """Point-estimate metrics for (N, 2) predicted vs true degrees.

    Returns n, geoscore (mean), mean_km, median_km and acc_{r}km fractions in [0, 1].
    """
    d = haversine_km(np.asarray(pred_deg).reshape(-1, 2), np.asarray(true_deg).reshape(-1, 2))
    empty = d.size == 0
    out = {
        "n": int(d.size),
        "geoscore": math.nan if empty else float(geoscore(d).mean()),
        "mean_km": math.nan if empty else float(d.mean()),
        "median_km": math.nan if empty else float(np.median(d)),
    }
    out.update(accuracy_at(d, radii))
    return out


# ---------------------------------------------------------------- administrative accuracy

def _missing(name: object) -> bool:
    return name is None or (isinstance(name, float) and math.isnan(name)) or str(name).strip() in ("", "nan")


def place_keys(places: Sequence[Place]) -> dict[str, np.ndarray]:
    """Official composite keys per level for reverse-geocoded places → {level: (N,) str}."""
    return {
        "country": np.array([p.cc for p in places], dtype=object),
        "region": np.array([f"{p.admin1}_{p.cc}" for p in places], dtype=object),
        "area": np.array([f"{p.admin2}_{p.admin1}_{p.cc}" for p in places], dtype=object),
        "city": np.array([f"{p.name}_{p.admin2}_{p.admin1}_{p.cc}" for p in places], dtype=object),
    }


def label_keys(labels: Mapping[str, Sequence[object]]) -> dict[str, np.ndarray]:
    """Composite keys from label columns ``country, region, area, city`` (names as in GeoNames).

    A key is None (missing) where that level's own label is missing ('' / 'nan' / None);
    an empty parent label becomes '' inside the key, as the geocoder writes it.
    """
    n = len(next(iter(labels.values())))
    col = {lv: [labels[lv][i] if lv in labels else "" for i in range(n)] for lv in LEVELS}
    clean = {lv: ["" if _missing(v) else str(v) for v in col[lv]] for lv in LEVELS}
    chain = {"country": ("country",), "region": ("region", "country"),
             "area": ("area", "region", "country"), "city": ("city", "area", "region", "country")}
    out = {}
    for lv in LEVELS:
        if lv not in labels:
            continue
        keys = ["_".join(clean[c][i] for c in chain[lv]) for i in range(n)]
        out[lv] = np.array([None if _missing(col[lv][i]) else keys[i] for i in range(n)], dtype=object)
    return out


def truth_keys_from_places(places: Sequence[Place]) -> dict[str, np.ndarray]:
    """Composite truth keys from reverse-geocoded truth, with the same missing rule as labels."""
    return label_keys({
        "country": [p.cc for p in places], "region": [p.admin1 for p in places],
        "area": [p.admin2 for p in places], "city": [p.name for p in places],
    })


def admin_accuracy(pred_deg: np.ndarray, true_deg: np.ndarray | None = None,
                   true_labels: Mapping[str, Sequence[object]] | None = None) -> dict:
    """Country/region/area/city accuracy by composite keys (official rule).

    pred_deg (N, 2) degrees. Truth: ``true_labels`` ({level: N names}) where given, else the
    reverse-geocoded ``true_deg``. Items whose truth label at a level is missing are left out of
    that level (counted in ``{level}_n``). Returns ``{level}_acc`` in [0, 1] and ``{level}_n``.
    """
    pred = place_keys(reverse_geocode(pred_deg))
    if true_labels is not None:
        truth = label_keys(true_labels)
    elif true_deg is not None:
        truth = truth_keys_from_places(reverse_geocode(true_deg))
    else:
        raise ValueError("admin_accuracy needs true_deg or true_labels")
    out: dict = {}
    for lv, keys in truth.items():
        ok = np.array([k is not None for k in keys], dtype=bool)
        hits = pred[lv][ok] == keys[ok]
        out[f"{lv}_acc"] = float(hits.mean()) if ok.any() else math.nan
        out[f"{lv}_n"] = int(ok.sum())
    return out


# ---------------------------------------------------------------- densities

def bits_per_dim_official(nats: float | np.ndarray) -> float | np.ndarray:
    """The official PLONK normalisation of a negative log-likelihood: nats / (3 ln 2) (ambient dim 3)."""
    return np.asarray(nats) / (3.0 * math.log(2.0))


def nll_summary(log_prob: np.ndarray) -> dict:
    """(N,) log-densities of the truths (nats per steradian) → mean NLL in nats and official bits/dim.

    For reference, the uniform density on S² has NLL log 4π ≈ 2.531 nats.
    """
    lp = np.asarray(log_prob, dtype=np.float64)
    nll = float(-lp.mean()) if lp.size else math.nan
    return {"nll_nats": nll, "nll_median_nats": float(-np.median(lp)) if lp.size else math.nan,
            "bits_per_dim_official": float(bits_per_dim_official(nll))}


def localizability_summary(sample_log_prob: np.ndarray) -> dict:
    """Localizability from (M, K) log-densities of each item's own samples (nats per steradian).

    ``localizability_official``: mean over items of E_p[log p] / (4π ln 2), the official
    PLONK importance-sampling estimate; ``neg_entropy_nats``: mean E_p[log p] = −H(p);
    ``info_gain_bits``: mean (E_p[log p] + log 4π) / ln 2, the information gained over a uniform
    guess (0 for the uniform density).
    """
    per_item = np.asarray(sample_log_prob, dtype=np.float64).mean(axis=-1)
    return {
        "localizability_official": float(np.mean(per_item / (4 * math.pi * math.log(2)))),
        "neg_entropy_nats": float(per_item.mean()),
        "info_gain_bits": float(np.mean((per_item + math.log(4 * math.pi)) / math.log(2))),
        "info_gain_bits_median": float(np.median((per_item + math.log(4 * math.pi)) / math.log(2))),
    }


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a proportion (95 % by default); (nan, nan) for n = 0."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def calibration(truth_log_prob: np.ndarray, sample_log_prob: np.ndarray,
                masses: Sequence[float] = MASSES) -> dict[str, dict]:
    """Coverage of highest-density credible regions.

    truth_log_prob (M,) log p(truth); sample_log_prob (M, K) log p of each item's own samples.
    An item is covered at mass m iff log p(truth) ≥ the (1 − m) quantile of its sample log p.
    Returns {f"{m:g}": {coverage, wilson_low, wilson_high, area_km2_mean, area_km2_median}}.
    """
    t = np.asarray(truth_log_prob, dtype=np.float64)
    s = np.asarray(sample_log_prob, dtype=np.float64)
    out = {}
    for m in masses:
        regions = [credible_region(s[i], m) for i in range(len(t))]
        covered = np.array([t[i] >= r.log_threshold for i, r in enumerate(regions)], dtype=bool)
        areas = np.array([r.area_km2 for r in regions])
        lo, hi = wilson_interval(int(covered.sum()), len(t))
        out[f"{m:g}"] = {"coverage": float(covered.mean()) if len(t) else math.nan,
                         "wilson_low": lo, "wilson_high": hi,
                         "area_km2_mean": float(areas.mean()) if len(t) else math.nan,
                         "area_km2_median": float(np.median(areas)) if len(t) else math.nan}
    return out


# ---------------------------------------------------------------- precision / recall / density / coverage

def _pairwise_angle(a_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """(N, 2), (M, 2) degrees → (N, M) great-circle distances in radians (unit sphere)."""
    return haversine_km(a_deg[:, None, :], b_deg[None, :, :], radius_km=1.0)


def _chunks(x: np.ndarray, num_splits: int) -> list[np.ndarray]:
    """Split like ``torch.chunk``: pieces of ceil(N / num_splits) rows, the last one shorter."""
    size = max(1, math.ceil(len(x) / num_splits))
    return [x[i:i + size] for i in range(0, len(x), size)]


def prdc_distances(real_deg: np.ndarray, fake_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three great-circle distance matrices (radians) PRDC needs: real–real (N, N), fake–fake
    (M, M), real–fake (N, M). Subsets of points are rows and columns of these (``np.ix_``), so
    resampling needs no new trigonometry."""
    real = np.asarray(real_deg, dtype=np.float64).reshape(-1, 2)
    fake = np.asarray(fake_deg, dtype=np.float64).reshape(-1, 2)
    return _pairwise_angle(real, real), _pairwise_angle(fake, fake), _pairwise_angle(real, fake)


def _prdc_one(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float, float, float]:
    return prdc_from_distances(*prdc_distances(real, fake), k=k)


def prdc_from_distances(d_rr: np.ndarray, d_ff: np.ndarray, d_rf: np.ndarray,
                        k: int = 3) -> tuple[float, float, float, float]:
    """(precision, recall, density, coverage) from :func:`prdc_distances`' matrices."""
    # radius = (k+1)-th smallest distance in each row, the point itself (0) included, as officially
    r_real = np.partition(d_rr, k, axis=1)[:, k]
    r_fake = np.partition(d_ff, k, axis=1)[:, k]
    inside_real = d_rf < r_real[:, None]
    precision = inside_real.any(axis=0).mean()
    recall = (d_rf < r_fake[None, :]).any(axis=1).mean()
    density = inside_real.sum(axis=0).mean() / k
    coverage = (d_rf.min(axis=1) < r_real).mean()
    return float(precision), float(recall), float(density), float(coverage)


def prdc(true_deg: np.ndarray, pred_deg: np.ndarray, k: int = 3, num_splits: int = 1) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) of predicted vs true points.

    Dataset-level, with haversine distances and k nearest neighbours, as the official code.
    The official code averages the four values over ``torch.chunk(…, 20)`` splits of the data;
    pass ``num_splits=20`` to reproduce that exactly (default: the whole set at once).
    """
    real = np.asarray(true_deg, dtype=np.float64).reshape(-1, 2)
    fake = np.asarray(pred_deg, dtype=np.float64).reshape(-1, 2)
    if len(real) != len(fake):
        raise ValueError(f"prdc: {len(real)} true vs {len(fake)} predicted points")
    vals = [_prdc_one(r, f, k) for r, f in zip(_chunks(real, num_splits), _chunks(fake, num_splits))]
    mean = np.mean(np.array(vals), axis=0)
    return dict(zip(("precision", "recall", "density", "coverage"), map(float, mean)))


# ---------------------------------------------------------------- uncertainty

def bootstrap_ci(values_per_item: np.ndarray, groups: Sequence[object] | None,
                 statistic: Callable[[np.ndarray], float] = np.mean, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Cluster bootstrap: resample groups (e.g. photographers) with replacement.

    values_per_item (N, ...) rows; groups (N,) labels (None: each item its own group).
    Returns (statistic on all items, lower, upper) percentile bounds at ``level``.
    """
    values = np.asarray(values_per_item)
    n = len(values)
    labels = np.arange(n) if groups is None else np.asarray(groups)
    if len(labels) != n:
        raise ValueError(f"bootstrap_ci: {n} values but {len(labels)} group labels")
    _, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)] if n else []
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, len(members), size=len(members))
        stats[b] = statistic(values[np.concatenate([members[g] for g in pick])])
    alpha = (1.0 - level) / 2
    return float(statistic(values)), float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))
