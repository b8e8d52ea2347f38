"""Does ``predict --precision auto`` (bf16 where native) keep the shipped models' calibrated answers?

    python benchmarks/bench_predict_precision.py            # both shipped models, 2 threads
    python benchmarks/bench_predict_precision.py --photos 0 --captions 200

Side by side in one process, on rows the shipped models never trained on, the same seeds: the
photo model on its held-out test photographers (``scripts/train_default.py`` split; photos
re-embedded from the pixels in ``../shared``), the text model on the captions of the report's test
authors. Three variants: ``fp32`` (float32 embeddings and sampler), ``bf16`` (float32 embeddings,
bf16 sampler) and ``bf16_encoder`` (embeddings in bf16 autocast too: what ``--precision auto`` does
where bf16 is native). For each it reports the 90 % (and 50 %) credible regions' coverage of the
truth at the model's calibrated masses, the best guess's GeoScore, the truth's NLL under the
embeddings (float32 density, nats/sr) and the seconds of ``Geolocator.predict`` (embedding
excluded); plus the mean |Δ log-density| of the samples (bf16 − fp32), the embeddings' relative
difference and the encoder's seconds per item in each precision. One JSON line per model, with the
CPU model and the load average (figures under load are lower bounds).
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
PHOTOS = ROOT.parent / "shared" / "data" / "im2gps3k" / "images"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_text import cpu_model  # noqa: E402

from globeflow.geolocator import Geolocator  # noqa: E402
from globeflow.metrics import calibration, geoscore, haversine_km  # noqa: E402
from globeflow.precision import describe  # noqa: E402


def photo_rows(n: int) -> tuple[list, np.ndarray]:
    """(photos (PIL, N), truths (N, 2) degrees) of the default model's held-out test photographers."""
    from PIL import Image
    from train_default import splits

    from globeflow.data.store import EmbeddingStore

    test = splits(EmbeddingStore(ROOT / "data" / "im2gps3k" / "efficientnet-lite0"))[2]
    return [Image.open(PHOTOS / i).convert("RGB") for i in test.ids[:n]], test.latlon[:n]


def caption_rows(n: int) -> tuple[list, np.ndarray]:
    """(captions (N,), truths) of the report's test authors (never trained on)."""
    from globeflow.text import recipe as R

    caps = R.load_captions()
    caps = caps.select(R.test_authors(caps))
    return list(caps.text)[:n], caps.latlon[:n]


def embeddings(geo: Geolocator, items: list) -> tuple[dict, dict]:
    """float32 and bf16-autocast embeddings of ``items`` → ({precision: (N, D)}, figures)."""
    out, seconds = {}, {}
    for precision in ("fp32", "bf16"):
        t0 = time.perf_counter()
        out[precision] = geo.encoder.embed(items, precision=precision)
        seconds[precision] = time.perf_counter() - t0
    diff = np.linalg.norm(out["bf16"] - out["fp32"], axis=1) / np.linalg.norm(out["fp32"], axis=1)
    return out, {"encoder_ms_per_item": {k: round(1000 * v / len(items), 2) for k, v in seconds.items()},
                 "embedding_rel_diff_mean": round(float(diff.mean()), 4)}


VARIANTS = {"fp32": ("fp32", "fp32"), "bf16": ("fp32", "bf16"), "bf16_encoder": ("bf16", "bf16")}


def compare(geo: Geolocator, items: list, truth: np.ndarray, batch: int = 16) -> dict:
    """The three variants on the same rows and seeds (see the module docstring)."""
    emb, out = embeddings(geo, items)
    masses = {level: geo.info.credible_masses.get(level, float(level)) for level in ("0.5", "0.9")}
    out.update(rows=len(items), samples=geo.default_samples)
    draws = {}
    for name, (embedded, precision) in VARIANTS.items():
        e = emb[embedded]
        lp_truth = geo.log_prob(torch.from_numpy(e), torch.from_numpy(truth), steps=32).numpy()
        t0, preds = time.perf_counter(), []
        for i in range(0, len(e), batch):
            preds += geo.predict(e[i:i + batch], seed=list(range(i, min(i + batch, len(e)))), precision=precision)
        seconds = time.perf_counter() - t0
        lp = np.stack([p.log_prob for p in preds])
        cal = calibration(lp_truth, lp, masses=tuple(masses.values()))
        guess = np.array([p.best_guess for p in preds])
        out[name] = {"seconds": round(seconds, 2), "rows_per_s": round(len(e) / seconds, 2),
                     "geoscore": round(float(geoscore(haversine_km(guess, truth)).mean()), 1),
                     "truth_nll": round(float(-lp_truth.mean()), 4),
                     **{f"coverage_{lv}": round(cal[f"{m:g}"]["coverage"], 4) for lv, m in masses.items()}}
        draws[name] = lp
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
        print(json.dumps({**head, "model": geo.model_id, **compare(geo, *caption_rows(args.captions)),
                          "load_average": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
