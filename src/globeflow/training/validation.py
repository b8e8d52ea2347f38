"""Validation on held-out rows: the loss with fixed draws, the NLL, best checkpoint and early stopping."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from globeflow import sphere
from globeflow.checkpoints import ModelInfo
from globeflow.families import loss as family_loss
from globeflow.network import Denoiser
from globeflow.schedules import schedule_from_dict
from globeflow.training.checkpoint import Progress, save_best
from globeflow.training.config import TrainConfig
from globeflow.training.distributed import Dist
from globeflow.training.draws import VAL_STEP, draw
from globeflow.training.sources import MemoryData

log = logging.getLogger(__name__)


@torch.no_grad()
def validation_loss(net: Denoiser, data: MemoryData, cfg: TrainConfig, device: torch.device,
                    batch: int = 4096) -> float:
    """Mean per-sample loss on validation rows with fixed draws (no conditioning dropout)."""
    schedule = schedule_from_dict(cfg.schedule)
    total = 0.0
    for i in range(0, len(data), batch):
        idx = np.arange(i, min(i + batch, len(data)))
        xyz, emb = data.rows(idx)
        d = draw(cfg.seed, VAL_STEP, idx, cfg.family, 0.0)
        per = family_loss(cfg.family, net, xyz.to(device), emb.to(device), schedule(d.t).to(device),
                          d.noise.to(device))
        total += float(per.sum())
    return total / max(1, len(data))


def validation_nll(net: Denoiser, data: MemoryData, cfg: TrainConfig, info: ModelInfo, n: int) -> float:
    """Mean −log p (nats/sr) of the first ``n`` validation rows under ``net`` (Geolocator.log_prob).

    Rows that all share one embedding (e.g. held-out locations under the null condition) are scored
    as one condition with many points: one field, and for R³ families one radial shell, instead of
    one per row (the shell's 256 samples per row were 80 % of an fm evaluation report's time).
    """
    from globeflow.geolocator import Geolocator

    idx = np.arange(min(n, len(data)))
    xyz, emb = data.rows(idx)
    latlon = sphere.xyz_to_latlon(xyz.double())
    if len(emb) > 1 and bool((emb == emb[:1]).all()):
        emb, latlon = emb[:1], latlon[None]
    geo = Geolocator(net, ModelInfo(**{**info.to_dict(), "family": cfg.family, "schedule": cfg.schedule}),
                     device=next(net.parameters()).device)
    return float(-geo.log_prob(emb, latlon, steps=cfg.val_nll_steps).mean())


def validate(cfg: TrainConfig, ema: Denoiser, val: MemoryData, dd: Dist, prog: Progress, info: ModelInfo,
             out: Path, row: dict) -> bool:
    """Validation on every rank (identical EMA weights → identical numbers); returns "stop early".

    Adds ``val_loss`` (and ``val_nll``) to the log ``row`` and to ``prog.history``; rank 0 saves a
    new best EMA model into ``DIR/best/``.
    """
    data = val.select(np.arange(len(val)) < cfg.val_max)
    vloss = validation_loss(ema, data, cfg, dd.device)
    nll = validation_nll(ema, data, cfg, info, cfg.val_nll_points) if cfg.val_nll_points else None
    metric = nll if nll is not None else vloss
    row["val_loss"] = f"{vloss:.6f}"
    if nll is not None:
        row["val_nll"] = f"{nll:.5f}"
    prog.history.append({"step": prog.step, "val_loss": vloss, "val_nll": nll})
    if metric < prog.best:
        prog.best, prog.best_step, prog.stale = metric, prog.step, 0
        if dd.main:
            save_best(out, cfg, ema, prog, info)
    else:
        prog.stale += 1
    log.info("step %d: val_loss %.5f val_nll %s", prog.step, vloss, nll)
    return bool(cfg.patience and prog.stale >= cfg.patience)
