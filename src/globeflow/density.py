"""Exact log-densities by the probability-flow ODE (instantaneous change of variables).

For a flow dx/ds = f(x, s) carrying data (s_data) to the base (s_noise),
``log p_data(x) = log p_base(x(s_noise)) + ∫ div f ds`` (FFJORD; PLONK §3.4).

Divergence modes (``rfm``):

- ``riemannian`` (default): the true density on S² of the continuous flow whose
  Euler discretisation is the official sampler: f = P(x)·v(x, γ) on the unit
  sphere, surface divergence ``tr J − xᵀJx − 2 x·v`` (J = ambient Jacobian of v
  at x). Integrates to 1 over the sphere.
- ``ambient``: exactly the official ``PlonkPipeline.compute_likelihood``:
  f = v unprojected (x leaves the sphere), ``div = tr J`` in R³, uniform-S²
  base. Official pipeline, **not a normalised density** (≈ 0.26 total mass on
  the fixture's random network).

R³ families (``fm``, ``diffusion``): the log-density of the *direction*,
``log ∫ p_R³(r u) r² dr``, by Gauss–Legendre nodes in r over the shell the
model's samples occupy; the quadrature error is estimated by changing the node count.
``fm`` integrates dx/dγ = v from γ = 1 to 0 with an N(0, I) base. ``diffusion``
integrates the DDIM ODE in y = x/√γ, λ = log σ, σ = √((1−γ)/γ):
dy/dλ = σ ε̂(√γ y, γ), from σ_min = 1e-3 (a 1e-3-radian smoothing of the data
density) to σ_max = 100, base N(0, (1 + σ_max²) I) (= x ~ N(0, I) at γ ≈ 1e-4;
:data:`globeflow.sampling.DIFFUSION_SIGMA_RANGE` says why not the schedule's
γ = 1e-9, and bounds the bias). This is the ODE the ``heun`` sampler solves.

Solvers: ``fast`` (default) is classical RK4 with a fixed, uniform grid in γ
(or λ), every point independent of the others; its accuracy is stated in
:data:`FAST_STEPS_ACCURACY`. ``official`` is torchdiffeq dopri5 at
rtol = atol = 1e-6 with ``min_step`` 1e-5 in t, all points integrated jointly as
one state (reproducing the official numbers, which therefore depend on the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from globeflow import sphere
from globeflow.sampling import DIFFUSION_SIGMA_RANGE, Field, sphere_field_jvp

DIVERGENCES = ("riemannian", "ambient")
SOLVERS = ("fast", "official")
DEFAULT_FAST_STEPS = 128
FAST_STEPS_ACCURACY = (
    "fast solver: classical RK4 with 128 uniform steps in gamma (512 network evaluations, each with "
    "hand-written forward-mode derivatives along two tangent directions, riemannian, or three, "
    "ambient). On the random-weight reference fixture: max error 2.5e-4 nats at cfg 0 and 8.1e-4 at "
    "cfg 2 (riemannian and ambient); 32 steps stay under 1e-2. On small "
    "trained models the field is sharp near the data end and errors at low-density points are larger "
    "(measured up to ~0.07 nats at 128 steps on tests/models/rfm_uncond): raise `steps` there"
)


def _sphere_rhs(field: Field, x: Tensor, gamma: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """d/dγ of (x, L) for x (M, K, 3).

    ``riemannian``: at x normalised, f = P v with surface divergence Σ_i e_i·(Df e_i) over a tangent
    basis (= tr J − xᵀJx − 2 x·v), two directional derivatives. ``ambient``: v and tr J (three).
    """
    if mode == "ambient":
        v, J = field.with_jacobian(x, gamma)
        return v, J.diagonal(dim1=-2, dim2=-1).sum(-1)
    x = sphere.normalize(x)
    basis = torch.stack(sphere.tangent_basis(x), dim=-2)  # (M, K, 2, 3)
    f, df = sphere_field_jvp(field, x, gamma, basis)
    return f, (basis * df).sum((-1, -2))


def _rk4(rhs, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """Classical RK4 of (x, L) along the grid s (n + 1,), L starting at 0; returns x_end, L_end."""
    L = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    for s0, s1 in zip(s[:-1], s[1:]):
        h = s1 - s0
        k1x, k1l = rhs(x, s0)
        k2x, k2l = rhs(x + 0.5 * h * k1x, s0 + 0.5 * h)
        k3x, k3l = rhs(x + 0.5 * h * k2x, s0 + 0.5 * h)
        k4x, k4l = rhs(x + h * k3x, s1)
        x = x + h / 6 * (k1x + 2 * k2x + 2 * k3x + k4x)
        L = L + h / 6 * (k1l + 2 * k2l + 2 * k3l + k4l)
    return x, L


def gamma_grid(schedule, steps: int, dtype: torch.dtype) -> Tensor:
    """RK4 nodes in gamma, uniform from the data end (1) to gamma(t = 1) (the noise end).

    Uniform in gamma resolves the network's cos/sin(1000·gamma·f) time features evenly. On trained
    weights the field is also sharp near the data end; there a grid uniform in t does better at
    few steps, and neither converges fast (see FAST_STEPS_ACCURACY).
    """
    gamma_min = float(schedule(torch.ones((), dtype=torch.float64)))
    return torch.linspace(1.0, gamma_min, steps + 1, dtype=torch.float64).to(dtype)


def sphere_log_prob_fast(field: Field, x: Tensor, grid: Tensor, mode: str) -> Tensor:
    """rfm log-density (M, K) of unit x (M, K, 3), RK4 in γ along ``grid`` (from 1 down to ≈ 0)."""
    _, L = _rk4(lambda y, g: _sphere_rhs(field, y, g, mode), x, grid)
    return sphere.LOG_UNIFORM_DENSITY + L


def sphere_log_prob_official(field: Field, x: Tensor, schedule, mode: str, rtol: float = 1e-6,
                             atol: float = 1e-6) -> tuple[Tensor, int]:
    """The official solve: dopri5 in t ∈ [0, 1], every point in one joint state. Returns (log p, NFE)."""
    from torchdiffeq import odeint

    shape = x.shape[:-1]
    nfe = [0]

    def rhs(t: Tensor, state: Tensor) -> Tensor:
        nfe[0] += 1
        pts = state[..., :3].reshape(*shape, 3)
        dgamma = schedule.derivative(t)
        dx, div = _sphere_rhs(field, pts, schedule(t), mode)
        return torch.cat([dgamma * dx.reshape(-1, 3), dgamma * div.reshape(-1, 1)], dim=-1)

    state0 = torch.cat([x.reshape(-1, 3), torch.zeros(x[..., :1].reshape(-1, 1).shape, dtype=x.dtype, device=x.device)], dim=-1)
    t = torch.linspace(0, 1.0, 2, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        end = odeint(rhs, state0, t, rtol=rtol, atol=atol, method="dopri5", options={"min_step": 1e-5})[-1]
    return sphere.LOG_UNIFORM_DENSITY + end[:, 3].reshape(shape), nfe[0]


# ---------------------------------------------------------------- R³ families


def _r3_log_prob(field: Field, family: str, x: Tensor, grid: Tensor) -> Tensor:
    """log p_R³ (M, K) of points x (M, K, 3) in model space. fm: RK4 along ``grid`` (gamma from 1 down to
    gamma_min); diffusion: as many RK4 steps, uniform in log σ over DIFFUSION_SIGMA_RANGE."""
    steps = len(grid) - 1
    if family == "fm":
        grid = grid.to(x.dtype)

        def rhs(y, g):
            v, J = field.with_jacobian(y, g)
            return v, J.diagonal(dim1=-2, dim2=-1).sum(-1)

        end, L = _rk4(rhs, x, grid)
        base = -0.5 * (end * end).sum(-1) - 1.5 * math.log(2 * math.pi)
        return base + L
    sigma_min, sigma_max = DIFFUSION_SIGMA_RANGE
    grid = torch.linspace(math.log(sigma_min), math.log(sigma_max), steps + 1, dtype=x.dtype)

    def rhs_sigma(y, lam):
        sigma = torch.exp(lam)
        g = 1.0 / (1.0 + sigma * sigma)
        eps, J = field.with_jacobian(torch.sqrt(g) * y, g)
        return sigma * eps, sigma * torch.sqrt(g) * J.diagonal(dim1=-2, dim2=-1).sum(-1)

    g_max = 1.0 / (1.0 + sigma_min**2)
    end, L = _rk4(rhs_sigma, x / math.sqrt(g_max), grid)
    var = 1.0 + sigma_max**2
    base = -0.5 * (end * end).sum(-1) / var - 1.5 * math.log(2 * math.pi * var)
    return base + L - 1.5 * math.log(g_max)


@dataclass(frozen=True)
class RadialShell:
    """Where the model's samples lie in R³, as a radial quadrature rule: one shell per embedding row.

    Trained R³ models put their samples on a very thin shell (inter-quartile range of the radius
    about 0.002 for the test models) with heavy tails, so the nodes are Gauss–Legendre in
    s = asinh((r − mid) / scale) over [lo, hi]: dense at the peak, logarithmically spread in the tails.
    Fields are float64 tensors of shape (M,).
    """

    lo: Tensor
    hi: Tensor
    mid: Tensor
    scale: Tensor

    def nodes(self, n: int) -> tuple[Tensor, Tensor]:
        """Radii r (M, n) and weights (M, n) for ∫ f(r) dr ≈ Σ w f(r), row by row."""
        z, w = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.legendre.leggauss(n))
        s_lo, s_hi = (torch.asinh((b - self.mid) / self.scale)[:, None] for b in (self.lo, self.hi))
        s = 0.5 * (s_hi - s_lo) * z + 0.5 * (s_hi + s_lo)
        r = self.mid[:, None] + self.scale[:, None] * torch.sinh(s)
        return r, 0.5 * (s_hi - s_lo) * w * self.scale[:, None] * torch.cosh(s)

    def rows(self, index) -> "RadialShell":
        """The shells of rows ``index`` (a slice or an index tensor)."""
        return RadialShell(self.lo[index], self.hi[index], self.mid[index], self.scale[index])

    @classmethod
    def from_radii(cls, radii: Tensor, pad: float = 6.0) -> "RadialShell":
        """From sample radii (M, K) (or (K,) for one row): peak at the median, scale = IQR / 1.349,
        range ⊇ [min, max] ± pad·std."""
        r = radii.double().reshape(-1, radii.shape[-1])
        mid, spread = r.median(dim=-1).values, r.std(dim=-1).clamp_min(1e-3)
        q = torch.quantile(r, torch.tensor([0.25, 0.75], dtype=r.dtype), dim=-1)
        scale = ((q[1] - q[0]) / 1.349).clamp_min(1e-4)
        lo = torch.minimum(r.min(dim=-1).values, mid - pad * spread).clamp_min(1e-6)
        return cls(lo, torch.maximum(r.max(dim=-1).values, mid + pad * spread), mid, scale)


def direction_log_prob(field: Field, family: str, u: Tensor, shell: RadialShell, grid: Tensor,
                       nodes: int = 24) -> Tensor:
    """log ∫ p_R³(r u) r² dr (M, K) for unit u (M, K, 3), by ``nodes`` Gauss–Legendre nodes on each
    row's shell (M rows, or one shell for all rows).

    The quadrature error is estimated by comparing with another node count (the tests double it).
    """
    M, K = u.shape[:2]
    r, w = (a.to(device=u.device, dtype=u.dtype).expand(M, nodes) for a in shell.nodes(nodes))
    pts = (r[:, None, :, None] * u[:, :, None, :]).reshape(M, K * nodes, 3)
    lp = _r3_log_prob(field, family, pts, grid).reshape(M, K, nodes)
    return torch.logsumexp(lp + 2 * torch.log(r[:, None]) + torch.log(w[:, None]), dim=-1)


def latlon_grid(resolution_deg: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre latitudes (H,) and longitudes (W,) in degrees for a global grid."""
    n_lat, n_lon = round(180 / resolution_deg), round(360 / resolution_deg)
    if not (math.isclose(n_lat * resolution_deg, 180) and math.isclose(n_lon * resolution_deg, 360)):
        raise ValueError(f"resolution_deg must divide 180 and 360; got {resolution_deg}")
    lats = -90 + resolution_deg * (np.arange(n_lat) + 0.5)
    lons = -180 + resolution_deg * (np.arange(n_lon) + 0.5)
    return lats, lons


def cell_areas_sr(lats_deg: np.ndarray, resolution_deg: float) -> np.ndarray:
    """Area in steradians of grid cells centred at lats (H,), each ``resolution_deg`` wide: (H,)."""
    half = math.radians(resolution_deg) / 2
    lat = np.radians(lats_deg)
    return math.radians(resolution_deg) * (np.sin(lat + half) - np.sin(lat - half))
