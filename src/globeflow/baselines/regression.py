"""Ridge regression from embeddings to the unit vector of the location (no density).

The prediction X·W + b is normalised onto the sphere. The ridge strength is chosen
on a group-aware validation split (smallest mean great-circle error), then the model
is refitted on all rows. Deterministic: it has no density and its "samples" are the
point estimate repeated.
"""

from __future__ import annotations

import numpy as np
import torch

from globeflow.baselines.base import Standardizer, check_inputs, group_split, to_latlon, to_xyz
from globeflow.sphere import angle, normalize

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge with an unpenalised intercept: returns (W (D, 3), b (3,))."""
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
    return w, ym - xm @ w


class RegressionBaseline:
    """Direction regression; ``log_prob`` raises NotImplementedError."""

    id = "regression"

    def __init__(self, alphas: tuple[float, ...] = ALPHAS):
        self.alphas = alphas
        self.alpha: float | None = None

    def fit(self, emb, latlon_deg, groups=None, *, seed: int = 0) -> "RegressionBaseline":
        e, c = check_inputs(emb, latlon_deg)
        self.scaler = Standardizer(e)
        x = self.scaler(e).double().numpy()
        y = to_xyz(c).numpy()
        tr, va = group_split(len(e), groups, seed=seed)
        errors = []
        for a in self.alphas:
            w, b = _ridge(x[tr], y[tr], a)
            pred = normalize(torch.as_tensor(x[va] @ w + b))
            errors.append(float(angle(pred, torch.as_tensor(y[va])).mean()))
        self.alpha = self.alphas[int(np.argmin(errors))]
        self.w, self.b = _ridge(x, y, self.alpha)
        self._fallback = normalize(torch.as_tensor(y.mean(0)))
        return self

    def _direction(self, emb) -> torch.Tensor:
        e, _ = check_inputs(emb)
        raw = torch.as_tensor(self.scaler(e).double().numpy() @ self.w + self.b)
        tiny = raw.norm(dim=-1, keepdim=True) < 1e-9
        return torch.where(tiny, self._fallback.expand_as(raw), normalize(raw))

    def point_estimate(self, emb) -> np.ndarray:
        return to_latlon(self._direction(emb))

    def sample(self, emb, num_samples: int, *, seed: int | None = None) -> np.ndarray:
        point = self.point_estimate(emb)
        return np.repeat(point[:, None, :], num_samples, axis=1)

    def log_prob(self, emb, latlon_deg) -> np.ndarray:
        raise NotImplementedError(
            "the 'regression' baseline predicts a single point and has no density; "
            "use 'cells', 'retrieval', 'vmf' or 'vmf_mixture' for log-likelihoods")
