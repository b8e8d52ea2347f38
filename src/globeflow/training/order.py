"""The data order: which training row sits at each position of the endless stream of epochs.

Step ``s`` of a run with global batch B reads positions ``s·B … s·B + B − 1``; position p is
offset ``p mod N`` of epoch ``p // N``. Each permutation below is Philox keyed by (seed, counters)
alone. In memory an epoch is one permutation of the N rows; a streamed store permutes its
shards per epoch, cuts them into windows of ``window_shards`` shards, and permutes the rows
inside each window.
"""

from __future__ import annotations

import numpy as np

from globeflow.training.draws import mix64

# first counter of each kind of permutation (keeps the three kinds apart)
_ROWS, _SHARDS, _WINDOW_ROWS = 1, 2, 3


def _rng(seed: int, *counters: int) -> np.random.Generator:
    key = mix64(np.array([seed], dtype=np.uint64))
    for c in counters:
        key = mix64(key ^ np.uint64(c))
    return np.random.Generator(np.random.Philox(key=int(key[0])))


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n rows in ``epoch`` (a function of seed and epoch only)."""
    return _rng(seed, _ROWS, epoch).permutation(n)


def shard_permutation(seed: int, epoch: int, n_shards: int) -> np.ndarray:
    """The order of a store's shards in ``epoch``."""
    return _rng(seed, _SHARDS, epoch).permutation(n_shards)


def window_permutation(seed: int, epoch: int, window: int, n: int) -> np.ndarray:
    """The order of the n training rows of window ``window`` (of shards) in ``epoch``."""
    return _rng(seed, _WINDOW_ROWS, epoch, window).permutation(n)
