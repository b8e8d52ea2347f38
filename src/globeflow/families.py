"""The three generative families: what the network learns and what it predicts.

Notation (code → paper): ``x1`` data point (unit vector, gamma = 1), ``noise``
the base draw (gamma = 0), ``y`` the noisy point the network sees, ``target``
the regression target of the network output.

- ``rfm``  Riemannian flow matching on S² (PLONK Eq. 9–10): noise uniform on S²,
  y = geodesic(noise → x1) at fraction gamma, target = d y / d gamma
  = θ(cos(γθ) x1 − cos((1−γ)θ) noise) / sin θ in closed form (θ = angle).
- ``fm``   flow matching in R³: noise ~ N(0, I), y = γ x1 + (1 − γ) noise,
  target = x1 − noise.
- ``diffusion`` DDPM ε-prediction in R³ (gamma = ᾱ): y = √γ x1 + √(1 − γ) noise,
  target = noise.

The per-sample loss is the mean squared error over the 3 coordinates, as the
official losses (for ``rfm`` the official ``inner(diff, diff) / 3``).
Conditioning dropout replaces the embedding by zeros (the null condition).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from globeflow import sphere

FAMILIES = ("rfm", "fm", "diffusion")


@dataclass(frozen=True)
class Corruption:
    y: Tensor  # (B, 3) the network input
    target: Tensor  # (B, 3) the regression target


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    return family


def draw_noise(family: str, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """Base draws (*shape, 3): uniform on S² for ``rfm``, N(0, I) in R³ otherwise."""
    if check_family(family) == "rfm":
        return sphere.uniform(shape, generator=generator, dtype=dtype)
    return torch.randn(*shape, 3, generator=generator, dtype=dtype)


def rfm_target(noise: Tensor, x1: Tensor, gamma: Tensor) -> Corruption:
    """Slerp from noise (γ = 0) to x1 (γ = 1) and its γ-derivative, both (B, 3); gamma (B,)."""
    theta = sphere.angle(noise, x1)[..., None]
    g = gamma[..., None]
    small = theta < 1e-4
    sin_t = torch.where(small, torch.ones_like(theta), torch.sin(theta))
    a = torch.where(small, 1 - g, torch.sin((1 - g) * theta) / sin_t)
    b = torch.where(small, g, torch.sin(g * theta) / sin_t)
    da = torch.where(small, -torch.ones_like(g), -theta * torch.cos((1 - g) * theta) / sin_t)
    db = torch.where(small, torch.ones_like(g), theta * torch.cos(g * theta) / sin_t)
    y = sphere.normalize(a * noise + b * x1)
    return Corruption(y, da * noise + db * x1)


def corrupt(family: str, x1: Tensor, noise: Tensor, gamma: Tensor) -> Corruption:
    """Noisy input and target for data x1 (B, 3), base draws noise (B, 3), gamma (B,)."""
    g = gamma[..., None]
    if family == "rfm":
        return rfm_target(noise, x1, gamma)
    if family == "fm":
        return Corruption(g * x1 + (1 - g) * noise, x1 - noise)
    if family == "diffusion":
        return Corruption(torch.sqrt(g) * x1 + torch.sqrt(1 - g) * noise, noise)
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def loss(family: str, net, x1: Tensor, emb: Tensor, gamma: Tensor, noise: Tensor,
         drop: Tensor | None = None) -> Tensor:
    """Per-sample loss (B,): MSE of ``net(y, emb, gamma)`` against the family's target.

    drop: optional (B,) bool mask; True rows use the null (zero) embedding.
    """
    if drop is not None:
        emb = torch.where(drop[:, None], torch.zeros_like(emb), emb)
    c = corrupt(family, x1, noise, gamma)
    pred = net(c.y, emb, gamma)
    return ((pred.float() - c.target.float()) ** 2).mean(-1)
