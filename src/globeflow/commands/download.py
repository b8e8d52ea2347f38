"""``globeflow download``: fetch released PLONK models and their encoders, optionally into one folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "download released PLONK models and their encoders (for offline / air-gapped use)"
DESCRIPTION = """Download released PLONK models (nicolas-dufour/PLONK_*) and their image encoders.

Without --to, the files go to the usual caches (Hugging Face: $HF_HOME, torch.hub: $TORCH_HOME).
With --to DIR, everything a model needs is also copied into DIR with a manifest (sizes, sha256,
licences); copy DIR to a machine without network and run

  globeflow predict photo.jpg --model DIR/PLONK_YFCC

examples:
  globeflow download nicolas-dufour/PLONK_YFCC --to plonk-models
  globeflow download PLONK_OSV_5M PLONK_YFCC_flow --to plonk-models
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="nicolas-dufour/PLONK_* ids (owner optional)")
    p.add_argument("--to", type=Path, default=None, metavar="DIR", help="copy everything into this folder")


def run(args: argparse.Namespace) -> int:
    from globeflow.hub import DownloadError, download, human_bytes

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        root = download(args.models, to=args.to, log=log)
    except DownloadError as err:
        print(f"globeflow download: {err}", file=sys.stderr)
        return 1
    if root is None:
        print(f"cached {len(args.models)} model(s) and their encoders")
        return 0
    import json

    manifest = json.loads((root / "manifest.json").read_text())
    print(f"wrote {root}: {len(manifest['models'])} model(s), {len(manifest['encoders'])} encoder(s), "
          f"{len(manifest['files'])} files, {human_bytes(manifest['total_bytes'])}; "
          f"use --model {root / next(iter(manifest['models']))}")
    return 0
