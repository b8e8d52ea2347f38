"""Training a denoiser: one process or many (torchrun / DDP), resumable bit for bit.

Determinism. The global batch of step ``s`` is positions ``s·B … s·B + B − 1`` of an
endless stream of epochs; each epoch is a permutation drawn from (seed, epoch) alone
(for a streamed store: a permutation of its shards, then of the rows inside each
window of ``window_shards`` shards). Every random draw of the sample at global batch
position ``j`` of step ``s`` — its time t, its base draw and its conditioning-dropout
coin — is a counter-based hash (splitmix64) of (seed, s, j). Rank r of W reads only
positions ``r·B/W … (r+1)·B/W − 1``, so the global batch and all its draws are the
same for any world size and batch split, and resuming needs no RNG state at all.

Checkpoints (``DIR/``), written by rank 0 atomically (temporary file + ``os.replace``):

- ``config.json``, ``model.safetensors`` (EMA weights, official names), ``globeflow.json``;
- ``train_state.safetensors``: raw weights ``model.*``, EMA ``ema.*``, optimizer state
  ``optim.<param index>.<key>``, ``rng.torch``, ``step``; its safetensors metadata holds
  the config and the optimizer's param groups (JSON) — it alone is read on resume;
- ``train_state.json``: a readable copy of that metadata;
- ``best/``: the EMA checkpoint with the best validation metric; ``log.csv``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from globeflow import sphere
from globeflow.checkpoints import ModelInfo, save_checkpoint
from globeflow.data.store import EmbeddingStore, read_shard
from globeflow.families import check_family, loss as family_loss
from globeflow.network import Denoiser
from globeflow.optim import Lamb
from globeflow.schedules import SigmoidSchedule, schedule_from_dict, schedule_to_dict

log = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"
LOG_FILE = "log.csv"
LOG_COLUMNS = ("step", "epoch", "lr", "loss", "val_loss", "val_nll", "seconds")
VAL_STEP = 2**63 + 1  # the step key of validation draws (never a training step)
# config keys that may change between a run and its resumption
RESUMABLE_CHANGES = {"steps", "val_every", "checkpoint_every", "log_every", "patience"}


# ---------------------------------------------------------------- configuration

@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as JSON in the checkpoint)."""

    family: str = "rfm"
    dim: int = 256
    depth: int = 6
    expansion: int = 4
    schedule: dict = field(default_factory=lambda: schedule_to_dict(SigmoidSchedule()))
    optimizer: str = "adamw"  # adamw | lamb
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 200
    min_lr_ratio: float = 0.0  # cosine decays to lr · min_lr_ratio at ``steps``
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    ema_decay: float = 0.999
    ema_warmup: bool = True  # effective decay min(ema_decay, (1 + s) / (10 + s))
    cond_drop: float = 0.1  # probability of the null (zero) condition per sample
    batch_size: int = 512  # global batch
    steps: int = 10000
    seed: int = 0
    val_frac: float = 0.1  # fraction of groups (photographers) held out
    split_seed: int = 0
    val_every: int = 500
    val_max: int = 4096  # validation rows used for the loss
    val_nll_points: int = 0  # validation rows whose NLL (Geolocator.log_prob) is measured; 0 = off
    val_nll_steps: int = 32
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    checkpoint_every: int = 1000
    log_every: int = 10
    window_shards: int = 4  # shards shuffled together when streaming a store
    bf16: bool = False

    def __post_init__(self) -> None:
        check_family(self.family)
        schedule_from_dict(self.schedule)
        if self.optimizer not in ("adamw", "lamb"):
            raise ValueError(f"optimizer must be 'adamw' or 'lamb'; got {self.optimizer!r}")
        positive = ("dim", "depth", "expansion", "batch_size", "val_every", "checkpoint_every", "log_every",
                    "window_shards", "val_max", "val_nll_steps")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)!r}")
        if self.steps < 0 or self.warmup_steps < 0 or self.patience < 0 or self.val_nll_points < 0:
            raise ValueError("steps, warmup_steps, patience and val_nll_points must be >= 0")
        if not 0.0 <= self.cond_drop <= 1.0:
            raise ValueError(f"cond_drop must be in [0, 1]; got {self.cond_drop}")
        if not 0.0 <= self.val_frac < 1.0:
            raise ValueError(f"val_frac must be in [0, 1); got {self.val_frac}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training config keys {sorted(unknown)}")
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine decay."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_decay_at(step: int, cfg: TrainConfig) -> float:
    """EMA decay used after optimizer step ``step`` (0-based)."""
    if cfg.ema_warmup:
        return min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
    return cfg.ema_decay


