"""globeflow vs the official PLONK code (diff-plonk 0.4), side by side, same weights, one run.

    .venv/bin/python benchmarks/bench_vs_official.py --quick          # ≤ 10 min, small network
    .venv/bin/python benchmarks/bench_vs_official.py                  # full: dim 512, depth 12, cond 1024
    .venv/bin/python benchmarks/bench_vs_official.py --goals density,sampling

The official code runs in its own venv (scripts/setup_official_env.sh) as a long-lived worker
(benchmarks/official_worker.py); every measurement pair is taken back to back, so the ratios
stay fair on a shared machine. One JSON line per goal (both figures, the ratio, the network
shape and ``os.getloadavg()``) goes to stdout and to benchmarks/results/<date>-<machine>.jsonl;
``--doc`` rewrites the results table in docs/performance.md. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from globeflow import density, sphere
from globeflow import training as T
from globeflow.checkpoints import ModelInfo
from globeflow.geolocator import Geolocator
from globeflow.precision import PRECISIONS, resolve_precision
from globeflow.precision import describe as describe_precision

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "performance.md"
MP16 = ROOT.parent / "shared" / "data" / "mp16" / "coordinates_100k.csv"
OFFICIAL_PY = ROOT / ".venv-official" / "bin" / "python"
GOALS = ("density", "sampling", "maps", "training", "flops", "predict")


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (``--quick`` shrinks every count and the network)."""

    dim: int = 512
    depth: int = 12
    cond_dim: int = 1024
    density_points: int = 32  # points (each its own embedding) for goal 1
    curve_steps: tuple = (2, 4, 8, 16, 32, 64, 128)
    ref_steps: int = 512  # float64 RK4 reference (checked against ref_steps / 2)
    official_rtols: tuple = (1e-3, 1e-4, 1e-6)
    photos: int = 16
    per_photo: int = 64
    sample_steps: tuple = (32, 250)
    energy_n: int = 10000
    energy_perms: int = 500
    trained_steps: int = 1500  # the small MP-16 model (dim 64, depth 2) when tests/models has none
    map_points_official: int = 1024
    map_step_candidates: tuple = (32, 48, 64, 96)  # RK4 steps of the exact map: the fewest within 1e-2 nats
    map_check_points: int = 32  # per kind (random cell centres, the photo's own samples) in that check
    map_ref_steps: int = 256  # float64 RK4 reference of the check
    map_points_globeflow: int = 256
    map_res_tv: float = 10.0  # resolution of the exact map the preview is checked against
    map_rss_res: tuple = (30.0, 20.0)  # two grid resolutions: peak RSS must not grow with the grid
    preview_samples: int = 4096
    train_batch: int = 1024
    train_steps: int = 6  # timed steps per side (the first is discarded)
    conv_dim: int = 128
    conv_depth: int = 4
    conv_steps: int = 600


QUICK = Plan(dim=128, depth=4, cond_dim=256, density_points=8, curve_steps=(4, 16, 64), ref_steps=128,
             official_rtols=(1e-3, 1e-6), photos=16, per_photo=64, sample_steps=(32, 250), energy_n=2000,
             energy_perms=200, trained_steps=600, map_points_official=128, map_points_globeflow=128,
             map_step_candidates=(16, 32, 64), map_check_points=16, map_ref_steps=128,
             map_res_tv=15.0, map_rss_res=(30.0, 15.0), preview_samples=2048, train_steps=4, conv_dim=64,
             conv_depth=2, conv_steps=300)


# ---------------------------------------------------------------- machine and output

def cpu_info() -> dict:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", text)
    flags = open("/proc/cpuinfo").read()
    return {"cpu": model.group(1).strip() if model else platform.processor(), "cores": os.cpu_count(),
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "mkldnn_bf16": bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)())}


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


class Out:
    """Writes JSON lines to stdout and the results file; keeps them for the doc table."""

    def __init__(self, path: Path, common: dict) -> None:
        self.path, self.common, self.rows = path, common, []
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, goal: str, **fields) -> None:
        row = {"goal": goal, **fields, "loadavg": [round(x, 2) for x in os.getloadavg()], **self.common}
        self.rows.append(row)
        line = json.dumps(row, default=_json_default)
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# ---------------------------------------------------------------- the official worker

class Official:
    """The official code in its own venv, one request at a time (JSON lines)."""

    def __init__(self, python: Path, threads: int, tmp: Path) -> None:
        if not python.exists():
            raise SystemExit(f"{python} not found: run `bash scripts/setup_official_env.sh` first "
                             "(or pass --official-python)")
        self.tmp = tmp
        self.proc = subprocess.Popen([str(python), str(ROOT / "benchmarks" / "official_worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"})
        self.threads = threads

    def call(self, op: str, **req) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **req}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the official worker died during {op!r}")
        out = json.loads(line)
        if not out.pop("ok"):
            raise RuntimeError(f"official {op}: {out['error']}")
        return out

    def array(self, name: str, value: np.ndarray) -> str:
        path = self.tmp / f"{name}.npy"
        np.save(path, value)
        return str(path)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:  # exiting can be slow on a loaded machine; it has answered all
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- shared pieces

