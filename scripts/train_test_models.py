"""Train the small committed test models (tests/models/<name>/) on the MP-16 coordinates.

    .venv/bin/python scripts/train_test_models.py [--out tests/models] [--steps 1500] [--only NAME ...]

Each model: dim 64, depth 2, expansion 4, trained on the 100,000 MP-16 photo locations
(/work/shared/data/mp16/coordinates_100k.csv, or --data) with 10 % of the 0.1° cells held
out; its held-out NLL (500 points, nats/sr) goes into globeflow.json → training.heldout_nll.

- rfm_uncond, fm_uncond, diffusion_uncond: unconditional (cond_dim 1, constant zero embedding);
- rfm_hemisphere: conditioned on the hemisphere, embedding one-hot [north, south]
  (cond_dim 2); the null condition (zeros, 10 % conditioning dropout) is the prior.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from globeflow import sphere
from globeflow import training as T
from globeflow.checkpoints import ModelInfo, load_checkpoint
from globeflow.geolocator import Geolocator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mp16" / "coordinates_100k.csv"
MODELS = {  # name: (family, conditioned on the hemisphere)
    "rfm_uncond": ("rfm", False),
    "rfm_hemisphere": ("rfm", True),
    "fm_uncond": ("fm", False),
    "diffusion_uncond": ("diffusion", False),
}


def hemisphere_embedding(latlon_deg: np.ndarray) -> np.ndarray:
    """(N, 2) float32 one-hot [north, south] of latitudes (N, 2) degrees (equator → north)."""
    north = np.asarray(latlon_deg)[:, 0] >= 0
    return np.stack([north, ~north], axis=1).astype(np.float32)


def heldout_nll(folder: Path, val: T.MemoryData, n: int = 500) -> float:
    """Mean −log p (nats/sr) of n held-out points (100 for the slower R³ families, in chunks of 20)."""
    net, info = load_checkpoint(folder)
    geo = Geolocator(net, info)
    if info.family != "rfm":
        n = min(n, 100)
    idx = np.random.default_rng(0).choice(len(val), min(n, len(val)), replace=False)
    xyz, emb = val.rows(idx)
    latlon = sphere.xyz_to_latlon(xyz.double())
    if val.emb is None:  # one shared (null) embedding: rows of K points
        chunk = 500 if info.family == "rfm" else 20
        parts = [geo.log_prob(torch.zeros(1, 1), latlon[None, i:i + chunk], steps=64)[0]
                 for i in range(0, len(latlon), chunk)]
        return float(-torch.cat(parts).mean())
    return float(-geo.log_prob(emb, latlon, steps=64).mean())


def train_one(name: str, latlon: np.ndarray, out: Path, steps: int) -> dict:
    family, conditional = MODELS[name]
    data = T.MemoryData.from_latlon(latlon, hemisphere_embedding(latlon) if conditional else None,
                                    T.cell_groups(latlon, 0.1))
    train, val = data.split(0.1)
    cfg = T.TrainConfig(family=family, dim=64, depth=2, expansion=4, steps=steps, batch_size=512, lr=3e-3,
                        warmup_steps=100, ema_decay=0.995, cond_drop=0.1 if conditional else 0.0,
                        val_every=steps, val_max=2000, checkpoint_every=steps, log_every=50)
    info = ModelInfo(family=family, encoder="hemisphere-onehot" if conditional else None,
                     modality="hemisphere" if conditional else "none", model_id=f"globeflow-test/{name}",
                     training={"data": "MP-16 coordinates_100k.csv (geoclip 1.3.0)", "split": "0.1° cells, 10 %",
                               "script": "scripts/train_test_models.py"})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        T.train(cfg, T.MemorySource(train, cfg.seed), tmp, val=val, info=info, resume=False)
        target = out / name
        target.mkdir(parents=True, exist_ok=True)
        for file in ("config.json", "model.safetensors", "globeflow.json"):
            shutil.copy(Path(tmp) / file, target / file)
    seconds = time.perf_counter() - t0
    nll = heldout_nll(target, val)
    meta = json.loads((target / "globeflow.json").read_text())
    meta["training"].update(heldout_nll=round(nll, 4), train_seconds=round(seconds, 1))
    (target / "globeflow.json").write_text(json.dumps(meta, indent=2))
    return {"model": name, "family": family, "heldout_nll": round(nll, 4), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV with LAT,LON columns")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "models")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS), default=sorted(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is fastest
    latlon = np.loadtxt(args.data, delimiter=",", skiprows=1)
    for name in args.only:
        print(json.dumps(train_one(name, latlon, args.out, args.steps)), flush=True)


if __name__ == "__main__":
    main()