@torch.no_grad()
def ema_update(ema: Sequence[Tensor], params: Sequence[Tensor], decay: float) -> None:
    """In place: ema ← decay · ema + (1 − decay) · θ (the official callback's lerp weight is inverted)."""
    for e, p in zip(ema, params):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)


# ---------------------------------------------------------------- counter-based randomness

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniforms(seed: int, step: int, index: np.ndarray, count: int) -> np.ndarray:
    """(len(index), count) float64 uniforms in (0, 1), a function of (seed, step, index) only."""
    index = np.asarray(index, dtype=np.uint64)
    key = _mix(_mix(_mix(np.array([seed], dtype=np.uint64)) ^ np.uint64(step)) ^ index)
    with np.errstate(over="ignore"):
        streams = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
    bits = _mix(key[:, None] ^ streams[None, :])
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


@dataclass(frozen=True)
class Draws:
    t: Tensor  # (B,) time in (0, 1) (0 = data)
    noise: Tensor  # (B, 3) base draws (unit vectors for rfm, N(0, I) otherwise)
    drop: Tensor  # (B,) bool: use the null condition


def draw(seed: int, step: int, index: np.ndarray, family: str, cond_drop: float) -> Draws:
    """The draws of the samples at global batch positions ``index`` of step ``step``."""
    u = uniforms(seed, step, index, 6)
    if family == "rfm":  # Archimedes: z uniform in [-1, 1], longitude uniform
        z, phi = 2.0 * u[:, 1] - 1.0, 2.0 * math.pi * u[:, 2]
        r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
        noise = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    else:  # Box–Muller
        r1, r2 = np.sqrt(-2.0 * np.log(u[:, 1])), np.sqrt(-2.0 * np.log(u[:, 3]))
        noise = np.stack([r1 * np.cos(2 * math.pi * u[:, 2]), r1 * np.sin(2 * math.pi * u[:, 2]),
                          r2 * np.cos(2 * math.pi * u[:, 4])], axis=1)
    return Draws(torch.from_numpy(u[:, 0].astype(np.float32)), torch.from_numpy(noise.astype(np.float32)),
                 torch.from_numpy(u[:, 5] < cond_drop))


