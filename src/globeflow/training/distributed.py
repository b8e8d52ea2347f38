"""Distributed setup: this process's rank, world size and device (torchrun + DDP, or one process)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> Dist:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (nccl on GPU, gloo on CPU)."""
    use_cuda = torch.cuda.is_available() if device in (None, "auto") else str(device).startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, torch.device(device if device not in (None, "auto") else ("cuda" if use_cuda else "cpu")))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    return Dist(dist.get_rank(), dist.get_world_size(), dev)


def barrier(dd: Dist) -> None:
    """Wait for every rank (no-op in one process)."""
    if dd.world > 1:
        dist.barrier()


def all_reduce_sum(value: torch.Tensor, dd: Dist) -> torch.Tensor:
    """Sum of ``value`` over ranks, in place (no-op in one process)."""
    if dd.world > 1:
        dist.all_reduce(value)
    return value