def make_shared_model(off: Official, folder: Path, plan: Plan, seed: int = 0) -> Geolocator:
    """Official random-weight checkpoint (written by the official code), loaded by both sides."""
    off.call("init", name="random", folder=str(folder), threads=off.threads,
             create={"dim": plan.dim, "depth": plan.depth, "cond_dim": plan.cond_dim, "seed": seed})
    return Geolocator.from_pretrained(folder, family="rfm")


def trained_model(plan: Plan, cache: Path) -> tuple[Path, str]:
    """An rfm model trained on MP-16 coordinates: tests/models/rfm_uncond if committed, else train one."""
    committed = ROOT / "tests" / "models" / "rfm_uncond"
    if (committed / "model.safetensors").exists():
        return committed, "tests/models/rfm_uncond (dim 64, depth 2, MP-16 coordinates)"
    folder = cache / f"rfm_uncond_{plan.trained_steps}"
    desc = f"trained here: dim 64, depth 2, {plan.trained_steps} steps, batch 512, MP-16 coordinates_100k"
    if (folder / "model.safetensors").exists():
        return folder, desc
    latlon = load_mp16()
    data = T.MemoryData.from_latlon(latlon, None, T.cell_groups(latlon, 0.1))
    train, val = data.split(0.1)
    cfg = T.TrainConfig(family="rfm", dim=64, depth=2, expansion=4, steps=plan.trained_steps, batch_size=512,
                        lr=3e-3, warmup_steps=100, ema_decay=0.995, cond_drop=0.0, val_every=plan.trained_steps,
                        val_max=2000, checkpoint_every=plan.trained_steps, log_every=100)
    T.train(cfg, T.MemorySource(train, cfg.seed), folder, val=val,
            info=ModelInfo(family="rfm", modality="none", model_id="bench/rfm_uncond"), resume=False)
    return folder, desc


