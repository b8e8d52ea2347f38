"""bf16 point path for sampling: fp32 stays the default and unchanged; bf16 stays close; auto is sane."""

from pathlib import Path

import pytest
import torch

from globeflow import Geolocator, precision, sphere
from globeflow.network import Denoiser

MODELS = Path(__file__).resolve().parent / "models"


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = Denoiser(dim=64, depth=3, cond_dim=16).eval()
    for block in net.blocks:  # not identity blocks, or bf16 would have nothing to round
        block.mlp[3].reset_parameters()
    return net


def test_bf16_point_path_is_close_to_fp32_and_not_equal(net):
    mod = net.modulation(torch.randn(4, 16), torch.rand(4))[:, None]
    y = sphere.uniform((4, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = net.apply(y, mod), net.apply_bf16(y, mod)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert 0 < rel < 2e-2


def test_bf16_weight_cache_follows_the_weights(net):
    mod = net.modulation(torch.randn(2, 16), torch.rand(2))[:, None]
    y = sphere.uniform((2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = net.apply_bf16(y, mod)
        w = net.blocks[0].mlp[3].weight
        saved = w.clone()
        w.mul_(2)  # an in-place update, as an optimiser step makes
        after = net.apply_bf16(y, mod)
        w.copy_(saved)
        again = net.apply_bf16(y, mod)
    assert not torch.equal(before, after)
    assert torch.equal(before, again)


def test_sampling_precision_default_is_fp32_and_bf16_keeps_the_samples():
    geo = Geolocator.from_pretrained(MODELS / "rfm_hemisphere")
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    default = geo.sample(emb, 256, steps=16, seed=0, return_xyz=True)
    fp32 = geo.sample(emb, 256, steps=16, seed=0, return_xyz=True, precision="fp32")
    bf16 = geo.sample(emb, 256, steps=16, seed=0, return_xyz=True, precision="bf16")
    assert torch.equal(default, fp32)
    km = torch.acos((fp32.double() * bf16.double()).sum(-1).clamp(-1, 1)) * sphere.EARTH_RADIUS_KM
    assert float(km.max()) > 0  # the bf16 path ran
    assert float(km.median()) < 20  # same samples to city scale (the distribution test is in benchmarks/)
    north = sphere.xyz_to_latlon(bf16)[..., 0] > 0
    assert north[0].float().mean() > 0.9 and north[1].float().mean() < 0.1


def test_precision_names_and_auto():
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve_precision("fp16")
    assert precision.resolve_precision("fp32") == "fp32" and precision.resolve_precision("bf16") == "bf16"
    auto = precision.resolve_precision("auto", "cpu")
    if not precision.cpu_bf16_flags():  # no native bf16: emulated bf16 is slower than fp32, never chosen
        assert auto == "fp32" and precision.cpu_bf16_speedup() is None
    else:
        assert auto == ("bf16" if precision.cpu_bf16_speedup() >= 1.3 else "fp32")
    assert precision.describe("cpu")["auto"] == auto


def test_a_float64_network_ignores_bf16():
    geo = Geolocator.from_pretrained(MODELS / "rfm_uncond")
    geo.net.double()
    emb = torch.zeros(1, 1, dtype=torch.float64)
    a = geo.sample(emb, 16, steps=4, seed=0, return_xyz=True, precision="bf16")
    b = geo.sample(emb, 16, steps=4, seed=0, return_xyz=True)
    assert a.dtype == torch.float64 and torch.equal(a, b)


def test_bf16_tangents_are_close_to_fp32_and_not_equal(net):
    mod = net.modulation(torch.randn(4, 16), torch.rand(4))[:, None]
    y = sphere.uniform((4, 32), generator=torch.Generator().manual_seed(3))
    tangents = torch.stack(sphere.tangent_basis(y), dim=-2)
    with torch.no_grad():
        (v, jt), (vb, jtb) = net.apply_jvp(y, tangents, mod), net.apply_jvp(y, tangents, mod, bf16=True)
    assert vb.dtype == jtb.dtype == torch.float32 and jtb.shape == jt.shape == (4, 32, 2, 3)
    assert torch.allclose(vb, net.apply_bf16(y, mod), atol=1e-6)  # the same point path as sampling's
    rel = float((jtb - jt).abs().max() / jt.abs().max())
    assert 0 < rel < 2e-2


def test_bf16_sample_log_probs_stay_within_hundredths_of_a_nat():
    geo = Geolocator.from_pretrained(MODELS / "rfm_hemisphere")
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    _, fp32 = geo.sample(emb, 256, steps=16, seed=0, return_log_prob=True)
    _, bf16 = geo.sample(emb, 256, steps=16, seed=0, return_log_prob=True, precision="bf16")
    diff = (bf16 - fp32).abs()
    assert float(diff.max()) > 0 and float(diff.mean()) < 0.02


def test_predict_defaults_to_auto_precision():
    geo = Geolocator.from_pretrained(MODELS / "rfm_hemisphere")
    emb = torch.tensor([[1.0, 0.0]])
    chosen = precision.resolve_precision("auto", "cpu")
    default, same = geo.predict(emb, num_samples=32, steps=8), geo.predict(emb, num_samples=32, steps=8, precision=chosen)
    other = geo.predict(emb, num_samples=32, steps=8, precision="fp32" if chosen == "bf16" else "bf16")
    assert default[0].best_guess == same[0].best_guess and (default[0].log_prob == same[0].log_prob).all()
    assert not (default[0].log_prob == other[0].log_prob).all()
