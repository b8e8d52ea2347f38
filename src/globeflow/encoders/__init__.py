"""Frozen, pluggable encoders by id: ``get_encoder(id, device) -> Encoder``.

``efficientnet-lite0`` (default image encoder, offline), ``dinov2-vitl14-reg`` and
``streetclip`` (the released PLONK models' encoders; need network the first time, or a folder
from ``globeflow download``), ``dinov2-vits14-reg`` (a small DINOv2 with the same preprocessing)
and ``minilm-l6`` (default text encoder, offline).
"""

from __future__ import annotations

import os

from .base import Encoder, EncoderUnavailable, cache_dir

DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
DEFAULT_TEXT_ENCODER = "minilm-l6"

# id → (module, class, modality)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "efficientnet-lite0": ("efficientnet_lite", "EfficientNetLite0Encoder", "image"),
    "dinov2-vitl14-reg": ("dinov2", "DinoV2Encoder", "image"),
    "dinov2-vits14-reg": ("dinov2", "DinoV2SmallEncoder", "image"),
    "streetclip": ("streetclip", "StreetClipEncoder", "image"),
    "minilm-l6": ("minilm", "MiniLMEncoder", "text"),
}
ALIASES: dict[str, str] = {"dinov2": "dinov2-vitl14-reg", "street_clip": "streetclip",
                           "all-minilm-l6-v2": "minilm-l6"}
ENCODERS: tuple[str, ...] = tuple(_REGISTRY)


def canonical_id(encoder_id: str) -> str:
    """The registry id for ``encoder_id`` (an id or an alias, case-insensitive); KeyError if unknown."""
    key = encoder_id.strip().lower()
    key = ALIASES.get(key, key)
    if key not in _REGISTRY:
        known = ", ".join(ENCODERS + tuple(ALIASES))
        raise KeyError(f"unknown encoder {encoder_id!r}; known: {known}")
    return key


def modality(encoder_id: str) -> str:
    """``"image"`` or ``"text"`` for a registered id or alias, without building the encoder."""
    return _REGISTRY[canonical_id(encoder_id)][2]


# encoders whose weights come from the network (they accept ``source=``, a folder from ``globeflow download``)
HUB_ENCODERS: tuple[str, ...] = ("dinov2-vitl14-reg", "dinov2-vits14-reg", "streetclip")


def get_encoder(encoder_id: str, device: str = "cpu", source: str | os.PathLike | None = None) -> Encoder:
    """Build the encoder ``encoder_id`` on ``device``; EncoderUnavailable when it cannot be built here.

    source: a local copy of a hub encoder's files (``globeflow download`` writes one); None = the
    usual caches, then the network.
    """
    import importlib

    key = canonical_id(encoder_id)
    module, cls, _ = _REGISTRY[key]
    kwargs = {"source": source} if source is not None and key in HUB_ENCODERS else {}
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(device=device, **kwargs)


__all__ = ["ALIASES", "DEFAULT_IMAGE_ENCODER", "DEFAULT_TEXT_ENCODER", "ENCODERS", "Encoder", "HUB_ENCODERS",
           "EncoderUnavailable", "cache_dir", "canonical_id", "get_encoder", "modality"]
