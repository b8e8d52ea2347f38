"""Noise schedules gamma(t).

Both directions, stated once for the whole project:

- time ``t ∈ [0, 1]``: ``t = 0`` is the **data** end, ``t = 1`` the **noise** end;
- ``gamma = schedule(t)``: ``gamma = 1`` at data, ``gamma = 0`` at noise (the
  official PLONK convention; the network is conditioned on gamma).

Samplers walk t from 1 to 0 (gamma increasing); likelihood ODEs integrate t
from 0 to 1. ``derivative(t)`` is the analytic d gamma / dt of the expression
*before* clamping (as the official code), so it is negative.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SigmoidSchedule:
    """gamma(t) = clamp((σ(e/τ) − σ((t(e−s)+s)/τ)) / (σ(e/τ) − σ(s/τ)), clip_min, 1).

    The released PLONK models use start −7, end 3, tau 1, clip_min 1e-9.
    """

    start: float = -7.0
    end: float = 3.0
    tau: float = 1.0
    clip_min: float = 1e-9
    kind: str = "sigmoid"

    def _ends(self) -> tuple[float, float]:
        """σ(start/τ), σ(end/τ) in float64 (the value at t = 0 and t = 1 before normalising)."""
        sig = lambda u: 1.0 / (1.0 + math.exp(-u))  # noqa: E731
        return sig(self.start / self.tau), sig(self.end / self.tau)

    def __call__(self, t: Tensor) -> Tensor:
        a, b = self._ends()
        out = (b - torch.sigmoid((t * (self.end - self.start) + self.start) / self.tau)) / (b - a)
        return out.clamp(self.clip_min, 1.0)

    def derivative(self, t: Tensor) -> Tensor:
        a, b = self._ends()
        s = torch.sigmoid((t * (self.end - self.start) + self.start) / self.tau)
        return -(self.end - self.start) * s * (1 - s) / (self.tau * (b - a))


@dataclass(frozen=True)
class CosineSchedule:
    """gamma(t) = clamp(cos(π t / 2)^(2τ), clip_min, 1)."""

    tau: float = 1.0
    clip_min: float = 1e-9
    kind: str = "cosine"

    def __call__(self, t: Tensor) -> Tensor:
        return (torch.cos(t * math.pi / 2) ** (2 * self.tau)).clamp(self.clip_min, 1.0)

    def derivative(self, t: Tensor) -> Tensor:
        c, s = torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)
        return -self.tau * math.pi * c.clamp_min(0) ** (2 * self.tau - 1) * s


@dataclass(frozen=True)
class LinearSchedule:
    """gamma(t) = clamp(1 − t, clip_min, 1)."""

    clip_min: float = 1e-9
    kind: str = "linear"

    def __call__(self, t: Tensor) -> Tensor:
        return (1.0 - t).clamp(self.clip_min, 1.0)

    def derivative(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -1.0)


Schedule = SigmoidSchedule | CosineSchedule | LinearSchedule
_KINDS = {"sigmoid": SigmoidSchedule, "cosine": CosineSchedule, "linear": LinearSchedule}


def schedule_from_dict(spec: dict) -> Schedule:
    """Build a schedule from ``{"kind": ..., **params}`` (as stored in checkpoint metadata)."""
    spec = dict(spec)
    kind = spec.get("kind", "sigmoid")
    if kind not in _KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; expected one of {sorted(_KINDS)}")
    return _KINDS[kind](**spec)


def schedule_to_dict(schedule: Schedule) -> dict:
    return asdict(schedule)
