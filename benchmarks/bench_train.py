"""Training throughput: embeddings/s of one optimizer step (forward, backward, AdamW, EMA) at batch 1024.

    .venv/bin/python benchmarks/bench_train.py [--steps 5] [--threads N] [--device auto]

Shapes: the full PLONK size (dim 512, depth 12, cond 1024) and the shipped default
(dim 64, depth 2, cond 1280); fp32 and bf16 autocast. One JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from globeflow import training as T
from globeflow.families import loss
from globeflow.network import Denoiser
from globeflow.schedules import SigmoidSchedule

SHAPES = {"full": dict(dim=512, depth=12, cond_dim=1024), "default": dict(dim=64, depth=2, cond_dim=1280)}


def bench(shape: str, bf16: bool, batch: int, steps: int, device: torch.device) -> dict:
    net = Denoiser(**SHAPES[shape]).to(device)
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    schedule = SigmoidSchedule()
    x1 = T.sphere.uniform((batch,)).to(device)
    emb = torch.randn(batch, SHAPES[shape]["cond_dim"], device=device)

    def step(s: int) -> None:
        d = T.draw(0, s, np.arange(batch), "rfm", 0.1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            per = loss("rfm", net, x1, emb, schedule(d.t).to(device), d.noise.to(device), d.drop.to(device))
        opt.zero_grad(set_to_none=True)
        per.mean().backward()
        opt.step()
        T.ema_update(ema, list(net.parameters()), 0.999)

    step(0)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        step(s)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    return {"bench": "train_step", "shape": shape, **SHAPES[shape], "dtype": "bf16" if bf16 else "fp32",
            "batch": batch, "device": str(device), "threads": torch.get_num_threads(),
            "seconds_per_step": round(seconds, 4), "embeddings_per_s": round(batch / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    for shape in SHAPES:
        for bf16 in (False, True):
            print(json.dumps(bench(shape, bf16, args.batch, args.steps, device)), flush=True)


if __name__ == "__main__":
    main()