def load_mp16() -> np.ndarray:
    """(N, 2) latitude, longitude degrees of the 100,000 MP-16 photos."""
    import csv

    from globeflow.columns import resolve_columns

    with open(MP16, newline="") as f:
        rows = csv.DictReader(f)
        cols = resolve_columns(rows.fieldnames)
        return np.array([(float(r[cols["lat"]]), float(r[cols["lon"]])) for r in rows], np.float64)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def net_flops(dim: int, depth: int, cond_dim: int, expansion: int = 4) -> tuple[float, float]:
    """Analytic FLOPs (2 per multiply-add, matmuls only) of one point path and one conditioning path."""
    point = 2 * 3 * dim + depth * 2 * (2 * dim * expansion * dim) + 2 * dim * 3
    cond = 2 * cond_dim * dim + 2 * (dim // 4) * dim + 2 * dim * dim + depth * 2 * dim * 3 * dim + 2 * dim * 2 * dim
    return float(point), float(cond)


# ---------------------------------------------------------------- goal 1: exact log-density

def goal_density(out: Out, off: Official, geo: Geolocator, plan: Plan, label: str, rng: np.random.Generator,
                 official_name: str = "random", official_timing: bool = True) -> dict:
    """Error curves (NFE vs max |error|) and points/s at ≤ 1e-3 and ≤ 1e-2 nats, both divergences."""
    P, C = plan.density_points, geo.net.config.cond_dim
    emb = torch.from_numpy(rng.standard_normal((P, C)).astype(np.float32)) if C > 1 else torch.zeros(P, 1)
    latlon = geo.sample(emb, 1, steps=32, seed=1)[:, 0].double()  # where the model puts its mass
    picks = {}
    for div in ("riemannian", "ambient"):
        ref, t_ref = timed(lambda: geo.log_prob(emb, latlon, divergence=div, dtype=torch.float64,
                                                steps=plan.ref_steps))
        half = geo.log_prob(emb, latlon, divergence=div, dtype=torch.float64, steps=plan.ref_steps // 2)
        certificate = float((ref - half).abs().max())
        curve = []
        for steps in plan.curve_steps:
            lp, sec = timed(lambda: geo.log_prob(emb, latlon, divergence=div, steps=steps))
            curve.append({"steps": steps, "nfe": density.fast_evaluations(steps),
                          "max_abs_err": float((lp.double() - ref).abs().max()), "points_per_s": P / sec})
        off_curve = []
        if div == "ambient":  # the official likelihood is the ambient one
            for rtol in plan.official_rtols:
                if not official_timing and rtol != 1e-6:
                    continue
                r = off.call("likelihood", name=official_name, emb=off.array("emb", emb.numpy()),
                             coords=off.array("coords", latlon.float().numpy()), batch=P, rtol=rtol, atol=rtol,
                             out=str(off.tmp / "lp.npy"))
                err = float(np.abs(np.load(off.tmp / "lp.npy").astype(np.float64) - ref.numpy()).max())
                off_curve.append({"rtol": rtol, "nfe": r["nfe"][0], "max_abs_err": err, "points_per_s": P / r["seconds"],
                                  "points_jointly": P})
        out.emit("density_curve", model=label, divergence=div, points=P,
                 reference=f"globeflow float64 RK4 {plan.ref_steps} steps", reference_vs_half_steps=certificate,
                 reference_seconds=t_ref, globeflow=curve, official=off_curve)
        for tol in (1e-3, 1e-2):
            ok = [c for c in curve if c["max_abs_err"] <= tol]
            best = ok[0] if ok else None
            row = {"model": label, "divergence": div, "tolerance_nats": tol, "points": P,
                   "reference_converged": certificate <= tol / 10}
            if best:
                row["globeflow"] = {"steps": best["steps"], "nfe": best["nfe"], "points_per_s": best["points_per_s"],
                                    "max_abs_err": best["max_abs_err"]}
                picks[(div, tol)] = best["steps"]
            else:
                row["globeflow"] = {"note": f"no step count in {plan.curve_steps} reaches {tol}"}
            default = next((c for c in off_curve if c["rtol"] == 1e-6), None)
            if default:
                row["official"] = {"solver": "dopri5 rtol=atol=1e-6, all points jointly", **default}
                if best:
                    row["ratio_points_per_s"] = ratio(best["points_per_s"], default["points_per_s"])
            if official_timing:
                out.emit("density_speed", **row)
    return picks


# ---------------------------------------------------------------- goal 2: sampling

def great_circle_km(a_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """Distances (km) between (..., 2) lat/lon degree arrays, float64."""
    a = sphere.latlon_to_xyz(torch.from_numpy(np.asarray(a_deg, np.float64)))
    b = sphere.latlon_to_xyz(torch.from_numpy(np.asarray(b_deg, np.float64)))
    return (torch.atan2(torch.linalg.cross(a, b, dim=-1).norm(dim=-1), (a * b).sum(-1)) * sphere.EARTH_RADIUS_KM).numpy()


def goal_sampling(out: Out, off: Official, geo: Geolocator, plan: Plan, rng: np.random.Generator,
                  shapes: dict, precision: str = "auto") -> None:
    """Official vs globeflow fp32 and (when ``precision`` resolves to bf16) globeflow bf16, interleaved."""
    M, K = plan.photos, plan.per_photo
    emb = rng.standard_normal((M, geo.net.config.cond_dim)).astype(np.float32)
    x0 = sphere.uniform((M, K), generator=torch.Generator().manual_seed(3)).numpy().astype(np.float32)
    point, cond = net_flops(plan.dim, plan.depth, plan.cond_dim)
    chosen = resolve_precision(precision, geo.device)
    paths = ["fp32"] if chosen == "fp32" else ["fp32", chosen]
    for steps in plan.sample_steps:
        r = off.call("sample", name="random", emb=off.array("emb", emb), x_init=off.array("x0", x0), steps=steps,
                     out=str(off.tmp / "samples.npy"))
        official_ll = np.load(off.tmp / "samples.npy")
        n = M * K
        f_off = steps * n * (point + cond)
        f_ours = steps * (n * point + M * cond)
        row = {"official": {"samples_per_s": n / r["seconds"], "seconds": r["seconds"]}}
        for path in paths:
            ours, sec = timed(lambda: geo.sample(emb, K, steps=steps, noise=torch.from_numpy(x0), precision=path))
            km = great_circle_km(ours.numpy(), official_ll)
            row[f"globeflow_{path}"] = {"samples_per_s": n / sec, "seconds": sec, "ratio": ratio(r["seconds"], sec),
                                        "max_abs_diff_deg": float(np.abs(ours.numpy() - official_ll).max()),
                                        "km_to_official_median": float(np.median(km)), "km_to_official_max": float(km.max())}
            shapes[f"sampling_{steps}"] = {**shapes.get(f"sampling_{steps}", {}),
                                           "official_gflops": f_off / r["seconds"] / 1e9,
                                           f"globeflow_{path}_gflops": f_ours / sec / 1e9}
        best = row[f"globeflow_{chosen}"]
        out.emit("sampling_speed", steps=steps, photos=M, samples_per_photo=K, sampler="euler (official grid)",
                 precision_requested=precision, precision_used=chosen, **row,
                 globeflow=best, ratio_samples_per_s=best["ratio"], max_abs_diff_deg=best["max_abs_diff_deg"])


def haversine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Great-circle distances (km) between unit vectors a (n, 3) and b (m, 3), float32."""
    cos = (a @ b.T).clamp(-1, 1)
    half = torch.sqrt(((1 - cos) / 2).clamp_min(0))  # sin(θ/2) = |a − b| / 2
    return 2 * sphere.EARTH_RADIUS_KM * torch.asin(half.clamp(max=1))


def energy_test(x: np.ndarray, y: np.ndarray, perms: int, seed: int = 0) -> dict:
    """Energy distance (km, V-statistic) with the haversine metric and its permutation p-value."""
    z = sphere.latlon_to_xyz(torch.from_numpy(np.concatenate([x, y]).astype(np.float64))).float()
    n, N = len(x), len(x) + len(y)
    D = torch.empty(N, N)
    for i in range(0, N, 4096):
        D[i:i + 4096] = haversine_matrix(z[i:i + 4096], z)
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(perms + 1, N)
    labels[0, :n] = 1
    for p in range(1, perms + 1):
        labels[p, torch.randperm(N, generator=g)[:n]] = 1
    A = labels.T.contiguous()  # (N, P+1)
    DA = D @ A
    rows = D.sum(1, keepdim=True)
    m = N - n
    xx = (A * DA).sum(0)
    xy = (A * (rows - DA)).sum(0)
    yy = ((1 - A) * (rows - DA)).sum(0)
    stat = 2 * xy / (n * m) - xx / n**2 - yy / m**2
    p = float(((stat[1:] >= stat[0]).sum() + 1) / (perms + 1))
    return {"energy_distance_km": float(stat[0]), "p_value": p, "permutations": perms, "per_side": n}


def goal_energy(out: Out, off: Official, plan: Plan, folder: Path, desc: str, precision: str = "auto") -> None:
    geo = Geolocator.from_pretrained(folder, family="rfm")
    off.call("init", name="trained", folder=str(folder), threads=off.threads)
    n = plan.energy_n
    x0 = sphere.uniform((1, n), generator=torch.Generator().manual_seed(11)).numpy().astype(np.float32)
    emb = np.zeros((1, geo.net.config.cond_dim), np.float32)
    r = off.call("sample", name="trained", emb=off.array("emb", emb), x_init=off.array("x0", x0), steps=250,
                 chunk=4096, out=str(off.tmp / "samples.npy"))
    official = np.load(off.tmp / "samples.npy")[0]
    cases = [("heun", 16, "fp32"), ("euler", 32, "fp32"), ("euler", 4, "fp32")]
    if resolve_precision(precision, geo.device) == "bf16":
        cases[2:2] = [("heun", 16, "bf16"), ("euler", 32, "bf16")]
    for sampler, steps, path in cases:
        ours, sec = timed(lambda: geo.sample(torch.from_numpy(emb), n, steps=steps, sampler=sampler, seed=12,
                                             precision=path)[0])
        test = energy_test(official, ours.numpy(), plan.energy_perms)
        nfe = steps * (2 if sampler == "heun" else 1)
        out.emit("sampling_distribution", model=desc, official={"sampler": "euler", "steps": 250, "nfe": 250,
                                                                "seconds": r["seconds"], "precision": "fp32"},
                 globeflow={"sampler": sampler, "steps": steps, "nfe": nfe, "seconds": sec, "precision": path},
                 ratio_nfe=ratio(250, nfe), **test, rejected_at_0_01=test["p_value"] < 0.01,
                 note="euler 4 steps is a power check: it should be rejected" if steps == 4 else "")


# ---------------------------------------------------------------- goal 3: density maps

def _grid_points(res: float) -> tuple[np.ndarray, np.ndarray]:
    from globeflow.density import cell_areas_sr, latlon_grid

    lats, lons = latlon_grid(res)
    lat_g, lon_g = np.meshgrid(lats, lons, indexing="ij")
    area = np.repeat(cell_areas_sr(lats, res)[:, None], len(lons), 1)
    return np.stack([lat_g.ravel(), lon_g.ravel()], -1), area.ravel()


def vmf_kde(samples_xyz: torch.Tensor, query_xyz: torch.Tensor, kappa: float) -> torch.Tensor:
    """log-density (nats/sr) of a von Mises–Fisher KDE at query points."""
    log_c = math.log(kappa) - math.log(2 * math.pi) - (kappa + math.log1p(-math.exp(-2 * kappa)))
    outs = []
    for i in range(0, len(query_xyz), 8192):
        s = kappa * (query_xyz[i:i + 8192] @ samples_xyz.T)
        outs.append(torch.logsumexp(s, 1) + log_c - math.log(len(samples_xyz)))
    return torch.cat(outs)


def preview_map(geo: Geolocator, emb: torch.Tensor, res: float, n: int) -> tuple[np.ndarray, dict]:
    """Preview: vMF KDE of n Heun-16 samples, bandwidth by leave-one-out likelihood; (H·W,) log p."""
    xyz = geo.sample(emb, n, steps=16, sampler="heun", seed=5, return_xyz=True)[0].double()
    xyz = sphere.normalize(xyz)
    best = None
    for kappa in (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0):
        s = kappa * (xyz @ xyz.T)
        s.fill_diagonal_(-math.inf)
        log_c = math.log(kappa) - math.log(2 * math.pi) - (kappa + math.log1p(-math.exp(-2 * kappa)))
        loo = float((torch.logsumexp(s, 1) + log_c - math.log(n - 1)).mean())
        if best is None or loo > best[1]:
            best = (kappa, loo)
    pts, _ = _grid_points(res)
    q = sphere.latlon_to_xyz(torch.from_numpy(pts)).double()
    return vmf_kde(xyz, q, best[0]).numpy(), {"kappa": best[0], "samples": n, "sampler": "heun 16 steps"}


def tv_area(lp_a: np.ndarray, lp_b: np.ndarray, area: np.ndarray) -> float:
    """Total variation between two densities given as log p at cell centres (each renormalised)."""
    pa, pb = np.exp(lp_a - lp_a.max()) * area, np.exp(lp_b - lp_b.max()) * area
    return float(0.5 * np.abs(pa / pa.sum() - pb / pb.sum()).sum())


def peak_rss_grid(folder: Path, res: float, steps: int, chunk: int) -> dict:
    """Run log_prob_grid in a fresh process (progress bar on its stderr); its peak RSS and time."""
    code = (f"import resource,sys,time,torch; torch.set_num_threads({torch.get_num_threads()});"
            "from globeflow.geolocator import Geolocator as G;"
            f"g=G.from_pretrained({str(folder)!r},family='rfm'); e=torch.randn(1,g.net.config.cond_dim);"
            f"t=time.perf_counter(); m=g.log_prob_grid(e,{res},steps={steps},chunk={chunk},progress=True);"
            "print(m.shape[0]*m.shape[1], time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    pts, sec, rss = p.stdout.split()
    bar = "density grid" in p.stderr
    return {"resolution_deg": res, "points": int(pts), "seconds": float(sec), "peak_rss_mb": int(rss) / 1024,
            "progress_bar_seen": bar}


def map_steps_within(geo: Geolocator, emb: torch.Tensor, cells: np.ndarray, plan: Plan, rng: np.random.Generator,
                     candidates: tuple, tol: float = 1e-2) -> tuple[int, dict]:
    """The fewest RK4 steps among ``candidates`` whose Riemannian log-density is within ``tol`` nats of a
    float64 RK4 reference, on random cell centres and on the photo's own samples (where its mass is)."""
    n = plan.map_check_points
    own = geo.sample(emb, n, steps=32, seed=0)[0].double().numpy()
    pts = np.concatenate([cells[rng.choice(len(cells), n, replace=False)], own])[None]
    ref = geo.log_prob(emb, pts, steps=plan.map_ref_steps, dtype=torch.float64)[0]
    half = geo.log_prob(emb, pts, steps=plan.map_ref_steps // 2, dtype=torch.float64)[0]
    errors = {str(s): float((geo.log_prob(emb, pts, steps=s)[0].double() - ref).abs().max()) for s in candidates}
    ok = [s for s in candidates if errors[str(s)] <= tol]
    return (min(ok) if ok else max(candidates)), {
        "reference": f"float64 RK4 {plan.map_ref_steps} steps, within {float((ref - half).abs().max()):.1e} "
                     f"nats of {plan.map_ref_steps // 2}", "points": f"{n} random cell centres + {n} own samples",
        "max_error_nats_by_steps": errors}


def goal_maps(out: Out, off: Official, geo: Geolocator, folder: Path, plan: Plan, rng: np.random.Generator,
              candidates: tuple) -> None:
    emb = torch.from_numpy(rng.standard_normal((1, geo.net.config.cond_dim)).astype(np.float32))
    full_pts, full_area = _grid_points(1.0)
    steps_1e2, check = map_steps_within(geo, emb, full_pts, plan, rng, candidates)
    # exact: time a chunk of cell centres on each side and extrapolate to 64,800
    lat_o = np.arange(-90, 91, 1.0)
    lon_o = np.arange(-180, 181, 1.0)
    og = np.stack(np.meshgrid(lat_o, lon_o, indexing="ij"), -1).reshape(-1, 2)[:plan.map_points_official]
    official = {"note": "not measured (--map-official-points 0)"}
    off_per_point = None
    if len(og):
        r = off.call("likelihood", name="random", emb=off.array("emb1", emb.numpy()), coords=off.array("grid", og),
                     batch=plan.map_points_official, out=str(off.tmp / "lpg.npy"))
        off_per_point = r["seconds"] / len(og)
        official = {"seconds_extrapolated": off_per_point * len(full_pts), "measured_points": len(og),
                    "measured_seconds": r["seconds"], "nfe": r["nfe"], "batch": len(og)}
    sub = full_pts[rng.choice(len(full_pts), plan.map_points_globeflow, replace=False)]
    _, sec = timed(lambda: geo.log_prob(emb, sub[None], steps=steps_1e2))
    ours_per_point = sec / len(sub)
    n = len(full_pts)
    out.emit("map_exact", grid="180x360 cell centres (1°)", points=n, globeflow_steps=steps_1e2,
             official=official,
             globeflow={"seconds_extrapolated": ours_per_point * n, "measured_points": len(sub),
                        "measured_seconds": sec, "tolerance_nats": 1e-2,
                        "within_tolerance": check["max_error_nats_by_steps"][str(steps_1e2)] <= 1e-2,
                        "accuracy_check": check},
             ratio_speed=ratio(off_per_point, ours_per_point) if off_per_point else None)
    rss = [peak_rss_grid(folder, res, steps_1e2, 64) for res in plan.map_rss_res]
    out.emit("map_streamed", globeflow=rss, chunk=64,
             rss_growth_mb=rss[-1]["peak_rss_mb"] - rss[0]["peak_rss_mb"])
    # preview vs exact on the TV grid
    tv_pts, tv_area_ = _grid_points(plan.map_res_tv)
    exact, t_exact = timed(lambda: geo.log_prob(emb, tv_pts[None], steps=steps_1e2)[0].double().numpy())
    (prev, info), t_prev = timed(lambda: preview_map(geo, emb, plan.map_res_tv, plan.preview_samples))
    (_, _), t_prev_full = timed(lambda: preview_map(geo, emb, 1.0, plan.preview_samples))
    out.emit("map_preview", method="vMF KDE of the model's samples (LOO bandwidth), evaluated at cell centres",
             **info, tv_vs_exact=tv_area(prev, exact, tv_area_), tv_grid_deg=plan.map_res_tv,
             exact_seconds_on_tv_grid=t_exact, preview_seconds_tv_grid=t_prev, preview_seconds_1deg=t_prev_full,
             within_60_s=t_prev_full <= 60)


# ---------------------------------------------------------------- goal 4: training

def _globeflow_train(data: T.MemoryData, dim: int, depth: int, steps: int, batch: int, bf16: bool, tmp: Path,
                     val: T.MemoryData | None = None, lr: float = 1e-3) -> tuple[list[float], T.TrainResult]:
    cfg = T.TrainConfig(family="rfm", dim=dim, depth=depth, steps=steps, batch_size=batch, lr=lr, warmup_steps=0,
                        cond_drop=0.1, val_every=steps, val_max=4096, checkpoint_every=10**9, log_every=1,
                        bf16=bf16)
    folder = Path(tempfile.mkdtemp(dir=tmp))
    res = T.train(cfg, T.MemorySource(data, 0), folder, val=val, resume=False)
    import csv
    secs = [float(r["seconds"]) for r in csv.DictReader(open(folder / T.LOG_FILE))]
    return list(np.diff([0.0] + secs)), res


def goal_training(out: Out, off: Official, plan: Plan, tmp: Path, shapes: dict) -> None:
    latlon = load_mp16()
    rng = np.random.default_rng(7)
    idx = rng.choice(len(latlon), 16384, replace=False)
    emb = rng.standard_normal((len(idx), plan.cond_dim)).astype(np.float32)
    data = T.MemoryData.from_latlon(latlon[idx], emb)
    r = off.call("train", gps=off.array("gps", latlon[idx]), emb=off.array("temb", emb), dim=plan.dim,
                 depth=plan.depth, cond_dim=plan.cond_dim, batch=plan.train_batch, steps=plan.train_steps)
    off_step = float(np.median(r["step_seconds"][1:]))
    times = {}
    for bf16 in (False, True):
        st, _ = _globeflow_train(data, plan.dim, plan.depth, plan.train_steps, plan.train_batch, bf16, tmp)
        times[bf16] = float(np.median(st[1:]))
    B = plan.train_batch
    point, cond = net_flops(plan.dim, plan.depth, plan.cond_dim)
    f_step = 3 * B * (point + cond)  # forward + backward ≈ 3 × forward
    shapes["training"] = {"official_gflops": f_step / off_step / 1e9, "globeflow_fp32_gflops": f_step / times[False] / 1e9,
                          "globeflow_bf16_gflops": f_step / times[True] / 1e9}
    out.emit("training_speed", batch=B, optimizer="AdamW",
             official={"embeddings_per_s": B / off_step, "step_seconds": off_step},
             globeflow_fp32={"embeddings_per_s": B / times[False], "step_seconds": times[False]},
             globeflow_bf16={"embeddings_per_s": B / times[True], "step_seconds": times[True]},
             ratio_fp32=ratio(off_step, times[False]), ratio_bf16=ratio(off_step, times[True]))
    # bf16 reaches the fp32 validation loss (same seed, same draws)
    full = T.MemoryData.from_latlon(latlon, None, T.cell_groups(latlon, 0.1))
    train, val = full.split(0.1)
    losses = {}
    for bf16 in (False, True):
        _, res = _globeflow_train(train, plan.conv_dim, plan.conv_depth, plan.conv_steps, 512, bf16, tmp, val=val,
                                  lr=3e-3)
        losses[bf16] = res.history[-1]["val_loss"]
    rel = abs(losses[True] - losses[False]) / losses[False]
    out.emit("training_bf16_convergence", dim=plan.conv_dim, depth=plan.conv_depth, steps=plan.conv_steps,
             batch=512, data="MP-16 coordinates_100k (unconditional), 10 % of 0.1° cells held out",
             val_loss_fp32=losses[False], val_loss_bf16=losses[True], relative_difference=rel, within_1_percent=rel <= 0.01)


# ---------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="≤ 10 minutes: small network (dim 128, depth 4), small counts")
    p.add_argument("--goals", default=",".join(GOALS), help=f"comma-separated subset of {','.join(GOALS)}")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads on both sides (on a loaded shared machine use 1: OpenMP threads that "
                        "wait for a busy core make every call many times slower)")
    p.add_argument("--official-python", type=Path, default=OFFICIAL_PY)
    p.add_argument("--out", type=Path, default=None, help="JSONL file (default benchmarks/results/<date>-<machine>.jsonl)")
    p.add_argument("--doc", action="store_true", help="rewrite the results table in docs/performance.md")
    p.add_argument("--doc-block", default="results",
                   help="which marked block of docs/performance.md --doc rewrites (a new name is appended)")
    p.add_argument("--map-official-points", type=int, default=None,
                   help="cell centres the official map solve is timed on (default 1,024 full, 128 quick; "
                        "0 skips it: at full size on 2 CPU cores it runs for more than 35 minutes)")
    p.add_argument("--map-steps", type=int, default=None,
                   help="RK4 steps of the exact map (default: the fewest of 32/48/64/96, or 16/32/64 quick, within "
                        "1e-2 nats of a float64 reference on the map's photo)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="globeflow's sampling arithmetic besides fp32 (auto: bf16 where the CPU has native bf16 "
                        "and it measures faster; the machine line says what auto chose)")
    p.add_argument("--predict-photos", type=int, default=700,
                   help="predict goal: photos (the first N of shared/data/im2gps3k/images), embedded default model")
    p.add_argument("--predict-threads", type=int, default=2, help="predict goal: OMP threads of the command")
    p.add_argument("--predict-baseline", default=None, metavar="REV",
                   help="predict goal: also time git revision REV, interleaved (benchmarks/bench_predict.py)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    unknown = set(args.goals.split(",")) - set(GOALS)
    if unknown:
        p.error(f"--goals: unknown {sorted(unknown)}; choose from {GOALS}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else Plan()
    if args.map_official_points is not None:
        plan = dataclasses.replace(plan, map_points_official=args.map_official_points)
    goals = args.goals.split(",")
    info = cpu_info()
    day = dt.date.today().isoformat()
    machine = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-") + f"-{info['cores']}c"
    path = args.out or RESULTS / f"{day}-{machine}.jsonl"
    run_id = dt.datetime.now().isoformat(timespec="seconds")
    out = Out(path, {"run": run_id, "mode": "quick" if args.quick else "full",
                     "network": {"dim": plan.dim, "depth": plan.depth, "cond_dim": plan.cond_dim}})
    out.emit("machine", **info, date=day, matmul_gflops_fp32=matmul_gflops(torch.float32),
             matmul_gflops_bf16=matmul_gflops(torch.bfloat16), sampling_precision=describe_precision("cpu"))
    rng = np.random.default_rng(args.seed)
    shapes: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-vs-official-") as tmp_s:
        tmp = Path(tmp_s)
        off = Official(args.official_python, args.threads, tmp)
        try:
            folder = tmp / "random"
            geo = make_shared_model(off, folder, plan, args.seed)
            if "density" in goals:
                goal_density(out, off, geo, plan, f"random dim {plan.dim} depth {plan.depth}", rng)
                tfolder, desc = trained_model(plan, Path(tempfile.gettempdir()) / "globeflow-bench-models")
                off.call("init", name="trained", folder=str(tfolder), threads=off.threads)
                goal_density(out, off, Geolocator.from_pretrained(tfolder, family="rfm"), plan, desc, rng,
                             official_name="trained", official_timing=False)
            if "sampling" in goals:
                goal_sampling(out, off, geo, plan, rng, shapes, args.precision)
                tfolder, desc = trained_model(plan, Path(tempfile.gettempdir()) / "globeflow-bench-models")
                goal_energy(out, off, plan, tfolder, desc, args.precision)
            if "maps" in goals:
                goal_maps(out, off, geo, folder, plan, rng,
                          (args.map_steps,) if args.map_steps else plan.map_step_candidates)
            if "training" in goals:
                goal_training(out, off, plan, tmp, shapes)
        finally:
            off.close()
    if "predict" in goals:  # item 3: the real command line in its own process (no official side)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_predict import PHOTOS, measure

        row = measure(args.predict_photos, 32, args.predict_threads, args.predict_baseline, PHOTOS, [])
        out.emit(row.pop("goal"), **{k: v for k, v in row.items() if k != "cpu"})
    if "flops" in goals and shapes:
        peak32 = matmul_gflops(torch.float32)
        peak16 = matmul_gflops(torch.bfloat16)
        out.emit("flops", matmul_gflops_fp32=peak32, matmul_gflops_bf16=peak16,
                 achieved={k: {n: round(v, 2) for n, v in d.items()} for k, d in shapes.items()},
                 fraction_of_fp32_peak={k: {n: round(v / peak32, 3) for n, v in d.items()} for k, d in shapes.items()},
                 counting="analytic matmul FLOPs of the network (2 per multiply-add); training = 3 x forward")
    if args.doc:
        write_doc(out.rows, path, args.doc_block)
    return 0


# ---------------------------------------------------------------- docs/performance.md

def _fmt(x, digits=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def table_lines(rows: list[dict], path: Path) -> list[str]:
    m = next(r for r in rows if r["goal"] == "machine")
    lines = [f"Last run: {m['date']}, mode `{m['mode']}`, machine **{m['cpu']}**, {m['cores']} cores "
             f"(avx512_bf16: {m['avx512_bf16']}, amx_bf16: {m['amx_bf16']}), torch {m['torch']}, network "
             f"dim {m['network']['dim']} depth {m['network']['depth']} cond {m['network']['cond_dim']}; "
             f"measured matmul {m['matmul_gflops_fp32']:.1f} GFLOP/s fp32, {m['matmul_gflops_bf16']:.1f} bf16; "
             f"load average at start {m['loadavg']}; sampling precision auto → "
             f"{m.get('sampling_precision', {}).get('auto', 'fp32')}. Raw lines: `{path.relative_to(ROOT)}`.", "",
             "| goal | case | official | globeflow | ratio (globeflow ÷ official speed) |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        g = r["goal"]
        if g == "density_speed" and "official" in r:
            gl = r["globeflow"]
            lines.append(f"| exact log-density | {r['divergence']}, ≤ {r['tolerance_nats']:g} nats, {r['points']} pts | "
                         f"{_fmt(r['official']['points_per_s'])} pts/s (dopri5 1e-6, NFE {r['official']['nfe']}, "
                         f"err {_fmt(r['official']['max_abs_err'])}) | {_fmt(gl.get('points_per_s'))} pts/s "
                         f"(RK4 {gl.get('steps', '–')} steps, err {_fmt(gl.get('max_abs_err'))}"
                         f"{'' if r['reference_converged'] else '; reference not converged to tol/10'}) | "
                         f"{_fmt(r.get('ratio_points_per_s'))} |")
        elif g == "sampling_speed":
            for path in ("fp32", "bf16"):
                gf = r.get(f"globeflow_{path}")
                if gf is None and path == "fp32" and "precision_used" not in r:  # rows of older runs
                    gf = r["globeflow"]
                if gf is None:
                    continue
                km = f"; median {_fmt(gf['km_to_official_median'])} km from the official samples" \
                    if "km_to_official_median" in gf else ""
                lines.append(f"| sampling | {r['photos']}×{r['samples_per_photo']}, {r['steps']} Euler steps, "
                             f"globeflow {path}{' (auto)' if r.get('precision_used') == path else ''} | "
                             f"{_fmt(r['official']['samples_per_s'])} samples/s | {_fmt(gf['samples_per_s'])} "
                             f"samples/s{km} | {_fmt(gf.get('ratio', r['ratio_samples_per_s']))} |")
        elif g == "sampling_distribution":
            lines.append(f"| sample distribution | {r['globeflow']['sampler']} {r['globeflow']['steps']} steps "
                         f"{r['globeflow'].get('precision', 'fp32')} "
                         f"({r['globeflow']['nfe']} NFE) vs official Euler 250, {r['per_side']}/side | – | "
                         f"energy {_fmt(r['energy_distance_km'])} km, p = {_fmt(r['p_value'])} "
                         f"({'rejected' if r['rejected_at_0_01'] else 'not rejected'} at 0.01) | – |")
        elif g == "map_exact":
            off = r["official"]
            off_s = (f"{_fmt(off['seconds_extrapolated'])} s (dopri5 1e-6, {off['measured_points']} pts in "
                     f"{_fmt(off['measured_seconds'])} s, NFE {off['nfe'][0]})") if "seconds_extrapolated" in off \
                else off.get("note", "–")
            gf = r["globeflow"]
            err = gf.get("accuracy_check", {}).get("max_error_nats_by_steps", {}).get(str(r["globeflow_steps"]))
            err_s = f", max err {_fmt(err)} nats" if err is not None else ""
            lines.append(f"| exact map 180×360 | extrapolated | {off_s} | "
                         f"{_fmt(gf['seconds_extrapolated'])} s ({r['globeflow_steps']} RK4 steps{err_s}) | "
                         f"{_fmt(r['ratio_speed'])} |")
        elif g == "map_streamed":
            cells = ", ".join(f"{x['points']} pts: {x['peak_rss_mb']:.0f} MB" for x in r["globeflow"])
            lines.append(f"| streamed map | peak RSS | – | {cells} | – |")
        elif g == "map_preview":
            lines.append(f"| map preview | {r['method']} | – | {_fmt(r['preview_seconds_1deg'])} s at 1°, TV "
                         f"{_fmt(r['tv_vs_exact'])} vs exact ({r['tv_grid_deg']:g}° grid) | – |")
        elif g == "training_speed":
            lines.append(f"| training | batch {r['batch']}, AdamW | {_fmt(r['official']['embeddings_per_s'])} emb/s | "
                         f"fp32 {_fmt(r['globeflow_fp32']['embeddings_per_s'])}, bf16 "
                         f"{_fmt(r['globeflow_bf16']['embeddings_per_s'])} emb/s | fp32 {_fmt(r['ratio_fp32'])}, "
                         f"bf16 {_fmt(r['ratio_bf16'])} |")
        elif g == "training_bf16_convergence":
            lines.append(f"| bf16 convergence | dim {r['dim']} depth {r['depth']}, {r['steps']} steps | – | val loss "
                         f"fp32 {_fmt(r['val_loss_fp32'], 5)}, bf16 {_fmt(r['val_loss_bf16'], 5)} "
                         f"({100 * r['relative_difference']:.2f} %) | – |")
        elif g == "predict_throughput":
            gf = r["globeflow"]
            base = next((k for k in r if k.startswith("baseline_")), None)
            base_s = f"{r[base]['full']['photos_per_s']:.2f} photos/s (revision {base[9:]})" if base else "–"
            lines.append(f"| predict throughput | {r['photos']} photos, {r['threads']} threads, `globeflow predict`, "
                         f"default photo model | {base_s} | {gf['full']['photos_per_s']:.2f} photos/s (steady "
                         f"{gf['steady_photos_per_s']:.2f}); peak RSS {gf['small']['peak_rss_mb']:.0f} MB at "
                         f"{r['small_run_photos']} photos, {gf['full']['peak_rss_mb']:.0f} MB at {r['photos']} | "
                         f"{_fmt(r.get('ratio_photos_per_s'))} |")
        elif g == "flops":
            for k, d in r["achieved"].items():
                cells = ", ".join(f"{n} {v:g}" for n, v in d.items())
                lines.append(f"| GFLOP/s | {k} | – | {cells} (fp32 matmul peak {r['matmul_gflops_fp32']:.1f}) | – |")
    return lines


def write_doc(rows: list[dict], path: Path, block_name: str = "results") -> None:
    """Replace the block between <!-- NAME:start --> and <!-- NAME:end --> (appended when missing)."""
    start, end = f"<!-- {block_name}:start -->", f"<!-- {block_name}:end -->"
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{start}\n{end}\n"
    block = "\n".join([start, *table_lines(rows, path), end])
    if start not in text:
        text += f"\n{start}\n{end}\n"
    text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    DOC.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
