"""Summaries of one predicted distribution: best guess, modes, credible regions, countries.

Everything here is a pure function of the model's samples and their
log-densities, so it works for any model that can sample and score.

One input, one distribution: the modes, the credible regions, the country probabilities and the
localizability all describe the same K samples. The best guess is one point chosen by a stated
rule (``best_guess_rule``): the sample of highest density, or the sample of highest expected
GeoScore (the point closest, on average, to everywhere the model thinks the photo may be; when
the model cannot tell continents apart it lies between them). Its country (``guess_country``) is
therefore not the most probable country (``top_country``, the country holding the largest share
of the samples); both are reported, under separate names. When a model draws its best guess from
further samples at its own guidance weight, ``best_guess_source`` says so.

Notation: ``samples_deg`` (K, 2) latitude/longitude in degrees; ``log_prob``
(K,) log-densities in nats per steradian; ``x`` unit vectors inside. Modes come
from mean-shift on S² with the von Mises–Fisher kernel
k(x, y) = exp(κ (x·y − 1)), κ = (R / σ)², σ = ``kernel_km``, R = 6371 km (for
small σ this is a Gaussian of standard deviation σ along the surface).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from globeflow.credible import CredibleRegion, credible_region
from globeflow.geocoding import country_codes, country_probabilities
from globeflow.metrics import GEOSCORE_SCALE_KM
from globeflow.sphere import EARTH_RADIUS_KM, latlon_to_xyz, xyz_to_latlon

PREDICTION_COLUMNS: tuple[str, ...] = (
    "id", "pred_lat", "pred_lon", "guess_country", "best_guess_rule", "radius50_km", "radius90_km",
    "area50_km2", "area90_km2", "localizability", "top_country", "top_country_prob", "model", "encoder",
)
# what each column means (the CSV legend; docs/default_model.md explains the best guess)
COLUMN_NOTES: dict[str, str] = {
    "pred_lat": "best guess latitude (degrees)", "pred_lon": "best guess longitude (degrees)",
    "guess_country": "country of the best guess (not necessarily the most probable country)",
    "best_guess_rule": "how the best guess was picked from the samples",
    "top_country": "most probable country: the largest share of the samples",
    "top_country_prob": "that share, in [0, 1]",
}
BEST_GUESS_RULE_TEXT: dict[str, str] = {
    "density": "highest-density sample",
    "geoscore": "highest expected GeoScore (a compromise between the likely places)",
}
TRUTH_COLUMNS: tuple[str, ...] = ("true_lat", "true_lon")
CREDIBLE_MASSES: tuple[float, ...] = (0.5, 0.9)
BEST_GUESS_RULES: tuple[str, ...] = ("density", "geoscore")
GEOSCORE_CANDIDATES = 512  # samples tried as the expected-GeoScore best guess (all K samples score each)
MAX_SEEDS = 512  # mean-shift trajectories; further samples join the basin of their nearest seed


@dataclass(frozen=True)
class Mode:
    """A local maximum of the sample density and its basin of attraction."""

    lat: float  # degrees
    lon: float  # degrees
    mass: float  # share of samples in the basin, in [0, 1]
    radius_km: float  # great-circle radius around the mode holding 50 % of the basin's samples
    country: str = ""  # ISO 3166-1 alpha-2 of the nearest GeoNames place

    def to_dict(self) -> dict[str, Any]:
        return {"lat": self.lat, "lon": self.lon, "mass": self.mass, "radius_km": self.radius_km,
                "country": self.country}


@dataclass(frozen=True, eq=False)
class Prediction:
    """The summary of one input's predicted distribution (see :func:`summarize`)."""

    input_id: str | None
    model: str
    encoder: str
    samples: np.ndarray  # (K, 2) degrees
    log_prob: np.ndarray  # (K,) nats per steradian
    best_guess: tuple[float, float]  # (lat, lon) degrees: a sample chosen by the model's rule (best_guess_index)
    localizability: float  # mean log-density of the samples (nats/sr) = minus the entropy
    modes: tuple[Mode, ...]
    regions: tuple[CredibleRegion, ...]  # HPD regions of mass 0.5 and 0.9
    country_probs: dict[str, float] = field(default_factory=dict)
    truth: tuple[float, float] | None = None  # (lat, lon) degrees when known
    guess_country: str = ""  # ISO 3166-1 alpha-2 of the best guess (not the most probable country)
    best_guess_rule: str = "density"  # a BEST_GUESS_RULES entry
    best_guess_source: str = "samples"  # "samples" (the same K samples) or "separate" (further samples)
    cfg: float | None = None  # guidance weight of the samples, when the caller states it
    best_guess_cfg: float | None = None  # guidance weight of the best guess's own samples (separate only)

    @property
    def best_guess_text(self) -> str:
        """How the best guess was chosen, in words."""
        text = BEST_GUESS_RULE_TEXT.get(self.best_guess_rule, self.best_guess_rule)
        if self.best_guess_source == "separate":
            w = "" if self.best_guess_cfg is None else f" at guidance w = {self.best_guess_cfg:g}"
            return f"{text}, from separate samples{w}"
        return f"{text} of the same samples"

    @property
    def top_country(self) -> str:
        return next(iter(self.country_probs), "")

    @property
    def top_country_prob(self) -> float:
        return next(iter(self.country_probs.values()), 0.0)

    def region(self, mass: float) -> CredibleRegion:
        """The credible region of the given nominal mass (0.5 or 0.9)."""
        for r in self.regions:
            if math.isclose(r.mass, mass):
                return r
        raise KeyError(f"no credible region of mass {mass}; have {[r.mass for r in self.regions]}")

    @property
    def error_km(self) -> float | None:
        """Great-circle distance from the best guess to the truth, when known."""
        if self.truth is None:
            return None
        return float(_great_circle_km(np.array([self.best_guess]), np.array([self.truth]))[0])

    def to_row(self) -> dict[str, Any]:
        """One flat row with exactly :data:`PREDICTION_COLUMNS` (+ ``true_lat, true_lon`` if known)."""
        r50, r90 = self.region(0.5), self.region(0.9)
        row = {
            "id": self.input_id or "", "pred_lat": self.best_guess[0], "pred_lon": self.best_guess[1],
            "guess_country": self.guess_country, "best_guess_rule": self.best_guess_text,
            "radius50_km": r50.radius_km, "radius90_km": r90.radius_km,
            "area50_km2": r50.area_km2, "area90_km2": r90.area_km2,
            "localizability": self.localizability, "top_country": self.top_country,
            "top_country_prob": self.top_country_prob, "model": self.model, "encoder": self.encoder,
        }
        if self.truth is not None:
            row["true_lat"], row["true_lon"] = self.truth
        return row

    def to_dict(self, *, include_samples: bool = False) -> dict[str, Any]:
        """A JSON-serialisable dict; samples ``[[lat, lon], ...]`` only when asked."""
        out: dict[str, Any] = {
            "id": self.input_id, "model": self.model, "encoder": self.encoder,
            "best_guess": {"lat": self.best_guess[0], "lon": self.best_guess[1], "country": self.guess_country,
                           "rule": self.best_guess_rule, "source": self.best_guess_source,
                           "cfg": self.best_guess_cfg if self.best_guess_source == "separate" else self.cfg,
                           "how": self.best_guess_text},
            "distribution": {"cfg": self.cfg, "num_samples": int(len(self.samples)),
                             "describes": "modes, credible_regions, country_probs, top_country, localizability"},
            "localizability": self.localizability,
            "modes": [m.to_dict() for m in self.modes],
            "credible_regions": [
                {"mass": r.mass, "area_km2": r.area_km2, "radius_km": r.radius_km,
                 "log_threshold": r.log_threshold} for r in self.regions
            ],
            "country_probs": dict(self.country_probs),
            "top_country": self.top_country, "top_country_prob": self.top_country_prob,
            "guess_country": self.guess_country, "best_guess_rule": self.best_guess_text,
            "num_samples": int(len(self.samples)),
        }
        if self.truth is not None:
            out["truth"] = {"lat": self.truth[0], "lon": self.truth[1]}
            out["error_km"] = self.error_km
        if include_samples:
            out["samples"] = np.round(self.samples, 5).tolist()
            out["log_prob"] = np.round(self.log_prob, 5).tolist()
        return out


