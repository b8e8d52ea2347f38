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

    Attributes: ``id`` (registry id), ``version`` (changes whenever embeddings would change),
    ``dim`` (embedding width), ``modality`` (``"image"``: PIL images; ``"text"``: strings) and
    ``batch_size`` (items per forward pass when a caller names none).
    """

    id: str
    version: str
    dim: int
    modality: Literal["image", "text"]
    device: str = "cpu"
    batch_size: int = 32

    @abstractmethod
    def _embed_batch(self, items: Sequence[Any]) -> torch.Tensor:
        """Embed one batch; returns a (B, dim) tensor."""

    @torch.inference_mode()
    def embed(self, items: Sequence[Any], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Embed ``items`` (PIL images or strings) in batches of ``batch_size`` (None: the encoder's own);
        returns float32 (N, dim)."""
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(items), self.dim), dtype=np.float32)
        starts = range(0, len(items), batch_size)
        for start in tqdm(starts, disable=not progress, desc=f"embed {self.id}", unit="batch"):
            batch = items[start:start + batch_size]
            out[start:start + len(batch)] = self._embed_batch(batch).float().cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} version={self.version} dim={self.dim} {self.modality}>"