def _rng(seed: int, *counters: int) -> np.random.Generator:
    key = _mix(np.array([seed], dtype=np.uint64))
    for c in counters:
        key = _mix(key ^ np.uint64(c))
    return np.random.Generator(np.random.Philox(key=int(key[0])))


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n rows in ``epoch`` (a function of seed and epoch only)."""
    return _rng(seed, 1, epoch).permutation(n)


# ---------------------------------------------------------------- splits

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


def _store_groups(arrays) -> np.ndarray:
    """Group of each store row; rows without a group are their own group (their id)."""
    return np.where(arrays.groups == "", np.char.add("id:", arrays.ids), arrays.groups)


# ---------------------------------------------------------------- data

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
        groups = np.where(groups == "", np.char.add("id:", ids), groups)
        return int((labelled & ~val_mask(groups, self.val_frac, self.split_seed)).sum())

    def _train_part(self, arrays):
        return arrays.select(~val_mask(_store_groups(arrays), self.val_frac, self.split_seed))

    def __len__(self) -> int:
        return int(self.counts.sum())

    @property
    def cond_dim(self) -> int:
        return self.store.dim

    def _layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        order = _rng(self.seed, 2, epoch).permutation(len(self.counts))
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
            perm = _rng(self.seed, 3, epoch, w).permutation(count)
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
        part = arrays.select(val_mask(_store_groups(arrays), val_frac, split_seed))
        parts.append(part.select(slice(0, max_rows - total)))
        total += len(parts[-1])
        if total >= max_rows:
            break
    ll = np.concatenate([p.latlon for p in parts]) if parts else np.zeros((0, 2))
    emb = np.concatenate([p.embeddings for p in parts]) if parts else np.zeros((0, store.dim), np.float32)
    groups = np.concatenate([_store_groups(p) for p in parts]) if parts else np.zeros(0, str)
    return MemoryData.from_latlon(ll, emb, groups)


# ---------------------------------------------------------------- distributed

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


# ---------------------------------------------------------------- checkpoints

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


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class Progress:
    """What besides tensors a run needs to continue: step, best validation metric, patience count."""

    step: int = 0
    best: float = math.inf
    best_step: int = -1
    stale: int = 0
    history: list = field(default_factory=list)  # validation rows (dicts)


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
    _atomic_text(out / STATE_JSON, json.dumps(meta, indent=1))
    save_checkpoint(out, ema, _final_info(info, cfg, prog))


def load_state(out: Path) -> tuple[dict[str, Tensor], dict]:
    """(tensors, metadata) of ``DIR/train_state.safetensors``."""
    path = out / STATE_FILE
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["train_state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def has_state(out: str | os.PathLike) -> bool:
    return (Path(out) / STATE_FILE).is_file()


def _final_info(info: ModelInfo, cfg: TrainConfig, prog: Progress) -> ModelInfo:
    training = {**info.training, "config": cfg.to_dict(), "step": prog.step,
                "best_val": None if math.isinf(prog.best) else prog.best, "best_step": prog.best_step}
    return ModelInfo(**{**info.to_dict(), "family": cfg.family, "schedule": cfg.schedule, "training": training})


# ---------------------------------------------------------------- the loop

@dataclass
class TrainResult:
    step: int
    losses: list[float]  # global training loss of every step run in this call
    history: list[dict]  # validation rows
    out: Path
    stopped_early: bool = False


def build_optimizer(net: Denoiser, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or LAMB; weight decay on matrices only (not biases)."""
    decay = [p for p in net.parameters() if p.dim() >= 2]
    other = [p for p in net.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    if cfg.optimizer == "lamb":
        return Lamb(groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


@torch.no_grad()
def validation_loss(net: Denoiser, data: MemoryData, cfg: TrainConfig, device: torch.device,
                    batch: int = 4096) -> float:
    """Mean per-sample loss on validation rows with fixed draws (no conditioning dropout)."""
    schedule = schedule_from_dict(cfg.schedule)
    total = 0.0
    for i in range(0, len(data), batch):
        idx = np.arange(i, min(i + batch, len(data)))
        xyz, emb = data.rows(idx)
        d = draw(cfg.seed, VAL_STEP, idx, cfg.family, 0.0)
        per = family_loss(cfg.family, net, xyz.to(device), emb.to(device), schedule(d.t).to(device),
                          d.noise.to(device))
        total += float(per.sum())
    return total / max(1, len(data))


def validation_nll(net: Denoiser, data: MemoryData, cfg: TrainConfig, info: ModelInfo, n: int) -> float:
    """Mean −log p (nats/sr) of the first ``n`` validation rows under ``net`` (Geolocator.log_prob)."""
    from globeflow.geolocator import Geolocator

    idx = np.arange(min(n, len(data)))
    xyz, emb = data.rows(idx)
    latlon = sphere.xyz_to_latlon(xyz.double())
    geo = Geolocator(net, ModelInfo(**{**info.to_dict(), "family": cfg.family, "schedule": cfg.schedule}),
                     device=next(net.parameters()).device)
    return float(-geo.log_prob(emb, latlon, steps=cfg.val_nll_steps).mean())


class _CsvLog:
    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = path
        rows = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:
            pass

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_COLUMNS).writerow({k: row.get(k, "") for k in LOG_COLUMNS})
        if self.tb is not None:
            for key in ("lr", "loss", "val_loss", "val_nll"):
                if row.get(key) not in (None, ""):
                    self.tb.add_scalar(key, float(row[key]), int(row["step"]))


def _check_resumable(saved: dict, cfg: TrainConfig) -> None:
    now = cfg.to_dict()
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        raise ValueError(f"cannot resume: the saved run has different {', '.join(changed)} "
                         f"(saved {[saved.get(k) for k in changed]}, now {[now[k] for k in changed]}); "
                         "use a new --out folder")
    if saved.get("steps") != cfg.steps:
        log.warning("resuming with steps=%d (saved run: %s): the learning-rate schedule changes", cfg.steps,
                    saved.get("steps"))


def train(cfg: TrainConfig, source: MemorySource | StoreSource, out: str | os.PathLike, *,
          val: MemoryData | None = None, info: ModelInfo | None = None, resume: bool = True,
          progress: bool = False, device: str | None = None, max_steps: int | None = None) -> TrainResult:
    """Train (or continue training) into ``out``; returns the losses and validation history.

    source: the training stream; val: held-out rows (evaluated every ``val_every`` steps and at
    the end, by rank 0). resume: continue from ``out/train_state.safetensors`` when present.
    max_steps: stop this call after that many steps (the schedule still spans ``cfg.steps``).
    Under torchrun every rank calls this with the same arguments.
    """
    out = Path(out)
    dd = setup_distributed(device)
    if cfg.batch_size % dd.world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the world size {dd.world}")
    info = info or ModelInfo()
    schedule = schedule_from_dict(cfg.schedule)
    if val is not None and len(val) and val.cond_dim != source.cond_dim:
        raise ValueError(f"validation embeddings have width {val.cond_dim}, training {source.cond_dim}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = Denoiser(dim=cfg.dim, depth=cfg.depth, expansion=cfg.expansion, cond_dim=source.cond_dim)
    prog = Progress()
    ema = copy.deepcopy(net)
    opt = build_optimizer(net, cfg)
    if resume and has_state(out):
        tensors, meta = load_state(out)
        _check_resumable(meta["config"], cfg)
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        opt.load_state_dict(_unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optim.")},
                                                 meta["optimizer"]))
        torch.set_rng_state(tensors["rng.torch"])
        prog = Progress(**meta["progress"])
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
    params, ema_params = list(net.parameters()), list(ema.parameters())
    csv_log = None
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_text(out / "train_config.json", json.dumps(cfg.to_dict(), indent=1))
        csv_log = _CsvLog(out / LOG_FILE, prog.step)
    B, b = cfg.batch_size, cfg.batch_size // dd.world
    local = np.arange(dd.rank * b, (dd.rank + 1) * b, dtype=np.int64)
    end = cfg.steps if max_steps is None else min(cfg.steps, prog.step + max_steps)
    losses, window, stopped, t0 = [], [], False, time.perf_counter()
    bar = None
    if progress and dd.main:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=prog.step, desc="train", unit="step", dynamic_ncols=True)
    autocast = torch.autocast(dd.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    while prog.step < end and not stopped:
        s = prog.step
        lr = lr_at(s, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        xyz, emb = source.gather(s * B + local)
        d = draw(cfg.seed, s, local, cfg.family, cfg.cond_drop)
        net.train()
        with autocast:
            per = family_loss(cfg.family, model, xyz.to(dd.device), emb.to(dd.device),
                              schedule(d.t).to(dd.device), d.noise.to(dd.device), d.drop.to(dd.device))
        local_sum = per.sum()
        opt.zero_grad(set_to_none=True)
        (local_sum * (dd.world / B)).backward()  # DDP averages over ranks → gradient of the global mean
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        ema_update(ema_params, params, ema_decay_at(s, cfg))
        total = local_sum.detach().float()
        if dd.world > 1:
            dist.all_reduce(total)
        window.append(total / B)
        prog.step = s + 1
        if bar is not None:
            bar.update(1)
        row = None
        if prog.step % cfg.log_every == 0 or prog.step == end:
            vals = torch.stack(window).cpu().tolist()
            losses += vals
            window = []
            row = {"step": prog.step, "epoch": f"{prog.step * B / len(source):.3f}", "lr": f"{lr:.6g}",
                   "loss": f"{np.mean(vals):.6f}", "seconds": f"{time.perf_counter() - t0:.4f}"}
            if bar is not None:
                bar.set_postfix(loss=f"{np.mean(vals):.4f}")
        if val is not None and len(val) and (prog.step % cfg.val_every == 0 or prog.step == cfg.steps):
            row = row or {"step": prog.step, "lr": f"{lr:.6g}", "seconds": f"{time.perf_counter() - t0:.4f}"}
            stopped = _validate(cfg, ema, val, dd, prog, info, out, row)
        if row is not None and csv_log is not None:
            csv_log.write(row)
        if dd.main and (prog.step % cfg.checkpoint_every == 0 or prog.step == end or stopped):
            save_state(out, cfg, net, ema, opt, prog, info)
        if dd.world > 1 and (prog.step % cfg.checkpoint_every == 0 or prog.step == end or stopped):
            dist.barrier()
    if bar is not None:
        bar.close()
    if window:
        losses += torch.stack(window).cpu().tolist()
    return TrainResult(prog.step, losses, prog.history, out, stopped)


def _validate(cfg: TrainConfig, ema: Denoiser, val: MemoryData, dd: Dist, prog: Progress, info: ModelInfo,
              out: Path, row: dict) -> bool:
    """Validation on every rank (identical EMA weights → identical numbers); returns "stop early"."""
    data = val.select(np.arange(len(val)) < cfg.val_max)
    vloss = validation_loss(ema, data, cfg, dd.device)
    nll = validation_nll(ema, data, cfg, info, cfg.val_nll_points) if cfg.val_nll_points else None
    metric = nll if nll is not None else vloss
    row["val_loss"] = f"{vloss:.6f}"
    if nll is not None:
        row["val_nll"] = f"{nll:.5f}"
    prog.history.append({"step": prog.step, "val_loss": vloss, "val_nll": nll})
    if metric < prog.best:
        prog.best, prog.best_step, prog.stale = metric, prog.step, 0
        if dd.main:
            save_checkpoint(out / "best", ema, _final_info(info, cfg, prog))
    else:
        prog.stale += 1
    log.info("step %d: val_loss %.5f val_nll %s", prog.step, vloss, nll)
    return bool(cfg.patience and prog.stale >= cfg.patience)
