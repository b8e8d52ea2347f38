"""A bounded inference pool: at most ``workers`` jobs run, at most ``queue_size`` wait, the rest are refused.

Inference is CPU-bound PyTorch, so it runs in a few threads (PyTorch releases
the GIL) while the event loop keeps accepting and refusing requests. A refused
job raises :class:`Busy` carrying a ``retry_after_s`` estimate from the mean
job time, which the HTTP layer turns into ``503`` + ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Busy(RuntimeError):
    """The pool and its queue are full; try again after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"server busy: retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class InferencePool:
    """``workers`` threads and a waiting line of ``queue_size``; :meth:`run` awaits one job."""

    def __init__(self, workers: int = 1, queue_size: int = 8) -> None:
        if workers < 1 or queue_size < 0:
            raise ValueError(f"need workers >= 1 and queue_size >= 0; got {workers}, {queue_size}")
        self.workers, self.queue_size = workers, queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="globeflow-infer")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._mean_s = 1.0  # running mean of job durations (exponential, α = 0.2)

    @property
    def in_flight(self) -> int:
        """Jobs running or waiting."""
        return self._in_flight

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: the waiting line drained at the mean job time."""
        return max(1, math.ceil(self._mean_s * (self._in_flight / self.workers)))

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in a worker thread; raises :class:`Busy` at once when the queue is full."""
        with self._lock:
            if self._in_flight >= self.workers + self.queue_size:
                raise Busy(self.retry_after_s())
            self._in_flight += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(self._timed, fn))
        finally:
            with self._lock:
                self._in_flight -= 1

    def _timed(self, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - start)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
