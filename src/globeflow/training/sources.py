"""Training rows and the streams over them: in memory (:class:`MemorySource`) or a store read a
window of shards at a time (:class:`StoreSource`). Which row each stream position holds is
decided in :mod:`globeflow.training.order`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from globeflow import sphere
from globeflow.data.store import EmbeddingStore, read_shard
from globeflow.training.order import epoch_permutation, shard_permutation, window_permutation
from globeflow.training.splits import store_groups, val_mask


@dataclass
class MemoryData:
    """In-memory training rows: xyz (N, 3) float32 unit vectors, emb (N, D) float32 or None (unconditional)."""

    xyz: Tensor
    emb: Tensor | None = None
    groups: np.ndarray | None = None

    @classmethod
    def from_latlon(cls, latlon_deg, embeddings=None, groups=None) -> "MemoryData":
        """latlon (N, 2) degrees, embeddings (N, D) or None, groups (N,) str or None."""
        ll = np.asarray(latlon_deg, dtype=np.float64)
        if ll.ndim != 2 or ll.shape[1] != 2:
            raise ValueError(f"latlon must have shape (N, 2); got {ll.shape}")
        if not np.isfinite(ll).all() or (np.abs(ll[:, 0]) > 90).any():
            raise ValueError("latlon has non-finite values or latitudes outside [-90, 90]")
        emb = None
        if embeddings is not None:
            emb = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
            if emb.dim() != 2 or emb.shape[0] != len(ll):
                raise ValueError(f"embeddings must have shape ({len(ll)}, D); got {tuple(emb.shape)}")
        xyz = sphere.latlon_to_xyz(torch.from_numpy(ll)).float()
        return cls(xyz, emb, None if groups is None else np.asarray(groups, dtype=str))

    def __len__(self) -> int:
        return self.xyz.shape[0]

    @property
    def cond_dim(self) -> int:
        return 1 if self.emb is None else int(self.emb.shape[1])

    def rows(self, idx: np.ndarray) -> tuple[Tensor, Tensor]:
        i = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        emb = torch.zeros(len(i), 1) if self.emb is None else self.emb[i]
        return self.xyz[i], emb

    def select(self, mask: np.ndarray) -> "MemoryData":
        m = torch.from_numpy(np.asarray(mask))
        return MemoryData(self.xyz[m], None if self.emb is None else self.emb[m],
                          None if self.groups is None else self.groups[np.asarray(mask)])

    def split(self, val_frac: float, split_seed: int = 0) -> tuple["MemoryData", "MemoryData"]:
        """Group-aware (train, val) split; needs ``groups``."""
        if self.groups is None:
            raise ValueError("a validation split needs groups (e.g. photographers, or cell_groups())")
        mask = val_mask(self.groups, val_frac, split_seed)
        return self.select(~mask), self.select(mask)


class MemorySource:
    """The training stream over in-memory rows."""

    def __init__(self, data: MemoryData, seed: int) -> None:
        if len(data) == 0:
            raise ValueError("no training rows")
        self.data, self.seed, self._perms = data, seed, {}

    def __len__(self) -> int:
        return len(self.data)

    @property
    def cond_dim(self) -> int:
        return self.data.cond_dim

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = epoch_permutation(self.seed, epoch, len(self.data))
        return self._perms[epoch]

    def gather(self, positions: np.ndarray) -> tuple[Tensor, Tensor]:
        """Rows at stream positions (B,) → xyz (B, 3), emb (B, D)."""
        n = len(self.data)
        epochs, offsets = positions // n, positions % n
        idx = np.empty(len(positions), dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            idx[sel] = self._perm(int(e))[offsets[sel]]
        return self.data.rows(idx)


class StoreSource:
    """The training stream over a store's training rows, read a window of shards at a time.

    One pass at construction counts each shard's training rows (one shard in memory at a
    time); afterwards at most two windows of ``window_shards`` shards are held.
    """

    def __init__(self, store: EmbeddingStore, seed: int, *, val_frac: float, split_seed: int = 0,
                 window_shards: int = 4) -> None:
        self.store, self.seed, self.window = store, seed, window_shards
        self.val_frac, self.split_seed = val_frac, split_seed
        self.counts = np.array([self._count(p) for p in store.shards])
        if self.counts.sum() == 0:
            raise ValueError(f"store {store.path} has no labelled training rows")
        self._cache: dict[tuple[int, int], MemoryData] = {}

    def _count(self, path: Path) -> int:
        """Training rows of one shard, reading only its id/lat/lon/group columns (no embeddings)."""
        table = pq.read_table(path, columns=["id", "lat", "lon", "group"])
        ids = np.array(table.column("id").to_pylist(), dtype=str)
        groups = np.array([g or "" for g in table.column("group").to_pylist()], dtype=str)
        lat, lon = (table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in ("lat", "lon"))
        labelled = np.isfinite(lat) & np.isfinite(lon)
        return int((labelled & ~val_mask(store_groups(ids, groups), self.val_frac, self.split_seed)).sum())

    def _train_part(self, arrays):
        return arrays.select(~val_mask(store_groups(arrays.ids, arrays.groups), self.val_frac, self.split_seed))

    def __len__(self) -> int:
        return int(self.counts.sum())

    @property
    def cond_dim(self) -> int:
        return self.store.dim

    def _layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        order = shard_permutation(self.seed, epoch, len(self.counts))
        windows = [order[i:i + self.window] for i in range(0, len(order), self.window)]
        return np.array([self.counts[w].sum() for w in windows]), np.array(windows, dtype=object)

    def _load(self, epoch: int, w: int, shards: np.ndarray, count: int) -> MemoryData:
        key = (epoch, w)
        if key not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            parts = [self._train_part(read_shard(self.store.shards[int(k)])) for k in shards]
            emb = np.concatenate([p.embeddings for p in parts])
            ll = np.concatenate([p.latlon for p in parts])
            perm = window_permutation(self.seed, epoch, w, count)
            self._cache[key] = MemoryData.from_latlon(ll[perm], emb[perm])
        return self._cache[key]

    def gather(self, positions: np.ndarray) -> tuple[Tensor, Tensor]:
        n = len(self)
        xyz = torch.empty(len(positions), 3)
        emb = torch.empty(len(positions), self.cond_dim)
        for e in np.unique(positions // n):
            sel = np.nonzero(positions // n == e)[0]
            sizes, windows = self._layout(int(e))
            ends = np.cumsum(sizes)
            offsets = positions[sel] % n
            wins = np.searchsorted(ends, offsets, side="right")
            for w in np.unique(wins):
                part = sel[wins == w]
                data = self._load(int(e), int(w), windows[w], int(sizes[w]))
                local = offsets[wins == w] - (ends[w] - sizes[w])
                xyz[part], emb[part] = data.rows(local)
        return xyz, emb


def store_validation(store: EmbeddingStore, val_frac: float, split_seed: int = 0,
                     max_rows: int = 4096) -> MemoryData:
    """The first ``max_rows`` held-out-group rows of a store (streamed), in memory."""
    parts, total = [], 0
    for arrays in store.iter_shards():
        part = arrays.select(val_mask(store_groups(arrays.ids, arrays.groups), val_frac, split_seed))
        parts.append(part.select(slice(0, max_rows - total)))
        total += len(parts[-1])
        if total >= max_rows:
            break
    ll = np.concatenate([p.latlon for p in parts]) if parts else np.zeros((0, 2))
    emb = np.concatenate([p.embeddings for p in parts]) if parts else np.zeros((0, store.dim), np.float32)
    groups = np.concatenate([store_groups(p.ids, p.groups) for p in parts]) if parts else np.zeros(0, str)
    return MemoryData.from_latlon(ll, emb, groups)