def with_guidance(pred: Prediction, cfg: float | None, default_cfg: float | None,
                  best_guess_cfg: float | None) -> Prediction:
    """``pred`` with the guidance weights it came from recorded: its samples at ``cfg`` (None = the
    model's ``default_cfg``), and a separate best guess at the model's ``best_guess_cfg`` (None: the
    samples' own weight, a larger pass of the same distribution)."""
    w = default_cfg if cfg is None else cfg
    bg = (w if best_guess_cfg is None else best_guess_cfg) if pred.best_guess_source == "separate" else None
    return replace(pred, cfg=None if w is None else float(w), best_guess_cfg=None if bg is None else float(bg))


def _to_xyz(latlon_deg: np.ndarray) -> np.ndarray:
    """(N, 2) degrees → (N, 3) float64 unit vectors."""
    return latlon_to_xyz(torch.as_tensor(latlon_deg, dtype=torch.float64)).numpy()


def _to_latlon(xyz: np.ndarray) -> np.ndarray:
    """(N, 3) vectors → (N, 2) degrees."""
    return xyz_to_latlon(torch.as_tensor(xyz, dtype=torch.float64)).numpy()


def _great_circle_km(a_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """Distance (km) between matching rows of (N, 2) degree arrays, via atan2(|a×b|, a·b)."""
    a, b = _to_xyz(a_deg), _to_xyz(b_deg)
    return EARTH_RADIUS_KM * np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1))


