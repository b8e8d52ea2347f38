"""StreetCLIP (``geolocal/StreetCLIP``) vision tower, the image encoder of PLONK's YFCC/iNat variants.

Matches ``plonk.pipe.StreetClipFeatureExtractor``: ``CLIPProcessor`` preprocessing and
``CLIPVisionModel``; the embedding is ``last_hidden_state[:, 0]`` (the CLS token before the
post-layernorm, 1024-d). Needs the optional package ``transformers`` and network access the
first time (then the Hugging Face cache).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from ._network import reachable
from .base import Encoder, EncoderUnavailable

HF_REPO = "geolocal/StreetCLIP"


def _from_pretrained(cls, **kwargs):
    """Load from the local HF cache, else download — failing fast with one sentence when offline."""
    try:
        return cls.from_pretrained(HF_REPO, local_files_only=True, **kwargs)
    except OSError:
        pass
    if not reachable("huggingface.co"):
        raise EncoderUnavailable(f"streetclip needs to download weights from the Hugging Face hub ({HF_REPO}); "
                                 "no network access and no cached copy")
    try:
        return cls.from_pretrained(HF_REPO, **kwargs)
    except OSError as err:
        raise EncoderUnavailable(f"streetclip could not download {HF_REPO}: {err}") from err


class StreetClipEncoder(Encoder):
    """``streetclip``: 1024-d CLS token of the StreetCLIP ViT-L/14-336 vision tower."""

    id = "streetclip"
    version = "hf-geolocal/StreetCLIP/last_hidden_state-cls"
    dim = 1024
    modality = "image"

    def __init__(self, device: str = "cpu") -> None:
        try:
            from transformers import CLIPImageProcessor, CLIPVisionModel
        except ImportError as err:
            raise EncoderUnavailable("streetclip needs the optional package transformers "
                                     "(pip install 'transformers>=4.40')") from err
        self.device = device
        self.processor = _from_pretrained(CLIPImageProcessor)
        self.model = _from_pretrained(CLIPVisionModel).eval().to(device)

    def _embed_batch(self, items: Sequence[Image.Image]) -> torch.Tensor:
        inputs = self.processor(images=[im.convert("RGB") for im in items], return_tensors="pt")
        outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device))
        return outputs.last_hidden_state[:, 0]
