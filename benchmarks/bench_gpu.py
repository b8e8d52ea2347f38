"""Official diff-plonk 0.4 and globeflow side by side on one CUDA GPU, same random weights.

    PYTHONPATH=src:<site with diff-plonk 0.4, geoopt 0.5.1, torchdiffeq 0.2.5> python benchmarks/bench_gpu.py --out gpu.jsonl
    PYTHONPATH=src:<site> python benchmarks/bench_gpu.py --dry-run --out /tmp/dry.jsonl   # CPU, tiny sizes, ~1 min

The CPU benchmark (bench_vs_official.py) runs the official code in its own venv; on a GPU machine
both run in this one process (the official package and geoopt are pure Python wheels; the machine's
torch, torchvision, torchdiffeq and transformers serve both). Full-size network (dim 512, depth 12,
cond 1024), random weights as in the shared fixture. Every timing is the best of ``--reps`` runs
after one warm-up, with ``torch.cuda.synchronize()``. One JSON line per goal on stdout and in --out.

Goals (``--goals``, run in this order so a short lease returns the most important first):

- ``sampling``: 16 × 64 and 1,024 × 1 at 32 / 250 Euler steps: official eager vs globeflow eager
  fp32, and globeflow with the whole fixed-step loop captured in one CUDA graph (:class:`GraphedSampler`)
  in fp32, TF32 and bf16 (``Denoiser.apply_bf16``); a large batch (samples/s, goal ≥ 1 M/s) for the
  full-size network and for the default photo model's shape (dim 64, depth 2, cond 1,280);
- ``energy``: the 10,000-per-side energy test of the graphed TF32 and bf16 samplers (and fp32) against
  the official 250-step fp32 samples of the trained test model ``tests/models/rfm_uncond``;
- ``training``: batch 1,024: the official step vs globeflow's step (its loss, draws, AdamW, EMA) in
  fp32, with the fused AdamW, bf16 autocast and ``torch.compile``, and the validation loss of each
  variant after the same steps on the same data (locations drawn from the trained test model);
- ``density``: exact log-density and the 1° map with the current solver (RK4 + Simpson log-density).

``--dry-run`` runs every goal on the CPU with a tiny network and tiny counts (CUDA graphs fall back to
the eager loop, ``torch.compile`` uses the ``eager`` backend), so the script is known to run before
a lent GPU's minutes are spent on it.
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
from bench_vs_official import energy_test, net_flops  # noqa: E402
from official_worker import _table_preprocessing, make_pipeline  # noqa: E402  (imports the official package)
from plonk.models.losses import RiemannianFlowMatchingLoss  # noqa: E402
from plonk.models.preconditioning import DDPMPrecond  # noqa: E402
from plonk.models.preprocessing import GPStoCartesian  # noqa: E402
from plonk.models.pretrained_models import Plonk  # noqa: E402
from plonk.models.schedulers import SigmoidScheduler  # noqa: E402

from globeflow import density, sphere  # noqa: E402
from globeflow import training as T  # noqa: E402
from globeflow.checkpoints import ModelInfo  # noqa: E402
from globeflow.families import loss as family_loss  # noqa: E402
from globeflow.geolocator import Geolocator  # noqa: E402
from globeflow.network import Denoiser  # noqa: E402
from globeflow.sampling import Field, sample_rfm, time_grid  # noqa: E402
from globeflow.schedules import schedule_from_dict  # noqa: E402
from globeflow.training.validation import validation_loss  # noqa: E402

TRAINED = Path(__file__).resolve().parents[1] / "tests" / "models" / "rfm_uncond"

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
    res = args.map_res
    lats, lons = np.arange(-90 + res / 2, 90, res), np.arange(-180 + res / 2, 180, res)
    steps = next((c["steps"] for c in curve if c["max_abs_err"] <= 1e-2), args.curve_steps[-1])
    _, sec = timed(lambda: geo.log_prob_grid(emb[0], res, steps=steps, chunk=args.map_chunk), 1)
    n = len(lats) * len(lons)
    emit(fh, "map_1deg" if res == 1.0 else f"map_{res:g}deg", points=n, globeflow={"steps": steps, "seconds": sec, "divergence": "riemannian"},
         official_extrapolated={"seconds": n / official_pps, "from_points": args.points},
         ratio=(n / official_pps) / sec)


class GraphedSampler:
    """globeflow's fixed-step rfm Euler loop for M embeddings × K samples, captured once as a CUDA graph.

    Every step's shapes are fixed, so the whole loop (conditioning path, point path, normalisation)
    replays as one graph: new start points and embeddings are copied into its static inputs. On a
    CPU (``--dry-run``) it runs the same loop eagerly. ``precision``: ``fp32``, ``tf32`` (fp32 with
    TF32 matmuls) or ``bf16`` (:meth:`Denoiser.apply_bf16`).
    """

    def __init__(self, geo: Geolocator, M: int, K: int, steps: int, precision: str = "fp32") -> None:
        self.geo, self.tf32 = geo, precision == "tf32"
        dev, dt = geo.device, geo.dtype
        self.emb = torch.zeros(M, geo.net.config.cond_dim, device=dev, dtype=dt)
        self.x0 = torch.zeros(M, K, 3, device=dev, dtype=dt)
        self.gammas = geo.schedule(time_grid(steps)).to(device=dev, dtype=dt)
        self.field = Field(geo.net, self.emb, 0.0, "bf16" if precision == "bf16" else "fp32")
        self.graph, self.out = None, None
        if dev.type == "cuda":
            with self._tf32():
                self.x0.copy_(sphere.uniform((M, K)).to(dev))
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side), torch.no_grad():
                    for _ in range(2):  # warm-up (allocations, cuBLAS handles, the bf16 weight cache)
                        self._loop()
                torch.cuda.current_stream().wait_stream(side)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph), torch.no_grad():
                    self.out = self._loop()

    def _tf32(self):
        return _tf32(self.tf32)

    def _loop(self) -> torch.Tensor:
        return sample_rfm(self.field, self.x0, self.gammas, "euler").x

    def __call__(self, emb: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """emb (M, C), x0 (M, K, 3) unit vectors → (M, K, 3) samples (a view of the graph's output)."""
        self.emb.copy_(emb)
        self.x0.copy_(x0)
        if self.graph is None:
            with self._tf32(), torch.no_grad():
                return self._loop()
        self.graph.replay()
        return self.out


@contextlib.contextmanager
def _tf32(on: bool):
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def goal_sampling(fh, pipe, geo: Geolocator, args) -> None:
    C = geo.net.config.cond_dim
    point, cond = net_flops(geo.net.config.dim, geo.net.config.depth, C)
    for M, K in args.sampling_shapes:
        emb = torch.randn(M, C, generator=torch.Generator().manual_seed(2)).to(DEV)
        x0 = sphere.uniform((M, K), generator=torch.Generator().manual_seed(3)).float()
        pipe.cond_preprocessing = _table_preprocessing(emb)
        images = np.repeat(np.arange(M), K).tolist()
        for steps in args.sample_steps:
            n = M * K
            with contextlib.redirect_stdout(io.StringIO()):
                off, t_off = timed(lambda: pipe(images, x_N=x0.reshape(M * K, 3), num_steps=steps, cfg=0.0), args.reps)
            off_xyz = sphere.latlon_to_xyz(torch.as_tensor(np.asarray(off), dtype=torch.float64).reshape(M, K, 2))
            row = {"photos": M, "samples_per_photo": K, "steps": steps,
                   "official": {"samples_per_s": n / t_off, "tflops": steps * n * (point + cond) / t_off / 1e12}}
            ours, t = timed(lambda: geo.sample(emb, K, steps=steps, noise=x0), args.reps)
            row["globeflow_eager_fp32"] = _sampling_row(ours, off_xyz, t, t_off, n, steps * (n * point + M * cond))
            for precision in ("fp32", "tf32", "bf16"):
                graphed = GraphedSampler(geo, M, K, steps, precision)
                xyz, t = timed(lambda: graphed(emb, x0.to(DEV)), args.reps)
                row[f"globeflow_graph_{precision}"] = _sampling_row(
                    sphere.xyz_to_latlon(xyz.double()), off_xyz, t, t_off, n, steps * (n * point + M * cond))
                del graphed
            row["cuda_graphs"] = DEV.type == "cuda"
            emit(fh, "sampling", **row)
    large_batch(fh, geo, args)


def _sampling_row(latlon: torch.Tensor, off_xyz: torch.Tensor, t: float, t_off: float, n: int, flops: float) -> dict:
    xyz = sphere.latlon_to_xyz(latlon.double().cpu())
    km = torch.atan2(torch.linalg.cross(xyz, off_xyz, dim=-1).norm(dim=-1), (xyz * off_xyz).sum(-1)) * sphere.EARTH_RADIUS_KM
    return {"samples_per_s": n / t, "ratio": t_off / t, "tflops": flops / t / 1e12,
            "km_to_official_median": float(km.median()), "km_to_official_max": float(km.max())}


def large_batch(fh, geo: Geolocator, args) -> None:
    """Samples/s at a large batch (32 Euler steps, graphed): the full-size network and the photo model's shape."""
    small = Denoiser(dim=64, depth=2, cond_dim=1280)
    for block in small.blocks:
        block.mlp[3].reset_parameters()
    shapes = [("full size (this run's network)", geo, args.large_full),
              ("default photo model's shape: dim 64, depth 2, cond 1280",
               Geolocator(small, ModelInfo(family="rfm", modality="none", model_id="bench/small"), device=str(DEV)),
               args.large_small)]
    for label, g, (M, K) in shapes:
        emb = torch.randn(M, g.net.config.cond_dim, device=DEV)
        x0 = sphere.uniform((M, K)).to(DEV)
        row = {"network": label, "photos": M, "samples_per_photo": K, "steps": 32}
        for precision in ("fp32", "tf32", "bf16"):
            try:
                graphed = GraphedSampler(g, M, K, 32, precision)
                _, t = timed(lambda: graphed(emb, x0), args.reps)
                row[precision] = {"samples_per_s": M * K / t, "seconds": t}
                del graphed
            except torch.cuda.OutOfMemoryError as err:  # report, keep going
                row[precision] = {"error": f"out of memory: {err}"[:200]}
            if DEV.type == "cuda":
                torch.cuda.empty_cache()
        best = max((v.get("samples_per_s", 0) for v in row.values() if isinstance(v, dict)), default=0)
        emit(fh, "sampling_large_batch", **row, best_samples_per_s=best, at_least_1m_per_s=best >= 1e6)


def goal_energy(fh, args) -> None:
    """Graphed fp32 / TF32 / bf16 Euler 32 (and Heun 16 eager) vs the official Euler 250 fp32, N per side."""
    from plonk.models.pretrained_models import Plonk

    geo = Geolocator.from_pretrained(TRAINED, family="rfm", device=str(DEV))
    pipe = make_pipeline(Plonk.from_pretrained(str(TRAINED)).to(DEV))
    pipe.device = DEV
    n = args.energy_n
    emb = torch.zeros(1, geo.net.config.cond_dim, device=DEV)
    pipe.cond_preprocessing = _table_preprocessing(emb)
    x_off = sphere.uniform((n,), generator=torch.Generator().manual_seed(11)).float()
    with contextlib.redirect_stdout(io.StringIO()):
        official = np.asarray(pipe([0] * n, x_N=x_off, num_steps=250, cfg=0.0)).reshape(n, 2)
    x0 = sphere.uniform((1, n), generator=torch.Generator().manual_seed(12)).float().to(DEV)
    cases = [(p, GraphedSampler(geo, 1, n, 32, p)) for p in ("fp32", "tf32", "bf16")]
    for precision, graphed in cases:
        ours = sphere.xyz_to_latlon(graphed(emb, x0)[0].double().cpu()).numpy()
        test = energy_test(official, ours, args.energy_perms)
        emit(fh, "sampling_distribution", model="tests/models/rfm_uncond (dim 64, depth 2, MP-16 coordinates)",
             official={"sampler": "euler", "steps": 250, "precision": "fp32"},
             globeflow={"sampler": "euler", "steps": 32, "precision": precision, "cuda_graph": DEV.type == "cuda"},
             **test, rejected_at_0_01=test["p_value"] < 0.01)


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


TRAIN_VARIANTS = {  # name: (fused AdamW, bf16 autocast, torch.compile)
    "fp32": (False, False, False), "fp32_fused": (True, False, False), "bf16_fused": (True, True, False),
    "compile_fp32_fused": (True, False, True), "compile_bf16_fused": (True, True, True),
}


def _train_data(n: int, C: int) -> tuple[T.MemoryData, T.MemoryData]:
    """Locations drawn from the trained test model (realistic clusters; shared/ is not on a lent machine)
    with random embeddings of width C; 1/8 held out."""
    geo = Geolocator.from_pretrained(TRAINED, family="rfm", device=str(DEV))
    latlon = geo.sample(torch.zeros(1, 1), n, steps=32, seed=0)[0].double().cpu().numpy()
    emb = np.random.default_rng(0).standard_normal((n, C)).astype(np.float32)
    cut = n - n // 8
    return T.MemoryData.from_latlon(latlon[:cut], emb[:cut]), T.MemoryData.from_latlon(latlon[cut:], emb[cut:])


def globeflow_train(train: T.MemoryData, val: T.MemoryData, args, steps: int, variant: str) -> dict:
    """globeflow's training step (family loss, counter-based draws, AdamW on its two groups, EMA) with
    the variant's switches; median step seconds (draws made before timing) and the EMA's validation loss."""
    import copy

    fused, bf16, compiled = TRAIN_VARIANTS[variant]
    B = args.train_batch
    cfg = T.TrainConfig(family="rfm", dim=args.dim, depth=args.depth, batch_size=B, steps=steps, lr=1e-3,
                        warmup_steps=0, cond_drop=0.1)
    torch.manual_seed(cfg.seed)
    net = Denoiser(dim=args.dim, depth=args.depth, cond_dim=train.cond_dim).to(DEV)
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    groups = [{"params": [p for p in net.parameters() if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in net.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused and DEV.type == "cuda")
    model = torch.compile(net, backend="inductor" if DEV.type == "cuda" else "eager") if compiled else net
    params, ema_params = list(net.parameters()), list(ema.parameters())
    schedule = schedule_from_dict(cfg.schedule)
    xyz_all, emb_all = train.rows(np.arange(len(train)))
    xyz_all, emb_all = xyz_all.to(DEV), emb_all.to(DEV)
    pos = np.arange(B)
    times = []
    for s in range(steps):
        idx = torch.from_numpy((s * B + pos) % len(train)).to(DEV)
        d = T.draw(cfg.seed, s, pos, "rfm", cfg.cond_drop)
        gamma, noise, drop = schedule(d.t).to(DEV), d.noise.to(DEV), d.drop.to(DEV)
        sync()
        t0 = time.perf_counter()
        with torch.autocast(DEV.type, dtype=torch.bfloat16, enabled=bf16):
            per = family_loss("rfm", model, xyz_all[idx], emb_all[idx], gamma, noise, drop)
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        T.ema_update(ema_params, params, T.ema_decay_at(s, cfg))
        sync()
        times.append(time.perf_counter() - t0)
    skip = min(len(times) - 1, 5 if compiled else 1)  # compilation happens in the first steps
    return {"step_seconds": float(np.median(times[skip:])), "first_step_seconds": times[0],
            "val_loss": validation_loss(ema, val, cfg, DEV), "steps": steps}


def goal_training(fh, args) -> None:
    dim, depth, C, B = args.dim, args.depth, args.cond_dim, args.train_batch
    t_off = official_train_step_seconds(dim, depth, C, B, args.train_steps)
    point, cond = net_flops(dim, depth, C)
    flops = 3 * B * (point + cond)
    train, val = _train_data(args.train_rows, C)
    row = {"batch": B, "official": {"embeddings_per_s": B / t_off, "tflops": flops / t_off / 1e12},
           "data": "locations drawn from tests/models/rfm_uncond, random embeddings, 1/8 held out",
           "val_after_steps": args.train_val_steps}
    for variant in TRAIN_VARIANTS:
        try:
            speed = globeflow_train(train, val, args, args.train_steps + 6, variant)
            quality = globeflow_train(train, val, args, args.train_val_steps, variant)
            t = speed["step_seconds"]
            row[variant] = {"embeddings_per_s": B / t, "tflops": flops / t / 1e12, "ratio": t_off / t,
                            "first_step_seconds": speed["first_step_seconds"], "val_loss": quality["val_loss"]}
        except Exception as err:  # one failing variant (e.g. a compiler missing) must not cost the others
            row[variant] = {"error": f"{type(err).__name__}: {err}"[:300]}
    base = row["fp32"].get("val_loss")
    for variant in TRAIN_VARIANTS:
        v = row[variant].get("val_loss")
        if base and v is not None:
            row[variant]["val_loss_rel_to_fp32"] = (v - base) / base
    emit(fh, "training", **row)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _shape(text: str) -> tuple[int, int]:
    m, k = text.lower().split("x")
    return int(m), int(k)


DRY_RUN = dict(device="cpu", dim=32, depth=2, cond_dim=16, points=16, curve_steps=[4, 8], ref_steps=16,
               map_res=30.0, train_batch=64, train_steps=3, train_val_steps=4, train_rows=2048, reps=1,
               energy_n=400, energy_perms=20, sample_steps=[4], sampling_shapes=[(4, 8), (16, 1)],
               large_full=(8, 16), large_small=(16, 16))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--goals", default="sampling,energy,training,density")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny network and counts: check the script runs")
    p.add_argument("--points", type=int, default=1024, help="points for the density goal (one photo)")
    p.add_argument("--curve-steps", type=_ints, default=[16, 32, 64, 128, 256])
    p.add_argument("--ref-steps", type=int, default=512)
    p.add_argument("--map-chunk", type=int, default=65536)
    p.add_argument("--map-res", type=float, default=1.0)
    p.add_argument("--sample-steps", type=_ints, default=[32, 250])
    p.add_argument("--sampling-shapes", type=lambda t: [_shape(x) for x in t.split(",")],
                   default=[(16, 64), (1024, 1)], help="photos x samples, comma-separated")
    p.add_argument("--large-full", type=_shape, default=(256, 256), help="large batch of the full-size network")
    p.add_argument("--large-small", type=_shape, default=(2048, 1024), help="large batch of the photo model's shape")
    p.add_argument("--energy-n", type=int, default=10000)
    p.add_argument("--energy-perms", type=int, default=500)
    p.add_argument("--train-batch", type=int, default=1024)
    p.add_argument("--train-steps", type=int, default=20, help="timed steps per variant")
    p.add_argument("--train-val-steps", type=int, default=400, help="steps before the validation-loss comparison")
    p.add_argument("--train-rows", type=int, default=65536)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--cond-dim", type=int, default=1024)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    if args.dry_run:
        for k, v in DRY_RUN.items():
            setattr(args, k, v)
    global DEV
    DEV = torch.device(args.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device (or --dry-run)")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides (tf32 is a named variant)
    torch.backends.cudnn.allow_tf32 = False
    t_start = time.perf_counter()
    with open(args.out, "w") as fh, tempfile.TemporaryDirectory() as tmp:
        pipe, geo = build(Path(tmp) / "net", args.dim, args.depth, args.cond_dim)
        runs = {"density": lambda: goal_density(fh, pipe, geo, args),
                "sampling": lambda: goal_sampling(fh, pipe, geo, args), "energy": lambda: goal_energy(fh, args),
                "training": lambda: goal_training(fh, args)}
        failed = 0
        for goal in args.goals.split(","):
            t0 = time.perf_counter()
            try:
                runs[goal]()
            except Exception as err:  # report and go on: one call on a lent machine must return every goal it can
                failed += 1
                emit(fh, goal, error=f"{type(err).__name__}: {err}")
            emit(fh, "timing", of=goal, seconds=time.perf_counter() - t0, dry_run=args.dry_run)
        emit(fh, "timing", of="all", seconds=time.perf_counter() - t_start, dry_run=args.dry_run)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
