"""How few samples and steps can the text model's predictions draw? Quality against budget.

    python benchmarks/text_prediction_budget.py                  # 300 calibration captions, 2 threads
    python benchmarks/text_prediction_budget.py --rows 100 --grid 128x32x32,64x16x32

On the captions the shipped text model's credible masses are fitted on (NonCommercial/NoDerivs
licences, authors outside the report's test split: never training rows, never test rows), for each
budget ``KxSxB`` — K samples of S Euler steps with exact log-densities at the model's guidance (what
the regions, modes and localizability come from) and a separate best guess from K samples of B steps
at its ``best_guess_cfg`` — one JSON line: GeoScore of the best guess, coverage of the truth by the
HPD regions at the model's calibrated masses and at the nominal 0.5 / 0.9, and milliseconds per
caption of each pass (``precision="auto"``). This chose the text model's defaults (64 × 16 for the
regions, 128 × 32 for the best guess; docs/text.md). Times taken under load are lower bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_text import cpu_model  # noqa: E402
from train_text_model import calibration_captions  # noqa: E402

from globeflow.geolocator import Geolocator  # noqa: E402
from globeflow.metrics import calibration, geoscore, haversine_km  # noqa: E402
from globeflow.text import recipe as R  # noqa: E402

GRID = "128x32x32,64x32x32,128x16x32,64x16x32,64x16x16,96x16x32,128x24x32"


def budget(geo: Geolocator, emb: torch.Tensor, truth: np.ndarray, lp_truth: np.ndarray,
           k: int, steps: int, best_steps: int) -> dict:
    """Figures of one budget (see the module docstring)."""
    seeds = list(range(len(emb)))
    t0 = time.perf_counter()
    _, lp = geo.sample(emb, k, steps=steps, seed=seeds, return_log_prob=True, precision="auto")
    t1 = time.perf_counter()
    best = geo.point_estimate(emb, k, steps=best_steps, seed=seeds, precision="auto").numpy()
    t2 = time.perf_counter()
    masses = tuple(geo.info.credible_masses.values())
    stated = calibration(lp_truth, lp.numpy(), masses=masses)
    nominal = calibration(lp_truth, lp.numpy(), masses=(0.5, 0.9))
    return {"samples": k, "steps": steps, "best_guess_steps": best_steps,
            "geoscore": round(float(geoscore(haversine_km(best, truth)).mean()), 1),
            "coverage_at_model_masses": [round(stated[f"{m:g}"]["coverage"], 3) for m in masses],
            "coverage_at_nominal": [round(nominal[f"{m:g}"]["coverage"], 3) for m in (0.5, 0.9)],
            "ms_regions_pass": round(1000 * (t1 - t0) / len(emb), 1),
            "ms_best_guess_pass": round(1000 * (t2 - t1) / len(emb), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="text model folder (default: the shipped one)")
    p.add_argument("--rows", type=int, default=300, help="calibration captions, stable random subset")
    p.add_argument("--grid", default=GRID, help="budgets KxSxB, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    caps = calibration_captions(R.load_captions())
    idx = np.random.default_rng(0).permutation(len(caps))[:args.rows]
    texts, truth = [caps.text[i] for i in idx], caps.latlon[idx]
    geo = Geolocator.from_pretrained(args.model, modality="text") if args.model else Geolocator.from_pretrained(
        modality="text")
    emb = torch.from_numpy(geo.embed(texts, precision="auto"))
    lp_truth = geo.log_prob(emb, torch.from_numpy(truth), steps=32).numpy()
    head = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(), "threads": args.threads,
            "model": geo.model_id, "rows": len(texts), "truth_nll": round(float(-lp_truth.mean()), 4)}
    for spec in args.grid.split(","):
        k, steps, best_steps = (int(v) for v in spec.lower().split("x"))
        line = {**head, **budget(geo, emb, truth, lp_truth, k, steps, best_steps), "load_average": os.getloadavg()}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
