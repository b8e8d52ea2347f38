"""von Mises–Fisher distributions on S² (torch; shared by every density baseline).

Density w.r.t. the area measure on the unit sphere (nats per steradian):
    p(x | μ, κ) = κ / (4π sinh κ) · exp(κ μ·x),
    log p = log κ − log 2π − log(1 − e^{−2κ}) − κ(1 − μ·x).
κ = 0 is the uniform density 1/(4π). 1 − μ·x is computed as ‖x − μ‖²/2, which is
accurate for nearby points, so κ up to 1e6 is safe in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from globeflow import sphere
from globeflow.sphere import normalize

_SMALL_KAPPA = 1e-4


def _log_kappa_over_1m_exp(kappa: Tensor) -> Tensor:
    """log κ − log(1 − e^{−2κ}) for κ ≥ 0 (its κ → 0 limit is −log 2)."""
    kappa = torch.as_tensor(kappa)
    k = kappa.clamp_min(_SMALL_KAPPA)
    exact = -torch.log(-torch.expm1(-2.0 * k) / k)
    series = -(math.log(2.0) - kappa + kappa**2 / 6.0)  # −log((1 − e^{−2κ})/κ) near 0
    return torch.where(kappa < _SMALL_KAPPA, series, exact)


def log_normalizer(kappa: Tensor) -> Tensor:
    """log(κ / (4π sinh κ)) = log κ − log 2π − log(1 − e^{−2κ}) − κ for κ ≥ 0; κ = 0 gives −log 4π."""
    kappa = torch.as_tensor(kappa)
    return _log_kappa_over_1m_exp(kappa) - math.log(2.0 * math.pi) - kappa


def log_prob(x: Tensor, mu: Tensor, kappa: Tensor) -> Tensor:
    """log p(x | μ, κ): x, μ (..., 3) unit vectors, κ (...) ≥ 0 → (...) nats per steradian.

    Written as log κ − log 2π − log(1 − e^{−2κ}) − κ‖x − μ‖²/2, with no cancellation of large terms.
    """
    kappa = torch.as_tensor(kappa)
    return _log_kappa_over_1m_exp(kappa) - math.log(2.0 * math.pi) - 0.5 * kappa * ((x - mu) ** 2).sum(-1)


def mixture_log_prob(x: Tensor, log_weights: Tensor, mu: Tensor, kappa: Tensor) -> Tensor:
    """Log-density of a vMF mixture via logsumexp.

    x (..., 3); log_weights (..., C) normalised; mu (..., C, 3); kappa (..., C) → (...) nats/sr.
    """
    comp = log_prob(x.unsqueeze(-2), mu, kappa)
    return torch.logsumexp(log_weights + comp, dim=-1)


def sample(mu: Tensor, kappa: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """One exact draw per (..., 3) μ with (...) κ (Wood 1994 for p = 3), in float64 → (..., 3).

    w = μ·x = 1 + log(u + (1 − u) e^{−2κ}) / κ, written as 1 − w = −log1p((1 − u)·expm1(−2κ)) / κ
    so that small and huge κ are both exact; the tangent direction is uniform.
    """
    mu = mu.to(torch.float64)
    kappa = torch.as_tensor(kappa, dtype=torch.float64).expand(mu.shape[:-1])
    u = torch.rand(mu.shape[:-1], generator=generator, dtype=torch.float64)
    k = kappa.clamp_min(1e-12)
    one_minus_w = -torch.log1p((1.0 - u) * torch.expm1(-2.0 * k)) / k
    one_minus_w = torch.where(kappa < 1e-12, 2.0 * (1.0 - u), one_minus_w).clamp(0.0, 2.0)
    w = 1.0 - one_minus_w
    sin_t = torch.sqrt((one_minus_w * (2.0 - one_minus_w)).clamp_min(0.0))
    phi = 2.0 * math.pi * torch.rand(mu.shape[:-1], generator=generator, dtype=torch.float64)
    e1, e2 = sphere.tangent_basis(mu)
    x = w[..., None] * mu + sin_t[..., None] * (torch.cos(phi)[..., None] * e1 + torch.sin(phi)[..., None] * e2)
    return normalize(x)


def mixture_sample(log_weights: Tensor, mu: Tensor, kappa: Tensor, num_samples: int, *,
                   generator: torch.Generator | None = None) -> Tensor:
    """K draws per item from a vMF mixture: log_weights (M, C), mu (M, C, 3), kappa (M, C) → (M, K, 3)."""
    m = log_weights.shape[0]
    probs = torch.softmax(log_weights.to(torch.float64), dim=-1)
    comp = torch.multinomial(probs, num_samples, replacement=True, generator=generator)  # (M, K)
    rows = torch.arange(m)[:, None]
    return sample(mu[rows, comp].to(torch.float64), kappa[rows, comp].to(torch.float64), generator=generator)
