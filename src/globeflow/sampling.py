"""Samplers: from base draws to locations, stateless and seedable.

Notation: ``t`` time (0 data, 1 noise), ``gamma = schedule(t)`` (1 data,
0 noise), ``h = gamma_{i+1} − gamma_i`` (> 0) the step in gamma, ``v`` the
guided network output ``(1 + w)·v_cond − w·v_uncond`` (PLONK Eq. 12).
Points are (M, K, 3): K samples for each of M embeddings.

Methods per family (grid ``t_i = 1 − i/N``, i = 0..N, as the official code):

- ``rfm``: ``euler`` (official: x ← normalize(x + h v)), ``heun`` (2nd order:
  Heun on the tangent field P(x)v with renormalisation after each stage).
- ``fm``: ``euler`` (official: x ← x + h v), ``heun``.
- ``diffusion``: ``ddim`` (official; ``clamp=True`` clips x̂₀ to [−1, 1] like
  the official sampler, which leaves the probability-flow ODE's
  distribution — pass ``clamp=False`` for the exact ODE discretisation),
  ``ddpm`` (ancestral, stochastic), ``heun`` (2nd order on the DDIM ODE in
  σ = √((1−γ)/γ), as EDM Algorithm 1, on N geometric σ steps over
  :data:`DIFFUSION_SIGMA_RANGE`: the same ODE, start and end as the diffusion
  density, so its samples follow ``log_prob`` as the steps grow).

Why the diffusion ODE starts at σ_max = 100 (γ ≈ 1e-4) rather than the schedule's γ = 1e-9:
in y = x/√γ the ODE is dy/dσ = ε̂, so between σ = 100 and 31,623 any network error in ε̂ moves
y by up to 31,623 × that error; trained networks see γ < 1e-4 in about 0.3 % of their training
draws, and on the small test model this flings a large share of the samples to radii far off the
data shell (the official sampler hides it by clamping x̂₀). Starting from x ~ N(0, I) at γ_min =
1e-4 instead changes the model by at most KL = γ_min·E|x₀|²/2 ≈ 5e-5 nats for a network exact
there. The ODE ends at σ_min = 1e-3 (a 1e-3-radian smoothing of the data density).

The conditioning path is computed once per embedding and per network
evaluation and shared by the K samples (:class:`Field`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from globeflow import sphere
from globeflow.network import Denoiser
from globeflow.precision import resolve_precision

DIFFUSION_SIGMA_RANGE = (1e-3, 100.0)  # (σ_min, σ_max) of the diffusion ODE (heun sampler and densities)
SAMPLERS = {"rfm": ("euler", "heun"), "fm": ("euler", "heun"), "diffusion": ("ddim", "ddpm", "heun")}
DEFAULT_SAMPLER = {"rfm": "euler", "fm": "euler", "diffusion": "ddim"}


class Field:
    """The guided network field for M embeddings, conditioning shared across samples.

    emb: (M, C); cfg: guidance weight w ≥ −1 in v = (1 + w)·v_cond − w·v_uncond: 0 = the conditional
    field (1 network call), w > 0 sharpens, −1 < w < 0 shrinks towards the unconditional prior, and
    −1 is the prior alone (1 network call, the null condition).
    cfg_until: the guidance acts while gamma < cfg_until and the conditional field (w = 0) drives the
    rest of the path (guidance in a limited interval, Kynkäänniemi et al. 2024): the noisy part
    decides how mass is shared between regions, the data end how sharp each mode is. 1 = everywhere
    (PLONK). The field stays one deterministic vector field, so ODE densities remain exact.
    precision: ``fp32`` | ``bf16`` | ``auto`` arithmetic of the blocks' matmuls in :meth:`__call__` and
    :meth:`directional` (:mod:`globeflow.precision`); densities of given points (:mod:`globeflow.density`)
    build their fields with the default ``fp32``.
    """

    def __init__(self, net: Denoiser, emb: Tensor, cfg: float = 0.0, precision: str = "fp32",
                 cfg_until: float = 1.0) -> None:
        if not cfg >= -1:
            raise ValueError(f"cfg must be ≥ −1 (−1 = the unconditional prior); got {cfg}")
        if not 0 < cfg_until <= 1:
            raise ValueError(f"cfg_until must be in (0, 1] (1 = guidance on the whole path); got {cfg_until}")
        self.net, self.emb, self.cfg, self.until = net, emb, float(cfg), float(cfg_until)
        self.null = torch.zeros_like(emb[:1])
        self.precision = resolve_precision(precision, emb.device)
        if self.precision == "bf16" and emb.dtype != torch.float32:
            self.precision = "fp32"  # bf16 matmuls are a float32 speed-up; a float64 network stays float64
        self._apply = net.apply_bf16 if self.precision == "bf16" else net.apply
        # cond_mapper outputs (M, dim) and (1, dim): independent of gamma, so computed once for every step
        self._cond = None if self.cfg == -1 and self.until == 1 else net.cond_mapper(emb)
        self._cond_null = net.cond_mapper(self.null) if self.cfg != 0 else None

    def weight(self, gamma: Tensor) -> float:
        """The guidance weight at ``gamma`` (0-d): ``cfg`` while gamma < ``cfg_until``, else 0."""
        return self.cfg if self.until == 1 or float(gamma) < self.until else 0.0

    def modulations(self, gamma: Tensor) -> tuple[Tensor, Tensor | None, float]:
        """gamma: 0-d tensor → (M, P) conditional and (1, P) unconditional modulations, and the weight.

        At weight −1 the first is the null condition's (1, P), broadcast over M, and the second None.
        """
        w = self.weight(gamma)
        g = gamma.to(device=self.emb.device, dtype=self.emb.dtype).reshape(1)
        if w == -1:
            return self.net.modulation(self.null, g, self._cond_null), None, w
        mod_c = self.net.modulation(self.emb, g.expand(self.emb.shape[0]), self._cond)
        mod_u = self.net.modulation(self.null, g, self._cond_null) if w != 0 else None
        return mod_c, mod_u, w

    def _combine(self, x: Tensor, mod_c: Tensor, mod_u: Tensor | None, w: float) -> Tensor:
        v = self._apply(x, mod_c)
        if mod_u is None:
            return v
        return (1 + w) * v - w * self._apply(x, mod_u)

    def __call__(self, x: Tensor, gamma: Tensor) -> Tensor:
        """x (M, K, 3) → v (M, K, 3)."""
        mod_c, mod_u, w = self.modulations(gamma)
        dtype = mod_c.dtype
        out = self._combine(x.to(dtype), mod_c[:, None], None if mod_u is None else mod_u[:, None], w)
        return out.to(x.dtype)

    def directional(self, x: Tensor, gamma: Tensor, tangents: Tensor) -> tuple[Tensor, Tensor]:
        """x (M, K, 3), tangents (M, K, T, 3) → v (M, K, 3) and J·tangents (M, K, T, 3) (forward mode)."""
        mod_c, mod_u, w = self.modulations(gamma)
        dtype = mod_c.dtype
        xs, ts = x.to(dtype), tangents.to(dtype)
        bf16 = self.precision == "bf16"
        v, jt = self.net.apply_jvp(xs, ts, mod_c[:, None], bf16=bf16)
        if mod_u is not None:
            vu, jtu = self.net.apply_jvp(xs, ts, mod_u[:, None], bf16=bf16)
            v, jt = (1 + w) * v - w * vu, (1 + w) * jt - w * jtu
        return v.to(x.dtype), jt.to(x.dtype)

    def with_jacobian(self, x: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
        """x (M, K, 3) → v (M, K, 3) and its ambient Jacobian (M, K, 3, 3), ``J[..., i, j] = ∂v_i/∂x_j``."""
        eye = torch.eye(3, dtype=x.dtype, device=x.device).expand(*x.shape[:-1], 3, 3)
        v, jt = self.directional(x, gamma, eye)  # jt[..., j, :] = J e_j = column j of J
        return v, jt.transpose(-1, -2)


def time_grid(steps: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The official grid t_i = 1 − i/N, i = 0..N, shape (N + 1,)."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1; got {steps}")
    return 1 - torch.arange(steps + 1, dtype=dtype) / steps


@dataclass(frozen=True)
class SampleOutput:
    x: Tensor  # (M, K, 3) final points in model space (unit vectors for rfm)
    log_prob: Tensor | None  # (M, K) nats per steradian of the discrete sampler's output (rfm), else None


def _sphere_step_logdet(z: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """log|det| of x ↦ normalize(z(x)) on tangent planes, from Dz·e1 = a and Dz·e2 = b (..., 3)."""
    y = sphere.normalize(z)
    det = (y * torch.linalg.cross(a, b, dim=-1)).sum(-1) / (z * z).sum(-1)
    return torch.log(det.abs())


def _rfm_step(field: Field, x: Tensor, g0: Tensor, g1: Tensor, method: str) -> Tensor:
    """One unnormalised step z(x) on the sphere (see module docstring)."""
    h = g1 - g0
    if method == "euler":
        return x + h * field(x, g0)
    v1 = sphere.project_tangent(x, field(x, g0))
    x_pred = sphere.normalize(x + h * v1)
    v2 = sphere.project_tangent(x_pred, field(x_pred, g1))
    return x + 0.5 * h * (v1 + v2)


def sphere_field_jvp(field: Field, x: Tensor, g: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
    """f = P(x)·v(x, g) at unit x (..., 3) and its derivatives along tangent directions dx (..., T, 3).

    d/dx [P v]·u = P J u − (x·v) u − x (v·u) for tangent u.
    """
    v, Ju = field.directional(x, g, dx)
    xv = (x * v).sum(-1)[..., None, None]
    vu = (dx * v[..., None, :]).sum(-1, keepdim=True)
    df = sphere.project_tangent(x[..., None, :], Ju) - xv * dx - x[..., None, :] * vu
    return sphere.project_tangent(x, v), df


def _rfm_step_with_logdet(field: Field, x: Tensor, g0: Tensor, g1: Tensor, method: str) -> tuple[Tensor, Tensor]:
    """Step and its tangent log-determinant, by forward-mode derivatives along two tangent directions."""
    h = g1 - g0
    basis = torch.stack(sphere.tangent_basis(x), dim=-2)  # (..., 2, 3)
    if method == "euler":
        v, Ju = field.directional(x, g0, basis)
        z = x + h * v
        dz = basis + h * Ju
        return z, _sphere_step_logdet(z, dz[..., 0, :], dz[..., 1, :])
    f1, df1 = sphere_field_jvp(field, x, g0, basis)
    w = x + h * f1
    n = w.norm(dim=-1, keepdim=True)
    x_pred = w / n
    dw = basis + h * df1
    dxp = sphere.project_tangent(x_pred[..., None, :], dw) / n[..., None]
    f2, df2 = sphere_field_jvp(field, x_pred, g1, dxp)
    z = x + 0.5 * h * (f1 + f2)
    dz = basis + 0.5 * h * (df1 + df2)
    return z, _sphere_step_logdet(z, dz[..., 0, :], dz[..., 1, :])


def sample_rfm(field: Field, x: Tensor, gammas: Tensor, method: str = "euler",
               track_log_prob: bool = False) -> SampleOutput:
    """Integrate from unit x (M, K, 3) at gammas[0] ≈ 0 to gammas[-1] = 1."""
    log_prob = torch.full(x.shape[:-1], sphere.LOG_UNIFORM_DENSITY, dtype=x.dtype, device=x.device) if track_log_prob else None
    for g0, g1 in zip(gammas[:-1], gammas[1:]):
        if track_log_prob:
            z, logdet = _rfm_step_with_logdet(field, x, g0, g1, method)
            log_prob = log_prob - logdet
        else:
            z = _rfm_step(field, x, g0, g1, method)
        x = sphere.normalize(z)
    return SampleOutput(x, log_prob)


def sample_fm(field: Field, x: Tensor, gammas: Tensor, method: str = "euler") -> SampleOutput:
    """Flow matching in R³: plain Euler (official) or Heun in gamma."""
    for g0, g1 in zip(gammas[:-1], gammas[1:]):
        h = g1 - g0
        v1 = field(x, g0)
        if method == "euler":
            x = x + h * v1
        else:
            v2 = field(x + h * v1, g1)
            x = x + 0.5 * h * (v1 + v2)
    return SampleOutput(x, None)


def _ddim_parts(field: Field, x: Tensor, g: Tensor, clamp: bool) -> tuple[Tensor, Tensor]:
    eps = field(x, g)
    x0 = (x - torch.sqrt(1 - g) * eps) / torch.sqrt(g)
    if clamp:
        x0 = x0.clamp(-1, 1)
        eps = (x - torch.sqrt(g) * x0) / torch.sqrt(1 - g)
    return x0, eps


def sample_diffusion(field: Field, x: Tensor, gammas: Tensor, method: str = "ddim", *, clamp: bool = True,
                     generators: list[torch.Generator] | None = None) -> SampleOutput:
    """DDPM ε-prediction in R³ with gamma = ᾱ. ``generators``: one per embedding row (ddpm only).

    ``heun`` takes only the step count from ``gammas`` (see :func:`sample_diffusion_heun`).
    """
    if method == "heun":
        return sample_diffusion_heun(field, x, len(gammas) - 1, clamp=clamp)
    last = len(gammas) - 2
    for i, (g0, g1) in enumerate(zip(gammas[:-1], gammas[1:])):
        x0, eps = _ddim_parts(field, x, g0, clamp)
        if method == "ddim":
            x = torch.sqrt(g1) * x0 + torch.sqrt(1 - g1) * eps
        else:  # ddpm
            var = ((1 - g1) / (1 - g0) * (1 - g0 / g1)).clamp_min(0) if i < last else torch.zeros_like(g0)
            mean = torch.sqrt(g1) * x0 + torch.sqrt((1 - g1 - var).clamp_min(0)) * eps
            z = torch.stack([torch.randn(x.shape[1:], generator=gen, dtype=x.dtype) for gen in generators])
            x = mean + torch.sqrt(var) * z
    return SampleOutput(x, None)


def diffusion_sigmas(steps: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """(steps + 1,) geometric σ nodes from σ_max down to σ_min (:data:`DIFFUSION_SIGMA_RANGE`)."""
    lo, hi = DIFFUSION_SIGMA_RANGE
    return torch.exp(torch.linspace(math.log(hi), math.log(lo), steps + 1, dtype=torch.float64)).to(dtype)


def sample_diffusion_heun(field: Field, x: Tensor, steps: int, *, clamp: bool = False) -> SampleOutput:
    """Heun on dy/dσ = ε̂(√γ y, γ), y = x/√γ, γ = 1/(1 + σ²), from x (M, K, 3) ~ N(0, I) at σ_max to
    σ_min (the returned x = √γ y there). ``clamp``: clip x̂₀ to [−1, 1] as the official DDIM (leaves the ODE)."""
    sig = diffusion_sigmas(steps, x.dtype)
    y = x * torch.sqrt(1 + sig[0] ** 2)
    for s0, s1 in zip(sig[:-1], sig[1:]):
        g0, g1 = 1 / (1 + s0 * s0), 1 / (1 + s1 * s1)
        eps0 = _ddim_parts(field, torch.sqrt(g0) * y, g0, clamp)[1]
        y1 = y + (s1 - s0) * eps0
        eps1 = _ddim_parts(field, torch.sqrt(g1) * y1, g1, clamp)[1]
        y = y + (s1 - s0) * 0.5 * (eps0 + eps1)
    return SampleOutput(y / torch.sqrt(1 + sig[-1] ** 2), None)
