"""Two text-model folders' *default* predictions side by side on captions they never trained on.

    python benchmarks/bench_text_defaults.py --baseline DIR          # DIR: the same weights, old globeflow.json
    python benchmarks/bench_text_defaults.py --baseline DIR --rows 200

Each folder is run exactly as ``Geolocator.predict`` runs it with no settings given (its own
``default_samples``, ``default_steps``, guidance, best-guess rule and ``best_guess_samples``,
``precision="auto"``) on the captions of the report's test authors (``globeflow.text.recipe``;
never training rows), the same seeds, batches of 32, the two models interleaved batch by batch so
that a change of machine speed hits both alike. Reported per model: GeoScore of the best guess,
coverage of the 50 % and 90 % regions at the model's calibrated masses (truth log-density from the
density solver, 32 steps), seconds of ``predict`` per caption (embedding included) and the settings.
One JSON line with the CPU model and load average (figures under load are lower bounds).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_predict_precision import caption_rows  # noqa: E402
from bench_text import cpu_model  # noqa: E402

from globeflow.geolocator import Geolocator  # noqa: E402
from globeflow.metrics import calibration, geoscore, haversine_km  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "globeflow" / "assets" / "models" / "text-minilm-l6"


def settings(geo: Geolocator) -> dict:
    info = geo.info
    return {**dict(zip(("samples", "steps"), geo.sample_budget())), "cfg": info.default_cfg,
            "best_guess": info.best_guess, "best_guess_cfg": info.best_guess_cfg,
            **dict(zip(("best_guess_samples", "best_guess_steps"), geo.best_guess_budget())),
            "credible_masses": info.credible_masses}


def run(models: dict[str, Geolocator], texts: list[str], truth: np.ndarray, batch: int = 32) -> dict:
    """Interleaved default predictions of every model on ``texts`` → {name: figures}."""
    preds = {name: [] for name in models}
    seconds = dict.fromkeys(models, 0.0)
    for i in range(0, len(texts), batch):
        seeds = list(range(i, min(i + batch, len(texts))))
        for name, geo in models.items():
            t0 = time.perf_counter()
            preds[name] += geo.predict(texts=texts[i:i + batch], seed=seeds)
            seconds[name] += time.perf_counter() - t0
    out = {}
    for name, geo in models.items():
        emb = torch.from_numpy(geo.embed(texts))
        lp_truth = geo.log_prob(emb, torch.from_numpy(truth), steps=32).numpy()
        lp = np.stack([p.log_prob for p in preds[name]])
        masses = {lv: geo.info.credible_masses.get(lv, float(lv)) for lv in ("0.5", "0.9")}
        cal = calibration(lp_truth, lp, masses=tuple(masses.values()))
        guess = np.array([p.best_guess for p in preds[name]])
        out[name] = {**settings(geo), "geoscore": round(float(geoscore(haversine_km(guess, truth)).mean()), 1),
                     **{f"coverage_{lv}": round(cal[f"{m:g}"]["coverage"], 4) for lv, m in masses.items()},
                     "ms_per_caption": round(1000 * seconds[name] / len(texts), 1)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=SHIPPED, help="model folder (default: the shipped text model)")
    p.add_argument("--baseline", type=Path, required=True, help="model folder to compare with")
    p.add_argument("--rows", type=int, default=560, help="test-author captions (default: all 560)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    texts, truth = caption_rows(args.rows)
    models = {"model": Geolocator.from_pretrained(args.model), "baseline": Geolocator.from_pretrained(args.baseline)}
    for geo in models.values():
        geo.predict(texts=["warm-up"], seed=0)
    line = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(), "threads": args.threads,
            "rows": len(texts), "model_dir": str(args.model), "baseline_dir": str(args.baseline),
            **run(models, texts, truth), "load_average": os.getloadavg()}
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
