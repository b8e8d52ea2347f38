"""Speed of `globeflow predict --texts` on real captions at default settings; prints one JSON line.

    python benchmarks/bench_text.py                 # 2,000 YFCC4k captions, shipped text model, 2 threads
    python benchmarks/bench_text.py -n 200 --stages 32
    python benchmarks/bench_text.py --batch-size 16      # the CLI's batch before 2026-12-07, for a ratio

Runs the CLI in-process (`predict --texts CSV --text-columns TITLE,DESCRIPTION,TAGS`, default samples,
steps, guidance and best-guess rule) on the first ``n`` captions that have text, and reports texts/s and
the process's peak resident memory (ru_maxrss). ``--stages`` times the parts of one batch of that many
captions separately (MiniLM in predict's precision, sampling with log-densities, the best guess's own
sampling pass, summaries), the profile behind the total. CPU model and load average go into the
line: figures taken under load are lower bounds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from globeflow.precision import PRECISIONS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAPTIONS = SHARED / "yfcc4k_text" / "captions.csv"
COLUMNS = ("TITLE", "DESCRIPTION", "TAGS")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def write_captions(n: int, path: Path) -> int:
    """The first ``n`` captions with some text, as a CSV like the shared one; returns the row count."""
    with open(CAPTIONS, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if any(r[c].strip() for c in COLUMNS)][:n]
        fields = reader.fieldnames
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def stages(texts: list[str], model: str | None, precision: str = "auto") -> dict:
    """Seconds per part of Geolocator.predict on one batch of ``texts`` (default settings)."""
    from globeflow.geolocator import Geolocator
    from globeflow.prediction import summarize

    geo = Geolocator.from_pretrained(model, modality="text") if model else Geolocator.from_pretrained(modality="text")
    geo.embed(["warm-up"], precision=precision)
    out, t = {"captions": len(texts)}, time.perf_counter()
    emb = geo.embed(texts, precision=precision)
    out["embed_s"], t = time.perf_counter() - t, time.perf_counter()
    k, steps = geo.sample_budget()  # predict's defaults: what the model was calibrated with
    k_best, steps_best = geo.best_guess_budget()
    out.update(samples=k, steps=steps, best_guess_samples=k_best, best_guess_steps=steps_best)
    samples, lp = geo.sample(emb, k, steps=steps, seed=0, return_log_prob=True, precision=precision)
    out["sample_with_log_prob_s"], t = time.perf_counter() - t, time.perf_counter()
    if geo.separate_best_guess(None):
        geo.point_estimate(emb, k_best, steps=steps_best, seed=0, precision=precision)
    out["best_guess_pass_s"], t = time.perf_counter() - t, time.perf_counter()
    for i in range(len(texts)):
        summarize(samples[i].numpy(), lp[i].numpy(), model=geo.model_id, encoder="minilm-l6",
                  credible_masses=geo.info.credible_masses, best_guess=geo.info.best_guess)
    out["summarize_s"] = time.perf_counter() - t
    out["per_caption_s"] = {k[:-2]: round(v / len(texts), 4) for k, v in out.items() if k.endswith("_s")}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000, help="captions (default 2,000)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped text model)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stages", type=int, default=0, help="also time the parts of one batch of this many captions")
    p.add_argument("--batch-size", type=int, default=None,
                   help="predict's --batch-size (default: predict's own, 256 texts since 2026-12-07; 16 before)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="predict's --precision (default auto, predict's own default)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from globeflow.cli import main as cli

    result: dict = {"bench": "predict --texts", "cpu": cpu_model(), "threads": args.threads, "precision": args.precision,
                    "batch_size": args.batch_size or "default",
                    "load_avg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "captions.csv"
        n = write_captions(args.n, src)
        if args.stages:
            with open(src, newline="", encoding="utf-8") as f:
                from globeflow.data.sources import text_of
                texts = [text_of(r, COLUMNS) for _, r in zip(range(args.stages), csv.DictReader(f))]
            result["stages"] = stages(texts, args.model, args.precision)
        argv = ["predict", "--texts", str(src), "--text-columns", ",".join(COLUMNS), "--out", str(Path(tmp) / "p.csv"),
                "--no-progress", "--precision", args.precision] + (["--model", args.model] if args.model else [])
        argv += ["--batch-size", str(args.batch_size)] if args.batch_size else []
        t0, c0 = time.perf_counter(), time.process_time()
        status = cli(argv)
        wall = time.perf_counter() - t0
    result.update(status=status, captions=n, wall_s=round(wall, 1), cpu_s=round(time.process_time() - c0, 1),
                  texts_per_s=round(n / wall, 3),
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  load_avg_after=os.getloadavg(), date=time.strftime("%Y-%m-%d %H:%M"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
