"""Compare text models on what users ask: paired caption GeoScore and Natural Earth place names.

    .venv/bin/python benchmarks/text_model_comparison.py MODEL_A MODEL_B [--names 300]

e.g. MODEL_A = src/globeflow/assets/models/text-minilm-l6 (shipped) and MODEL_B = a variant from
``scripts/train_text_model.py --split report --landmark-repeat 5 --calibration-captions 250 --out DIR``.

- captions: each model's best guess (its own `best_guess_budget`, seeds = caption index) on the 560
  captions of the report's test authors; mean GeoScore of each and the paired difference B − A with a
  bootstrap 95 % interval (2,000 resamples);
- Natural Earth names: ``--names`` names drawn (seed 1) from data/text/natural_earth_places.csv minus the
  famous-places strings; error = distance from the best guess to the nearest point of that name
  (regions have 8). These are *training* strings of a model trained with --landmark-repeat > 0: an
  upper bound of what it learnt, not a held-out score.

Prints one JSON line (also appended to --out when given). About 2 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from globeflow.geolocator import Geolocator
from globeflow.metrics import geoscore, haversine_km
from globeflow.text import recipe as R

from bench_text import cpu_model


def best_guesses(geo: Geolocator, texts: list[str]) -> np.ndarray:
    emb = geo.embed(texts)
    k, s = geo.best_guess_budget()
    return np.concatenate([geo.point_estimate(emb[i:i + 64], k, steps=s, seed=list(range(i, min(i + 64, len(emb)))))
                           .double().numpy() for i in range(0, len(emb), 64)])


def natural_earth_names(count: int) -> tuple[list[str], dict[str, np.ndarray]]:
    texts, latlon = R.load_natural_earth()
    texts = np.array(texts)
    names = sorted(set(texts[R.not_famous(texts)]))
    pick = [names[i] for i in np.random.default_rng(1).choice(len(names), count, replace=False)]
    return pick, {n: latlon[texts == n] for n in pick}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs=2)
    p.add_argument("--names", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    caps = R.load_captions()
    caps = caps.select(R.test_authors(caps))
    names, points = natural_earth_names(args.names)
    result = {"cpu": cpu_model(), "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M"),
              "captions": len(caps.text), "models": {}}
    scores = []
    for folder in args.models:
        geo = Geolocator.from_pretrained(folder)
        scores.append(geoscore(haversine_km(best_guesses(geo, list(caps.text)), caps.latlon)))
        best = best_guesses(geo, names)
        err = np.array([haversine_km(best[i], points[n]).min() for i, n in enumerate(names)])
        result["models"][folder] = {"captions_geoscore": round(float(scores[-1].mean()), 1),
                                    "natural_earth_median_km": round(float(np.median(err))),
                                    "natural_earth_within_750km": round(float(np.mean(err < 750)), 3)}
    d = scores[1] - scores[0]
    rng = np.random.default_rng(0)
    boot = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(2000)]
    result["captions_geoscore_b_minus_a"] = [round(float(d.mean()), 1), round(float(np.percentile(boot, 2.5)), 1),
                                             round(float(np.percentile(boot, 97.5)), 1)]
    result["seconds"] = round(time.perf_counter() - t0, 1)
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
