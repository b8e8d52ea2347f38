"""The interface every baseline follows, and helpers they share.

Inputs: embeddings float32 (N, D); coordinates (N, 2) degrees (lat, lon).
Outputs: samples (M, K, 2) degrees; log-densities (M,) nats per steradian;
point estimates (M, 2) degrees.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import logging

import numpy as np
import torch

from globeflow.sphere import latlon_to_xyz, xyz_to_latlon

logger = logging.getLogger(__name__)


@runtime_checkable
class Baseline(Protocol):
    id: str

    def fit(self, emb: np.ndarray, latlon_deg: np.ndarray, groups: np.ndarray | None = None, *,
            seed: int = 0) -> "Baseline": ...
    # cells and vmf_mixture also take ``prior=`` (P, 2) degrees: extra unconditional locations

    def sample(self, emb: np.ndarray, num_samples: int, *, seed: int | None = None) -> np.ndarray: ...

    def log_prob(self, emb: np.ndarray, latlon_deg: np.ndarray) -> np.ndarray: ...

    def point_estimate(self, emb: np.ndarray) -> np.ndarray: ...


def check_inputs(emb: np.ndarray, latlon_deg: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate shapes and finiteness; returns float32 (N, D) and float64 (N, 2) arrays."""
    e = np.asarray(emb, dtype=np.float32)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be (N, D); got shape {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError(f"embeddings contain non-finite values at rows {np.flatnonzero(~np.isfinite(e).all(1))[:10].tolist()}")
    if latlon_deg is None:
        return e, None
    c = np.asarray(latlon_deg, dtype=np.float64)
    if c.shape != (len(e), 2):
        raise ValueError(f"latlon_deg must be ({len(e)}, 2) degrees; got shape {c.shape}")
    if not np.isfinite(c).all() or (np.abs(c[:, 0]) > 90).any():
        raise ValueError("latlon_deg must be finite with |lat| ≤ 90 degrees")
    return e, c


def check_prior(latlon_deg) -> np.ndarray:
    """Extra unconditional locations (P, 2) degrees as float64; raises a ValueError on bad rows."""
    c = np.asarray(latlon_deg, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2 or not np.isfinite(c).all() or (np.abs(c[:, 0]) > 90).any():
        raise ValueError(f"prior rows must be finite (P, 2) degrees with |lat| ≤ 90; got shape {c.shape}")
    return c


def to_xyz(latlon_deg: np.ndarray) -> torch.Tensor:
    """(..., 2) degrees → (..., 3) float64 unit vectors."""
    return latlon_to_xyz(torch.as_tensor(np.asarray(latlon_deg), dtype=torch.float64))


def to_latlon(xyz: torch.Tensor) -> np.ndarray:
    """(..., 3) vectors → (..., 2) float64 degrees."""
    return xyz_to_latlon(xyz.detach().to(torch.float64)).numpy()


def group_split(n: int, groups: np.ndarray | None, val_fraction: float = 0.2,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with no group on both sides; groups None → each item its own group."""
    labels = np.arange(n) if groups is None else np.asarray(groups)
    uniq = np.unique(labels)
    rng = np.random.default_rng(seed)
    val_groups = rng.permutation(uniq)[: max(1, int(round(val_fraction * len(uniq))))]
    is_val = np.isin(labels, val_groups)
    if is_val.all() or not is_val.any():
        raise ValueError("group_split: need at least two groups to make a validation split")
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class Standardizer:
    """Per-dimension standardisation of embeddings fitted on training rows."""

    def __init__(self, emb: np.ndarray):
        self.mean = emb.mean(0)
        self.std = emb.std(0) + 1e-6

    def __call__(self, emb: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((emb - self.mean) / self.std, dtype=torch.float32)


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def batched(n: int, size: int):
    """Slices covering range(n) in chunks of ``size``."""
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread (tiny MLPs gain nothing from more and lose a lot when
    the cores are busy); the previous setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_by_nll(model: torch.nn.Module, nll: "callable", x: torch.Tensor, y: torch.Tensor,
                 train_idx: np.ndarray, val_idx: np.ndarray, *, epochs: int = 200, lr: float = 1e-2,
                 weight_decay: float = 1e-4, batch_size: int = 1024, patience: int = 20,
                 generator: torch.Generator | None = None) -> float:
    """Adam on mean ``nll(model, x, y)`` over training rows, keeping the state with the best
    validation NLL (early stopping after ``patience`` epochs without improvement).

    Returns the best validation NLL (nats). ``model`` is left in that best state, in eval mode.
    """
    with single_thread():
        return _train(model, nll, x, y, train_idx, val_idx, epochs, lr, weight_decay, batch_size, patience, generator)


def _train(model, nll, x, y, train_idx, val_idx, epochs, lr, weight_decay, batch_size, patience, generator) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    tr = torch.as_tensor(train_idx)
    va = torch.as_tensor(val_idx)
    best, best_state, stale = float("inf"), None, 0
    for epoch in range(epochs):
        model.train()
        perm = tr[torch.randperm(len(tr), generator=generator)]
        for s in batched(len(perm), batch_size):
            idx = perm[s]
            loss = nll(model, x[idx], y[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = float(nll(model, x[va], y[va]).mean())
        if val < best - 1e-5:
            best, stale = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    logger.info("trained %s for %d epochs; best validation NLL %.4f", type(model).__name__, epoch + 1, best)
    return best


def collapse_repeats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows that start a run of identical rows, and the (N,) index of each row's run.

    A density over a grid repeats one embedding many times; the network then runs once per run.
    """
    new_run = np.r_[True, (emb[1:] != emb[:-1]).any(axis=1)] if len(emb) else np.zeros(0, dtype=bool)
    return emb[new_run], np.cumsum(new_run) - 1
