"""How close does an unconditional rfm get to a histogram of the MP-16 prior rows? (issue 17)

    .venv/bin/python benchmarks/prior_density_budget.py      # ≈ 30 min on 2 cores; one JSON line per model

The `+prior` models of the Im2GPS3k report train on 100,000 MP-16 locations; `cells+prior` wins
on NLL because its quadtree resolves the sub-km clusters of Flickr photo locations. This fits
the prior rows alone and scores every labelled Im2GPS3k location (2,287; no conditioning, so no
photographer split is needed): the quadtree histogram that `cells+prior` starts from (≤ 50 rows
per cell, 0.5 pseudo-rows per cell, 1e-3 uniform mixture) against unconditional rfm networks of
growing training budget and width, without and with Fourier position features (64 up to 512 rad⁻¹;
their densities use the data-dense RK4 grid). NLL by 128 RK4 steps. Results: docs/evaluation.md
("Extra unconditional rows").
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from globeflow import training as T
from globeflow.baselines.cells import _canonical, assign_cells, build_quadtree, cell_area_sr, cell_log_prior
from globeflow.checkpoints import ModelInfo
from globeflow.evaluation import MP16, load_prior_rows
from globeflow.geolocator import Geolocator

ROOT = Path(__file__).resolve().parents[1]
METADATA = ROOT.parent / "shared" / "data" / "im2gps3k" / "metadata.csv"
RUNS = ((1200, 256, 128, 0), (6000, 1024, 128, 0), (6000, 1024, 256, 0),
        (1200, 256, 128, 64), (4000, 1024, 128, 64), (6000, 1024, 128, 64))  # (steps, batch, width, Fourier features); depth 3
FOURIER_SCALE = 512  # rad⁻¹
EPSILON = 1e-3


def histogram_nll(prior: np.ndarray, test: np.ndarray) -> tuple[int, float]:
    """Quadtree histogram of ``prior`` (P, 2) degrees scored at ``test`` (N, 2): (cells, mean NLL nats/sr)."""
    cells = build_quadtree(_canonical(prior), 50)
    idx = assign_cells(cells, test)
    lp = cell_log_prior(assign_cells(cells, prior), len(cells)).numpy()[idx] - np.log(cell_area_sr(cells)[idx])
    lp = np.logaddexp(np.log1p(-EPSILON) + lp, np.log(EPSILON / (4 * np.pi)))
    return len(cells), float(-lp.mean())


def rfm_nll(prior: np.ndarray, test: np.ndarray, steps: int, batch: int, dim: int,
            fourier: int = 0) -> tuple[float, float]:
    """Train an unconditional rfm on ``prior`` and score ``test``: (training seconds, mean NLL nats/sr)."""
    cond = 8  # a constant (zero) condition
    out = Path(tempfile.mkdtemp())
    cfg = T.TrainConfig(family="rfm", dim=dim, depth=3, steps=steps, batch_size=batch, lr=2e-3, weight_decay=0.01,
                        warmup_steps=200, ema_decay=0.999, cond_drop=0.0, seed=0, val_frac=0.0, val_every=10**9,
                        val_max=1, checkpoint_every=10**9, log_every=steps, fourier_features=fourier,
                        fourier_scale=FOURIER_SCALE if fourier else 0)
    t0 = time.perf_counter()
    data = T.MemoryData.from_latlon(prior, np.zeros((len(prior), cond), np.float32))
    T.train(cfg, T.MemorySource(data, 0), out, info=ModelInfo(model_id="prior-budget"), resume=False)
    wall = time.perf_counter() - t0
    geo = Geolocator.from_pretrained(out)
    lp = geo.log_prob(torch.zeros(len(test), cond), torch.from_numpy(test).float(), cfg=0.0, steps=128)
    return wall, float(-lp.mean())


def main() -> None:
    torch.set_num_threads(2)
    prior = load_prior_rows(MP16, 100_000, seed=0)
    with open(METADATA, newline="") as f:
        test = np.array([[float(r["LAT"]), float(r["LON"])] for r in csv.DictReader(f)])
    cells, nll = histogram_nll(prior, test)
    print(json.dumps({"model": "quadtree histogram (≤ 50 per cell)", "cells": cells, "nll": round(nll, 3)}), flush=True)
    for steps, batch, dim, fourier in RUNS:
        wall, nll = rfm_nll(prior, test, steps, batch, dim, fourier)
        features = f", {fourier} Fourier features to {FOURIER_SCALE}" if fourier else ""
        print(json.dumps({"model": f"rfm dim {dim} depth 3{features}, {steps} steps x batch {batch}",
                          "train_s": round(wall), "nll": round(nll, 3)}), flush=True)


if __name__ == "__main__":
    main()
