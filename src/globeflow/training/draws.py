"""Counter-based random draws: every per-sample random number is a hash of (seed, step, position).

The sample at global batch position ``j`` of step ``s`` gets its time t, its base draw and its
conditioning-dropout coin from splitmix64 hashes of (seed, s, j): no RNG state, so any rank,
batch split or resumed process draws exactly the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

VAL_STEP = 2**63 + 1  # the step key of validation draws (never a training step)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniforms(seed: int, step: int, index: np.ndarray, count: int) -> np.ndarray:
    """(len(index), count) float64 uniforms in (0, 1), a function of (seed, step, index) only."""
    index = np.asarray(index, dtype=np.uint64)
    key = mix64(mix64(mix64(np.array([seed], dtype=np.uint64)) ^ np.uint64(step)) ^ index)
    with np.errstate(over="ignore"):
        streams = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
    bits = mix64(key[:, None] ^ streams[None, :])
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


@dataclass(frozen=True)
class Draws:
    t: Tensor  # (B,) time in (0, 1) (0 = data)
    noise: Tensor  # (B, 3) base draws (unit vectors for rfm, N(0, I) otherwise)
    drop: Tensor  # (B,) bool: use the null condition


def draw(seed: int, step: int, index: np.ndarray, family: str, cond_drop: float) -> Draws:
    """The draws of the samples at global batch positions ``index`` of step ``step``."""
    u = uniforms(seed, step, index, 6)
    if family == "rfm":  # Archimedes: z uniform in [-1, 1], longitude uniform
        z, phi = 2.0 * u[:, 1] - 1.0, 2.0 * math.pi * u[:, 2]
        r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
        noise = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    else:  # Box–Muller
        r1, r2 = np.sqrt(-2.0 * np.log(u[:, 1])), np.sqrt(-2.0 * np.log(u[:, 3]))
        noise = np.stack([r1 * np.cos(2 * math.pi * u[:, 2]), r1 * np.sin(2 * math.pi * u[:, 2]),
                          r2 * np.cos(2 * math.pi * u[:, 4])], axis=1)
    return Draws(torch.from_numpy(u[:, 0].astype(np.float32)), torch.from_numpy(noise.astype(np.float32)),
                 torch.from_numpy(u[:, 5] < cond_drop))
