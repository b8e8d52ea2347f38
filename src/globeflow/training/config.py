"""The training configuration: every setting that defines a run (saved as JSON in its checkpoint)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from globeflow.families import check_family
from globeflow.schedules import SigmoidSchedule, schedule_from_dict, schedule_to_dict


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as JSON in the checkpoint)."""

    family: str = "rfm"
    dim: int = 256
    depth: int = 6
    expansion: int = 4
    cond_hidden: int = 0  # conditioning MLP width (0: PLONK's single Linear; see NetworkConfig)
    cond_layers: int = 0  # its hidden layers (both 0 or both > 0)
    fourier_features: int = 0  # Fourier features of the position (0: PLONK's Linear on y; see NetworkConfig)
    fourier_scale: int = 0  # their highest angular frequency, rad⁻¹ (≥ 1 when fourier_features > 0)
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
