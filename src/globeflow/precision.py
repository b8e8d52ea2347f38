"""Which arithmetic the sampler's point path uses: ``fp32``, ``bf16`` or ``auto``.

- ``fp32`` (the default everywhere): the official arithmetic; samples match the official
  sampler's to ~1e-5 for the same start points.
- ``bf16``: each block's two matmuls in bfloat16 with float32 accumulation
  (:meth:`globeflow.network.Denoiser.apply_bf16`); same distribution (10,000-per-side energy
  test against the official 250-step float32 samples, ``benchmarks/bench_vs_official.py``), but
  single samples move by up to a few km. Used by sampling, including the along-trajectory
  log-densities of ``sample(..., return_log_prob=True)`` (their tangent matmuls in bf16 too: within
  ~0.005 nats of float32 on average, the same calibrated regions and best guesses,
  ``benchmarks/bench_predict_precision.py``); densities of given points (``log_prob``: NLL, maps)
  always run in float32 or wider. ``predict`` (API, CLI, web) defaults to ``auto``; ``sample`` to ``fp32``.
- ``auto``: ``bf16`` where the hardware computes it natively and it measured faster, else ``fp32``:
  on a CPU with ``amx_bf16`` or ``avx512_bf16`` (Intel Sapphire Rapids and later, AMD Zen 4 and
  later) whose bf16 matmul at the point path's shape runs ≥ 1.3× the float32 one (measured once
  per process, ~50 ms); on a CUDA device with ``torch.cuda.is_bf16_supported()``. Elsewhere bf16
  is emulated and slower than float32.
"""

from __future__ import annotations

import functools
import time

import torch

PRECISIONS = ("fp32", "bf16", "auto")
_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_MIN_SPEEDUP = 1.3


def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 instruction-set flags of this CPU (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ()
    return tuple(flag for flag in _NATIVE_BF16_FLAGS if flag in flags)


def _matmul_seconds(dtype: torch.dtype, reps: int = 3) -> float:
    """Best time of a (256 × 512) · (512 × 2048) matmul (the point path's first layer) in ``dtype``."""
    a = torch.randn(256, 512).to(dtype)
    w = torch.randn(2048, 512).to(dtype)
    torch.nn.functional.linear(a, w)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.nn.functional.linear(a, w)
        best = min(best, time.perf_counter() - t0)
    return best


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float | None:
    """Measured bf16 ÷ fp32 matmul speed on this CPU, or None when it has no native bf16 (not measured)."""
    if not cpu_bf16_flags():
        return None
    return _matmul_seconds(torch.float32) / _matmul_seconds(torch.bfloat16)


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``fp32`` | ``bf16`` | ``auto`` → the arithmetic to use on ``device`` (``fp32`` or ``bf16``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type != "cpu":
        return "fp32"
    speedup = cpu_bf16_speedup()
    return "bf16" if speedup is not None and speedup >= _MIN_SPEEDUP else "fp32"


def describe(device: torch.device | str = "cpu") -> dict:
    """What ``auto`` decides here and why (for benchmark output)."""
    device = torch.device(device)
    info = {"auto": resolve_precision("auto", device), "device": device.type}
    if device.type == "cpu":
        info["cpu_bf16_flags"] = list(cpu_bf16_flags())
        speedup = cpu_bf16_speedup()
        info["bf16_matmul_speedup"] = None if speedup is None else round(speedup, 2)
    return info
