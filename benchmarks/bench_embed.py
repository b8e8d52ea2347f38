"""Throughput of a frozen encoder on real shared data; prints one JSON line per precision.

    python benchmarks/bench_embed.py                      # efficientnet-lite0 on 64 im2gps3k photos
    python benchmarks/bench_embed.py --encoder minilm-l6 -n 256   # captions of yfcc4k_text
    python benchmarks/bench_embed.py --encoder dinov2-vitl14-reg --standins /tmp/standins --dtype fp32 bf16
    python benchmarks/bench_embed.py --encoder streetclip --device cuda --dtype fp32 bf16 fp16 -n 256

``--standins DIR`` builds (once) and uses the random-weight stand-ins of tests/hub_standins.py
(DINOv2 ViT-L/14-reg, the published StreetCLIP config) when the real weights are not cached:
throughput does not depend on the weights' values. Each reduced precision (autocast) is also
compared with fp32 on the same photos; ``parity_ok`` = max |diff| ≤ 1e-2 × max |fp32 emb|.
Photos are decoded once before timing (``load_items_per_s`` reports the decoding rate).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


def _items(kind: str, n: int) -> tuple[list, float]:
    from globeflow.data.images import load_image
    from globeflow.data.sources import text_of

    start = time.perf_counter()
    if kind == "image":
        paths = sorted((SHARED / "im2gps3k" / "images").glob("*.jpg"))[:n]
        items = [load_image(p) for p in paths]
    else:
        with open(SHARED / "yfcc4k_text" / "captions.csv", newline="") as f:
            items = [text_of(r, ("TITLE", "DESCRIPTION", "TAGS")) for _, r in zip(range(n), csv.DictReader(f))]
    return items, time.perf_counter() - start


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _use_standins(folder: Path, encoder: str) -> None:
    """Point TORCH_HOME/HF_HOME at stand-ins (built once) unless the real weights are cached."""
    sys.path.insert(0, str(ROOT / "tests"))
    import hub_standins as hs

    os.environ.update(TORCH_HOME=str(folder / "torch"), HF_HOME=str(folder / "hf"), HF_HUB_OFFLINE="1")
    if encoder.startswith("dinov2"):
        hs.build_torch_hub(folder / "torch", ("dinov2_vitl14_reg",) if "vitl" in encoder else ("dinov2_vits14_reg",))
    else:
        hs.build_streetclip(folder / "hf", full=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("-n", type=int, default=64, help="number of photos/captions")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", nargs="+", default=["fp32"], choices=list(DTYPES))
    parser.add_argument("--standins", type=Path, default=None, help="use random-weight stand-ins built here")
    args = parser.parse_args()
    if args.standins is not None:
        _use_standins(args.standins, args.encoder)
    import torch

    from globeflow.encoders import canonical_id, get_encoder, modality

    if args.threads:
        torch.set_num_threads(args.threads)
    kind = modality(args.encoder)
    encoder = get_encoder(canonical_id(args.encoder), device=args.device)
    items, load_s = _items(kind, args.n)
    reference = None
    for name in ["fp32"] + [d for d in args.dtype if d != "fp32"]:
        dtype = getattr(torch, DTYPES[name]) if DTYPES[name] else None
        context = (lambda: torch.autocast(device_type=args.device.split(":")[0], dtype=dtype)) if dtype \
            else nullcontext
        load_before = [round(x, 2) for x in os.getloadavg()]
        with context():
            encoder.embed(items[: min(4, len(items))], batch_size=args.batch_size)  # warm-up
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            emb = encoder.embed(items, batch_size=args.batch_size)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        row = {"bench": "embed", "encoder": encoder.id, "version": encoder.version, "items": len(items),
               "modality": kind, "device": args.device, "dtype": name, "batch_size": args.batch_size,
               "threads": torch.get_num_threads(), "embed_s": round(seconds, 3),
               "items_per_s": round(len(items) / seconds, 3),
               "load_items_per_s": round(len(items) / load_s, 1) if load_s else None,
               "cpu": _cpu_model(), "loadavg_start": load_before,
               "torch": torch.__version__, "weights": "stand-in (random)" if args.standins else "real"}
        if reference is None:
            reference = emb
        else:
            ratio = float(abs(emb - reference).max() / abs(reference).max())
            row.update(max_rel_diff_vs_fp32=ratio, parity_ok=ratio <= 1e-2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
