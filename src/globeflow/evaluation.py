"""Cross-validated evaluation of generative models and baselines (the paper's comparison table).

Data: embeddings (N, D) float32, coordinates (N, 2) degrees, photographer groups (N,) str.
Folds are group-aware: a photographer's photos all fall in one fold. Every model is fitted
on the training folds only; the ``tuned`` guidance weight is chosen by an inner group split
of the training folds (never the test fold). Per photo we keep the point estimate, one random
sample, the log-density of the truth and the log-densities of K own samples (nats per
steradian); metrics are computed from these per photo, pooled over folds, with 95 %
intervals from a bootstrap over photographers.

Training recipe of the generative models (density first): each fold's training photographers are
split once more (``tune_frac`` held out); the model trains on the rest with warmup + cosine
learning rate and EMA weights, validating every ``val_every`` steps on the NLL of the held-out
photographers' locations under the null condition (the prior that guidance shrinks towards),
and keeps the best EMA weights (early stopping after ``patience`` validations without gain). The
same held-out photographers choose the ``tuned`` guidance. A model name ending in ``+prior``
also trains on ``prior_rows`` extra *unconditional* locations (MP-16 Flickr photos by default)
under the null condition; the baselines that can use such rows (cells, vmf_mixture) fit their
prior part on them as well.

Densities: ``rfm`` samples carry their exact along-trajectory density (discrete sampler);
the truth's density is the probability-flow ODE (``Geolocator.log_prob``, RK4,
``density_steps``). ``fm``/``diffusion`` densities are direction densities by a radial
Gauss–Legendre quadrature of ODE solves (:func:`globeflow.density.direction_log_prob`) — far
slower, so they are computed for ``r3_photos`` photos per fold and ``r3_samples`` samples.
``fm``/``diffusion`` samples come from the ``heun`` ODE sampler without the official x̂₀ clamp, so that
samples and densities describe one model (:func:`ode_sampler`).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from globeflow import metrics as M
from globeflow.credible import conformal_masses, coverage_ranks, credible_region
from globeflow.prediction import BEST_GUESS_RULES, best_guesses

log = logging.getLogger(__name__)

GENERATIVE = ("rfm", "fm", "diffusion")
BASELINES = ("regression", "cells", "retrieval", "vmf", "vmf_mixture")
ALL_MODELS = GENERATIVE + BASELINES
PRIOR_SUFFIX = "+prior"  # model name suffix: also train on the extra unconditional rows
PRIOR_MODELS = GENERATIVE + ("cells", "vmf_mixture")  # models that can use those rows
TUNE_METRICS = ("nll", "geoscore")
MP16 = Path(__file__).resolve().parents[3] / "shared" / "data" / "mp16" / "coordinates_100k.csv"


def base_model(name: str) -> str:
    """'rfm+prior' → 'rfm'; 'cells' → 'cells'."""
    return name.removesuffix(PRIOR_SUFFIX)


def uses_prior(name: str) -> bool:
    return name.endswith(PRIOR_SUFFIX)


def check_models(models: Sequence[str]) -> None:
    """Raise a ValueError naming every unknown model (or a ``+prior`` variant of one that cannot use them)."""
    bad = [m for m in models if base_model(m) not in ALL_MODELS or (uses_prior(m) and base_model(m) not in PRIOR_MODELS)]
    if bad or not models:
        raise ValueError(f"unknown models {bad or list(models)}; choose from {list(ALL_MODELS)}, "
                         f"or {', '.join(m + PRIOR_SUFFIX for m in PRIOR_MODELS)}")


def load_prior_rows(path: str | Path, rows: int, seed: int = 0) -> np.ndarray:
    """(rows, 2) degrees: a fixed random subset of a LAT,LON CSV (the MP-16 location sample by default);
    rows with invalid coordinates are dropped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prior rows: no such file {path} (a CSV with LAT,LON columns)")
    ll = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1), ndmin=2)
    ll = ll[np.isfinite(ll).all(1) & (np.abs(ll[:, 0]) <= 90)]
    if rows < len(ll):
        ll = ll[np.sort(np.random.default_rng(seed).choice(len(ll), rows, replace=False))]
    return ll


# ---------------------------------------------------------------- data and folds

@dataclass
class EvalData:
    """Labelled rows: ids (N,) str, emb (N, D) float32, latlon (N, 2) degrees, groups (N,) str."""

    ids: np.ndarray
    emb: np.ndarray
    latlon: np.ndarray
    groups: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, idx: np.ndarray) -> "EvalData":
        return EvalData(self.ids[idx], self.emb[idx], self.latlon[idx], self.groups[idx])

    @classmethod
    def from_arrays(cls, ids, emb, latlon, groups) -> tuple["EvalData", int]:
        """Keep rows with finite embeddings and valid coordinates; returns (data, rows dropped).

        A row without a group becomes its own group (``id:<id>``).
        """
        ids = np.asarray(ids, dtype=str)
        emb = np.asarray(emb, dtype=np.float32)
        ll = np.asarray(latlon, dtype=np.float64).reshape(len(ids), 2)
        groups = np.asarray(groups, dtype=str)
        ok = (np.isfinite(ll).all(1) & (np.abs(ll[:, 0]) <= 90) & (np.abs(ll[:, 1]) <= 180)
              & np.isfinite(emb).all(1))
        groups = np.where(groups == "", np.char.add("id:", ids), groups)
        return cls(ids[ok], emb[ok], ll[ok], groups[ok]), int((~ok).sum())

    @classmethod
    def from_store(cls, path: str | Path) -> tuple["EvalData", int]:
        """All usable rows of an embedding store; unlabelled/bad rows are dropped and counted."""
        from globeflow.data.store import EmbeddingStore

        a = EmbeddingStore(path).load(labelled_only=False)
        return cls.from_arrays(a.ids, a.embeddings, a.latlon, a.groups)


