"""Official diff-plonk 0.4 and globeflow side by side on one CUDA GPU, same random weights.

    PYTHONPATH=src:<site with diff-plonk 0.4 and geoopt> python benchmarks/bench_gpu.py --out results.jsonl

The CPU benchmark (bench_vs_official.py) runs the official code in its own venv; on a GPU machine
both run in this one process (the official package and geoopt are pure Python wheels; the machine's
torch, torchvision, torchdiffeq and transformers serve both). Full-size network (dim 512, depth 12,
cond 1024), random weights as in the shared fixture. Every timing is the best of ``--reps`` runs
after one warm-up, with ``torch.cuda.synchronize()``. One JSON line per goal on stdout and in --out.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_official import _globeflow_train, net_flops  # noqa: E402
from official_worker import _table_preprocessing, make_pipeline  # noqa: E402  (imports the official package)
from plonk.models.losses import RiemannianFlowMatchingLoss  # noqa: E402
from plonk.models.preconditioning import DDPMPrecond  # noqa: E402
from plonk.models.preprocessing import GPStoCartesian  # noqa: E402
from plonk.models.pretrained_models import Plonk  # noqa: E402
from plonk.models.schedulers import SigmoidScheduler  # noqa: E402

from globeflow import density, sphere  # noqa: E402
from globeflow import training as T  # noqa: E402
from globeflow.geolocator import Geolocator  # noqa: E402

DEV = torch.device("cuda")  # --device cpu (with a small --dim) only to smoke-test this script


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps: int):
    """(result, best seconds of ``reps`` runs after a warm-up)."""
    out = fn()
    sync()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return out, best


def emit(fh, goal: str, **fields) -> None:
    name = torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu"
    line = json.dumps({"goal": goal, "device": name, "torch": torch.__version__, **fields})
    print(line, flush=True)
    fh.write(line + "\n")
    fh.flush()


def build(folder: Path, dim: int, depth: int, cond_dim: int, seed: int = 0):
    """The official network (saved with its own save_pretrained) and globeflow loading the same file."""
    torch.manual_seed(seed)
    net = Plonk(input_dim=3, dim=dim, depth=depth, expansion=4, cond_dim=cond_dim)
    for block in net.blocks:
        block.mlp[3].reset_parameters()  # not identity blocks (see the shared fixture's README)
    net.save_pretrained(folder)
    pipe = make_pipeline(Plonk.from_pretrained(folder).to(DEV))
    pipe.device = DEV
    return pipe, Geolocator.from_pretrained(folder, device=str(DEV))


def official_likelihood(pipe, emb: torch.Tensor, latlon: np.ndarray) -> tuple[np.ndarray, int]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        lp = pipe.compute_likelihood(emb=emb, coordinates=latlon, cfg=0.0, rtol=1e-6, atol=1e-6, normalize_logp=False)
    nfe = [int(n) for n in re.findall(r"Likelihood NFE: (\d+)", buf.getvalue())]
    return lp.detach().double().cpu().numpy(), (nfe[0] if nfe else -1)


def goal_density(fh, pipe, geo: Geolocator, args) -> None:
    """Ambient (official) and riemannian log-density: error vs steps, points/s, against the official dopri5."""
    C = geo.net.config.cond_dim
    emb = torch.randn(1, C, generator=torch.Generator().manual_seed(1)).to(DEV)
    latlon = geo.sample(emb, args.points, steps=32, seed=1)[0].double().cpu().numpy()  # (P, 2) where the mass is
    for div in ("ambient", "riemannian"):
        ref = geo.log_prob(emb, latlon[None], divergence=div, dtype=torch.float64, steps=args.ref_steps)[0].cpu()
        half = geo.log_prob(emb, latlon[None], divergence=div, dtype=torch.float64, steps=args.ref_steps // 2)[0].cpu()
        curve = []
        for steps in args.curve_steps:
            lp, sec = timed(lambda: geo.log_prob(emb, latlon[None], divergence=div, steps=steps)[0], args.reps)
            curve.append({"steps": steps, "nfe": density.fast_evaluations(steps), "points_per_s": args.points / sec,
                          "max_abs_err": float((lp.double().cpu() - ref).abs().max())})
        row = {"divergence": div, "points": args.points, "reference": f"globeflow float64 RK4 {args.ref_steps} steps",
               "reference_vs_half_steps": float((ref - half).abs().max()), "globeflow": curve}
        if div == "ambient":
            (lp_off, nfe), sec = timed(lambda: official_likelihood(pipe, emb, latlon), 1)
            row["official"] = {"solver": "dopri5 rtol=atol=1e-6, all points jointly", "nfe": nfe,
                               "points_per_s": args.points / sec, "max_abs_err": float(np.abs(lp_off - ref.numpy()).max())}
            for tol in (1e-3, 1e-2):
                ok = [c for c in curve if c["max_abs_err"] <= tol]
                row[f"ratio_at_{tol:g}"] = ok[0]["points_per_s"] / row["official"]["points_per_s"] if ok else None
        emit(fh, "density", **row)
        if div == "ambient":
            official_pps = row["official"]["points_per_s"]
    # the 1° map (64,800 cell centres): globeflow measured, the official extrapolated from its points/s above
    lats, lons = np.arange(-89.5, 90, 1.0), np.arange(-179.5, 180, 1.0)
    steps = next((c["steps"] for c in curve if c["max_abs_err"] <= 1e-2), args.curve_steps[-1])
    _, sec = timed(lambda: geo.log_prob_grid(emb[0], 1.0, steps=steps, chunk=args.map_chunk), 1)
    n = len(lats) * len(lons)
    emit(fh, "map_1deg", points=n, globeflow={"steps": steps, "seconds": sec, "divergence": "riemannian"},
         official_extrapolated={"seconds": n / official_pps, "from_points": args.points},
         ratio=(n / official_pps) / sec)


def goal_sampling(fh, pipe, geo: Geolocator, args) -> None:
    C = geo.net.config.cond_dim
    point, cond = net_flops(geo.net.config.dim, geo.net.config.depth, C)
    for M, K in ((16, 64), (1024, 1)):
        emb = torch.randn(M, C, generator=torch.Generator().manual_seed(2)).to(DEV)
        x0 = sphere.uniform((M, K), generator=torch.Generator().manual_seed(3)).float()
        pipe.cond_preprocessing = _table_preprocessing(emb)
        images = np.repeat(np.arange(M), K).tolist()
        for steps in (32, 250):
            with contextlib.redirect_stdout(io.StringIO()):
                off, t_off = timed(lambda: pipe(images, x_N=x0.reshape(M * K, 3), num_steps=steps, cfg=0.0), args.reps)
            ours, t_ours = timed(lambda: geo.sample(emb, K, steps=steps, noise=x0), args.reps)
            n = M * K
            emit(fh, "sampling", photos=M, samples_per_photo=K, steps=steps,
                 official={"samples_per_s": n / t_off, "tflops": steps * n * (point + cond) / t_off / 1e12},
                 globeflow={"samples_per_s": n / t_ours, "tflops": steps * (n * point + M * cond) / t_ours / 1e12},
                 ratio=t_off / t_ours,
                 max_abs_diff_deg=float(np.abs(ours.cpu().numpy().reshape(-1, 2) - off.reshape(-1, 2)).max()))


def official_train_step_seconds(dim: int, depth: int, cond_dim: int, batch: int, steps: int) -> float:
    """Median step time of the official training step (as benchmarks/official_worker.py, on the GPU)."""
    torch.manual_seed(0)
    net = Plonk(input_dim=3, dim=dim, depth=depth, expansion=4, cond_dim=cond_dim).to(DEV).train()
    ema = Plonk(input_dim=3, dim=dim, depth=depth, expansion=4, cond_dim=cond_dim).to(DEV).requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    loss_fn = RiemannianFlowMatchingLoss(SigmoidScheduler(-7, 3, 1.0, 1e-9), cond_drop_rate=0.1, conditioning_key="emb")
    precond, to_xyz = DDPMPrecond(), GPStoCartesian(input_key="gps", output_key="x_0")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    gps = torch.from_numpy(np.radians(uniform_latlon(batch * 4))).float().to(DEV)
    emb = torch.randn(len(gps), cond_dim, device=DEV)
    times = []
    for s in range(steps + 1):
        idx = torch.randint(0, len(gps), (batch,), device=DEV)
        sync()
        t0 = time.perf_counter()
        batch_d = to_xyz({"gps": gps[idx], "emb": emb[idx]})
        loss = loss_fn(precond, net, batch_d).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), net.parameters()):
                e.copy_(e.lerp(p, 0.999))
        float(loss)
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def uniform_latlon(n: int) -> np.ndarray:
    """(n, 2) degrees, uniform on the sphere (training speed does not depend on the data)."""
    return sphere.xyz_to_latlon(sphere.uniform((n,), generator=torch.Generator().manual_seed(4)).double()).numpy()


def goal_training(fh, args) -> None:
    dim, depth, C, B = args.dim, args.depth, args.cond_dim, args.train_batch
    t_off = official_train_step_seconds(dim, depth, C, B, args.train_steps)
    latlon = uniform_latlon(B * 4)
    data = T.MemoryData.from_latlon(latlon, np.random.default_rng(0).standard_normal((len(latlon), C)).astype(np.float32))
    point, cond = net_flops(dim, depth, C)
    flops = 3 * B * (point + cond)
    row = {"batch": B, "official": {"embeddings_per_s": B / t_off, "tflops": flops / t_off / 1e12}}
    with tempfile.TemporaryDirectory() as tmp:
        for bf16 in (False, True):
            st, _ = _globeflow_train(data, dim, depth, args.train_steps + 1, B, bf16, Path(tmp))
            t = float(np.median(st[1:]))
            row["globeflow_bf16" if bf16 else "globeflow_fp32"] = {"embeddings_per_s": B / t, "tflops": flops / t / 1e12,
                                                                   "ratio": t_off / t}
    emit(fh, "training", **row)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--goals", default="density,sampling,training")
    p.add_argument("--points", type=int, default=1024, help="points for the density goal (one photo)")
    p.add_argument("--curve-steps", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 64, 128, 256])
    p.add_argument("--ref-steps", type=int, default=1024)
    p.add_argument("--map-chunk", type=int, default=65536)
    p.add_argument("--train-batch", type=int, default=1024)
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--cond-dim", type=int, default=1024)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    global DEV
    DEV = torch.device(args.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
    torch.backends.cudnn.allow_tf32 = False
    with open(args.out, "w") as fh, tempfile.TemporaryDirectory() as tmp:
        pipe, geo = build(Path(tmp) / "net", args.dim, args.depth, args.cond_dim)
        runs = {"density": lambda: goal_density(fh, pipe, geo, args),
                "sampling": lambda: goal_sampling(fh, pipe, geo, args), "training": lambda: goal_training(fh, args)}
        failed = 0
        for goal in args.goals.split(","):
            try:
                runs[goal]()
            except Exception as err:  # report and go on: one call on a lent machine must return every goal it can
                failed += 1
                emit(fh, goal, error=f"{type(err).__name__}: {err}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
