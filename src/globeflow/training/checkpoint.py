"""The training checkpoint: its file format, saving, loading and the checks before a resume.

Files in the run folder ``DIR/``, written by rank 0 atomically (temporary file + ``os.replace``):

- ``train_state.safetensors`` (written first; it alone is read on resume): raw weights ``model.*``,
  EMA ``ema.*``, optimizer state ``optim.<param index>.<key>``, ``rng.torch``, ``step``; its
  safetensors metadata ``train_state`` holds JSON with the config, the optimizer's param groups
  and scalars, the :class:`Progress` and the :class:`~globeflow.checkpoints.ModelInfo`;
- ``train_state.json``: a readable copy of that metadata;
- ``config.json``, ``model.safetensors`` (EMA weights, official names), ``globeflow.json``;
- ``best/``: the EMA checkpoint with the best validation metric.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from globeflow.checkpoints import ModelInfo, save_checkpoint
from globeflow.network import Denoiser
from globeflow.training.config import TrainConfig

log = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"
BEST_DIR = "best"
# config keys that may change between a run and its resumption
RESUMABLE_CHANGES = {"steps", "val_every", "checkpoint_every", "log_every", "patience"}


@dataclass
class Progress:
    """What besides tensors a run needs to continue: step, best validation metric, patience count."""

    step: int = 0
    best: float = math.inf
    best_step: int = -1
    stale: int = 0
    history: list = field(default_factory=list)  # validation rows (dicts)


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _atomic_save(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def atomic_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def final_info(info: ModelInfo, cfg: TrainConfig, prog: Progress) -> ModelInfo:
    """The ModelInfo saved with the EMA model: family, schedule and the run's config and progress."""
    training = {**info.training, "config": cfg.to_dict(), "step": prog.step,
                "best_val": None if math.isinf(prog.best) else prog.best, "best_step": prog.best_step}
    return ModelInfo(**{**info.to_dict(), "family": cfg.family, "schedule": cfg.schedule, "training": training})


def save_state(out: Path, cfg: TrainConfig, net: Denoiser, ema: Denoiser, opt: torch.optim.Optimizer,
               prog: Progress, info: ModelInfo) -> None:
    """train_state.safetensors (first: the file resume reads), train_state.json, then the EMA model."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    opt_tensors, opt_meta = _flatten_optimizer(opt)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["step"] = torch.tensor([prog.step], dtype=torch.int64)
    meta = {"config": cfg.to_dict(), "optimizer": opt_meta, "progress": dataclasses.asdict(prog),
            "info": info.to_dict()}
    text = json.dumps(meta)
    _atomic_save(tensors, out / STATE_FILE, {"train_state": text})
    atomic_text(out / STATE_JSON, json.dumps(meta, indent=1))
    save_checkpoint(out, ema, final_info(info, cfg, prog))


def save_best(out: Path, cfg: TrainConfig, ema: Denoiser, prog: Progress, info: ModelInfo) -> None:
    """The EMA model of the best validation so far, into ``DIR/best/``."""
    save_checkpoint(out / BEST_DIR, ema, final_info(info, cfg, prog))


def load_state(out: Path) -> tuple[dict[str, Tensor], dict]:
    """(tensors, metadata) of ``DIR/train_state.safetensors``."""
    path = out / STATE_FILE
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["train_state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def has_state(out: str | os.PathLike) -> bool:
    return (Path(out) / STATE_FILE).is_file()


def check_resumable(saved: dict, cfg: TrainConfig) -> None:
    """Refuse a resume whose config differs from the saved one outside ``RESUMABLE_CHANGES``."""
    now, default = cfg.to_dict(), TrainConfig().to_dict()  # keys added later read as their defaults
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k, default[k]) != now[k])
    if changed:
        raise ValueError(f"cannot resume: the saved run has different {', '.join(changed)} "
                         f"(saved {[saved.get(k) for k in changed]}, now {[now[k] for k in changed]}); "
                         "use a new --out folder")
    if saved.get("steps") != cfg.steps:
        log.warning("resuming with steps=%d (saved run: %s): the learning-rate schedule changes", cfg.steps,
                    saved.get("steps"))


def restore_state(out: Path, cfg: TrainConfig, net: Denoiser, ema: Denoiser,
                  opt: torch.optim.Optimizer) -> Progress:
    """Load ``DIR/train_state.safetensors`` into net, ema, opt and the torch RNG; returns the progress."""
    tensors, meta = load_state(out)
    check_resumable(meta["config"], cfg)
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    opt.load_state_dict(_unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optim.")},
                                             meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    return Progress(**meta["progress"])
