"""DINOv2 ViT-L/14 with registers, the image encoder of the released PLONK OSV-5M/iNat/YFCC models.

Matches ``plonk.pipe.DinoV2FeatureExtractor``: weights via
``torch.hub.load("facebookresearch/dinov2", "dinov2_vitl14_reg")`` (needs network the first
time, then torch.hub's cache), maximal centred square crop, bicubic resize to 336×336,
ImageNet mean/std; the embedding is the model's forward output, the LayerNorm-ed CLS token
(1024-d, not L2-normalised).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .base import Encoder, EncoderUnavailable

HUB_REPO = "facebookresearch/dinov2"
HUB_MODEL = "dinov2_vitl14_reg"
SIZE = 336
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(image: Image.Image) -> torch.Tensor:
    """RGB PIL image → (3, 336, 336): centred square crop, bicubic resize, ImageNet mean/std."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC,
                                        box=(left, top, left + side, top + side))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy((pixels - MEAN) / STD).permute(2, 0, 1)


def load_hub_model() -> torch.nn.Module:
    """The DINOv2 ViT-L/14-reg hub model; EncoderUnavailable (one sentence) when it cannot be fetched."""
    try:
        return torch.hub.load(HUB_REPO, HUB_MODEL, trust_repo=True, verbose=False)
    except Exception as err:  # torch.hub raises RuntimeError/URLError/HTTPError… depending on what failed
        raise EncoderUnavailable(f"dinov2-vitl14-reg needs to download weights from torch.hub ({HUB_REPO}); "
                                 f"no network access or hub cache: {err}") from err


class DinoV2Encoder(Encoder):
    """``dinov2-vitl14-reg``: 1024-d LayerNorm-ed CLS token of DINOv2 ViT-L/14 with registers."""

    id = "dinov2-vitl14-reg"
    version = "hub-dinov2_vitl14_reg/crop1:1-bicubic336-imagenet"
    dim = 1024
    modality = "image"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.model = load_hub_model().eval().to(device)

    def _embed_batch(self, items: Sequence[Image.Image]) -> torch.Tensor:
        return self.model(torch.stack([preprocess(im) for im in items]).to(self.device))
