"""Geocell classification (PlaNet-style) with an exact piecewise-constant density.

Cells: an adaptive quadtree on (lat, lon) built from the training coordinates; a
rectangle is split in four while it holds more than ``max_points`` points. All
leaves (empty ones included) partition the sphere. A small torch MLP gives
p(cell | embedding). The density is p(cell)/area(cell) in steradians, mixed with a
small uniform component ε so that no place has zero density:
    p(x) = (1 − ε) p(c(x) | e) / A(c(x)) + ε / 4π.
Sampling is exact: a cell from the mixture, then uniform in sin(lat) and lon inside it.
Point estimate: the mean direction of the training points in the most probable cell
(the cell's area centre when it is empty).

Extra unconditional rows (``fit(..., prior=latlon)``, e.g. MP-16 photo locations): the quadtree is
built from photos and prior rows together, and the classifier's logits are the log of the cell's
share of all those rows (a smoothed histogram, the prior part) plus an MLP's correction from the
embedding, which starts at zero and is trained on the photos only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from globeflow.baselines.base import (Standardizer, check_inputs, check_prior, collapse_repeats, group_split,
                                      seed_everything, single_thread, to_latlon, to_xyz, train_by_nll)
from globeflow.sphere import SPHERE_AREA, normalize


def build_quadtree(latlon_deg: np.ndarray, max_points: int = 50, max_depth: int = 10) -> np.ndarray:
    """Leaves of an adaptive quadtree → (C, 4) rows (lat0, lat1, lon0, lon1) in degrees."""
    leaves: list[tuple[float, float, float, float]] = []
    stack = [((-90.0, 90.0, -180.0, 180.0), np.arange(len(latlon_deg)), 0)]
    while stack:
        (a0, a1, o0, o1), idx, depth = stack.pop()
        if len(idx) <= max_points or depth >= max_depth:
            leaves.append((a0, a1, o0, o1))
            continue
        am, om = (a0 + a1) / 2, (o0 + o1) / 2
        lat, lon = latlon_deg[idx, 0], latlon_deg[idx, 1]
        for la0, la1, lo0, lo1 in ((a0, am, o0, om), (a0, am, om, o1), (am, a1, o0, om), (am, a1, om, o1)):
            inside = (lat >= la0) & (lat < la1) & (lon >= lo0) & (lon < lo1)
            stack.append(((la0, la1, lo0, lo1), idx[inside], depth + 1))
    return np.array(sorted(leaves), dtype=np.float64)


def cell_area_sr(cells: np.ndarray) -> np.ndarray:
    """(C, 4) lat/lon rectangles in degrees → (C,) areas in steradians: Δlon·(sin lat1 − sin lat0)."""
    lat0, lat1, lon0, lon1 = np.radians(cells).T
    return (lon1 - lon0) * (np.sin(lat1) - np.sin(lat0))


def _canonical(latlon_deg: np.ndarray) -> np.ndarray:
    """Wrap lon into [−180, 180) and pull lat = 90 just inside the half-open cells."""
    c = np.asarray(latlon_deg, dtype=np.float64).reshape(-1, 2).copy()
    c[:, 1] = (c[:, 1] + 180.0) % 360.0 - 180.0
    c[:, 0] = np.minimum(c[:, 0], np.nextafter(90.0, 0.0))
    return c


def _leaf_keys(lat: np.ndarray, lon: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Integer key (depth, row, column) of the dyadic quadtree rectangle at ``depth`` holding (lat, lon)."""
    n = 2.0 ** depth
    row = np.clip(np.floor((lat + 90.0) / (180.0 / n)), 0, n - 1).astype(np.int64)
    col = np.clip(np.floor((lon + 180.0) / (360.0 / n)), 0, n - 1).astype(np.int64)
    return (depth.astype(np.int64) << 44) | (row << 22) | col


def assign_cells(cells: np.ndarray, latlon_deg: np.ndarray) -> np.ndarray:
    """(N,) index of the quadtree leaf containing each (N, 2) degree point (half-open rectangles).

    Each leaf is the dyadic rectangle (depth, row, column); a point is looked up at every depth.
    """
    c = _canonical(latlon_deg)
    depth = np.rint(np.log2(360.0 / (cells[:, 3] - cells[:, 2])))
    keys = _leaf_keys(cells[:, 0], cells[:, 2], depth)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    out = np.full(len(c), -1, dtype=np.int64)
    for d in np.unique(depth):
        k = _leaf_keys(c[:, 0], c[:, 1], np.full(len(c), d))
        pos = np.clip(np.searchsorted(sorted_keys, k), 0, len(keys) - 1)
        hit = sorted_keys[pos] == k
        out[hit] = order[pos[hit]]
    if (out < 0).any():
        raise ValueError("assign_cells: cells do not form a quadtree covering the sphere")
    return out


class _Classifier(nn.Module):
    """Cell logits: MLP(x), or log prior (C,) + MLP(x) with the MLP's output starting at zero."""

    def __init__(self, dim: int, num_cells: int, hidden: int, log_prior: torch.Tensor | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, num_cells))
        self.register_buffer("log_prior", torch.zeros(num_cells) if log_prior is None else log_prior.float())
        if log_prior is not None:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + self.log_prior


