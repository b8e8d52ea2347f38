"""The training loop: optimizer steps over the global batch, logging, validation and checkpoints.

Step ``s`` reads positions ``s·B … s·B + B − 1`` of the stream (:mod:`.order`) with the draws of
:mod:`.draws`; rank r of W takes positions ``r·B/W … (r+1)·B/W − 1`` and scales its loss sum by
``W/B``, so DDP's gradient average is the gradient of the global mean for any world size.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from globeflow.checkpoints import ModelInfo
from globeflow.families import loss as family_loss
from globeflow.network import Denoiser
from globeflow.schedules import Schedule, schedule_from_dict
from globeflow.training.checkpoint import Progress, atomic_text, has_state, restore_state, save_state
from globeflow.training.config import TrainConfig
from globeflow.training.csv_log import LOG_FILE, CsvLog
from globeflow.training.distributed import Dist, all_reduce_sum, barrier, setup_distributed
from globeflow.training.draws import draw
from globeflow.training.ema import ema_decay_at, ema_update
from globeflow.training.optimizer import build_optimizer, lr_at
from globeflow.training.sources import MemoryData, MemorySource, StoreSource
from globeflow.training.validation import validate

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    step: int
    losses: list[float]  # global training loss of every step run in this call
    history: list[dict]  # validation rows
    out: Path
    stopped_early: bool = False


def train(cfg: TrainConfig, source: MemorySource | StoreSource, out: str | os.PathLike, *,
          val: MemoryData | None = None, info: ModelInfo | None = None, resume: bool = True,
          progress: bool = False, device: str | None = None, max_steps: int | None = None) -> TrainResult:
    """Train (or continue training) into ``out``; returns the losses and validation history.

    source: the training stream; val: held-out rows (evaluated every ``val_every`` steps and at
    the end, by rank 0). resume: continue from ``out/train_state.safetensors`` when present.
    max_steps: stop this call after that many steps (the schedule still spans ``cfg.steps``).
    Under torchrun every rank calls this with the same arguments.
    """
    out, dd, info = Path(out), setup_distributed(device), info or ModelInfo()
    _check_inputs(cfg, source, val, dd)
    run = _start(cfg, source, out, dd, resume)
    prog, B = run.prog, cfg.batch_size
    csv_log = _open_log(cfg, out, dd, prog.step)
    local = np.arange(dd.rank * B // dd.world, (dd.rank + 1) * B // dd.world, dtype=np.int64)
    end = cfg.steps if max_steps is None else min(cfg.steps, prog.step + max_steps)
    bar = _progress_bar(cfg, prog.step) if progress and dd.main else None
    losses, window, stopped, t0 = [], [], False, time.perf_counter()
    while prog.step < end and not stopped:
        lr = lr_at(prog.step, cfg)
        window.append(_step(cfg, run, source, local, lr, dd))
        row = None
        if prog.step % cfg.log_every == 0 or prog.step == end:
            vals, window = torch.stack(window).cpu().tolist(), []
            losses += vals
            row = _row(prog.step, lr, t0, loss=float(np.mean(vals)), epoch=prog.step * B / len(source))
        if val is not None and len(val) and (prog.step % cfg.val_every == 0 or prog.step == cfg.steps):
            row = row or _row(prog.step, lr, t0)
            stopped = validate(cfg, run.ema, val, dd, prog, info, out, row)
        if csv_log is not None and row is not None:
            csv_log.write(row)
        if prog.step % cfg.checkpoint_every == 0 or prog.step == end or stopped:
            if dd.main:
                save_state(out, cfg, run.net, run.ema, run.opt, prog, info)
            barrier(dd)
        _tick(bar, row)
    if bar is not None:
        bar.close()
    if window:
        losses += torch.stack(window).cpu().tolist()
    return TrainResult(prog.step, losses, prog.history, out, stopped)


@dataclass
class _Run:
    """The state a run steps: raw weights, EMA, optimizer, progress, and how the loss is computed."""

    net: Denoiser
    ema: Denoiser
    opt: torch.optim.Optimizer
    prog: Progress
    model: torch.nn.Module  # net, or its DDP wrapper
    schedule: Schedule
    autocast: torch.autocast

    def __post_init__(self) -> None:
        self.params, self.ema_params = list(self.net.parameters()), list(self.ema.parameters())


def _check_inputs(cfg: TrainConfig, source: MemorySource | StoreSource, val: MemoryData | None, dd: Dist) -> None:
    if cfg.batch_size % dd.world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the world size {dd.world}")
    if val is not None and len(val) and val.cond_dim != source.cond_dim:
        raise ValueError(f"validation embeddings have width {val.cond_dim}, training {source.cond_dim}")


def _start(cfg: TrainConfig, source: MemorySource | StoreSource, out: Path, dd: Dist, resume: bool) -> _Run:
    """Weights initialised from ``cfg.seed`` (or restored from ``out``), placed on this rank's device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = Denoiser(dim=cfg.dim, depth=cfg.depth, expansion=cfg.expansion, cond_dim=source.cond_dim,
                       cond_hidden=cfg.cond_hidden, cond_layers=cfg.cond_layers,
                       fourier_features=cfg.fourier_features, fourier_scale=cfg.fourier_scale)
    prog, ema, opt = Progress(), copy.deepcopy(net), build_optimizer(net, cfg)
    if resume and has_state(out):
        prog = restore_state(out, cfg, net, ema, opt)
        log.info("resuming %s at step %d", out, prog.step)
    net.to(dd.device)
    ema.to(dd.device).eval().requires_grad_(False)
    for state in opt.state.values():  # optimizer state follows its parameters
        for k, v in state.items():
            if isinstance(v, Tensor) and k != "step":
                state[k] = v.to(dd.device)
    model = net
    if dd.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[dd.device.index] if dd.device.type == "cuda" else None)
    autocast = torch.autocast(dd.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    return _Run(net, ema, opt, prog, model, schedule_from_dict(cfg.schedule), autocast)


def _step(cfg: TrainConfig, run: _Run, source: MemorySource | StoreSource, local: np.ndarray, lr: float,
          dd: Dist) -> Tensor:
    """One optimizer step on this rank's ``local`` positions of the global batch; returns its global mean loss."""
    s, B, dev = run.prog.step, cfg.batch_size, dd.device
    for group in run.opt.param_groups:
        group["lr"] = lr
    xyz, emb = source.gather(s * B + local)
    d = draw(cfg.seed, s, local, cfg.family, cfg.cond_drop)
    run.net.train()
    with run.autocast:
        per = family_loss(cfg.family, run.model, xyz.to(dev), emb.to(dev), run.schedule(d.t).to(dev),
                          d.noise.to(dev), d.drop.to(dev))
    local_sum = per.sum()
    run.opt.zero_grad(set_to_none=True)
    (local_sum * (dd.world / B)).backward()  # DDP averages over ranks → gradient of the global mean
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
    run.opt.step()
    ema_update(run.ema_params, run.params, ema_decay_at(s, cfg))
    run.prog.step = s + 1
    return all_reduce_sum(local_sum.detach().float(), dd) / B


def _open_log(cfg: TrainConfig, out: Path, dd: Dist, step: int) -> CsvLog | None:
    """Rank 0: create ``out``, write ``train_config.json`` and open ``log.csv`` (rows up to ``step`` kept)."""
    if not dd.main:
        return None
    out.mkdir(parents=True, exist_ok=True)
    atomic_text(out / "train_config.json", json.dumps(cfg.to_dict(), indent=1))
    return CsvLog(out / LOG_FILE, step)


def _row(step: int, lr: float, t0: float, *, loss: float | None = None, epoch: float | None = None) -> dict:
    """A log.csv row (strings); loss and epoch only on logging steps."""
    row = {"step": step, "lr": f"{lr:.6g}", "seconds": f"{time.perf_counter() - t0:.4f}"}
    if loss is not None:
        row.update(epoch=f"{epoch:.3f}", loss=f"{loss:.6f}")
    return row


def _progress_bar(cfg: TrainConfig, step: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)


def _tick(bar, row: dict | None) -> None:
    if bar is not None:
        bar.update(1)
        if row is not None and "loss" in row:
            bar.set_postfix(loss=f"{float(row['loss']):.4f}")
