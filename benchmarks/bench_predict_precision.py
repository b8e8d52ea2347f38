"""Does ``predict --precision auto`` (bf16 where native) keep the shipped models' calibrated answers?

    python benchmarks/bench_predict_precision.py            # both shipped models, 2 threads
    python benchmarks/bench_predict_precision.py --photos 0 --captions 200

Side by side in one process, on rows the shipped models never trained on, the same seeds: the
photo model on its held-out test photographers (``scripts/train_default.py`` split), the text model
on the captions of the report's test authors. For fp32 and bf16 prediction it reports the 90 % (and
50 %) credible regions' coverage of the truth at the model's calibrated masses, the best guess's
GeoScore, the mean |Δ log-density| of the samples between the two (nats/sr) and the seconds of
``Geolocator.predict`` (embedding excluded). The truth's density is float32 in both. One JSON line
per model, with the CPU model and the load average (figures under load are lower bounds).
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

from globeflow.geolocator import Geolocator  # noqa: E402
from globeflow.metrics import calibration, geoscore, haversine_km  # noqa: E402
from globeflow.precision import describe  # noqa: E402


def photo_rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, 1280), truths (N, 2) degrees) of the default model's held-out test photographers."""
    from train_default import splits

    from globeflow.data.store import EmbeddingStore

    test = splits(EmbeddingStore(ROOT / "data" / "im2gps3k" / "efficientnet-lite0"))[2]
    return test.embeddings[:n], test.latlon[:n]


def caption_rows(geo: Geolocator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(MiniLM embeddings (N, 384), truths) of the report's test authors' captions (never trained on)."""
    from globeflow.text import recipe as R

    caps = R.load_captions()
    caps = caps.select(R.test_authors(caps))
    return geo.embed(list(caps.text)[:n]), caps.latlon[:n]


def compare(geo: Geolocator, emb: np.ndarray, truth: np.ndarray, batch: int = 16) -> dict:
    """fp32 vs bf16 predict on the same rows and seeds (see the module docstring)."""
    lp_truth = geo.log_prob(torch.from_numpy(emb), torch.from_numpy(truth), steps=32).numpy()
    masses = {level: geo.info.credible_masses.get(level, float(level)) for level in ("0.5", "0.9")}
    out, draws = {"rows": len(emb), "samples": geo.default_samples}, {}
    for precision in ("fp32", "bf16"):
        t0, preds = time.perf_counter(), []
        for i in range(0, len(emb), batch):
            preds += geo.predict(emb[i:i + batch], seed=list(range(i, min(i + batch, len(emb)))),
                                 precision=precision)
        seconds = time.perf_counter() - t0
        lp = np.stack([p.log_prob for p in preds])
        cal = calibration(lp_truth, lp, masses=tuple(masses.values()))
        guess = np.array([p.best_guess for p in preds])
        out[precision] = {"seconds": round(seconds, 2), "rows_per_s": round(len(emb) / seconds, 2),
                          "geoscore": round(float(geoscore(haversine_km(guess, truth)).mean()), 1),
                          **{f"coverage_{lv}": round(cal[f"{m:g}"]["coverage"], 4) for lv, m in masses.items()}}
        draws[precision] = lp
    out["mean_abs_dlogp_nats"] = round(float(np.abs(draws["bf16"] - draws["fp32"]).mean()), 4)
    out["speedup"] = round(out["fp32"]["seconds"] / out["bf16"]["seconds"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=400, help="held-out test photos (0 = skip; default 400)")
    p.add_argument("--captions", type=int, default=400, help="test authors' captions (0 = skip; default 400)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    head = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(), "threads": args.threads,
            "precision_auto": describe()}
    if args.photos:
        geo = Geolocator.from_pretrained()
        print(json.dumps({**head, "model": geo.model_id, **compare(geo, *photo_rows(args.photos)),
                          "load_average": os.getloadavg()}), flush=True)
    if args.captions:
        geo = Geolocator.from_pretrained(modality="text")
        print(json.dumps({**head, "model": geo.model_id, **compare(geo, *caption_rows(geo, args.captions)),
                          "load_average": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
