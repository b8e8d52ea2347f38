"""Throughput of a frozen encoder on real shared data; prints one JSON line.

    python benchmarks/bench_embed.py                      # efficientnet-lite0 on 64 im2gps3k photos
    python benchmarks/bench_embed.py --encoder minilm-l6 -n 256   # captions of yfcc4k_text
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from globeflow.data.images import load_image
from globeflow.data.sources import text_of
from globeflow.encoders import get_encoder, modality

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _items(kind: str, n: int) -> tuple[list, float]:
    start = time.perf_counter()
    if kind == "image":
        paths = sorted((SHARED / "im2gps3k" / "images").glob("*.jpg"))[:n]
        items = [load_image(p) for p in paths]
    else:
        with open(SHARED / "yfcc4k_text" / "captions.csv", newline="") as f:
            items = [text_of(r, ("TITLE", "DESCRIPTION", "TAGS")) for _, r in zip(range(n), csv.DictReader(f))]
    return items, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("-n", type=int, default=64, help="number of photos/captions")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kind = modality(args.encoder)
    encoder = get_encoder(args.encoder)
    items, load_s = _items(kind, args.n)
    encoder.embed(items[: min(4, len(items))])  # warm-up
    start = time.perf_counter()
    encoder.embed(items, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    print(json.dumps({"bench": "embed", "encoder": encoder.id, "version": encoder.version, "items": len(items),
                      "modality": kind, "batch_size": args.batch_size, "threads": args.threads,
                      "embed_s": round(seconds, 3), "items_per_s": round(len(items) / seconds, 2),
                      "load_items_per_s": round(len(items) / load_s, 1) if load_s else None}))


if __name__ == "__main__":
    main()
