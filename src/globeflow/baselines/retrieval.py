"""k-nearest-neighbour retrieval by cosine similarity of embeddings.

Point estimate: the location of the single nearest neighbour (top-1), not a medoid.
Density: an equal-weight mixture of vMF components centred on the k neighbours'
locations with one shared concentration κ, plus a uniform component of weight ε:
    p(x) = (1 − ε)/k Σ_j vMF(x; μ_j, κ) + ε / 4π.
κ and ε are chosen on a group-aware validation split (validation photos retrieve
only from training photos of other groups) by maximising the validation
log-likelihood over a grid; the final database holds all fitted rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from globeflow.baselines import vmf
from globeflow.baselines.base import check_inputs, collapse_repeats, group_split, single_thread, to_latlon, to_xyz
from globeflow.sphere import SPHERE_AREA, uniform

KAPPAS = tuple(float(k) for k in np.geomspace(1.0, 1e5, 31))
EPSILONS = (0.0, 1e-3, 1e-2, 0.1, 0.3)


def _unit_rows(e: np.ndarray) -> np.ndarray:
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def knn(query: np.ndarray, database: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """(M, k) indices of the k most cosine-similar database rows, most similar first."""
    q, db = _unit_rows(query), _unit_rows(database)
    k = min(k, len(db))
    out = np.empty((len(q), k), dtype=np.int64)
    for i in range(0, len(q), chunk):
        sims = q[i:i + chunk] @ db.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
        out[i:i + chunk] = np.take_along_axis(top, order, 1)
    return out


def _mixture_log_prob(x: torch.Tensor, centres: torch.Tensor, kappa: float, epsilon: float) -> torch.Tensor:
    """x (M, 3), centres (M, k, 3) → (M,) log of the equal-weight vMF mixture plus uniform."""
    k = centres.shape[1]
    comp = vmf.log_prob(x[:, None, :], centres, torch.tensor(kappa, dtype=torch.float64))
    lp = torch.logsumexp(comp, dim=1) - math.log(k)
    if epsilon <= 0:
        return lp
    return torch.logaddexp(math.log1p(-epsilon) + lp, torch.tensor(math.log(epsilon / SPHERE_AREA)))


class RetrievalBaseline:
    """kNN retrieval with a vMF-mixture density over the neighbours' locations."""

    id = "retrieval"

    def __init__(self, k: int = 10, kappas: tuple[float, ...] = KAPPAS, epsilons: tuple[float, ...] = EPSILONS):
        self.k, self.kappas, self.epsilons = k, kappas, epsilons

    def fit(self, emb, latlon_deg, groups=None, *, seed: int = 0) -> "RetrievalBaseline":
        e, c = check_inputs(emb, latlon_deg)
        tr, va = group_split(len(e), groups, seed=seed)
        nbr = knn(e[va], e[tr], self.k)
        x_va, centres = to_xyz(c[va]), to_xyz(c[tr][nbr])
        with single_thread():
            grid = [(float(_mixture_log_prob(x_va, centres, kap, eps).mean()), kap, eps)
                    for kap in self.kappas for eps in self.epsilons]
        self.val_loglik, self.kappa, self.epsilon = max(grid)
        self.db_emb, self.db_xyz = e, to_xyz(c)
        self._db_latlon = c
        return self

    def log_prob(self, emb, latlon_deg) -> np.ndarray:
        e, c = check_inputs(emb, latlon_deg)
        runs, run_of = collapse_repeats(e)
        nbr = knn(runs, self.db_emb, self.k)[run_of]
        with single_thread():
            return _mixture_log_prob(to_xyz(c), self.db_xyz[nbr], self.kappa, self.epsilon).numpy()

    def sample(self, emb, num_samples: int, *, seed: int | None = None) -> np.ndarray:
        e, _ = check_inputs(emb)
        gen = torch.Generator().manual_seed(seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63))
        nbr = torch.as_tensor(knn(e, self.db_emb, self.k))
        pick = torch.randint(0, nbr.shape[1], (len(e), num_samples), generator=gen)
        mu = self.db_xyz[torch.gather(nbr, 1, pick)]
        x = vmf.sample(mu, torch.tensor(self.kappa, dtype=torch.float64), generator=gen)
        if self.epsilon > 0:
            flat = torch.rand((len(e), num_samples), generator=gen, dtype=torch.float64) < self.epsilon
            x = torch.where(flat[..., None], uniform((len(e), num_samples), generator=gen, dtype=torch.float64), x)
        return to_latlon(x)

    def point_estimate(self, emb) -> np.ndarray:
        e, _ = check_inputs(emb)
        return self._db_latlon[knn(e, self.db_emb, 1)[:, 0]].copy()