def group_folds(groups: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """(N,) fold index in [0, k): whole groups, balanced by photo count (largest groups first)."""
    groups = np.asarray(groups, dtype=str)
    uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if k < 2:
        raise ValueError(f"folds must be at least 2; got {k}")
    if len(uniq) < k:
        raise ValueError(f"{k} folds need at least {k} groups (photographers); the data has {len(uniq)}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]
    sizes, fold_of = np.zeros(k, dtype=np.int64), np.empty(len(uniq), dtype=np.int64)
    for g in order:
        f = int(np.argmin(sizes))
        fold_of[g], sizes[f] = f, sizes[f] + counts[g]
    return fold_of[inverse.reshape(-1)]


def inner_split(groups: Sequence[str], frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of a group-aware split of the given rows (``training.val_mask``)."""
    from globeflow.training import val_mask

    mask = val_mask(groups, frac, split_seed=seed)
    if mask.all() or not mask.any():
        raise ValueError("the tuning split needs photographers on both sides; use more training data")
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class EvalSettings:
    """How models are trained, sampled and scored."""

    samples: int = 64  # K own samples per photo (calibration, localizability)
    best_of: int = 32  # N for the best-of-N point estimate by density (the first N of the K samples)
    point_rule: str = "density"  # a prediction.BEST_GUESS_RULES entry: "geoscore" = over all K own samples
    point_samples: int = 0  # geoscore rule: a separate plain pass of this many samples per photo (0: the K)
    steps: int = 16  # sampler steps
    seed: int = 0
    density_steps: int = 32  # RK4 steps of the ODE densities
    r3_photos: int = 25  # photos per fold with fm/diffusion densities (0 = all)
    r3_samples: int = 32  # own samples per photo with fm/diffusion densities
    r3_nodes: int = 12  # radial Gauss–Legendre nodes (in asinh of the radius, see density.RadialShell)
    train_steps: int = 2000  # most optimizer steps (early stopping may end sooner)
    dim: int = 128
    depth: int = 3
    batch_size: int = 256
    prior_steps: int = 0  # most optimizer steps of ``+prior`` generative models (0: train_steps)
    prior_batch_size: int = 0  # their batch (0: batch_size): 100,000 clustered rows need more than the photos
    prior_fourier_features: int = 64  # their Fourier position features (0: PLONK's Linear on y; see
    prior_fourier_scale: int = 512  # network.FourierFeatures) and highest angular frequency, rad⁻¹
    lr: float = 2e-3  # peak of warmup + cosine
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cond_drop: float = 0.5  # null-condition rate: the prior that cfg < 0 shrinks towards
    val_every: int = 250  # steps between validations (held-out photographers' NLL, null condition)
    patience: int = 3  # validations without improvement before stopping; 0 = train every step
    val_photos: int = 300  # held-out photos whose NLL drives early stopping (0 = all)
    prior_rows: int = 100_000  # extra unconditional rows of the ``+prior`` models
    prior_file: str = str(MP16)
    prior_repeat: int = 10  # times the photos are repeated beside the prior rows (photo share per batch)
    tune_grid: tuple[float, ...] = (-1.0, -0.5, 0.0, 1.0, 2.0)  # w < 0: towards the prior
    tune_frac: float = 0.25  # photographers of the training folds held out to choose cfg
    tune_metric: str = "nll"  # nll (minimise) | geoscore (maximise)
    tune_photos: int = 150  # held-out photos scored per candidate (0 = all)
    n_boot: int = 1000

    def __post_init__(self) -> None:
        for name in ("samples", "best_of", "steps", "density_steps", "r3_samples", "r3_nodes", "train_steps",
                     "dim", "depth", "batch_size", "n_boot", "val_every", "prior_rows", "prior_repeat"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)!r}")
        if self.best_of > self.samples:
            raise ValueError(f"best_of ({self.best_of}) cannot exceed samples ({self.samples})")
        if min(self.r3_photos, self.tune_photos, self.val_photos, self.patience, self.prior_steps,
               self.prior_batch_size, self.prior_fourier_features) < 0:
            raise ValueError("r3_photos, tune_photos, val_photos, patience, prior_steps, prior_batch_size and "
                             "prior_fourier_features must be >= 0")
        if self.point_rule not in BEST_GUESS_RULES:
            raise ValueError(f"point_rule must be one of {BEST_GUESS_RULES}; got {self.point_rule!r}")
        if self.point_samples < 0 or (self.point_samples and self.point_rule != "geoscore"):
            raise ValueError("point_samples must be ≥ 0, and > 0 only with point_rule='geoscore' (the rule that "
                             f"needs no densities); got {self.point_samples} with {self.point_rule!r}")
        if self.tune_metric not in TUNE_METRICS:
            raise ValueError(f"tune_metric must be one of {TUNE_METRICS}; got {self.tune_metric!r}")
        if not 0.0 < self.tune_frac < 1.0:
            raise ValueError(f"tune_frac must be in (0, 1); got {self.tune_frac}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["tune_grid"] = list(self.tune_grid)
        return out


# ---------------------------------------------------------------- per-photo predictions

@dataclass
class Predictions:
    """One model (one cfg) on M test photos.

    point (M, 2) degrees; draw (M, 2) one random sample (for PRDC); truth_lp (M,) nats/sr
    (NaN where not computed); sample_lp (M, K) nats/sr of own samples (NaN rows where not
    computed, or None for a model without a density).
    """

    point: np.ndarray
    draw: np.ndarray
    truth_lp: np.ndarray
    sample_lp: np.ndarray | None


def _nan(shape) -> np.ndarray:
    return np.full(shape, np.nan)


def predict_baseline(model, test: EvalData, s: EvalSettings, seed: int) -> Predictions:
    """Point estimate, samples and densities of a fitted baseline (``globeflow.baselines``)."""
    samples = model.sample(test.emb, s.samples, seed=seed)  # (M, K, 2)
    point = model.point_estimate(test.emb)
    try:
        truth = model.log_prob(test.emb, test.latlon)
    except NotImplementedError:  # regression: no density
        return Predictions(point, samples[:, 0], _nan(len(test)), None)
    rep = np.repeat(test.emb, s.samples, axis=0)
    lp = model.log_prob(rep, samples.reshape(-1, 2)).reshape(len(test), s.samples)
    return Predictions(point, samples[:, 0], np.asarray(truth, dtype=np.float64), lp)


def fit_baseline(name: str, train: EvalData, seed: int, prior: np.ndarray | None = None):
    """Fit baseline ``name`` ('cells', or 'cells+prior' with ``prior`` rows (P, 2) degrees) on ``train``."""
    from globeflow.baselines import make_baseline

    model = make_baseline(base_model(name))
    if prior is None or not uses_prior(name):
        return model.fit(train.emb, train.latlon, train.groups, seed=seed)
    return model.fit(train.emb, train.latlon, train.groups, seed=seed, prior=prior)


def training_rows(train: EvalData, prior: np.ndarray | None, repeat: int):
    """The training stream's rows: the photos with their embeddings; with ``prior`` (P, 2) degrees, the
    photos repeated ``repeat`` times plus the prior rows under the null (zero) embedding."""
    from globeflow import training as T

    if prior is None or len(prior) == 0:
        return T.MemoryData.from_latlon(train.latlon, train.emb)
    emb = np.concatenate([np.tile(train.emb, (repeat, 1)), np.zeros((len(prior), train.emb.shape[1]), np.float32)])
    return T.MemoryData.from_latlon(np.concatenate([np.tile(train.latlon, (repeat, 1)), prior]), emb)


def train_generative(family: str, train: EvalData, s: EvalSettings, seed: int, out: Path, *,
                     val: EvalData | None = None, prior: np.ndarray | None = None):
    """Train a denoiser on ``train`` (plus ``prior`` rows under the null condition) into ``out``.

    Returns EMA weights as a Geolocator: with ``val`` photos, the weights of lowest NLL of their
    locations under the null condition (checked every ``val_every`` steps; early stopping after
    ``patience`` checks without gain), else the last. ``geo.info.training`` holds step and best_step.
    """
    from globeflow import training as T
    from globeflow.checkpoints import ModelInfo
    from globeflow.geolocator import Geolocator

    checks = val is not None and len(val) > 0
    with_prior = prior is not None and len(prior) > 0
    steps = (s.prior_steps or s.train_steps) if with_prior else s.train_steps
    batch = (s.prior_batch_size or s.batch_size) if with_prior else s.batch_size
    fourier = (s.prior_fourier_features, s.prior_fourier_scale) if with_prior and s.prior_fourier_features else (0, 0)
    cfg = T.TrainConfig(family=family, dim=s.dim, depth=s.depth, fourier_features=fourier[0],
                        fourier_scale=fourier[1], steps=steps, batch_size=batch,
                        lr=s.lr, weight_decay=s.weight_decay, warmup_steps=min(200, steps // 5),
                        ema_decay=s.ema_decay, cond_drop=s.cond_drop, seed=seed, val_frac=0.0,
                        val_every=s.val_every if checks else 10**9, val_max=len(val) if checks else 1,
                        val_nll_points=len(val) if checks else 0, val_nll_steps=32 if fourier[0] else 16,
                        patience=s.patience if checks else 0, checkpoint_every=10**9,
                        log_every=max(1, steps))
    held = None
    if checks:  # the null condition: the prior that guidance w < 0 shrinks towards
        held = T.MemoryData.from_latlon(val.latlon, np.zeros_like(val.emb))
    T.train(cfg, T.MemorySource(training_rows(train, prior, s.prior_repeat), seed), out, val=held,
            info=ModelInfo(model_id=f"eval-{family}"), resume=False)
    return Geolocator.from_pretrained(out / "best" if checks and (out / "best").is_dir() else out)


def ode_sampler(geo) -> dict:
    """Sampler arguments whose samples follow the model's density (one rule: ``Geolocator.ode_sampler``)."""
    return geo.ode_sampler()


def r3_densities(geo, emb: np.ndarray, truth: np.ndarray, cfg: float, s: EvalSettings,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fm/diffusion: (samples (M, K, 2) degrees, truth log p (M,), sample log p (M, K)) in nats/sr.

    One sampler call gives K samples per photo; their radii fix each photo's radial shell, and the
    truth's direction and the K sample directions are integrated together (one ODE batch).
    """
    from globeflow import sphere

    e = torch.as_tensor(emb, dtype=geo.dtype)
    xyz = geo.sample(e, s.r3_samples, steps=s.steps, cfg=cfg, seed=seed, return_xyz=True, **ode_sampler(geo)).double()
    u_truth = sphere.latlon_to_xyz(torch.as_tensor(truth, dtype=torch.float64))
    lp = _direction_log_probs(geo, e, torch.cat([sphere.normalize(xyz), u_truth[:, None]], dim=1), xyz, cfg, s)
    return sphere.xyz_to_latlon(xyz).numpy(), lp[:, -1], lp[:, :-1]


def _direction_log_probs(geo, e: torch.Tensor, u: torch.Tensor, xyz: torch.Tensor, cfg: float,
                         s: EvalSettings, max_points: int = 8192) -> np.ndarray:
    """(M, K) direction log-densities (nats/sr) of unit u (M, K, 3); each photo's shell from its own
    samples xyz (M, S, 3); photos batched up to ``max_points`` ODE points per solve."""
    from globeflow import density

    if len(e) == 0:
        return np.zeros((0, u.shape[1]))
    shell = density.RadialShell.from_radii(xyz.norm(dim=-1))
    grid = density.gamma_grid(geo.schedule, s.density_steps, geo.dtype, data_dense=geo.sharp_field)
    per, out = max(1, max_points // (u.shape[1] * s.r3_nodes)), []
    for i in range(0, len(e), per):
        rows = slice(i, i + per)
        with torch.no_grad():
            out.append(density.direction_log_prob(geo.field(e[rows], cfg), geo.family, u[rows].to(geo.dtype),
                                                  shell.rows(rows), grid, nodes=s.r3_nodes).double())
    return torch.cat(out).numpy()


def predict_generative(geo, test: EvalData, cfg: float, s: EvalSettings, seed: int,
                       density_rows: np.ndarray | None = None) -> Predictions:
    """Point estimate (``s.point_rule``) and densities of a Geolocator at guidance ``cfg``.

    rfm: K samples with their exact sampler densities for every photo, the truth by the ODE.
    fm/diffusion: densities only for ``density_rows`` (indices; default all); the point estimate
    comes from the samples with densities there, and is NaN elsewhere.
    """
    m = len(test)
    seeds = [seed + i for i in range(m)]
    own = separate_points(geo, test.emb, cfg, s, seeds)
    if geo.family == "rfm":
        ll, lp = geo.sample(test.emb, s.samples, steps=s.steps, cfg=cfg, seed=seeds, return_log_prob=True)
        ll, lp = ll.double().numpy(), lp.double().numpy()
        truth = geo.log_prob(test.emb, test.latlon, cfg=cfg, steps=s.density_steps).double().numpy()
        return Predictions(_point(ll, lp, s) if own is None else own, ll[:, 0], truth, lp)
    rows = np.arange(m) if density_rows is None else np.asarray(density_rows, dtype=np.int64)
    draws = geo.sample(test.emb, 1, steps=s.steps, cfg=cfg, seed=seeds, **ode_sampler(geo)).double().numpy()[:, 0]
    point, truth, lp = _nan((m, 2)) if own is None else own, _nan(m), _nan((m, s.r3_samples))
    if len(rows):
        ll, t_lp, s_lp = r3_densities(geo, test.emb[rows], test.latlon[rows], cfg, s, seed)
        truth[rows], lp[rows] = t_lp, s_lp
        if own is None:
            point[rows] = _point(ll, s_lp, s)
    return Predictions(point, draws, truth, lp)


def separate_points(geo, emb: np.ndarray, cfg: float, s: EvalSettings, seeds: list[int],
                    batch: int = 64) -> np.ndarray | None:
    """(M, 2) degrees: with ``s.point_samples``, each photo's sample of highest expected GeoScore among
    that many plain samples of the density's own sampler (no densities needed, so every photo gets
    one, fm/diffusion included); None without (the point comes from the samples with densities)."""
    if not s.point_samples:
        return None
    out = []
    for i in range(0, len(emb), batch):
        ll = geo.sample(emb[i:i + batch], s.point_samples, steps=s.steps, cfg=cfg, seed=seeds[i:i + batch],
                        **ode_sampler(geo)).double().numpy()
        out.append(best_guesses(ll, np.zeros(ll.shape[:2]), "geoscore"))
    return np.concatenate(out) if out else np.zeros((0, 2))


def _point(latlon: np.ndarray, lp: np.ndarray, s: EvalSettings) -> np.ndarray:
    """(M, 2) degrees: the best of the first ``s.best_of`` samples by density, or with
    ``point_rule="geoscore"`` the sample of highest expected GeoScore among all K (as ``predict``)."""
    if s.point_rule == "geoscore":
        return best_guesses(latlon, lp, "geoscore")
    return latlon[np.arange(len(latlon)), lp[:, :s.best_of].argmax(1)]


def density_subset(m: int, s: EvalSettings, seed: int) -> np.ndarray:
    """Indices of the fm/diffusion density photos of a fold of m photos (sorted)."""
    if s.r3_photos <= 0 or s.r3_photos >= m:
        return np.arange(m)
    return np.sort(np.random.default_rng(seed).choice(m, s.r3_photos, replace=False))


# ---------------------------------------------------------------- tuning cfg

def subsample(data: EvalData, n: int, seed: int) -> EvalData:
    """At most n rows of ``data`` (a fixed random subset in the original order); n = 0: all."""
    if n <= 0 or len(data) <= n:
        return data
    return data.select(np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False)))


def truth_log_prob(geo, emb: np.ndarray, latlon: np.ndarray, cfg: float, s: EvalSettings, seed: int) -> np.ndarray:
    """(M,) log-density of the truths (nats/sr), nothing else: the ODE for rfm, the radial
    quadrature on the shell of ``r3_samples`` samples for fm/diffusion."""
    if geo.family == "rfm":
        return geo.log_prob(emb, latlon, cfg=cfg, steps=s.density_steps).double().numpy()
    from globeflow import sphere

    e = torch.as_tensor(emb, dtype=geo.dtype)
    xyz = geo.sample(e, s.r3_samples, steps=s.steps, cfg=cfg, seed=seed, return_xyz=True, **ode_sampler(geo)).double()
    u = sphere.latlon_to_xyz(torch.as_tensor(latlon, dtype=torch.float64))[:, None]
    return _direction_log_probs(geo, e, u, xyz, cfg, s)[:, 0]


def tune_cfg(geo, held: EvalData, s: EvalSettings, seed: int) -> tuple[float, dict[str, float]]:
    """Choose cfg among ``s.tune_grid`` on photographers held out of the model's training (never the
    test fold): each candidate is scored on (at most ``tune_photos`` of) their photos by mean NLL of
    the truth (lowest wins) or best-of-N GeoScore (highest wins). Returns (cfg, scores)."""
    val = subsample(held, s.tune_photos, seed)
    scores = {}
    for w in s.tune_grid:
        if s.tune_metric == "nll":
            scores[f"{w:g}"] = float(-truth_log_prob(geo, val.emb, val.latlon, w, s, seed).mean())
        else:
            pred = predict_generative(geo, val, w, s, seed)
            scores[f"{w:g}"] = float(M.geoscore(M.haversine_km(pred.point, val.latlon)).mean())
    pick = min if s.tune_metric == "nll" else max
    best = pick(scores, key=scores.get)
    return float(best), scores


# ---------------------------------------------------------------- per-photo metrics

def truth_admin_keys(latlon: np.ndarray) -> dict[str, np.ndarray]:
    """Composite admin keys of the reverse-geocoded truths (None where a level is missing)."""
    from globeflow.geocoding import reverse_geocode

    return M.truth_keys_from_places(reverse_geocode(latlon))


STATED_LEVELS = (0.5, 0.9)


def photo_metrics(pred: Predictions, truth_deg: np.ndarray, truth_keys: dict[str, np.ndarray],
                  stated: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """(M,) per-photo values (NaN = not available for that photo) of every averaged metric.

    ``stated``: {level: HPD mass} fitted on held-out photographers (:func:`stated_masses`), for the
    coverage of the regions a model states at each of STATED_LEVELS (NaN without it)."""
    from globeflow.geocoding import reverse_geocode

    m = len(truth_deg)
    ok = np.isfinite(pred.point).all(1)
    d = _nan(m)
    d[ok] = M.haversine_km(pred.point[ok], truth_deg[ok])
    out = {"dist_km": d, "geoscore": np.where(ok, M.geoscore(np.nan_to_num(d)), np.nan)}
    for r in M.RADII_KM:
        out[f"acc_{r:g}km"] = np.where(ok, d < r, np.nan)
    pkeys = M.place_keys(reverse_geocode(pred.point[ok])) if ok.any() else {lv: np.zeros(0, object) for lv in M.LEVELS}
    for lv in M.LEVELS:
        hit = _nan(m)
        known = ok & np.array([k is not None for k in truth_keys[lv]], dtype=bool)
        hit[known] = pkeys[lv][known[ok]] == truth_keys[lv][known]
        out[f"{lv}_acc"] = hit
    out["nll_nats"] = -np.asarray(pred.truth_lp, dtype=np.float64)
    lp = pred.sample_lp if pred.sample_lp is not None else _nan((m, 1))
    dens = np.isfinite(lp).all(1)
    neg_h = np.where(dens, np.mean(np.nan_to_num(lp), axis=1), np.nan)
    out["neg_entropy_nats"] = neg_h
    out["info_gain_bits"] = (neg_h + math.log(4 * math.pi)) / math.log(2)
    out["localizability_official"] = neg_h / (4 * math.pi * math.log(2))
    both = dens & np.isfinite(pred.truth_lp)
    for mass in M.MASSES:
        out[f"calib_{mass:g}_coverage"], out[f"calib_{mass:g}_area_km2"] = _region_coverage(lp, pred.truth_lp, both, mass)
    for level in STATED_LEVELS:
        rows = both if stated else np.zeros(m, dtype=bool)
        mass = stated[f"{level:g}"] if stated else level
        out[f"stated_{level:g}_coverage"], out[f"stated_{level:g}_area_km2"] = _region_coverage(lp, pred.truth_lp, rows, mass)
    return out


def _region_coverage(lp: np.ndarray, truth_lp: np.ndarray, rows: np.ndarray, mass: float) -> tuple[np.ndarray, np.ndarray]:
    """(M,) whether each truth lies in its HPD region of ``mass`` (from its own samples' log p (M, K))
    and that region's area in km²; NaN outside the boolean ``rows``."""
    cov, area = _nan(len(lp)), _nan(len(lp))
    for i in np.flatnonzero(rows):
        region = credible_region(lp[i], mass)
        cov[i], area[i] = float(truth_lp[i] >= region.log_threshold), region.area_km2
    return cov, area


def stated_masses(geo, held: EvalData, cfg: float, s: EvalSettings, seed: int) -> dict[str, float]:
    """Split-conformal HPD masses {level: mass} for STATED_LEVELS from (up to ``val_photos`` of) the
    held-out photographers' photos at guidance ``cfg``: what ``Geolocator.credible_masses`` states
    (rfm only; their own samples' densities are exact and cheap)."""
    pred = predict_generative(geo, subsample(held, s.val_photos, seed), cfg, s, seed)
    return conformal_masses(coverage_ranks(pred.truth_lp, pred.sample_lp), STATED_LEVELS)


# ---------------------------------------------------------------- summaries

def _nanmedian(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


# summary metric → (per-photo column, statistic)
SUMMARY: dict[str, tuple[str, Callable[[np.ndarray], float]]] = {
    "geoscore": ("geoscore", _nanmean), "mean_km": ("dist_km", _nanmean), "median_km": ("dist_km", _nanmedian),
    **{f"acc_{r:g}km": (f"acc_{r:g}km", _nanmean) for r in M.RADII_KM},
    **{f"{lv}_acc": (f"{lv}_acc", _nanmean) for lv in M.LEVELS},
    "nll_nats": ("nll_nats", _nanmean),
    "bits_per_dim_official": ("nll_nats", lambda x: float(M.bits_per_dim_official(_nanmean(x)))),
    "localizability_official": ("localizability_official", _nanmean),
    "neg_entropy_nats": ("neg_entropy_nats", _nanmean), "info_gain_bits": ("info_gain_bits", _nanmean),
    **{f"calib_{m:g}_coverage": (f"calib_{m:g}_coverage", _nanmean) for m in M.MASSES},
    **{f"calib_{m:g}_area_km2": (f"calib_{m:g}_area_km2", _nanmedian) for m in M.MASSES},
    **{f"stated_{m:g}_coverage": (f"stated_{m:g}_coverage", _nanmean) for m in STATED_LEVELS},
    **{f"stated_{m:g}_area_km2": (f"stated_{m:g}_area_km2", _nanmedian) for m in STATED_LEVELS},
}
PRDC_KEYS = ("precision", "recall", "density", "coverage")


def _counts(table: dict[str, np.ndarray]) -> dict[str, float]:
    return {"n": float(np.isfinite(table["dist_km"]).sum()), "n_density": float(np.isfinite(table["nll_nats"]).sum())}


def summarize_table(table: dict[str, np.ndarray], truth: np.ndarray, draws: np.ndarray) -> dict[str, float]:
    """Plain metric values of one set of photos (one fold, or a train/test evaluation)."""
    out = {name: fn(table[col]) for name, (col, fn) in SUMMARY.items()}
    out.update({f"prdc_{k}": v for k, v in M.prdc(truth, draws).items()})
    out.update(_counts(table))
    return out


def _boot_weights(groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, N) photo weights: how many times each photo's group was drawn."""
    _, inverse = np.unique(groups, return_inverse=True)
    g = inverse.max() + 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot)  # (B, G) draws with replacement
    return counts[:, inverse.reshape(-1)].astype(np.float64)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


def bootstrap_intervals(table: dict[str, np.ndarray], groups: np.ndarray, n_boot: int, seed: int,
                        level: float = 0.95) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of every SUMMARY metric by resampling photographers.

    Equivalent to ``metrics.bootstrap_ci`` (groups drawn with replacement; a group drawn twice
    counts twice), vectorised as weights.
    """
    W = _boot_weights(groups, n_boot, seed)
    a = (1 - level) / 2
    out = {}
    for name, (col, fn) in SUMMARY.items():
        x = table[col]
        ok = np.isfinite(x)
        if not ok.any():
            out[name] = (math.nan, math.nan)
            continue
        w, v = W[:, ok], x[ok]
        if fn is _nanmedian:
            stats = np.array([_weighted_median(v, wi) if wi.sum() else math.nan for wi in w])
        else:
            tot = w.sum(1)
            stats = np.where(tot > 0, (w @ v) / np.where(tot > 0, tot, 1), np.nan)
            if name == "bits_per_dim_official":
                stats = M.bits_per_dim_official(stats)
        stats = stats[np.isfinite(stats)]
        out[name] = (float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a)))
    return out


def prdc_intervals(truth: np.ndarray, draws: np.ndarray, groups: np.ndarray, n_boot: int, seed: int,
                   level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Intervals for PRDC by half-sampling photographers (without replacement: a duplicated
    point would shrink the k-NN radii to 0). Half-samples have about the variance of the full
    estimate; their spread around their own mean is re-centred on the full-data value."""
    full = M.prdc(truth, draws)
    uniq, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    d_rr, d_ff, d_rf = M.prdc_distances(truth, draws)  # once; each half-sample takes rows and columns
    reps = []
    for _ in range(max(20, n_boot // 10)):
        keep = np.flatnonzero(np.isin(inverse, rng.choice(len(uniq), max(1, len(uniq) // 2), replace=False)))
        if len(keep) > 4:
            sub = np.ix_(keep, keep)
            reps.append(M.prdc_from_distances(d_rr[sub], d_ff[sub], d_rf[sub]))
    reps = np.asarray(reps)
    a = (1 - level) / 2
    out = {}
    for j, k in enumerate(PRDC_KEYS):
        if len(reps) == 0:
            out[f"prdc_{k}"] = (math.nan, math.nan)
            continue
        dev = reps[:, j] - reps[:, j].mean()
        lo, hi = full[k] + np.quantile(dev, a), full[k] + np.quantile(dev, 1 - a)
        top = math.inf if k == "density" else 1.0  # density may exceed 1, the others are fractions
        out[f"prdc_{k}"] = (float(max(0.0, min(lo, full[k]))), float(min(top, max(hi, full[k]))))
    return out


def summarize_folds(tables: list[dict[str, np.ndarray]], truths: list[np.ndarray], draws: list[np.ndarray],
                    groups: list[np.ndarray], n_boot: int, seed: int) -> dict[str, dict]:
    """{metric: {"mean": pooled value, "ci95": [lo, hi], "folds": [per-fold values]}}."""
    per_fold = [summarize_table(t, y, d) for t, y, d in zip(tables, truths, draws)]
    pooled = {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
    truth, draw, grp = np.concatenate(truths), np.concatenate(draws), np.concatenate(groups)
    total = summarize_table(pooled, truth, draw)
    ci = bootstrap_intervals(pooled, grp, n_boot, seed)
    ci.update(prdc_intervals(truth, draw, grp, n_boot, seed))
    out = {}
    for name, value in total.items():
        lo, hi = ci.get(name, (value, value))
        out[name] = {"mean": value, "ci95": [lo, hi], "folds": [f[name] for f in per_fold]}
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, groups: np.ndarray, n_boot: int, seed: int,
                      level: float = 0.95) -> dict:
    """Mean of a − b over the photos (M,) where both are finite, with a percentile interval from
    resampling photographers (the same replicates as :func:`bootstrap_intervals`)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return {"mean": math.nan, "ci95": [math.nan, math.nan], "n": 0}
    d = (a - b)[ok]
    w = _boot_weights(groups, n_boot, seed)[:, ok]
    tot = w.sum(1)
    stats = (w @ d)[tot > 0] / tot[tot > 0]
    q = (1 - level) / 2
    return {"mean": float(d.mean()), "ci95": [float(np.quantile(stats, q)), float(np.quantile(stats, 1 - q))],
            "n": int(ok.sum())}


def nll_comparisons(collected: dict, n_boot: int, seed: int) -> dict[str, dict]:
    """Each generative model and cfg against the baseline of lowest pooled NLL among those trained on
    no more data (no ``+prior`` baseline for a model without the prior rows): the paired NLL
    difference (nats/sr, negative = the generative model is better) on the photos both have."""
    pooled = {(name, key): (np.concatenate([r.table["nll_nats"] for r in runs]), np.concatenate([r.groups for r in runs]))
              for name, by_cfg in collected.items() for key, runs in by_cfg.items()}
    out = {}
    for (name, key), (nll, groups) in pooled.items():
        if base_model(name) not in GENERATIVE:
            continue
        rivals = {b: v[0] for (b, _), v in pooled.items() if base_model(b) in BASELINES
                  and (uses_prior(name) or not uses_prior(b)) and np.isfinite(v[0]).any()}
        if not rivals:
            continue
        best = min(rivals, key=lambda b: _nanmean(rivals[b]))
        out[f"{name} {key}"] = {"model": name, "cfg": key, "baseline": best, "baseline_nll": _nanmean(rivals[best]),
                                **paired_difference(nll, rivals[best], groups, n_boot, seed)}
    return out


# ---------------------------------------------------------------- the whole evaluation

@dataclass
class FoldRun:
    """Everything measured for one model and cfg key on one test set."""

    table: dict[str, np.ndarray]
    truth: np.ndarray
    draw: np.ndarray
    groups: np.ndarray
    cfg: float


@dataclass
class Evaluation:
    """Results: ``report`` in the JSON schema, plus what was chosen and how long it took."""

    report: dict = field(default_factory=dict)
    tuned: dict = field(default_factory=dict)  # generative model → [{fold, cfg, scores, train_n, val_n, steps}]
    comparisons: dict = field(default_factory=dict)  # "model cfg=…" → paired NLL difference vs the best baseline
    seconds: dict = field(default_factory=dict)  # model → wall seconds
    cpu_seconds: dict = field(default_factory=dict)
    splits: list = field(default_factory=list)  # [(train ids, test ids)] per fold


def _cpu() -> float:
    return time.process_time()


def _cfg_key(w) -> str:
    return "cfg=tuned" if w == "tuned" else f"cfg={float(w):g}"


def run_model(name: str, train: EvalData, test: EvalData, cfgs: Sequence, s: EvalSettings, seed: int,
              truth_keys: dict, workdir: Path, prior: np.ndarray | None = None) -> tuple[dict[str, FoldRun], list[dict]]:
    """Fit ``name`` on ``train`` (``+prior`` names: also on ``prior`` rows) and score it on ``test`` for
    each cfg ('tuned' allowed). Returns (runs by cfg key, [one training record for a generative model])."""
    runs = {}
    prior = prior if uses_prior(name) else None
    if base_model(name) not in GENERATIVE:
        model = fit_baseline(name, train, seed, prior)
        pred = predict_baseline(model, test, s, seed)
        runs["cfg=0"] = FoldRun(photo_metrics(pred, test.latlon, truth_keys), test.latlon, pred.draw, test.groups, 0.0)
        return runs, []
    tr, va = inner_split(train.groups, s.tune_frac, seed)
    inner, held = train.select(tr), train.select(va)
    geo = train_generative(base_model(name), inner, s, seed, workdir / f"{name}-model",
                           val=subsample(held, s.val_photos, seed), prior=prior)
    record = {"train_n": len(inner), "val_n": len(held), "val_ids": held.ids.tolist(),
              "steps_run": int(geo.info.training.get("step", 0)), "best_step": geo.info.training.get("best_step")}
    rows = None if base_model(name) == "rfm" else density_subset(len(test), s, seed)
    for w in cfgs:
        if w == "tuned":
            value, record["scores"] = tune_cfg(geo, held, s, seed)
            record["cfg"] = value
        else:
            value = float(w)
        pred = predict_generative(geo, test, value, s, seed, density_rows=rows)
        stated = stated_masses(geo, held, value, s, seed) if rows is None and len(held) else None
        if stated:
            record.setdefault("stated_masses", {})[_cfg_key(w)] = stated
        runs[_cfg_key(w)] = FoldRun(photo_metrics(pred, test.latlon, truth_keys, stated), test.latlon, pred.draw,
                                    test.groups, value)
    return runs, [record]


def _run_task(task: tuple) -> tuple:
    """One (fold, model) of :func:`evaluate`, in this process or a worker: (fold, name, runs, records,
    wall seconds, CPU seconds of this process)."""
    f, name, train, test, cfgs, s, seed, keys, workdir, prior, threads = task
    if threads:
        torch.set_num_threads(threads)
    w0, c0 = time.perf_counter(), _cpu()
    runs, records = run_model(name, train, test, cfgs, s, seed, keys, Path(workdir), prior)
    log.info("fold %d %s done in %.0f s", f, name, time.perf_counter() - w0)
    return f, name, runs, records, time.perf_counter() - w0, _cpu() - c0


def _run_tasks(tasks: list[tuple], workers: int, bar) -> list[tuple]:
    """Results of :func:`_run_task` for every task, in order; ``workers`` > 1: that many processes,
    each with one torch thread, slowest tasks (generative models) started first."""
    if workers <= 1 or len(tasks) <= 1:
        out = []
        for t in tasks:
            bar.set_postfix(fold=t[0], model=t[1])
            out.append(_run_task(t))
            bar.update(1)
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    order = sorted(range(len(tasks)), key=lambda i: base_model(tasks[i][1]) not in GENERATIVE)
    results: dict[int, tuple] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_run_task, tasks[i][:-1] + (1,)): i for i in order}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            bar.update(1)
    return [results[i] for i in range(len(tasks))]


def evaluate(splits: Sequence[tuple[EvalData, EvalData]], models: Sequence[str], cfgs: Sequence,
             s: EvalSettings, *, progress: bool = False, workdir: str | Path | None = None,
             workers: int = 1) -> Evaluation:
    """Evaluate ``models`` on (train, test) pairs. One pair: plain values; several (folds): means,
    photographer-bootstrap intervals and per-fold values (see :func:`summarize_folds`).

    ``+prior`` models also train on ``s.prior_rows`` rows of ``s.prior_file``. ``workers`` > 1 runs the
    (fold, model) tasks in that many processes (one torch thread each)."""
    from tqdm.auto import tqdm

    check_models(models)
    ev = Evaluation(splits=[(tr.ids, te.ids) for tr, te in splits])
    prior = load_prior_rows(s.prior_file, s.prior_rows, s.seed) if any(uses_prior(m) for m in models) else None
    collected: dict[str, dict[str, list[FoldRun]]] = {m: {} for m in models}
    keys = [truth_admin_keys(te.latlon) for _, te in splits]
    bar = tqdm(total=len(splits) * len(models), desc="evaluate", unit="model", disable=not progress,
               dynamic_ncols=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tasks = [(f, name, train, test, cfgs, s, s.seed + 1000 * f, keys[f], str(Path(tmp) / f"fold{f}-{name}"),
                  prior if uses_prior(name) else None, 0)
                 for f, (train, test) in enumerate(splits) for name in models]
        for f, name, runs, records, wall, cpu in _run_tasks(tasks, workers, bar):
            ev.seconds[name] = ev.seconds.get(name, 0.0) + wall
            ev.cpu_seconds[name] = ev.cpu_seconds.get(name, 0.0) + cpu
            for t in records:
                ev.tuned.setdefault(name, []).append({"fold": f, **t})
            for key, run in runs.items():
                collected[name].setdefault(key, []).append(run)
    bar.close()
    ev.comparisons = nll_comparisons(collected, s.n_boot, s.seed)
    for name, by_cfg in collected.items():
        ev.report[name] = {}
        for key, runs in by_cfg.items():
            if len(splits) == 1:
                r = runs[0]
                ev.report[name][key] = summarize_table(r.table, r.truth, r.draw)
            else:
                ev.report[name][key] = summarize_folds([r.table for r in runs], [r.truth for r in runs],
                                                       [r.draw for r in runs], [r.groups for r in runs],
                                                       s.n_boot, s.seed)
    return ev


def fold_splits(data: EvalData, k: int, seed: int = 0) -> list[tuple[EvalData, EvalData]]:
    """(train, test) pairs of k group-aware folds."""
    folds = group_folds(data.groups, k, seed)
    return [(data.select(np.flatnonzero(folds != f)), data.select(np.flatnonzero(folds == f))) for f in range(k)]


def settings_with(s: EvalSettings, **changes) -> EvalSettings:
    """A copy of ``s`` with some fields changed (None values are ignored)."""
    return replace(s, **{k: v for k, v in changes.items() if v is not None})
