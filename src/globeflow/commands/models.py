"""``globeflow models``: the known models, their family, encoder, size and offline availability."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "list the known models (shipped defaults and released PLONK models) and what is available offline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=None, metavar="DIR", help="also look in a `globeflow download` folder")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from globeflow.hub import known_models

    rows = known_models(args.dir)
    if args.json:
        for row in rows:
            print(json.dumps(dataclasses.asdict(row)))
        return 0
    header = ("model", "family", "encoder", "size", "offline", "trained on")
    table = [header] + [(r.model_id, r.family, r.encoder, r.size, r.offline, r.trained_on) for r in rows]
    widths = [max(len(str(row[i])) for row in table[:]) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)) + "  " + row[-1])
    return 0
