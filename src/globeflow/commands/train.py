"""``globeflow train``: train a conditional (or unconditional) location model."""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

import numpy as np

from globeflow.checkpoints import ModelInfo
from globeflow.columns import resolve_columns
from globeflow.families import FAMILIES

HELP = "train a model on an embedding store (or a CSV of coordinates, unconditionally)"
DESCRIPTION = """Train a generative location model and write an official-format checkpoint folder.

DATA is an embedding store made by `globeflow embed` (labelled rows are used; photographers
= the `group` column are split into train/validation, never single photos), or a CSV with
lat/lon columns (e.g. MP-16 coordinates) for an unconditional model (validation split by
the `group` column when present, else by 0.1° × 0.1° cell).

OUT receives config.json + model.safetensors (EMA weights; loadable by the official
package) + globeflow.json, train_state.safetensors/.json (resume state), log.csv and best/
(the EMA weights with the best validation metric). A run continues bit-identically from
OUT's saved state with --resume (or automatically when OUT already holds one).

Multi-process (one node, 2 ranks; gloo on CPU, nccl on GPU):
  torchrun --nproc_per_node 2 -m globeflow.cli train STORE --out DIR

Examples:
  globeflow train data/im2gps3k/efficientnet-lite0 --out runs/im2gps3k --dim 256 --depth 4 --steps 3000
  globeflow train /path/to/coordinates_100k.csv --out runs/prior --dim 64 --depth 2 --steps 2000
  globeflow train STORE --out runs/x --resume
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from globeflow.training import TrainConfig

    d = TrainConfig()
    a = parser.add_argument
    a("data", type=Path, metavar="DATA", help="embedding store folder, or a CSV with lat/lon columns")
    a("--out", type=Path, required=True, help="checkpoint folder (created; holds the resume state)")
    a("--family", choices=FAMILIES, default=d.family, help=f"generative family (default {d.family})")
    a("--dim", type=int, default=d.dim, help=f"network width (default {d.dim})")
    a("--depth", type=int, default=d.depth, help=f"number of AdaLN blocks (default {d.depth})")
    a("--expansion", type=int, default=d.expansion, help=f"MLP expansion (default {d.expansion})")
    a("--fourier-features", type=int, default=d.fourier_features,
      help="Fourier features of the position, 0 = PLONK's Linear on the point (default 0); for many clustered rows")
    a("--fourier-scale", type=int, default=d.fourier_scale, help="their highest angular frequency, rad⁻¹ (e.g. 512)")
    a("--steps", type=int, default=d.steps, help=f"total optimizer steps (default {d.steps})")
    a("--batch-size", type=int, default=d.batch_size, help=f"global batch size (default {d.batch_size})")
    a("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    a("--weight-decay", type=float, default=d.weight_decay, help=f"weight decay (default {d.weight_decay})")
    a("--warmup-steps", type=int, default=d.warmup_steps, help=f"linear warmup steps (default {d.warmup_steps})")
    a("--optimizer", choices=("adamw", "lamb"), default=d.optimizer, help="adamw (default) or lamb")
    a("--ema-decay", type=float, default=d.ema_decay, help=f"EMA decay (default {d.ema_decay})")
    a("--cond-drop", type=float, default=d.cond_drop, help=f"null-condition rate (default {d.cond_drop})")
    a("--val-frac", type=float, default=d.val_frac, help=f"held-out group fraction (default {d.val_frac})")
    a("--val-every", type=int, default=d.val_every, help=f"validate every N steps (default {d.val_every})")
    a("--val-nll", type=int, default=d.val_nll_points, metavar="N",
      help="also measure the NLL of N validation rows (default 0 = off)")
    a("--patience", type=int, default=d.patience, help="stop after N validations without improvement (0 = never)")
    a("--checkpoint-every", type=int, default=d.checkpoint_every, help=f"default {d.checkpoint_every}")
    a("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    a("--resume", action="store_true", help="continue from OUT's saved state (also automatic when present)")
    a("--bf16", action="store_true", help="bfloat16 autocast (CPU where supported, GPU)")
    a("--device", default="auto", help="auto (GPU when available), cpu, cuda (default auto)")
    a("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a("--model-id", default=None, help="model_id written into globeflow.json (default: OUT's name)")
    a("--no-progress", action="store_true", help="no progress bar")


def read_coordinates(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """lat/lon (N, 2) degrees and optional groups from a CSV; raises ValueError naming bad rows/columns."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = resolve_columns(reader.fieldnames or [], ("lat", "lon", "group"))
        if "lat" not in cols or "lon" not in cols:
            raise ValueError(f"{path}: needs lat and lon columns; found {reader.fieldnames}")
        ll, groups, bad = [], [], 0
        for row in reader:
            try:
                lat, lon = float(row[cols["lat"]]), float(row[cols["lon"]])
            except (TypeError, ValueError):
                bad += 1
                continue
            if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
                bad += 1
                continue
            ll.append((lat, lon))
            groups.append(row[cols["group"]] if "group" in cols else "")
    if bad:
        logging.getLogger(__name__).warning("%s: skipped %d rows with missing or invalid coordinates", path, bad)
    if not ll:
        raise ValueError(f"{path}: no valid coordinates")
    return np.asarray(ll), (np.asarray(groups) if "group" in cols else None)


