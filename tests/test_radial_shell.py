"""The radial rule of the R³ direction densities resolves thin shells with heavy tails; the shells and
the samples they are compared with come from one ODE sampler."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from globeflow import evaluation
from globeflow.density import RadialShell
from globeflow.geolocator import Geolocator

MODELS = Path(__file__).parent / "models"


@pytest.mark.parametrize("width", [0.002, 0.05])
def test_asinh_nodes_integrate_a_thin_peak_with_tails(width):
    """∫ of a Gaussian peak (sd ``width``) plus a Cauchy-like tail, against the closed form."""
    radii = torch.cat([1 + width * torch.randn(4000, generator=torch.Generator().manual_seed(0)),
                       torch.tensor([0.7, 1.3])])
    shell = RadialShell.from_radii(radii)
    lo, hi = float(shell.lo), float(shell.hi)

    def f(r):
        return np.exp(-0.5 * ((r - 1) / width) ** 2) / (width * math.sqrt(2 * math.pi)) + 0.01 / (1 + ((r - 1) / 0.1) ** 2)

    def phi(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    exact = phi((hi - 1) / width) - phi((lo - 1) / width) + 0.01 * 0.1 * (math.atan((hi - 1) / 0.1) - math.atan((lo - 1) / 0.1))
    r, w = (a[0] for a in shell.nodes(24 if width < 0.01 else 12))  # 24 = Geolocator.log_prob's default radial_nodes
    assert abs(float((w.numpy() * f(r.numpy())).sum()) / exact - 1) < 1e-3
    # a rule uniform in r over the same range, with as many nodes, misses the thin peak badly
    z, wz = np.polynomial.legendre.leggauss(24)
    r_lin = 0.5 * (hi - lo) * z + 0.5 * (hi + lo)
    if width < 0.01:
        assert abs((0.5 * (hi - lo) * wz * f(r_lin)).sum() / exact - 1) > 0.1


def _recording(geo: Geolocator) -> list[tuple[tuple[int, ...], str | None]]:
    """Replace geo.sample by a wrapper that records (embedding shape, sampler) of each call."""
    calls, sample = [], geo.sample
    geo.sample = lambda emb, *a, **kw: calls.append((tuple(emb.shape), kw.get("sampler"))) or sample(emb, *a, **kw)
    return calls


@pytest.mark.parametrize("family", ["rfm", "fm", "diffusion"])
def test_one_rule_picks_the_sampler_of_r3_densities(family):
    """Geolocator.ode_sampler is the rule; log_prob's shells and evaluation's samples both follow it."""
    geo = Geolocator.from_pretrained(MODELS / f"{family}_uncond")
    expected = {} if family == "rfm" else {"sampler": "heun", "clamp": False}
    assert geo.ode_sampler() == expected and evaluation.ode_sampler(geo) == expected
    if family != "rfm":
        calls = _recording(geo)
        geo.log_prob(torch.zeros(1, 1), torch.tensor([[48.8, 2.3]], dtype=torch.float64), steps=4)
        assert [s for _, s in calls] == ["heun"]


def test_heun_follows_the_fm_ode_where_euler_does_not():
    """Why the rule is Heun for fm too: at 32 steps Euler lands far from the ODE's own samples."""
    geo = Geolocator.from_pretrained(MODELS / "fm_uncond")
    kw = dict(seed=0, return_xyz=True)
    ref = geo.sample(torch.zeros(1, 1), 256, steps=512, sampler="heun", **kw)
    err = {s: float((geo.sample(torch.zeros(1, 1), 256, steps=32, sampler=s, **kw) - ref).norm(dim=-1).mean())
           for s in ("euler", "heun")}
    assert err["heun"] < err["euler"] / 4, err


def test_a_broadcast_embedding_draws_its_shell_once():
    """log_prob with one (1, D) embedding for M rows (or M × K points) draws one shell, not M."""
    geo = Geolocator.from_pretrained(MODELS / "fm_uncond")
    calls = _recording(geo)
    ll = torch.tensor([[48.8, 2.3], [-33.9, 151.2], [40.7, -74.0], [0.0, 0.0]], dtype=torch.float64)
    assert geo.log_prob(torch.zeros(1, 1), ll, steps=4).shape == (4,)
    assert geo.log_prob(torch.zeros(1, 1), ll.reshape(2, 2, 2), steps=4).shape == (2, 2)
    assert [shape for shape, _ in calls] == [(1, 1), (1, 1)]
