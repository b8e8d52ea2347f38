"""Train the small committed test models (tests/models/<name>/) on the MP-16 coordinates.

    .venv/bin/python scripts/train_test_models.py [--out tests/models] [--steps N] [--blur-deg 3] [--only NAME ...]

Each model: dim 64, depth 2, expansion 4, trained on the 100,000 MP-16 photo locations
(/work/shared/data/mp16/coordinates_100k.csv, or --data) blurred once by an isotropic Gaussian of
--blur-deg degrees (seed 0), with 10 % of the 0.1° cells held out; its held-out NLL (500 points,
nats/sr) goes into globeflow.json → training.heldout_nll.

Why blur: the density tests integrate each model with a 4,800-node Gauss–Legendre rule. Trained on
the raw locations, these models learn coastal ridges about 0.6° wide (log p up to 4.1 nats/sr near
San Francisco), which no quadrature of that size resolves (measured integrals 0.962 with 4×4 nodes
per cell and 0.940 with 6×6, for a density whose solver had converged). Blurred by 3°, the same
recipe gives a density that the rule integrates to 1 within 0.2 %.

The R³ families (fm, diffusion) are also trained on points spread radially, r = exp(0.05·N(0, 1))
(--shell-sd). Trained on exact unit vectors, their samples lie on a shell 0.002 thick (radius IQR)
and the probability-flow ODE is stiff near the data end: on such a model the direction log-density
of 4 directions moved by 0.17 / 0.06 / 0.009 nats between 32 / 128 / 256 RK4 steps and 1,024
(24 radial nodes), so the density test would need about 35 minutes. The thicker shell keeps that
test within its budget while exercising the same code (R³ ODE, divergence, radial quadrature).

The diffusion model trains for 6,000 steps instead of 1,500 (60 s on one core). At 1,500 steps about
1 % of the mass of its probability-flow ODE (σ from 100 to 1e-3) lay far off the data shell (sample
radii up to 84), which a 24-node radial rule cannot integrate (24 → 48 → 96 nodes: 1.0199 → 1.0096 →
1.0094). At 6,000 steps 0.13 % of 20,000 Heun samples lie outside radii [0.7, 1.4] (largest 16); the
density integrates to 1.0062 at 32 RK4 steps and 24 nodes, 24 → 48 nodes moves the integral by
0.18 %, and the chi-square p of Heun samples is 0.53 / 0.32 / 0.25 at 32 / 64 / 128 steps (measured
2026-11-27).

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
MODELS = {  # name: (family, conditioned on the hemisphere, training steps)
    "rfm_uncond": ("rfm", False, 1500),
    "rfm_hemisphere": ("rfm", True, 1500),
    "fm_uncond": ("fm", False, 1500),
    "diffusion_uncond": ("diffusion", False, 6000),
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
    latlon = sphere.xyz_to_latlon(sphere.normalize(xyz.double()))
    if val.emb is None:  # one shared (null) embedding: rows of K points
        chunk = 500 if info.family == "rfm" else 20
        parts = [geo.log_prob(torch.zeros(1, 1), latlon[None, i:i + chunk], steps=64)[0]
                 for i in range(0, len(latlon), chunk)]
        return float(-torch.cat(parts).mean())
    return float(-geo.log_prob(emb, latlon, steps=64).mean())


def blur(latlon_deg: np.ndarray, sigma_deg: float, seed: int = 0) -> np.ndarray:
    """Points (N, 2) degrees moved by an isotropic Gaussian of ``sigma_deg`` degrees, back on the sphere."""
    if sigma_deg <= 0:
        return np.asarray(latlon_deg, dtype=np.float64)
    x = sphere.latlon_to_xyz(torch.as_tensor(latlon_deg, dtype=torch.float64)).numpy()
    x = x + np.random.default_rng(seed).normal(size=x.shape) * np.radians(sigma_deg)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return sphere.xyz_to_latlon(torch.as_tensor(x)).numpy()


def train_one(name: str, latlon: np.ndarray, out: Path, steps: int | None = None, blur_deg: float = 0.0,
              shell_sd: float = 0.0) -> dict:
    family, conditional, _ = MODELS[name]
    steps = steps or MODELS[name][2]
    emb = hemisphere_embedding(latlon) if conditional else None  # of the place, before the blur
    latlon = blur(latlon, blur_deg)
    data = T.MemoryData.from_latlon(latlon, emb,
                                    T.cell_groups(latlon, 0.1))
    if family != "rfm" and shell_sd > 0:  # radial spread for the R³ families (see the module docstring)
        data.xyz *= torch.exp(shell_sd * torch.randn(len(data), 1, generator=torch.Generator().manual_seed(1)))
    train, val = data.split(0.1)
    cfg = T.TrainConfig(family=family, dim=64, depth=2, expansion=4, steps=steps, batch_size=512, lr=3e-3,
                        warmup_steps=100, ema_decay=0.995, cond_drop=0.1 if conditional else 0.0,
                        val_every=steps, val_max=2000, checkpoint_every=steps, log_every=50)
    info = ModelInfo(family=family, encoder="hemisphere-onehot" if conditional else None,
                     modality="hemisphere" if conditional else "none", model_id=f"globeflow-test/{name}",
                     training={"data": "MP-16 coordinates_100k.csv (geoclip 1.3.0)", "split": "0.1° cells, 10 %",
                               "blur_deg": blur_deg,
                               "shell_sd": shell_sd if family != "rfm" else 0.0,
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
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: per model, 1,500; "
                        "diffusion 6,000)")
    parser.add_argument("--blur-deg", type=float, default=3.0, help="Gaussian blur of the locations, degrees")
    parser.add_argument("--shell-sd", type=float, default=0.05, help="log-radius spread for fm/diffusion")
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS), default=sorted(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is fastest
    latlon = np.loadtxt(args.data, delimiter=",", skiprows=1)
    for name in args.only:
        print(json.dumps(train_one(name, latlon, args.out, args.steps, args.blur_deg, args.shell_sd)), flush=True)


if __name__ == "__main__":
    main()