def cell_log_prior(labels: np.ndarray, num_cells: int, alpha: float = 0.5) -> torch.Tensor:
    """(C,) log share of the rows in each cell, with ``alpha`` pseudo-rows per cell (no empty cell is impossible)."""
    counts = np.bincount(labels, minlength=num_cells) + alpha
    return torch.as_tensor(np.log(counts / counts.sum()))


class CellsBaseline:
    """Geocell classifier with a piecewise-constant density (nats per steradian)."""

    id = "cells"

    def __init__(self, max_points: int = 50, hidden: int = 128, epsilon: float = 1e-3, epochs: int = 200):
        self.max_points, self.hidden, self.epsilon, self.epochs = max_points, hidden, epsilon, epochs

    def fit(self, emb, latlon_deg, groups=None, *, seed: int = 0, prior=None) -> "CellsBaseline":
        """Photos: emb (N, D), latlon (N, 2) degrees; prior: optional (P, 2) degrees of extra
        unconditional locations for the cells and the prior part of the logits."""
        e, c = check_inputs(emb, latlon_deg)
        gen = seed_everything(seed)
        where = c if prior is None else np.concatenate([c, check_prior(prior)])
        self.cells = build_quadtree(_canonical(where), self.max_points)
        self.area = cell_area_sr(self.cells)
        every = assign_cells(self.cells, where)
        labels = torch.as_tensor(every[:len(c)])
        self._centres = self._cell_centres(where, every)
        self.scaler = Standardizer(e)
        log_prior = None if prior is None else cell_log_prior(every, len(self.cells))
        self.model = _Classifier(e.shape[1], len(self.cells), self.hidden, log_prior)
        tr, va = group_split(len(e), groups, seed=seed)
        loss = lambda m, x, y: nn.functional.cross_entropy(m(x), y, reduction="none")  # noqa: E731
        self.val_nll = train_by_nll(self.model, loss, self.scaler(e), labels, tr, va,
                                    epochs=self.epochs, lr=3e-3, weight_decay=1e-4, generator=gen)
        return self

    def _cell_centres(self, c: np.ndarray, labels: np.ndarray) -> torch.Tensor:
        """(C, 3) mean direction of the training points per cell (area centre for empty cells)."""
        lat0, lat1, lon0, lon1 = np.radians(self.cells).T
        centre = np.degrees(np.stack([np.arcsin((np.sin(lat0) + np.sin(lat1)) / 2), (lon0 + lon1) / 2], -1))
        xyz = to_xyz(centre)
        sums = torch.zeros_like(xyz).index_add_(0, torch.as_tensor(labels), to_xyz(c))
        has = sums.norm(dim=-1, keepdim=True) > 1e-9
        return torch.where(has, normalize(sums), xyz)

    def _run_log_probs(self, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, C) log p(cell | e) per run of identical rows, and each row's run index (N,)."""
        runs, run_of = collapse_repeats(e)
        with torch.no_grad(), single_thread():
            return torch.log_softmax(self.model(self.scaler(runs)).double(), -1).numpy(), run_of

    def cell_log_probs(self, emb) -> np.ndarray:
        """(M, C) log p(cell | embedding) of the classifier (before the uniform mixture)."""
        e, _ = check_inputs(emb)
        logp, run_of = self._run_log_probs(e)
        return logp[run_of]

    def log_prob(self, emb, latlon_deg) -> np.ndarray:
        e, c = check_inputs(emb, latlon_deg)
        logp_run, run_of = self._run_log_probs(e)
        idx = assign_cells(self.cells, c)
        lp = logp_run[run_of, idx] - np.log(self.area[idx])
        return np.logaddexp(math.log1p(-self.epsilon) + lp, math.log(self.epsilon / SPHERE_AREA))

    def sample(self, emb, num_samples: int, *, seed: int | None = None) -> np.ndarray:
        probs = np.exp(self.cell_log_probs(emb))
        mix = (1 - self.epsilon) * probs + self.epsilon * self.area / SPHERE_AREA
        rng = np.random.default_rng(seed)
        cum = np.cumsum(mix / mix.sum(1, keepdims=True), axis=1)
        u = rng.random((len(mix), num_samples))
        chosen = np.stack([np.searchsorted(cum[i], u[i], side="right") for i in range(len(mix))])
        chosen = np.minimum(chosen, len(self.cells) - 1)
        lat0, lat1, lon0, lon1 = np.radians(self.cells[chosen]).transpose(2, 0, 1)
        z = rng.uniform(np.sin(lat0), np.sin(lat1))
        lon = rng.uniform(lon0, lon1)
        return np.degrees(np.stack([np.arcsin(np.clip(z, -1, 1)), lon], axis=-1))

    def point_estimate(self, emb) -> np.ndarray:
        best = self.cell_log_probs(emb).argmax(axis=1)
        return to_latlon(self._centres[torch.as_tensor(best)])
