"""Checkpoint loading: strict names and shapes, pickles refused, Hub ids, round trips."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from globeflow import Geolocator
from globeflow.checkpoints import KNOWN_MODELS, ModelInfo, canonical_repo_id, resolve

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "plonk_reference_small"
pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason=f"reference fixture missing at {FIXTURE}")


@pytest.fixture()
def folder(tmp_path):
    dst = tmp_path / "ckpt"
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(FIXTURE / name, dst / name)
    return dst


def test_missing_key_is_named(folder):
    state = load_file(str(folder / "model.safetensors"))
    del state["blocks.1.mlp.3.bias"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.3\.bias"):
        Geolocator.from_pretrained(folder)


def test_wrong_shape_is_named(folder):
    state = load_file(str(folder / "model.safetensors"))
    state["cond_mapper.weight"] = torch.zeros(64, 31)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"cond_mapper\.weight.*\(64, 31\)"):
        Geolocator.from_pretrained(folder)


def test_unknown_config_key_is_named(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["heads"] = 4
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="heads"):
        Geolocator.from_pretrained(folder)


def test_pickles_refused_unless_opted_in(folder):
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        Geolocator.from_pretrained(folder)
    geo = Geolocator.from_pretrained(folder, allow_pickle=True)
    assert torch.equal(geo.net.state_dict()["final_linear.bias"], state["final_linear.bias"])


def test_round_trip_keeps_official_config_and_metadata(folder, tmp_path):
    geo = Geolocator.from_pretrained(folder, family="fm")
    assert geo.family == "fm"
    out = tmp_path / "saved"
    geo.save_pretrained(out)
    assert set(json.loads((out / "config.json").read_text())) == {"input_dim", "dim", "depth", "expansion",
                                                                  "cond_dim"}
    again = Geolocator.from_pretrained(out)
    assert again.family == "fm" and again.info == ModelInfo.from_dict(json.loads((out / "globeflow.json").read_text()))
    for k, v in geo.net.state_dict().items():
        assert torch.equal(v, again.net.state_dict()[k])


def test_folder_without_metadata_warns_and_is_rfm(folder, caplog):
    geo = Geolocator.from_pretrained(folder)
    assert geo.family == "rfm" and "assuming family 'rfm'" in caplog.text


def test_known_ids_and_inat_spelling():
    assert canonical_repo_id("nicolas-dufour/PLONK_iNat_flow") == "nicolas-dufour/PLONK_iNaturalist_flow"
    assert KNOWN_MODELS["nicolas-dufour/PLONK_OSV_5M"] == {"family": "rfm", "encoder": "streetclip", "sampler": "euler"}
    assert KNOWN_MODELS["nicolas-dufour/PLONK_YFCC_diffusion"]["family"] == "diffusion"
    assert KNOWN_MODELS["nicolas-dufour/PLONK_iNaturalist_flow"]["family"] == "fm"


def test_hub_offline_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="PLONK_OSV_5M.*(network|globeflow\\[hub\\])"):
        resolve("nicolas-dufour/PLONK_OSV_5M")


def test_not_a_folder_nor_an_id():
    with pytest.raises(FileNotFoundError, match="neither a folder nor a Hub id"):
        resolve("no_such_folder_here")


def test_official_config_round_trips_verbatim(folder):
    """The conditioning-MLP keys are optional: an official config.json loads and is written back unchanged."""
    from globeflow.network import NetworkConfig

    cfg = json.loads((folder / "config.json").read_text())
    assert NetworkConfig.from_dict(cfg).to_dict() == cfg


def test_conditioning_mlp_checkpoint_round_trip(tmp_path):
    """A denoiser with a conditioning MLP saves and loads by config, with the same outputs."""
    from globeflow.checkpoints import save_checkpoint
    from globeflow.network import Denoiser

    torch.manual_seed(0)
    net = Denoiser(dim=32, depth=2, expansion=2, cond_dim=12, cond_hidden=48, cond_layers=2)
    for p in net.parameters():  # non-zero residual branches, so the MLP's output matters
        p.data.normal_(0, 0.3)
    save_checkpoint(tmp_path, net, ModelInfo(family="rfm"))
    assert json.loads((tmp_path / "config.json").read_text())["cond_hidden"] == 48
    geo = Geolocator.from_pretrained(tmp_path)
    y, emb, gamma = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1), torch.randn(5, 12), torch.rand(5)
    assert torch.equal(geo.net(y, emb, gamma), net(y, emb, gamma))
    assert not torch.allclose(net(y, emb, gamma), net(y, torch.zeros_like(emb), gamma))


def test_conditioning_mlp_settings_must_agree():
    from globeflow.network import NetworkConfig

    with pytest.raises(ValueError, match="cond_hidden and cond_layers"):
        NetworkConfig(dim=32, cond_hidden=64, cond_layers=0)


def test_fourier_feature_network_round_trip_and_derivatives(tmp_path):
    """Fourier position features: saved with their buffers, loaded to the same outputs, and the
    hand-written forward-mode derivatives equal autograd's Jacobian."""
    from globeflow.checkpoints import save_checkpoint
    from globeflow.network import Denoiser, NetworkConfig

    torch.manual_seed(0)
    net = Denoiser(dim=32, depth=2, expansion=2, cond_dim=12, fourier_features=16, fourier_scale=300)
    for p in net.parameters():
        p.data.normal_(0, 0.3)
    freqs = net.position_features.freqs
    assert freqs.min() == pytest.approx(1.0) and freqs.max() == pytest.approx(300.0, rel=1e-5)
    save_checkpoint(tmp_path, net, ModelInfo(family="rfm"))
    assert json.loads((tmp_path / "config.json").read_text())["fourier_features"] == 16
    geo = Geolocator.from_pretrained(tmp_path)
    assert geo.sharp_field
    y, emb, gamma = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1), torch.randn(5, 12), torch.rand(5)
    assert torch.equal(geo.net(y, emb, gamma), net(y, emb, gamma))
    mod = net.modulation(emb, gamma)
    tangents = torch.randn(5, 2, 3)
    out, jt = net.apply_jvp(y, tangents, mod)
    jac = torch.func.vmap(torch.func.jacrev(lambda p, m: net.apply(p, m)))(y, mod)  # (5, 3, 3)
    assert torch.allclose(out, net.apply(y, mod), atol=1e-6)
    assert torch.allclose(jt, torch.einsum("bij,btj->bti", jac, tangents), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="fourier_features"):
        NetworkConfig(dim=32, fourier_features=8, fourier_scale=0)
