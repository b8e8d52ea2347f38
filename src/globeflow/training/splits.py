"""Group-aware validation splits: all rows of one group (photographer, cell) fall on one side."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def group_hash(groups: Sequence[str], split_seed: int = 0) -> np.ndarray:
    """(N,) float64 in [0, 1): a stable hash of each group name (blake2b)."""
    uniq, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    values = np.array([int.from_bytes(hashlib.blake2b(f"{split_seed}\x00{g}".encode(), digest_size=8).digest(),
                                      "little") for g in uniq], dtype=np.float64) / 2.0 ** 64
    return values[inverse.reshape(-1)] if len(uniq) else np.zeros(0)


def val_mask(groups: Sequence[str], val_frac: float, split_seed: int = 0) -> np.ndarray:
    """Bool (N,): rows whose group is held out. All rows of one group fall on the same side."""
    return group_hash(groups, split_seed) < val_frac


def cell_groups(latlon_deg: np.ndarray, cell_deg: float = 0.1) -> np.ndarray:
    """Group names of the ``cell_deg`` × ``cell_deg`` lat/lon cell of each point (N, 2) degrees."""
    cells = np.floor(np.asarray(latlon_deg, dtype=np.float64) / cell_deg).astype(np.int64)
    return np.array([f"{a}:{b}" for a, b in cells], dtype=str)


def store_groups(ids: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Group of each store row (N,) str; rows without a group are their own group (``id:<id>``)."""
    return np.where(groups == "", np.char.add("id:", ids), groups)
