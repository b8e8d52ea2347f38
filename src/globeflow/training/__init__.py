"""Training a denoiser: one process or many (torchrun / DDP), resumable bit for bit.

One concern per module:

=================  ==========================================================================
``config``         :class:`TrainConfig`, every setting of a run (saved as JSON in the checkpoint)
``optimizer``      AdamW / LAMB with weight decay on matrices only; the learning-rate schedule
``ema``            the EMA of the weights: its decay schedule and update
``draws``          counter-based per-sample draws (time, base draw, dropout coin) of (seed, step, position)
``order``          the data order: epoch permutations of rows, shards and windows of shards
``splits``         group-aware validation splits (photographers, lat/lon cells)
``sources``        training rows in memory or streamed from a store
``distributed``    rank, world size and device under torchrun
``checkpoint``     the training checkpoint format (``train_state.safetensors``), save, load, resume checks
``csv_log``        ``log.csv`` (and TensorBoard)
``validation``     validation loss / NLL, best model, early stopping
``loop``           :func:`train`, the loop itself
=================  ==========================================================================

Determinism. The global batch of step ``s`` is positions ``s·B … s·B + B − 1`` of an endless
stream of epochs (``order``); every random draw of the sample at global batch position ``j``
of step ``s`` is a counter-based hash of (seed, s, j) (``draws``). Rank r of W reads only
positions ``r·B/W … (r+1)·B/W − 1``, so the global batch and all its draws are the same for any
world size and batch split, and resuming needs no RNG state at all.

Every public name is importable from here: ``from globeflow import training as T; T.train(...)``.
"""

from __future__ import annotations

from globeflow import sphere  # noqa: F401  (kept: callers use ``T.sphere``, as with the former single module)
from globeflow.network import Denoiser  # noqa: F401  (kept: callers use ``T.Denoiser``)
from globeflow.training.checkpoint import (RESUMABLE_CHANGES, STATE_FILE, STATE_JSON, Progress, has_state,
                                           load_state, save_state)
from globeflow.training.config import TrainConfig
from globeflow.training.csv_log import LOG_COLUMNS, LOG_FILE
from globeflow.training.distributed import Dist, setup_distributed
from globeflow.training.draws import VAL_STEP, Draws, draw, uniforms
from globeflow.training.ema import ema_decay_at, ema_update
from globeflow.training.loop import TrainResult, train
from globeflow.training.optimizer import build_optimizer, lr_at
from globeflow.training.order import epoch_permutation
from globeflow.training.sources import MemoryData, MemorySource, StoreSource, store_validation
from globeflow.training.splits import cell_groups, group_hash, val_mask
from globeflow.training.validation import validation_loss, validation_nll

__all__ = [
    "RESUMABLE_CHANGES", "STATE_FILE", "STATE_JSON", "Progress", "has_state", "load_state", "save_state",
    "TrainConfig", "LOG_COLUMNS", "LOG_FILE", "Dist", "setup_distributed", "VAL_STEP", "Draws", "draw",
    "uniforms", "ema_decay_at", "ema_update", "TrainResult", "train", "build_optimizer", "lr_at",
    "epoch_permutation", "MemoryData", "MemorySource", "StoreSource", "store_validation", "cell_groups",
    "group_hash", "val_mask", "validation_loss", "validation_nll",
]
