"""DINOv2 ViT/14 with registers: ViT-L is the image encoder of the released PLONK YFCC and iNaturalist models.

Matches ``plonk.pipe.DinoV2FeatureExtractor`` (diff-plonk 0.4): convert to RGB, the largest
centred square (torchvision's ``center_crop``: offsets ``int(round((W - side) / 2))``, Python
rounding, half to even), bicubic resize to 336×336 (PIL), ``ToTensor`` and ImageNet mean/std;
the embedding is the hub model's forward output, the LayerNorm-ed CLS token (1024-d for ViT-L,
384-d for ViT-S; not L2-normalised).

Weights come from torch.hub (``facebookresearch/dinov2``). A local copy is used without any
network access when present: either ``source`` (a folder written by ``globeflow download``) or
torch.hub's own cache (``$TORCH_HOME/hub``), each holding ``facebookresearch_dinov2_main/`` (the hub
code) and ``checkpoints/<name>_pretrain.pth`` (the weights, read with ``weights_only=True``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ._network import reachable
from .base import Encoder, EncoderUnavailable

HUB_REPO = "facebookresearch/dinov2"
HUB_CODE_DIR = "facebookresearch_dinov2_main"  # torch.hub's folder name for the repo's default branch
SIZE = 336
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# hub entry point → (weights file name that the hub code asks load_state_dict_from_url for, width, ≈ bytes)
HUB_MODELS = {"dinov2_vitl14_reg": ("dinov2_vitl14_reg4_pretrain.pth", 1024, 1_218_000_000),
              "dinov2_vits14_reg": ("dinov2_vits14_reg4_pretrain.pth", 384, 88_000_000)}


def center_square(image: Image.Image) -> Image.Image:
    """The largest centred square, placed like torchvision's ``center_crop`` (offsets rounded half to even)."""
    w, h = image.size
    side = min(w, h)
    left, top = int(round((w - side) / 2)), int(round((h - side) / 2))
    return image.crop((left, top, left + side, top + side))


def preprocess(image: Image.Image) -> torch.Tensor:
    """PIL image → float32 (3, 336, 336): RGB, centred square, bicubic resize, ImageNet mean/std."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    square = center_square(image)
    if square.size != (SIZE, SIZE):
        square = square.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    pixels = np.asarray(square, dtype=np.float32) / 255.0
    return torch.from_numpy((pixels - MEAN) / STD).permute(2, 0, 1)


def local_copy(hub_model: str, hub_dir: str | os.PathLike | None = None) -> tuple[Path, Path] | None:
    """(hub code folder, weights file) under ``hub_dir`` (default: torch.hub's cache) when both exist."""
    root = Path(hub_dir) if hub_dir is not None else Path(torch.hub.get_dir())
    code, weights = root / HUB_CODE_DIR, root / "checkpoints" / HUB_MODELS[hub_model][0]
    return (code, weights) if (code / "hubconf.py").is_file() and weights.is_file() else None


def _load_local(hub_model: str, code: Path, weights: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*xFormers.*")
        model = torch.hub.load(str(code), hub_model, source="local", pretrained=False)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as err:  # truncated file, pickle refused by weights_only, wrong architecture
        raise EncoderUnavailable(f"{weights} is not a usable {hub_model} checkpoint ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:200]})") from err
    return model


def load_hub_model(hub_model: str = "dinov2_vitl14_reg", source: str | os.PathLike | None = None) -> torch.nn.Module:
    """The DINOv2 hub model from ``source``, torch.hub's cache or the network; EncoderUnavailable otherwise."""
    name, _, size = HUB_MODELS[hub_model]
    if source is not None:
        found = local_copy(hub_model, source)
        if found is None:
            raise EncoderUnavailable(f"{source} holds no {hub_model} (expected {HUB_CODE_DIR}/hubconf.py and "
                                     f"checkpoints/{name}); run `globeflow download` again")
        return _load_local(hub_model, *found)
    found = local_copy(hub_model)
    if found is not None:
        return _load_local(hub_model, *found)
    if not reachable("github.com"):
        raise EncoderUnavailable(
            f"{hub_model} needs the DINOv2 hub code and weights ({size / 1e9:.1f} GB) from torch.hub "
            f"({HUB_REPO}), which cannot be reached and are not in the torch.hub cache ({torch.hub.get_dir()}); "
            "run `globeflow download nicolas-dufour/PLONK_YFCC --to DIR` where there is network and pass "
            "--model DIR/PLONK_YFCC, or set TORCH_HOME to a copied cache")
    try:
        return torch.hub.load(HUB_REPO, hub_model, trust_repo=True, verbose=False)
    except Exception as err:  # torch.hub raises RuntimeError/URLError/HTTPError… depending on what failed
        raise EncoderUnavailable(f"{hub_model} could not be fetched from torch.hub ({HUB_REPO}): "
                                 f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from err


class DinoV2Encoder(Encoder):
    """``dinov2-vitl14-reg``: 1024-d LayerNorm-ed CLS token of DINOv2 ViT-L/14 with registers."""

    id = "dinov2-vitl14-reg"
    hub_model = "dinov2_vitl14_reg"
    version = "hub-dinov2_vitl14_reg/crop1:1-round-bicubic336-imagenet"
    modality = "image"

    def __init__(self, device: str = "cpu", source: str | os.PathLike | None = None) -> None:
        self.device = device
        self.dim = HUB_MODELS[self.hub_model][1]
        self.model = load_hub_model(self.hub_model, source).eval().to(device)

    def _embed_batch(self, items: Sequence[Image.Image]) -> torch.Tensor:
        return self.model(torch.stack([preprocess(im) for im in items]).to(self.device))


class DinoV2SmallEncoder(DinoV2Encoder):
    """``dinov2-vits14-reg``: 384-d CLS token of DINOv2 ViT-S/14 with registers (same preprocessing)."""

    id = "dinov2-vits14-reg"
    hub_model = "dinov2_vits14_reg"
    version = "hub-dinov2_vits14_reg/crop1:1-round-bicubic336-imagenet"
