"""Post-training choices fitted on held-out rows and written into a model folder's globeflow.json:
the default guidance weight (``default_cfg``, lowest held-out NLL), split-conformal credible
masses (``credible_masses``), so that stated regions cover what they say on new inputs, and the
best-guess rule (``best_guess``, highest held-out GeoScore).

Used by scripts/train_default.py (validation photographers) and scripts/train_text_model.py
(captions never used for training).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from globeflow.credible import conformal_masses, coverage_ranks
from globeflow.geolocator import Geolocator
from globeflow.metrics import geoscore, haversine_km
from globeflow.prediction import BEST_GUESS_RULES, best_guesses


def _update_meta(folder: Path, **fields) -> None:
    path = Path(folder) / "globeflow.json"
    meta = json.loads(path.read_text())
    training = fields.pop("training", {})
    meta.update(fields)
    meta.setdefault("training", {}).update(training)
    path.write_text(json.dumps(meta, indent=2))


def nll_by_cfg(geo: Geolocator, emb: torch.Tensor, truth: torch.Tensor, grid: Sequence[float],
               steps: int = 64) -> dict[float, float]:
    """Mean NLL (nats/sr) of truths (M, 2) degrees given embeddings (M, D), at every guidance weight."""
    return {float(w): float(-geo.log_prob(emb, truth, cfg=w, steps=steps).mean()) for w in grid}


def choose_default_cfg(folder: Path, emb: torch.Tensor, truth: torch.Tensor, grid: Sequence[float],
                       steps: int = 64, note: str = "", untils: Sequence[float] = (1.0,),
                       also: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None, name: str = "main") -> dict:
    """Set folder's ``default_cfg`` (and ``cfg_until``, the end of the guidance interval, see
    :class:`globeflow.sampling.Field`) to the pair of lowest held-out NLL over ``grid`` × ``untils``;
    returns {chosen, cfg_until, held_out_nll curve}.

    ``also``: more held-out sets {name: (embeddings (M, D), truths (M, 2) degrees)} of other kinds of
    input (e.g. unseen place names beside captions); the criterion is then the mean over the sets of
    each set's mean NLL, so every kind counts equally whatever its size, and each set's curve is kept
    (``held_out_nll_by_set``; ``name`` names the first set there)."""
    geo = Geolocator.from_pretrained(folder)
    sets = {name: (emb, truth), **(also or {})}
    by_set: dict[str, dict[tuple[float, float], float]] = {key: {} for key in sets}
    for until in untils:
        limited = geo.with_settings(cfg_until=float(until))
        for key, (e, t) in sets.items():
            for w, v in nll_by_cfg(limited, e, t, grid, steps).items():
                by_set[key][(w, float(until))] = v
    curve = {wu: float(np.mean([c[wu] for c in by_set.values()])) for wu in by_set[name]}
    best_w, best_until = min(curve, key=curve.get)
    label = lambda w, u: f"{w:g}" if u == 1 else f"{w:g} until {u:g}"  # noqa: E731
    labelled = lambda c: {label(w, u): round(v, 4) for (w, u), v in c.items()}  # noqa: E731
    selection = {"held_out_nll": labelled(curve), "rows": len(truth), "note": note}
    if also:
        selection.update(criterion="mean over the sets of each set's mean NLL",
                         held_out_nll_by_set={key: labelled(c) for key, c in by_set.items()},
                         rows={key: len(t) for key, (_, t) in sets.items()})
    _update_meta(folder, default_cfg=best_w, cfg_until=best_until, training={"default_cfg_selection": selection})
    return {"chosen": best_w, "cfg_until": best_until,
            "held_out_nll": {label(w, u): v for (w, u), v in curve.items()}}


def own_samples(geo: Geolocator, emb: torch.Tensor, samples: int = 128, steps: int = 32,
                batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Each row's own samples at the default cfg (seeds 0..M−1), in batches of ``batch`` rows:
    (M, K, 2) degrees and their (M, K) log-densities, nats/sr."""
    out = [geo.sample(emb[i:i + batch], samples, steps=steps, seed=list(range(i, min(i + batch, len(emb)))),
                      return_log_prob=True) for i in range(0, len(emb), batch)]
    return np.concatenate([x.numpy() for x, _ in out]), np.concatenate([lp.numpy() for _, lp in out])


