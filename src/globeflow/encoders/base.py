"""The frozen-encoder interface shared by every image and text encoder."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm


class EncoderUnavailable(RuntimeError):
    """An encoder cannot be built here (weights not downloadable, optional package missing)."""


def cache_dir() -> Path:
    """The user cache for converted weights: ``$GLOBEFLOW_CACHE`` or ``~/.cache/globeflow``."""
    root = os.environ.get("GLOBEFLOW_CACHE") or Path.home() / ".cache" / "globeflow"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


class Encoder(ABC):
    """A frozen feature extractor: items → float32 embeddings of shape (N, dim).

    Attributes: ``id`` (registry id), ``version`` (changes whenever float32 embeddings would change),
    ``dim`` (embedding width), ``modality`` (``"image"``: PIL images; ``"text"``: strings),
    ``batch_size`` (items per forward pass when a caller names none) and ``bf16_checked`` (True when
    bfloat16 autocast was measured to leave a shipped model's answers unchanged; only such encoders
    follow ``precision="bf16"`` or ``"auto"``, the others always run float32).
    """

    id: str
    version: str
    dim: int
    modality: Literal["image", "text"]
    device: str = "cpu"
    batch_size: int = 32
    bf16_checked: bool = False

    @abstractmethod
    def _embed_batch(self, items: Sequence[Any]) -> torch.Tensor:
        """Embed one batch; returns a (B, dim) tensor."""

    def uses_bf16(self, precision: str) -> bool:
        """Whether ``embed(..., precision=precision)`` runs in bfloat16 autocast on this encoder's device."""
        from globeflow.precision import resolve_precision

        return resolve_precision(precision, self.device) == "bf16" and self.bf16_checked

    @torch.inference_mode()
    def embed(self, items: Sequence[Any], batch_size: int | None = None, progress: bool = False,
              precision: str = "fp32") -> np.ndarray:
        """Embed ``items`` (PIL images or strings) in batches of ``batch_size`` (None: the encoder's own);
        returns float32 (N, dim).

        precision: ``fp32`` (default: stored embeddings, training), ``bf16`` or ``auto`` (bf16 where
        native, :func:`globeflow.precision.resolve_precision`) run the forward pass in bfloat16 autocast,
        for encoders with ``bf16_checked`` only (features within ~1–6 % of float32, ~2× faster).
        """
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        bf16 = self.uses_bf16(precision)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        starts = range(0, len(items), batch_size)
        for start in tqdm(starts, disable=not progress, desc=f"embed {self.id}", unit="batch"):
            batch = items[start:start + batch_size]
            with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=bf16):
                out[start:start + len(batch)] = self._embed_batch(batch).float().cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} version={self.version} dim={self.dim} {self.modality}>"
