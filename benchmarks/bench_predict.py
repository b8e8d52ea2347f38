"""`globeflow predict` throughput over a folder of photos, with the embedded (default) photo model.

    .venv/bin/python benchmarks/bench_predict.py                         # first 700 im2gps3k photos, 2 threads
    .venv/bin/python benchmarks/bench_predict.py --photos 96 --baseline 7d70db2   # + an older revision, interleaved

Each run is the real command line (``python -m globeflow.cli predict FOLDER --out results.csv``) in
a fresh process with ``OMP_NUM_THREADS=--threads``: photos/s over the whole wall time (imports,
model and encoder loading included) and peak RSS of the process (its ``VmHWM``).
A second, small run (``--small`` photos) gives the fixed start-up cost, so the line also carries the
steady rate (N − n) / (wall_N − wall_n), and the RSS of both sizes shows whether memory stays flat.
``--baseline REV`` runs the same at another git revision (its ``src/`` extracted with ``git
archive``) right after each of ours, so on a shared machine the ratio is fair. One JSON line on
stdout (and appended to ``--out``), with the CPU model and ``os.getloadavg()``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "im2gps3k" / "images"


def cpu_model() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def photo_folder(source: Path, n: int, tmp: Path) -> Path:
    """A folder of symlinks to the first ``n`` photos of ``source`` (sorted names)."""
    names = sorted(p for p in os.listdir(source) if p.lower().endswith((".jpg", ".jpeg", ".png")))[:n]
    if len(names) < n:
        raise SystemExit(f"{source} has {len(names)} photos, fewer than {n}")
    folder = tmp / f"photos{n}"
    folder.mkdir()
    for name in names:
        (folder / name).symlink_to(source / name)
    return folder


# the CLI's own entry point; at exit the process writes its peak RSS to stderr: VmHWM of its own
# address space (ru_maxrss is carried across exec, so it would report the parent's size when a big
# benchmark process starts this one)
_CHILD = ("import atexit, sys\n"
          "def _peak():\n"
          "    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
          "    sys.stderr.write(f'\\nPEAK_RSS_KB {hwm[0]}\\n')\n"
          "atexit.register(_peak)\n"
          "from globeflow.cli import main\nsys.exit(main())")


def run_predict(src: Path, folder: Path, threads: int, out_csv: Path, extra: list[str]) -> dict:
    """One `globeflow predict` process: wall seconds, peak RSS (MB), rows written."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", _CHILD, "predict", str(folder), "--out", str(out_csv), "--no-progress", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed ({proc.returncode}): {proc.stderr[-2000:]}")
    peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    rows = sum(1 for _ in open(out_csv)) - 1
    return {"seconds": wall, "photos_per_s": rows / wall, "rows": rows, "peak_rss_mb": peak_kb / 1024}


def baseline_src(rev: str, tmp: Path) -> Path:
    """``src/`` of git revision ``rev``, extracted to a temporary folder."""
    dest = tmp / f"src-{rev}"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def measure(photos: int, small: int, threads: int, baseline: str | None, source: Path, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp_s:
        tmp = Path(tmp_s)
        big, little = photo_folder(source, photos, tmp), photo_folder(source, small, tmp)
        sides = {"globeflow": ROOT / "src"}
        if baseline:
            sides[f"baseline_{baseline}"] = baseline_src(baseline, tmp)
        row: dict = {"goal": "predict_throughput", "cpu": cpu_model(), "threads": threads, "photos": photos,
                     "small_run_photos": small, "model": "the embedded default photo model (efficientnet-lite0)",
                     "command": f"globeflow predict <{photos} photos> --out results.csv --no-progress {' '.join(extra)}".strip(),
                     "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
        for size, folder in (("small", little), ("full", big)):  # interleaved: ours, then the baseline
            for name, src in sides.items():
                r = run_predict(src, folder, threads, tmp / f"{name}-{size}.csv", extra)
                row.setdefault(name, {})[size] = r
        for name in sides:
            full, lite = row[name]["full"], row[name]["small"]
            row[name]["steady_photos_per_s"] = (photos - small) / max(full["seconds"] - lite["seconds"], 1e-9)
            row[name]["startup_seconds_est"] = lite["seconds"] - small / row[name]["steady_photos_per_s"]
        if baseline:
            b = row[f"baseline_{baseline}"]
            row["ratio_photos_per_s"] = round(row["globeflow"]["full"]["photos_per_s"] / b["full"]["photos_per_s"], 3)
            row["ratio_steady"] = round(row["globeflow"]["steady_photos_per_s"] / b["steady_photos_per_s"], 3)
        row["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        row["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=700)
    p.add_argument("--small", type=int, default=32, help="photos of the start-up / memory-growth run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--source", type=Path, default=PHOTOS, help="folder of photos (default: im2gps3k)")
    p.add_argument("--baseline", default=None, metavar="REV", help="also run git revision REV, interleaved")
    p.add_argument("--out", type=Path, default=None, help="append the JSON line here too")
    p.add_argument("extra", nargs="*", help="further predict options after --, e.g. -- --samples 256")
    args = p.parse_args(argv)
    row = measure(args.photos, args.small, args.threads, args.baseline, args.source, args.extra)
    line = json.dumps(row)
    print(line, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