def _angles(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(M, 3), (N, 3) unit vectors → (M, N) great-circle angles in radians."""
    return np.arccos(np.clip(x @ y.T, -1.0, 1.0))


def mean_shift(x: np.ndarray, seeds: np.ndarray, kappa: float, *, tol: float | None = None,
               max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Mean-shift on S² with the vMF kernel exp(κ(x·y − 1)).

    x: (K, 3) unit-vector samples; seeds: (M, 3) unit vectors (starting points).
    Each step replaces a point by the normalised kernel-weighted mean of the
    samples, which climbs the kernel density estimate. Returns the (M, 3)
    converged points and their (M,) kernel density values (unnormalised mean
    kernel). ``tol`` is the step length (radians) below which a point stops
    (default: 1/100 of the kernel width 1/√κ, well below the merge distance).
    """
    tol = 1e-2 / math.sqrt(kappa) if tol is None else tol
    y = seeds.copy()
    active = np.ones(len(y), dtype=bool)
    for _ in range(max_iter):
        if not active.any():
            break
        w = np.exp(kappa * (np.clip(y[active] @ x.T, -1.0, 1.0) - 1.0))  # (A, K)
        m = w @ x
        norm = np.linalg.norm(m, axis=-1, keepdims=True)
        moved = np.where(norm > 0, m / np.maximum(norm, 1e-300), y[active])
        step = np.linalg.norm(moved - y[active], axis=-1)
        idx = np.flatnonzero(active)
        y[idx] = moved
        active[idx[step < tol]] = False
    density = np.exp(kappa * (np.clip(y @ x.T, -1.0, 1.0) - 1.0)).mean(axis=1)
    return y, density


def _merge(points: np.ndarray, density: np.ndarray, merge_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Group converged (M, 3) points closer than ``merge_rad`` radians, densest first.

    Returns (G, 3) group representatives (the densest member) and (M,) group labels.
    """
    labels = np.full(len(points), -1)
    reps = []
    for i in np.argsort(-density, kind="stable"):
        if labels[i] >= 0:
            continue
        near = (labels < 0) & (_angles(points[i : i + 1], points)[0] < merge_rad)
        labels[near] = len(reps)
        reps.append(points[i])
    return np.array(reps).reshape(-1, 3), labels


def find_modes(samples_deg: np.ndarray, *, kernel_km: float = 150.0, top_k: int | None = 5,
               max_seeds: int = MAX_SEEDS, seed: int = 0) -> list[Mode]:
    """Modes of the (K, 2) degree samples by vMF mean-shift, sorted by decreasing basin mass.

    Converged points closer than ``kernel_km`` are merged. When K > ``max_seeds``,
    a fixed random subset of samples starts the trajectories and every other
    sample joins the basin of its nearest seed. ``country`` is left empty.
    """
    if kernel_km <= 0:
        raise ValueError(f"kernel_km must be > 0; got {kernel_km}")
    x = _to_xyz(np.asarray(samples_deg, dtype=np.float64).reshape(-1, 2))
    if len(x) == 0:
        return []
    kappa = (EARTH_RADIUS_KM / kernel_km) ** 2
    seed_idx = np.arange(len(x))
    if len(x) > max_seeds:
        seed_idx = np.sort(np.random.default_rng(seed).choice(len(x), max_seeds, replace=False))
    converged, density = mean_shift(x, x[seed_idx], kappa)
    reps, seed_labels = _merge(converged, density, kernel_km / EARTH_RADIUS_KM)
    if len(seed_idx) == len(x):
        labels = seed_labels
    else:  # nearest seed by largest dot product, in chunks to bound memory
        labels = np.concatenate([seed_labels[np.argmax(chunk @ x[seed_idx].T, axis=1)]
                                 for chunk in np.array_split(x, max(1, len(x) // 4096))])
    counts = np.bincount(labels, minlength=len(reps))
    order = np.argsort(-counts, kind="stable")  # by decreasing basin mass; radii only for the kept ones
    rep_deg = _to_latlon(reps)
    modes = []
    for g in order[:top_k] if top_k else order:
        dist = EARTH_RADIUS_KM * _angles(reps[g : g + 1], x[labels == g])[0]
        modes.append(Mode(float(rep_deg[g, 0]), float(rep_deg[g, 1]), float(counts[g] / len(x)),
                          float(np.median(dist))))
    return modes


def best_guess_index(samples_deg: np.ndarray, log_prob: np.ndarray, rule: str = "density") -> int:
    """Which of K samples ((K, 2) degrees, (K,) nats/sr) is the best guess.

    ``"density"``: the sample of highest density (PLONK's best-of-N; sharp, favours the tallest peak).
    ``"geoscore"``: the sample of highest expected GeoScore under the model,
    mean_j 5000·exp(−d(x, s_j) / 1492.7 km) over all samples s_j (a Monte Carlo Bayes decision:
    it favours the place with the most mass within ~1,500 km); the first GEOSCORE_CANDIDATES
    samples are the candidates, so the cost is ≤ 512 × K distances.
    """
    if rule == "density":
        return int(np.argmax(log_prob))
    if rule != "geoscore":
        raise ValueError(f"best guess rule {rule!r}: choose one of {BEST_GUESS_RULES}")
    x = _to_xyz(samples_deg)
    angle = _angles(x[:GEOSCORE_CANDIDATES], x)
    gain = np.exp(-angle * (EARTH_RADIUS_KM / GEOSCORE_SCALE_KM)).mean(axis=1)
    return int(np.argmax(gain))


def best_guesses(samples_deg: np.ndarray, log_prob: np.ndarray, rule: str = "density") -> np.ndarray:
    """Row-wise :func:`best_guess_index`: (M, K, 2) degrees and (M, K) nats/sr → (M, 2) degrees."""
    return np.stack([x[best_guess_index(x, lp, rule)] for x, lp in zip(samples_deg, log_prob)])


def calibrated_region(log_prob: np.ndarray, level: float, credible_masses: dict | None) -> CredibleRegion:
    """The region stated as ``level`` (e.g. 0.9), drawn at the calibrated HPD mass where one is given."""
    mass = float((credible_masses or {}).get(f"{level:g}", level))
    return replace(credible_region(log_prob, mass), mass=level)


def summarize(samples_deg: np.ndarray, log_prob: np.ndarray, *, model: str, encoder: str, top_k: int = 5,
              kernel_km: float = 150.0, input_id: str | None = None,
              truth_deg: tuple[float, float] | np.ndarray | None = None,
              credible_masses: dict | None = None, best_guess: str = "density",
              best_guess_point: tuple[float, float] | np.ndarray | None = None, cfg: float | None = None,
              best_guess_cfg: float | None = None) -> Prediction:
    """Summarise (K, 2) degree samples and their (K,) log-densities (nats/sr) into a :class:`Prediction`.

    best_guess: the rule of :func:`best_guess_index` (a model's ``best_guess`` field);
    best_guess_point: a (lat, lon) degrees best guess chosen elsewhere (from samples at the model's
    ``best_guess_cfg``), used instead of picking one from ``samples_deg``.

    credible_masses: optional {stated level: HPD mass} (a model's conformal calibration, e.g.
    {"0.9": 0.97}); each region keeps its stated level and is drawn at the calibrated mass.
    cfg, best_guess_cfg: the guidance weights of the samples and of the separate best guess, recorded.
    """
    samples = np.asarray(samples_deg, dtype=np.float64).reshape(-1, 2)
    lp = np.asarray(log_prob, dtype=np.float64).reshape(-1)
    if len(samples) == 0:
        raise ValueError("summarize: samples_deg is empty; need at least one sample")
    if len(lp) != len(samples):
        raise ValueError(f"summarize: {len(samples)} samples but {len(lp)} log_prob values")
    if not (np.isfinite(samples).all() and np.isfinite(lp).all()):
        raise ValueError("summarize: samples_deg and log_prob must be finite")
    modes = find_modes(samples, kernel_km=kernel_km, top_k=top_k)
    best = (samples[best_guess_index(samples, lp, best_guess)] if best_guess_point is None
            else np.asarray(best_guess_point, dtype=np.float64).reshape(2))
    ccs = country_codes(np.array([[m.lat, m.lon] for m in modes] + [list(best)]))
    modes = [Mode(m.lat, m.lon, m.mass, m.radius_km, str(cc)) for m, cc in zip(modes, ccs)]
    truth = None
    if truth_deg is not None:
        t = np.asarray(truth_deg, dtype=np.float64).reshape(-1)
        if t.shape != (2,) or not np.isfinite(t).all() or abs(t[0]) > 90:
            raise ValueError(f"summarize: truth_deg must be a finite (lat, lon) in degrees; got {truth_deg!r}")
        truth = (float(t[0]), float(t[1]))
    return Prediction(
        input_id=input_id, model=model, encoder=encoder, samples=samples, log_prob=lp,
        best_guess=(float(best[0]), float(best[1])), localizability=float(lp.mean()),
        modes=tuple(modes), regions=tuple(calibrated_region(lp, m, credible_masses) for m in CREDIBLE_MASSES),
        country_probs=country_probabilities(samples, top_k=10), truth=truth, guess_country=str(ccs[-1]),
        best_guess_rule=best_guess, best_guess_source="samples" if best_guess_point is None else "separate",
        cfg=None if cfg is None else float(cfg), best_guess_cfg=None if best_guess_cfg is None else float(best_guess_cfg),
    )
