"""Post-training choices fitted on held-out rows and written into a model folder's globeflow.json:
the default guidance weight (``default_cfg``, lowest held-out NLL) and split-conformal credible
masses (``credible_masses``), so that stated regions cover what they say on new inputs.

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
                       steps: int = 64, note: str = "") -> dict:
    """Set folder's ``default_cfg`` to the weight of lowest held-out NLL; returns {chosen, nll curve}."""
    curve = nll_by_cfg(Geolocator.from_pretrained(folder), emb, truth, grid, steps)
    best = min(curve, key=curve.get)
    _update_meta(folder, default_cfg=best, training={"default_cfg_selection": {
        "held_out_nll": {f"{w:g}": round(v, 4) for w, v in curve.items()}, "rows": len(truth), "note": note}})
    return {"chosen": best, "held_out_nll": curve}


def own_sample_ranks(geo: Geolocator, emb: torch.Tensor, truth: torch.Tensor, samples: int = 128,
                     steps: int = 32, density_steps: int = 64, batch: int = 64) -> np.ndarray:
    """(M,) the smallest HPD mass whose region covers each truth, from each row's own samples
    (default cfg; seeds 0..M−1), in batches of ``batch`` rows (bounded memory)."""
    lp_truth = geo.log_prob(emb, truth, steps=density_steps).numpy()
    lp = [geo.sample(emb[i:i + batch], samples, steps=steps, seed=list(range(i, min(i + batch, len(emb)))),
                     return_log_prob=True)[1].numpy() for i in range(0, len(emb), batch)]
    return coverage_ranks(lp_truth, np.concatenate(lp))


def fit_credible_masses(folder: Path, emb: torch.Tensor, truth: torch.Tensor, note: str, samples: int = 128,
                        steps: int = 32, density_steps: int = 64, levels=(0.5, 0.9)) -> dict[str, float]:
    """Split-conformal masses {level: HPD mass} on held-out rows, written to folder's globeflow.json."""
    ranks = own_sample_ranks(Geolocator.from_pretrained(folder), emb, truth, samples, steps, density_steps)
    masses = conformal_masses(ranks, levels)
    nominal = ", ".join(f"{lv:g}: {float((ranks <= lv).mean()):.3f}" for lv in levels)
    _update_meta(folder, credible_masses=masses, training={"credible_masses_fit": (
        f"split-conformal on {len(ranks)} {note} ({samples} own samples each, {steps} steps); "
        f"nominal coverage there: {nominal}")})
    return masses
