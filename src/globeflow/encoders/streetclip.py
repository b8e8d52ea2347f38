"""StreetCLIP (``geolocal/StreetCLIP``) vision tower, the image encoder of the released PLONK OSV-5M models.

Matches ``plonk.pipe.StreetClipFeatureExtractor`` (diff-plonk 0.4) as it runs with its required
torchvision installed, where ``CLIPProcessor`` uses transformers' torchvision backend: RGB with
transparency composited on white, shortest edge to 336 by torch's antialiased bicubic
interpolation of the uint8 image (torchvision's CPU path), centre crop 336 (offset floored), CLIP mean/std; the
settings come from the repository's ``preprocessor_config.json``. Reproduced here with torch ops, so
torchvision is not needed. The embedding is ``last_hidden_state[:, 0]`` of ``CLIPVisionModel``, the
CLS token before the post-layernorm (1024-d for the published ViT-L/14-336). Needs the optional package ``transformers``; the weights come from ``source`` (a
folder written by ``globeflow download``), the Hugging Face cache, or the network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._network import reachable
from .base import Encoder, EncoderUnavailable

HF_REPO = "geolocal/StreetCLIP"
APPROX_BYTES = 1_710_000_000  # the published CLIPModel (vision + text towers), float32


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _from_pretrained(cls, source: str | os.PathLike | None = None):
    """Load from ``source``, the local HF cache, else download; one-sentence EncoderUnavailable on failure."""
    if source is not None:
        try:
            return cls.from_pretrained(str(source), local_files_only=True)
        except OSError as err:
            raise EncoderUnavailable(f"{source} holds no usable StreetCLIP copy ({cls.__name__}: "
                                     f"{str(err).splitlines()[0][:200]}); run `globeflow download` again") from err
    try:
        return cls.from_pretrained(HF_REPO, local_files_only=True)
    except OSError:
        pass
    if _offline() or not reachable("huggingface.co"):
        from huggingface_hub.constants import HF_HUB_CACHE

        raise EncoderUnavailable(
            f"streetclip needs the StreetCLIP weights ({APPROX_BYTES / 1e9:.1f} GB) from the Hugging Face hub "
            f"({HF_REPO}), which cannot be reached and are not in the Hugging Face cache ({HF_HUB_CACHE}); "
            "run `globeflow download nicolas-dufour/PLONK_OSV_5M --to DIR` where there is network and pass "
            "--model DIR/PLONK_OSV_5M, or set HF_HOME to a copied cache")
    try:
        return cls.from_pretrained(HF_REPO)
    except OSError as err:
        raise EncoderUnavailable(f"streetclip could not download {HF_REPO}: {str(err).splitlines()[0][:200]}") from err


@dataclass(frozen=True)
class ClipPreprocessing:
    """The settings of a ``CLIPImageProcessor`` that the preprocessing uses (sizes in pixels)."""

    shortest_edge: int = 336
    crop: tuple[int, int] = (336, 336)  # (height, width)
    mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    rescale_factor: float = 1 / 255

    @classmethod
    def of(cls, processor) -> "ClipPreprocessing":
        """Read a loaded CLIP image processor; ValueError for settings this reproduction does not cover."""
        size, crop = dict(processor.size), dict(processor.crop_size)
        if int(getattr(processor, "resample", 3)) != 3 or not size.get("shortest_edge") \
                or not (processor.do_resize and processor.do_center_crop and processor.do_normalize
                        and processor.do_rescale):
            raise ValueError(f"unsupported CLIP preprocessing settings: {processor.to_dict()}")
        return cls(int(size["shortest_edge"]), (int(crop["height"]), int(crop["width"])),
                   tuple(float(m) for m in processor.image_mean), tuple(float(s) for s in processor.image_std),
                   float(processor.rescale_factor))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """PIL image → float32 (3, crop height, crop width)."""
        x = torch.from_numpy(np.array(_to_rgb(image))).permute(2, 0, 1).contiguous()
        h, w = x.shape[-2:]
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(self.shortest_edge * long / short)
        size = (self.shortest_edge, new_long) if h <= w else (new_long, self.shortest_edge)
        if size != (h, w):  # torch's native uint8 antialiased bicubic on CPU, as torchvision's resize uses there
            x = F.interpolate(x[None], size=list(size), mode="bicubic", align_corners=False, antialias=True)[0]
        (ch, cw), (h, w) = self.crop, x.shape[-2:]
        if ch > h or cw > w:
            raise ValueError(f"image too small for a {ch}x{cw} crop after resizing: {h}x{w}")
        top, left = int((h - ch) / 2.0), int((w - cw) / 2.0)
        x = x[:, top:top + ch, left:left + cw].to(torch.float32)
        mean = torch.tensor(self.mean) * (1.0 / self.rescale_factor)
        std = torch.tensor(self.std) * (1.0 / self.rescale_factor)
        return x.sub_(mean[:, None, None]).div_(std[:, None, None])


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB; transparency composited on white (as transformers' ``convert_to_rgb``)."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


class StreetClipEncoder(Encoder):
    """``streetclip``: CLS token (1024-d) of the StreetCLIP ViT-L/14-336 vision tower."""

    id = "streetclip"
    version = "hf-geolocal/StreetCLIP/tv-bicubic-aa336-crop336/last_hidden_state-cls"
    dim = 1024
    modality = "image"

    def __init__(self, device: str = "cpu", source: str | os.PathLike | None = None) -> None:
        try:
            from transformers.utils import logging as hf_logging
        except ImportError as err:
            raise EncoderUnavailable("streetclip needs the optional package transformers "
                                     "(pip install 'globeflow[hub]')") from err
        self.device = device
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        # quiet: the text tower's weights are "unexpected" for the vision model; only settings are read
        # from the image processor, so its torchvision-or-PIL backend fallback notice does not apply
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            from transformers import CLIPImageProcessor, CLIPVisionModel

            self.preprocess = ClipPreprocessing.of(_from_pretrained(CLIPImageProcessor, source))
            self.model = _from_pretrained(CLIPVisionModel, source).eval().to(device)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        self.dim = int(self.model.config.hidden_size)

    def _embed_batch(self, items: Sequence[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.preprocess(im) for im in items]).to(self.device)
        return self.model(pixel_values=pixels).last_hidden_state[:, 0]