def _config(args):
    from globeflow.training import TrainConfig

    return TrainConfig(family=args.family, dim=args.dim, depth=args.depth, expansion=args.expansion,
                       fourier_features=args.fourier_features, fourier_scale=args.fourier_scale,
                       steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       warmup_steps=args.warmup_steps, optimizer=args.optimizer, ema_decay=args.ema_decay,
                       cond_drop=args.cond_drop, val_frac=args.val_frac, val_every=args.val_every,
                       val_nll_points=args.val_nll, patience=args.patience,
                       checkpoint_every=args.checkpoint_every, seed=args.seed, bf16=args.bf16)


def _sources(args, cfg):
    """(training source, validation rows, ModelInfo) for a store folder or a CSV."""
    from globeflow import training as T
    from globeflow.data.store import EmbeddingStore

    model_id = args.model_id or args.out.name
    if args.data.is_dir():
        store = EmbeddingStore(args.data)
        source = T.StoreSource(store, cfg.seed, val_frac=cfg.val_frac, window_shards=cfg.window_shards)
        val = T.store_validation(store, cfg.val_frac, max_rows=cfg.val_max) if cfg.val_frac else None
        info = ModelInfo(encoder=store.encoder, modality="text" if "minilm" in store.encoder.lower() else "image",
                         model_id=model_id, training={"data": str(args.data), "rows": len(store)})
        return source, val, info
    latlon, groups = read_coordinates(args.data)
    data = T.MemoryData.from_latlon(latlon, groups=groups if groups is not None else T.cell_groups(latlon))
    train, val = data.split(cfg.val_frac) if cfg.val_frac else (data, None)
    info = ModelInfo(encoder=None, modality="none", model_id=model_id,
                     training={"data": str(args.data), "rows": len(data), "unconditional": True})
    return T.MemorySource(train, cfg.seed), val, info


def run(args: argparse.Namespace) -> int:
    import torch

    from globeflow import training as T
    from globeflow.data.store import StoreError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = _config(args)
    except ValueError as err:
        print(f"globeflow train: {err}")
        return 2
    if not args.data.exists():
        print(f"globeflow train: DATA {args.data} does not exist")
        return 2
    if args.resume and not T.has_state(args.out):
        print(f"globeflow train: --resume given but {args.out} holds no {T.STATE_FILE}")
        return 2
    try:
        source, val, info = _sources(args, cfg)
        result = T.train(cfg, source, args.out, val=val, info=info, resume=True, progress=not args.no_progress,
                         device=args.device)
    except (ValueError, StoreError, OSError) as err:
        print(f"globeflow train: {err}")
        return 2
    last = result.history[-1] if result.history else {}
    print(json.dumps({"out": str(result.out), "step": result.step, "loss": result.losses[-1] if result.losses
                      else None, "stopped_early": result.stopped_early, **{k: v for k, v in last.items()
                                                                          if k != "step"}}))
    return 0
