"""Parity with the official diff-plonk 0.4 outputs stored in the shared reference fixture.

Tolerances are those of the fixture's README ("Reproducibility and tolerances").
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from globeflow import Geolocator
from globeflow.sampling import time_grid
from globeflow.schedules import SigmoidSchedule

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "plonk_reference_small"
pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason=f"reference fixture missing at {FIXTURE}")


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE / "reference.npz"))


@pytest.fixture(scope="module")
def geo():
    return Geolocator.from_pretrained(FIXTURE)


def test_network_outputs(geo, ref):
    x, emb, gamma = (torch.tensor(ref[k]) for k in ("x_init", "emb", "gamma"))
    with torch.no_grad():
        assert np.abs(geo.net(x, emb, gamma).numpy() - ref["net_out"]).max() <= 1e-5
        assert np.abs(geo.net(x, torch.zeros_like(emb), gamma).numpy() - ref["net_out_null_emb"]).max() <= 1e-5
        net64 = Geolocator.from_pretrained(FIXTURE).net.double()
        out = net64(x.double(), emb.double(), gamma.double()).numpy()
    assert np.abs(out - ref["net_out_f64"]).max() <= 1e-9


def test_schedule_values(ref):
    t = time_grid(32)
    s = SigmoidSchedule(-7, 3, 1, 1e-9)
    assert np.abs(t.numpy() - ref["sched_t_32"]).max() <= 1e-6
    assert np.abs(s(t).numpy() - ref["sched_gamma_32"]).max() <= 1e-6
    assert np.abs(s.derivative(t).numpy() - ref["sched_dgamma_dt_32"]).max() <= 1e-6
    assert s(torch.tensor(0.0)).item() == 1.0 and s(torch.tensor(1.0)).item() == pytest.approx(1e-9)


@pytest.mark.parametrize("cfg,steps,key", [(0, 32, "samples_cfg0"), (2, 32, "samples_cfg2"),
                                           (0, 250, "samples_cfg0_steps250")])
def test_euler_samples(geo, ref, cfg, steps, key):
    emb, x0 = torch.tensor(ref["emb"]), torch.tensor(ref["x_init"])[:, None]
    xyz = geo.sample(emb, 1, steps=steps, cfg=cfg, noise=x0, return_xyz=True)[:, 0]
    assert np.abs(xyz.numpy() - ref[key]).max() <= 1e-5
    if steps == 32:
        ll = geo.sample(emb, 1, steps=steps, cfg=cfg, noise=x0)[:, 0]
        assert np.abs(ll.numpy() - ref[f"{key}_latlon_deg"]).max() <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", [0, 2])
def test_official_solver_loglik(geo, ref, dtype, cfg):
    emb, gps = torch.tensor(ref["emb"]), torch.tensor(ref["gps_deg"])
    suffix = "f32" if dtype == torch.float32 else "f64"
    name = "loglik_nats_" + ("cfg2_" if cfg else "") + suffix
    tol = 2e-3 if dtype == torch.float32 else 5e-4
    nats, nfe = geo.log_prob(emb, gps, cfg=cfg, divergence="ambient", solver="official", dtype=dtype,
                             return_nfe=True)
    assert np.abs(nats.numpy() - ref[name]).max() <= tol
    ref_nfe = int(ref["nfe_" + ("cfg2_" if cfg else "") + suffix])
    assert abs(nfe - ref_nfe) <= 0.05 * ref_nfe
    if cfg == 0:
        bits = geo.log_prob(emb, gps, cfg=cfg, divergence="ambient", solver="official", dtype=dtype,
                            units="bits_per_dim_official")
        assert np.abs(bits.numpy() - ref["loglik_bits_" + suffix]).max() <= 1e-3
        assert np.allclose(bits.numpy(), nats.numpy() / (3 * math.log(2)), atol=1e-3)


@pytest.mark.parametrize("divergence", ["riemannian", "ambient"])
@pytest.mark.parametrize("cfg", [0, 2])
def test_fast_solver_matches_converged_at_claimed_accuracy(geo, ref, divergence, cfg):
    """Default fast solver claims 1e-3 nats (see globeflow.density.FAST_STEPS_ACCURACY)."""
    emb, gps = torch.tensor(ref["emb"]), torch.tensor(ref["gps_deg"])
    key = f"loglik_nats_{divergence}_" + ("cfg2_" if cfg else "") + "converged_f64"
    nats = geo.log_prob(emb, gps, cfg=cfg, divergence=divergence)
    assert np.abs(nats.numpy() - ref[key]).max() <= 1e-3
    # the coarse setting claims 1e-2
    coarse = geo.log_prob(emb, gps, cfg=cfg, divergence=divergence, steps=32)
    assert np.abs(coarse.numpy() - ref[key]).max() <= 1e-2


def test_riemannian_density_integrates_to_one_ambient_does_not(geo, ref):
    """Gauss–Legendre in sin(lat) × uniform longitudes; the fixture README gives 1.0000 and 0.2625."""
    z, wz = np.polynomial.legendre.leggauss(24)
    lon = (np.arange(48) + 0.5) * 360 / 48 - 180
    lat = np.degrees(np.arcsin(z))
    pts = np.stack(np.meshgrid(lat, lon, indexing="ij"), -1).reshape(1, -1, 2)
    emb = torch.tensor(ref["emb"][:1])
    w = (wz[:, None] * np.full(48, 2 * np.pi / 48)[None]).ravel()
    riem = geo.log_prob(emb, pts, steps=64)[0].double().numpy()
    amb = geo.log_prob(emb, pts, steps=64, divergence="ambient")[0].double().numpy()
    assert abs((w * np.exp(riem)).sum() - 1.0) < 5e-3
    assert abs((w * np.exp(amb)).sum() - 0.2625) < 5e-3


def test_config_is_the_official_one():
    assert set(json.loads((FIXTURE / "config.json").read_text())) == {"input_dim", "dim", "depth", "expansion",
                                                                      "cond_dim"}
