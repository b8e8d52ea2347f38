"""The exponential moving average of the weights: its decay schedule and its update."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from globeflow.training.config import TrainConfig


def ema_decay_at(step: int, cfg: TrainConfig) -> float:
    """EMA decay used after optimizer step ``step`` (0-based)."""
    if cfg.ema_warmup:
        return min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
    return cfg.ema_decay


@torch.no_grad()
def ema_update(ema: Sequence[Tensor], params: Sequence[Tensor], decay: float) -> None:
    """In place: ema ← decay · ema + (1 − decay) · θ (the official callback's lerp weight is inverted)."""
    for e, p in zip(ema, params):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
