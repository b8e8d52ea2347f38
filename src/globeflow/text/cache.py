"""A restartable on-disk cache of text embeddings (user cache, float16, one file per chunk).

Layout: ``<cache_dir>/text-embeddings/<encoder id>-<version digest>/chunk-<digest>.npz`` with
arrays ``texts`` (C,) unicode and ``emb`` (C, D) float16. Each chunk is written atomically, so
an interrupted run loses at most one chunk; a re-run embeds only the strings not yet cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)


def cache_folder(encoder, root: Path | None = None) -> Path:
    """The folder holding ``encoder``'s cached embeddings (created)."""
    from globeflow.encoders import cache_dir

    digest = hashlib.blake2b(encoder.version.encode(), digest_size=6).hexdigest()
    folder = (root or cache_dir()) / "text-embeddings" / f"{encoder.id}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_cached(folder: Path) -> dict[str, np.ndarray]:
    """All cached embeddings in ``folder``: text → (D,) float16 vector (damaged chunks are skipped)."""
    out: dict[str, np.ndarray] = {}
    for path in sorted(folder.glob("chunk-*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                out.update(zip(z["texts"].tolist(), z["emb"]))
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring damaged cache chunk %s (%s)", path, err)
    return out


def _write_chunk(folder: Path, texts: list[str], emb: np.ndarray) -> None:
    digest = hashlib.blake2b("\x00".join(texts).encode(), digest_size=10).hexdigest()
    path = folder / f"chunk-{digest}.npz"
    tmp = folder / f".chunk-{digest}.{os.getpid()}.tmp.npz"
    np.savez(tmp, texts=np.array(texts, dtype=str), emb=emb.astype(np.float16))
    os.replace(tmp, path)


def embed_cached(texts: Sequence[str], encoder, *, folder: Path | None = None, chunk: int = 2048,
                 batch_size: int = 256, progress: bool = False, limit_new: int | None = None) -> np.ndarray:
    """Embeddings (N, D) float32 of ``texts``, embedding (and caching) only the unseen unique strings.

    Strings are embedded in first-seen order, ``chunk`` at a time, each chunk cached on completion.
    limit_new: embed at most this many new strings in this call; if some remain, a ``RuntimeError``
    says how many (a budgeted pre-fill of the cache; call again to continue).
    """
    folder = folder or cache_folder(encoder)
    cached = load_cached(folder)
    missing_in_order = list(dict.fromkeys(t for t in texts if t not in cached))
    todo = missing_in_order if limit_new is None else missing_in_order[:limit_new]
    log.info("text embeddings: %d unique strings cached, %d to embed", len(cached), len(missing_in_order))
    with tqdm(total=len(todo), disable=not progress, desc=f"embed {encoder.id}", unit="text") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            emb = encoder.embed(part, batch_size=batch_size)
            _write_chunk(folder, part, emb)
            cached.update(zip(part, emb.astype(np.float16)))
            bar.update(len(part))
    left = [t for t in missing_in_order if t not in cached]
    if left:
        raise RuntimeError(f"{len(left)} strings are not embedded yet (limit_new={limit_new}); run again")
    return np.stack([cached[t] for t in texts]).astype(np.float32) if len(texts) else np.zeros((0, encoder.dim),
                                                                                             np.float32)