def fit_credible_masses(folder: Path, emb: torch.Tensor, truth: torch.Tensor, note: str, samples: int = 128,
                        steps: int = 32, density_steps: int = 64, levels=(0.5, 0.9),
                        draws: tuple[np.ndarray, np.ndarray] | None = None,
                        extra_ranks: np.ndarray | None = None, extra_note: str = "") -> dict[str, float]:
    """Split-conformal masses {level: HPD mass} on held-out rows, written to folder's globeflow.json with
    the ``default_samples`` and ``default_steps`` of predictions they hold for.
    ``draws``: the rows' own samples from :func:`own_samples` of ``steps`` steps (drawn here when None).
    ``extra_ranks``: (E,) coverage ranks of more held-out rows (e.g. cross-fitted: rows scored by
    models trained without them), pooled with these rows' ranks; ``extra_note`` says what they are."""
    geo = Geolocator.from_pretrained(folder)
    _, lp = draws if draws is not None else own_samples(geo, emb, samples, steps)
    ranks = coverage_ranks(geo.log_prob(emb, truth, steps=density_steps).numpy(), lp)
    rows = f"{len(ranks)} {note}"
    if extra_ranks is not None and len(extra_ranks):
        ranks = np.concatenate([ranks, np.asarray(extra_ranks, dtype=np.float64)])
        rows = f"{len(ranks)} rows ({rows} + {len(extra_ranks)} {extra_note})"
    masses = conformal_masses(ranks, levels)
    nominal = ", ".join(f"{lv:g}: {float((ranks <= lv).mean()):.3f}" for lv in levels)
    _update_meta(folder, credible_masses=masses, default_samples=int(lp.shape[1]), default_steps=int(steps),
                 training={"credible_masses_fit": (
        f"split-conformal on {rows} ({lp.shape[1]} own samples each, {steps} steps); "
        f"nominal coverage there: {nominal}")})
    return masses


def _mean_geoscore(points: np.ndarray, truth: np.ndarray) -> float:
    return float(geoscore(haversine_km(points, truth)).mean())


def score_labels(scores: dict[tuple[str, float], float]) -> dict[str, float]:
    """{(rule, cfg): GeoScore} → {"rule at cfg w": GeoScore rounded to 0.1}, as written to globeflow.json."""
    return {f"{r} at cfg {c:g}": round(v, 1) for (r, c), v in scores.items()}


def choose_best_guess(folder: Path, emb: torch.Tensor, truth: np.ndarray, draws: tuple[np.ndarray, np.ndarray],
                      note: str, grid: Sequence[float] = (), steps: int = 32, batch: int = 64) -> dict:
    """Choose how predictions pick their best guess: the (rule, guidance weight) of highest mean GeoScore
    on held-out rows, written to folder's globeflow.json as ``best_guess`` and ``best_guess_cfg``.

    Candidates: both rules (:data:`globeflow.prediction.BEST_GUESS_RULES`) on the rows' own
    :func:`own_samples` ``draws`` (default cfg, ``steps`` steps), and the expected-GeoScore rule on as
    many fresh samples of ``steps`` steps at each further weight of ``grid``; the draws' sample count
    and ``steps`` are written too (``best_guess_samples``, ``best_guess_steps``). ``truth``: (M, 2) degrees."""
    geo = Geolocator.from_pretrained(folder)
    latlon, lp = draws
    truth = np.asarray(truth, dtype=np.float64)
    scores = {(rule, geo.default_cfg): _mean_geoscore(best_guesses(latlon, lp, rule), truth)
              for rule in BEST_GUESS_RULES}
    for w in (float(w) for w in grid if float(w) != geo.default_cfg):
        points = [geo.point_estimate(emb[i:i + batch], latlon.shape[1], steps=steps, cfg=w, rule="geoscore",
                                     seed=list(range(i, min(i + batch, len(emb))))).numpy()
                  for i in range(0, len(emb), batch)]
        scores[("geoscore", w)] = _mean_geoscore(np.concatenate(points), truth)
    rule, w = max(scores, key=scores.get)
    _update_meta(folder, best_guess=rule, best_guess_cfg=None if w == geo.default_cfg else w,
                 best_guess_samples=int(latlon.shape[1]), best_guess_steps=int(steps), training={
        "best_guess_selection": {"held_out_geoscore": score_labels(scores),
                                 "rows": len(latlon), "samples": latlon.shape[1], "note": note}})
    return {"rule": rule, "cfg": w, "held_out_geoscore": scores}
