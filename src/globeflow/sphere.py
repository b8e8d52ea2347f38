"""Geometry of the unit sphere S² ⊂ R³.

Notation (code → paper): ``x`` a point on S² as a unit vector (x, y, z);
``latlon`` (latitude, longitude) in **degrees**; ``v`` a tangent vector at x.

Conventions: latitude in [-90, 90], longitude in (-180, 180], z is the polar
axis, (lat 0, lon 0) ↦ (1, 0, 0). Distances on Earth use the mean radius
6371 km, as the official PLONK/OSV-5M metrics do.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

EARTH_RADIUS_KM = 6371.0
SPHERE_AREA = 4.0 * math.pi  # steradians
LOG_UNIFORM_DENSITY = -math.log(SPHERE_AREA)  # nats per steradian, ≈ -2.531
EARTH_AREA_KM2 = SPHERE_AREA * EARTH_RADIUS_KM**2


def latlon_to_xyz(latlon_deg: Tensor) -> Tensor:
    """(..., 2) degrees → (..., 3) unit vectors."""
    lat, lon = torch.deg2rad(latlon_deg).unbind(-1)
    cos_lat = torch.cos(lat)
    return torch.stack([cos_lat * torch.cos(lon), cos_lat * torch.sin(lon), torch.sin(lat)], dim=-1)


def xyz_to_latlon(xyz: Tensor) -> Tensor:
    """(..., 3) non-zero vectors (normalised first) → (..., 2) degrees.

    Uses ``atan2`` for both angles, which is accurate at the poles and for
    vectors slightly off the sphere.
    """
    x, y, z = xyz.unbind(-1)
    lat = torch.atan2(z, torch.hypot(x, y))
    lon = torch.atan2(y, x)
    return torch.rad2deg(torch.stack([lat, lon], dim=-1))


def normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Project (..., 3) vectors radially onto S² (the retraction used by the samplers)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def angle(x: Tensor, y: Tensor) -> Tensor:
    """Great-circle angle in radians between (..., 3) unit vectors, via atan2(|x×y|, x·y)."""
    cross = torch.linalg.cross(x, y, dim=-1).norm(dim=-1)
    return torch.atan2(cross, (x * y).sum(-1))


def haversine_km(a_deg: Tensor, b_deg: Tensor, radius_km: float = EARTH_RADIUS_KM) -> Tensor:
    """Great-circle distance in km between (..., 2) degree coordinates (haversine formula)."""
    lat1, lon1 = torch.deg2rad(a_deg).unbind(-1)
    lat2, lon2 = torch.deg2rad(b_deg).unbind(-1)
    h = torch.sin((lat2 - lat1) / 2) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
    return 2 * radius_km * torch.asin(torch.sqrt(h.clamp(0.0, 1.0)))


def project_tangent(x: Tensor, v: Tensor) -> Tensor:
    """P(x) v = v − (x·v) x: the component of (..., 3) v tangent to S² at unit x."""
    return v - (x * v).sum(-1, keepdim=True) * x


def _any_perpendicular(x: Tensor) -> Tensor:
    """A unit vector orthogonal to each unit x (deterministic choice)."""
    helper = torch.zeros_like(x)
    use_z = x[..., 2].abs() < 0.9
    helper[..., 2] = use_z.to(x.dtype)
    helper[..., 0] = (~use_z).to(x.dtype)
    return normalize(torch.linalg.cross(x, helper, dim=-1))


def tangent_basis(x: Tensor) -> tuple[Tensor, Tensor]:
    """Orthonormal e1, e2 (..., 3) tangent at unit x (..., 3), with e1 × e2 = x."""
    e1 = _any_perpendicular(x)
    return e1, torch.linalg.cross(x, e1, dim=-1)


def log_map(x: Tensor, y: Tensor) -> Tensor:
    """Riemannian logarithm log_x(y): tangent vector at x of length angle(x, y) pointing to y.

    Safe at coincident points (returns 0) and antipodal points (returns a
    deterministic tangent direction of length π).
    """
    theta = angle(x, y).unsqueeze(-1)
    direction = project_tangent(x, y)
    norm = direction.norm(dim=-1, keepdim=True)
    degenerate = norm < 1e-12
    unit = torch.where(degenerate, _any_perpendicular(x), direction / norm.clamp_min(1e-30))
    # coincident points: theta = 0, so the direction chosen does not matter
    return theta * unit


def exp_map(x: Tensor, v: Tensor) -> Tensor:
    """Riemannian exponential exp_x(v) = cos|v| x + sin|v| v/|v| (exact geodesic step)."""
    norm = v.norm(dim=-1, keepdim=True)
    sinc = torch.where(norm > 1e-12, torch.sin(norm) / norm.clamp_min(1e-30), 1.0 - norm**2 / 6)
    return normalize(torch.cos(norm) * x + sinc * v)


def geodesic(x0: Tensor, x1: Tensor, s: Tensor | float) -> Tensor:
    """Point at fraction s of the geodesic from x0 to x1, exp_{x0}(s log_{x0}(x1)).

    x0, x1: (..., 3) unit vectors; s: scalar or (...,) (0 → x0, 1 → x1).
    """
    s = torch.as_tensor(s, dtype=x0.dtype, device=x0.device)
    return exp_map(x0, s[..., None] * log_map(x0, x1))


def uniform(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None = None,
            dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """Uniform points on S², shape (*shape, 3), from normalised Gaussian draws."""
    g = torch.randn(*shape, 3, generator=generator, dtype=dtype, device=device)
    return normalize(g)
