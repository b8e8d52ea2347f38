"""Exact log-density on a *trained* model: globeflow's error-vs-speed curve against the official dopri5.

    .venv/bin/python benchmarks/bench_density_trained.py --threads 1 --out benchmarks/results/density-trained.jsonl

The question (issue 19, item 4): is ≥ 10× the official speed at ≤ 1e-3 nats reachable where the
field is trained rather than random? Model: the shipped default photo model (dim 64, depth 2,
efficientnet-lite0 embeddings of real im2gps3k photos); P photos, one point each at one of the
model's own samples (where its mass is), guidance cfg = 0 on both sides (the official
``compute_likelihood`` argument), ambient divergence (what the official code computes).
Reference: globeflow float64 RK4 at ``--ref-steps`` (its distance to half the steps is printed).
globeflow: RK4 + Simpson at each of ``--steps``; official: dopri5 at rtol = atol = 1e-6 (its
default) and 1e-5, 1e-4, all points jointly, in its own venv (benchmarks/official_worker.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import PHOTOS, cpu_model  # noqa: E402
from bench_vs_official import OFFICIAL_PY, Official  # noqa: E402

from globeflow import density  # noqa: E402
from globeflow.checkpoints import resolve  # noqa: E402
from globeflow.geolocator import Geolocator  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=32)
    p.add_argument("--steps", default="16,32,64,128,256")
    p.add_argument("--ref-steps", type=int, default=1024)
    p.add_argument("--rtols", default="1e-4,1e-5,1e-6")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder, _ = resolve(None, "image")
    geo = Geolocator.from_pretrained(folder)
    names = sorted(os.listdir(PHOTOS))[: args.photos]
    emb = torch.from_numpy(geo.embed([PHOTOS / n for n in names]))
    latlon = geo.sample(emb, 1, steps=32, cfg=0.0, seed=1)[:, 0].double()
    lp = lambda steps, dtype=None: geo.log_prob(emb, latlon, cfg=0.0, divergence="ambient", steps=steps,  # noqa: E731
                                                dtype=dtype)
    ref = lp(args.ref_steps, torch.float64)
    half = lp(args.ref_steps // 2, torch.float64)
    P = len(names)
    curve = []
    for steps in [int(s) for s in args.steps.split(",")]:
        t0 = time.perf_counter()
        out = lp(steps)
        sec = time.perf_counter() - t0
        curve.append({"steps": steps, "nfe": density.fast_evaluations(steps), "points_per_s": P / sec,
                      "max_abs_err": float((out.double() - ref).abs().max())})
    official = []
    with tempfile.TemporaryDirectory(prefix="bench-density-trained-") as tmp_s:
        off = Official(OFFICIAL_PY, args.threads, Path(tmp_s))
        try:
            off.call("init", name="trained", folder=str(folder), threads=args.threads)
            for rtol in [float(r) for r in args.rtols.split(",")]:
                r = off.call("likelihood", name="trained", emb=off.array("emb", emb.numpy()),
                             coords=off.array("coords", latlon.float().numpy()), batch=P, rtol=rtol, atol=rtol,
                             cfg=0.0, out=str(Path(tmp_s) / "lp.npy"))
                err = float(np.abs(np.load(Path(tmp_s) / "lp.npy").astype(np.float64) - ref.numpy()).max())
                official.append({"rtol": rtol, "nfe": r["nfe"][0], "points_per_s": P / r["seconds"], "max_abs_err": err})
        finally:
            off.close()
    default = next(o for o in official if o["rtol"] == 1e-6)
    for c in curve:
        c["speed_vs_official_1e-6"] = c["points_per_s"] / default["points_per_s"]
    row = {"goal": "density_trained_curve", "model": "shipped default photo model (dim 64, depth 2, efficientnet-lite0)",
           "points": P, "cfg": 0.0, "divergence": "ambient", "reference": f"float64 RK4 {args.ref_steps} steps",
           "reference_vs_half_steps": float((ref - half).abs().max()), "globeflow": curve, "official": official,
           "cpu": cpu_model(), "threads": args.threads, "loadavg": [round(x, 2) for x in os.getloadavg()],
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    line = json.dumps(row)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
