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

Solvers: ``fast`` (default) is RK4 with a fixed, uniform grid in γ (or λ), the
log-density integral by Simpson's rule along the RK4 path (half the stages need no
derivatives), every point independent of the others; its accuracy is stated in
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
    "fast solver: RK4 with 128 uniform steps in gamma, the log-density by Simpson's rule along the RK4 "
    "path (513 network evaluations, 257 of them with hand-written forward-mode derivatives along two "
    "tangent directions, riemannian, or three, ambient). On the random-weight reference fixture: max "
    "error 2.6e-4 nats at cfg 0 and 8.0e-4 at cfg 2 (riemannian; ambient 1.7e-4 and 3.8e-4), the same "
    "as classical RK4 on (x, L) at every step count from 16 to 256; 32 steps stay under 1e-2. On small "
    "trained models the field is sharp near the data end and errors at low-density points are larger "
    "(up to ~3e-3 nats at 128 steps and 0.12 at 32 on tests/models/rfm_uncond): raise `steps` there"
)


def _sphere_rhs(field: Field, x: Tensor, gamma: Tensor, mode: str,
                div: bool = True) -> tuple[Tensor, Tensor | None]:
    """d/dγ of (x, L) for x (M, K, 3); L's rate (the divergence) only when ``div``, else None.

    ``riemannian``: at x normalised, f = P v with surface divergence Σ_i e_i·(Df e_i) over a tangent
    basis (= tr J − xᵀJx − 2 x·v), two directional derivatives. ``ambient``: v and tr J (three).
    """
    if mode == "ambient":
        return _ambient_rhs(field, x, gamma, div)
    x = sphere.normalize(x)
    if not div:
        return sphere.project_tangent(x, field(x, gamma)), None
    basis = torch.stack(sphere.tangent_basis(x), dim=-2)  # (M, K, 2, 3)
    f, df = sphere_field_jvp(field, x, gamma, basis)
    return f, (basis * df).sum((-1, -2))


def _ambient_rhs(field: Field, x: Tensor, gamma: Tensor, div: bool = True) -> tuple[Tensor, Tensor | None]:
    """v (M, K, 3) and, when ``div``, tr J (M, K): three directional derivatives."""
    if not div:
        return field(x, gamma), None
    v, J = field.with_jacobian(x, gamma)
    return v, J.diagonal(dim1=-2, dim2=-1).sum(-1)


def _rk4_simpson(rhs, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """RK4 of x along the grid s (n + 1,) and L = ∫ div ds by Simpson's rule on that path; x_end, L_end.

    ``rhs(x, s, div)`` gives (dx/ds, div or None). Simpson takes the divergence at the nodes and at
    the third stage (the midpoint), so only two of the four stages per step, and the last node, need
    derivatives: 2n + 1 of the 4n + 1 evaluations instead of all 4n of classical RK4 on (x, L). x is
    the same RK4 path; L has the same order in the step for the γ-dependence (the stiff part here);
    the midpoint's O(h³) position error is the price, measured in FAST_STEPS_ACCURACY.
    """
    k1, d0 = rhs(x, s[0], True)
    L = torch.zeros_like(d0)
    for s0, s1 in zip(s[:-1], s[1:]):
        h = s1 - s0
        k2, _ = rhs(x + 0.5 * h * k1, s0 + 0.5 * h, False)
        k3, d_mid = rhs(x + 0.5 * h * k2, s0 + 0.5 * h, True)
        k4, _ = rhs(x + h * k3, s1, False)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        k1, d1 = rhs(x, s1, True)
        L = L + h / 6 * (d0 + 4 * d_mid + d1)
        d0 = d1
    return x, L


def fast_evaluations(steps: int) -> int:
    """Network evaluations of the fast solver for ``steps`` steps: 4n + 1, of which 2n + 1 with derivatives."""
    return 4 * steps + 1


def gamma_grid(schedule, steps: int, dtype: torch.dtype, data_dense: bool = False) -> Tensor:
    """RK4 nodes in gamma from the data end (1) to gamma(t = 1) (the noise end).

    Uniform in gamma by default: it resolves the network's cos/sin(1000·gamma·f) time features
    evenly (the accuracy of FAST_STEPS_ACCURACY). ``data_dense``: γ_k = 1 − (1 − γ_min)·(k/n)², for
    fields that are sharpest near the data end (networks with Fourier position features, which resolve
    sub-100 km clusters): on such a prior model the uniform grid underestimates the NLL by 1.77 nats
    at 32 steps and 0.18 at 128, this one overestimates it by 0.14 and 0.03 (converged value from 512
    steps of either; 600 Im2GPS3k locations).
    """
    gamma_min = float(schedule(torch.ones((), dtype=torch.float64)))
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    return (1.0 - (1.0 - gamma_min) * (u ** 2 if data_dense else u)).to(dtype)


def sphere_log_prob_fast(field: Field, x: Tensor, grid: Tensor, mode: str) -> Tensor:
    """rfm log-density (M, K) of unit x (M, K, 3), RK4 in γ along ``grid`` (from 1 down to ≈ 0)."""
    _, L = _rk4_simpson(lambda y, g, div: _sphere_rhs(field, y, g, mode, div), x, grid)
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

        end, L = _rk4_simpson(lambda y, g, div: _ambient_rhs(field, y, g, div), x, grid)
        base = -0.5 * (end * end).sum(-1) - 1.5 * math.log(2 * math.pi)
        return base + L
    sigma_min, sigma_max = DIFFUSION_SIGMA_RANGE
    grid = torch.linspace(math.log(sigma_min), math.log(sigma_max), steps + 1, dtype=x.dtype)

    def rhs_sigma(y, lam, div):
        sigma = torch.exp(lam)
        g = 1.0 / (1.0 + sigma * sigma)
        eps, tr = _ambient_rhs(field, torch.sqrt(g) * y, g, div)
        return sigma * eps, None if tr is None else sigma * torch.sqrt(g) * tr

    g_max = 1.0 / (1.0 + sigma_min**2)
    end, L = _rk4_simpson(rhs_sigma, x / math.sqrt(g_max), grid)
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
