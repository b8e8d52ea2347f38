"""Samplers: seeding and batching, guidance, higher-order convergence, discrete log-densities."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from globeflow import Geolocator, sphere
from globeflow.sampling import Field

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "plonk_reference_small"
pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason=f"reference fixture missing at {FIXTURE}")


@pytest.fixture(scope="module")
def emb():
    return torch.tensor(np.load(FIXTURE / "reference.npz")["emb"])


def load(family):
    return Geolocator.from_pretrained(FIXTURE, family=family)


@pytest.mark.parametrize("family,sampler", [("rfm", "euler"), ("rfm", "heun"), ("fm", "euler"),
                                            ("diffusion", "ddim"), ("diffusion", "ddpm")])
def test_batch_of_8_equals_8_single_calls(emb, family, sampler):
    geo = load(family)
    batch = geo.sample(emb, 5, steps=8, cfg=1.0, sampler=sampler, seed=list(range(8)), return_xyz=True)
    singles = torch.cat([geo.sample(emb[i:i + 1], 5, steps=8, cfg=1.0, sampler=sampler, seed=i, return_xyz=True)
                         for i in range(8)])
    assert torch.allclose(batch, singles, atol=1e-5)
    # an int seed means seed + row
    assert torch.allclose(geo.sample(emb, 5, steps=8, cfg=1.0, sampler=sampler, seed=0, return_xyz=True), batch,
                          atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])


def test_guidance_combination(emb):
    geo = load("rfm")
    x = sphere.uniform((8, 4), generator=torch.Generator().manual_seed(0))
    g = torch.tensor(0.3)
    with torch.no_grad():
        v = Field(geo.net, emb, cfg=2.0)(x, g)
        vc = geo.net(x.reshape(-1, 3), emb.repeat_interleave(4, 0), g.expand(32)).reshape(8, 4, 3)
        vu = geo.net(x.reshape(-1, 3), torch.zeros(32, 32), g.expand(32)).reshape(8, 4, 3)
    assert torch.allclose(v, 3 * vc - 2 * vu, atol=1e-5)


@pytest.mark.parametrize("w", [-1.0, -0.4])
def test_negative_guidance_shrinks_towards_the_prior(emb, w):
    """w ∈ [−1, 0): (1 + w)·v_cond − w·v_uncond; −1 is the null condition alone (also its Jacobian)."""
    geo = load("rfm")
    x = sphere.uniform((8, 4), generator=torch.Generator().manual_seed(0))
    g = torch.tensor(0.3)
    with torch.no_grad():
        v, J = Field(geo.net, emb, cfg=w).with_jacobian(x, g)
        vc, Jc = Field(geo.net, emb).with_jacobian(x, g)
        vu, Ju = Field(geo.net, torch.zeros_like(emb)).with_jacobian(x, g)
    assert torch.allclose(v, (1 + w) * vc - w * vu, atol=1e-5)
    assert torch.allclose(J, (1 + w) * Jc - w * Ju, atol=1e-4)
    with pytest.raises(ValueError, match="−1"):
        Field(geo.net, emb, cfg=-1.5)


@pytest.mark.parametrize("w", [-1.0, -0.4, 2.0])
def test_guidance_interval_is_the_conditional_field_from_cfg_until_on(emb, w):
    geo = load("rfm")
    x = sphere.uniform((8, 4), generator=torch.Generator().manual_seed(0))
    field, guided, cond = Field(geo.net, emb, cfg=w, cfg_until=0.6), Field(geo.net, emb, cfg=w), Field(geo.net, emb)
    with torch.no_grad():
        for g, same in ((0.3, guided), (0.6, cond), (0.9, cond)):
            v, J = field.with_jacobian(x, torch.tensor(g))
            v_ref, J_ref = same.with_jacobian(x, torch.tensor(g))
            assert torch.equal(v, v_ref) and torch.equal(J, J_ref)
    with pytest.raises(ValueError, match="cfg_until"):
        Field(geo.net, emb, cfg=w, cfg_until=0.0)


def test_guidance_interval_comes_from_the_checkpoint_and_keeps_densities_exact(emb, tmp_path):
    """A limited interval changes the samples, and the ODE density of a sample is the log-density
    tracked along its own path."""
    geo = load("rfm")
    Geolocator(geo.net, dataclasses.replace(geo.info, default_cfg=-0.5, cfg_until=0.7)).save_pretrained(tmp_path)
    limited = Geolocator.from_pretrained(tmp_path)
    assert limited.info.cfg_until == 0.7
    ll, lp = limited.sample(emb[:2], 6, steps=256, sampler="heun", seed=0, return_log_prob=True)
    everywhere = Geolocator(geo.net, dataclasses.replace(geo.info, default_cfg=-0.5))
    assert not torch.allclose(ll, everywhere.sample(emb[:2], 6, steps=256, sampler="heun", seed=0), atol=1e-3)
    again = limited.log_prob(emb[:2], ll, steps=256)
    assert torch.allclose(again, lp, atol=0.01), (again - lp).abs().max()  # 4e-3 measured (1.0: 3e-3)


def test_default_cfg_comes_from_the_checkpoint(emb, tmp_path):
    geo = load("rfm")
    Geolocator(geo.net, dataclasses.replace(geo.info, default_cfg=-0.5)).save_pretrained(tmp_path)
    again = Geolocator.from_pretrained(tmp_path)
    assert again.default_cfg == -0.5
    ll = torch.tensor([[48.85, 2.35]] * 8)
    assert torch.equal(again.log_prob(emb, ll, steps=8), again.log_prob(emb, ll, steps=8, cfg=-0.5))
    assert not torch.allclose(again.log_prob(emb, ll, steps=8), again.log_prob(emb, ll, steps=8, cfg=0.0))


def test_no_nan_from_the_poles(emb):
    geo = load("rfm")
    poles = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]).repeat(8, 1, 1)
    out, lp = geo.sample(emb, 2, steps=16, noise=poles, return_log_prob=True)
    assert torch.isfinite(out).all() and torch.isfinite(lp).all()
    assert out[..., 0].abs().max() <= 90 and out[..., 1].abs().max() <= 180


def test_heun_converges_faster_than_euler(emb):
    """On a field that is smooth in gamma (the random fixture's time features oscillate ~160 times
    over [0, 1], which no 256-step grid resolves), Heun is second order and Euler first."""
    geo = load("rfm")
    with torch.no_grad():
        geo.net.time_embedder.map_time[2].weight.zero_()
    noise = sphere.uniform((2, 8), generator=torch.Generator().manual_seed(1))
    ref = geo.sample(emb[:2], 8, steps=1024, noise=noise, sampler="heun", return_xyz=True)
    err = {(s, n): sphere.angle(geo.sample(emb[:2], 8, steps=n, noise=noise, sampler=s, return_xyz=True),
                                ref).mean().item() for s in ("euler", "heun") for n in (16, 32)}
    assert err["heun", 32] < 0.1 * err["euler", 32]
    assert err["euler", 16] / err["euler", 32] < 2.6  # first order: halving h halves the error
    assert err["heun", 16] / err["heun", 32] > 3.0  # second order: a quarter


def test_ddim_with_the_official_clamp_lands_on_the_sphere():
    """The trained diffusion test model's DDIM samples (official x0 clamp) sit on the unit sphere.

    (Without the clamp, the ODE from gamma = 1e-9 amplifies ε errors by 1/sqrt(gamma) and this small
    model's samples leave the sphere: the clamp is what makes the official sampler usable.)
    """
    geo = Geolocator.from_pretrained(Path(__file__).resolve().parent / "models" / "diffusion_uncond")
    xyz = geo.sample([[0.0]], 512, steps=32, seed=0, return_xyz=True)
    radius = xyz.norm(dim=-1)
    assert (radius.median() - 1).abs() < 0.1 and (radius > 0.5).float().mean() > 0.95


def test_diffusion_heun_solves_the_ode_from_sigma_max_100_and_stays_on_the_shell():
    """Unclamped DDIM starts at gamma = 1e-9, where ε errors are amplified 31,623-fold, and flings part of
    the small model's samples off the sphere; the heun sampler starts at σ_max = 100 (as the density)."""
    geo = Geolocator.from_pretrained(Path(__file__).resolve().parent / "models" / "diffusion_uncond")
    far = {}
    for sampler in ("heun", "ddim"):
        xyz = geo.sample([[0.0]], 2000, steps=32, seed=0, sampler=sampler, clamp=False, return_xyz=True)
        far[sampler] = ((xyz.norm(dim=-1) - 1).abs() > 0.5).float().mean().item()
    assert far["heun"] < 0.03 and far["ddim"] > 0.5, far  # measured: 0.0025 and 1.0


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_discrete_log_prob_approaches_the_continuous_density(emb, sampler):
    """The exact log-density of the discrete sampler's output tends to the ODE density as steps grow."""
    geo = load("rfm")
    latlon, lp = geo.sample(emb[:2], 6, steps=400, sampler=sampler, seed=0, return_log_prob=True)
    exact = geo.log_prob(emb[:2], latlon, steps=256)
    assert (lp - exact).abs().max() < 0.05


def test_discrete_log_prob_is_a_normalised_density(emb):
    """E_{x~q}[1/q(x)] = area of the sphere for the sampler's own output density q."""
    geo = load("rfm")
    _, lp = geo.sample(emb[:1], 20000, steps=8, seed=3, return_log_prob=True)
    area = torch.exp(-lp.double()).mean().item()
    assert abs(area / (4 * np.pi) - 1) < 0.05


@pytest.mark.parametrize("family", ["rfm", "fm"])
def test_one_embedding_for_many_rows_is_one_field(emb, family):
    """log_prob with one embedding for M coordinate rows solves them as one field (conditioning and an
    R³ model's radial shell computed once) and agrees with the embedding repeated per row."""
    geo = load(family)
    ll = torch.tensor([[48.8, 2.3], [-33.9, 151.2], [40.7, -74.0], [0.0, 0.0]], dtype=torch.float64)
    shared = geo.log_prob(emb[:1], ll, steps=8, cfg=1.0)
    repeated = geo.log_prob(emb[:1].expand(4, -1), ll, steps=8, cfg=1.0)
    assert shared.shape == (4,)
    # rfm: the same ODE per point; fm: row i of the repeated call takes its shell from seed i
    assert torch.allclose(shared, repeated, atol=1e-5 if family == "rfm" else 0.05)
    grid = geo.log_prob(emb[:1], ll.reshape(2, 2, 2), steps=8, cfg=1.0)
    assert torch.allclose(grid.reshape(4), shared, atol=1e-6)
