"""Parity of globeflow's hub encoders and pipeline with the official PLONK code, on stand-in weights.

    .venv/bin/python scripts/check_official_extractors.py [--work DIR] [--json OUT]

Needs the official environment (``bash scripts/setup_official_env.sh``: diff-plonk 0.4 and the
released torchvision 0.28.0). Builds the stand-ins of ``tests/hub_standins.py`` (random weights in
the real shapes: DINOv2 ViT-L/14-reg, StreetCLIP ViT-L/14-336, PLONK dim 512 / depth 12 / cond 1024)
under ``--work``, then on ≥ 20 real photos — the shipped ``examples/``, Im2GPS3k photos whose
width − height is odd, and a CMYK, a greyscale, a palette PNG with transparency and an EXIF-rotated
JPEG made from real photos — compares globeflow's ``dinov2-vitl14-reg`` and ``streetclip``
embeddings with ``plonk.pipe.DinoV2FeatureExtractor`` / ``StreetClipFeatureExtractor`` run by
``scripts/official_extractors_worker.py`` in the official environment:

- ``decoded``: both sides get the image as globeflow's loader decodes it (EXIF orientation applied,
  transparency on white) — the encoders' own parity; criterion max |diff| ≤ 1e-4 × max |emb|;
- ``raw``: the official side gets ``PIL.Image.open(path)`` as its users pass it, for the photos where
  that differs from globeflow's loader (mode, EXIF orientation, transparency); differences here
  come from the loader (reported per photo, not a failure).

Then, on one photo, ``PlonkPipeline('nicolas-dufour/PLONK_YFCC')`` samples (same unit-vector start
noise, 250 steps, cfg 0 = the model's default, and cfg 2) and official likelihoods (dopri5 1e-6,
nats) against globeflow's, with the tolerances of tests/test_parity.py.
Prints one JSON summary; exit status 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import hub_standins as hs  # noqa: E402

SHARED = ROOT.parent / "shared"
OFFICIAL_PY = ROOT / ".venv-official" / "bin" / "python"
WORKER = ROOT / "scripts" / "official_extractors_worker.py"
EMB_RTOL = 1e-4
CITIES = [(48.8566, 2.3522), (40.7128, -74.006), (35.6762, 139.6503), (-33.8688, 151.2093),
          (-1.2921, 36.8219), (-22.9068, -43.1729), (64.1466, -21.9426), (-77.846, 166.676)]


def _decodes_differently(path: Path) -> bool:
    """Whether ``Image.open`` (what users pass the official code) differs from globeflow's loader."""
    with Image.open(path) as im:
        return im.mode != "RGB" or im.getexif().get(0x0112, 1) != 1 or "transparency" in im.info


def run_official(job: dict, env: dict, work: Path, name: str) -> dict[str, np.ndarray]:
    job_path, out_path = work / f"{name}.json", work / f"{name}.npz"
    job_path.write_text(json.dumps(job))
    proc = subprocess.run([str(OFFICIAL_PY), str(WORKER), str(job_path), str(out_path)], env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"official worker failed ({name}):\n{proc.stderr[-3000:]}")
    with np.load(out_path) as data:
        return {k: data[k] for k in data.files}


def compare(ours: np.ndarray, theirs: np.ndarray, names: list[str]) -> dict:
    diff = np.abs(ours - theirs)
    scale = float(np.abs(theirs).max())
    rows = diff.max(axis=1)
    return {"max_abs_diff": float(diff.max()), "max_abs_emb": scale, "ratio": float(diff.max() / scale),
            "ok": bool(diff.max() <= EMB_RTOL * scale),
            "per_photo_ratio": {n: float(r / scale) for n, r in zip(names, rows)}}


def pipeline_parity(env: dict, work: Path, photo: Path, threads: int) -> dict:
    from globeflow.geolocator import Geolocator

    geo = Geolocator.from_pretrained("nicolas-dufour/PLONK_YFCC")
    cfgs = sorted({0.0, float(geo.default_cfg), 2.0})
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(16, 3, generator=gen)
    noise = noise / noise.norm(dim=-1, keepdim=True)
    coords = np.array(CITIES, dtype=np.float64)
    job = {"images": [], "decode": "globeflow", "threads": threads, "extractors": [],
           "pipeline": {"model": "nicolas-dufour/PLONK_YFCC", "image": str(photo), "noise": noise.tolist(),
                        "cfgs": cfgs, "steps": 250, "coords": coords.tolist()}}
    off = run_official(job, env, work, "pipeline")
    emb = geo.embed([photo])
    out = {"photo": photo.name, "steps": 250, "num_samples": 16, "cfgs": cfgs,
           "emb_ratio": float(np.abs(emb - off["pipe_emb"]).max() / np.abs(off["pipe_emb"]).max())}
    ok = out["emb_ratio"] <= EMB_RTOL
    for cfg in cfgs:
        ll = geo.sample(emb, 16, steps=250, cfg=cfg, noise=noise[None])[0].numpy()
        d_deg = np.abs(ll - off[f"samples_cfg{cfg:g}"])
        d_deg[:, 1] = np.minimum(d_deg[:, 1], 360 - d_deg[:, 1])
        nats = geo.log_prob(emb, coords, cfg=cfg, divergence="ambient", solver="official", dtype=torch.float32)
        d_ll = np.abs(nats.numpy() - off[f"loglik_nats_cfg{cfg:g}"])
        out[f"cfg{cfg:g}"] = {"samples_max_abs_deg": float(d_deg.max()), "loglik_max_abs_nats": float(d_ll.max())}
        ok &= bool(d_deg.max() <= 1e-3 and d_ll.max() <= 2e-3)
    out["tolerances"] = {"samples_deg": 1e-3, "loglik_nats_f32": 2e-3}
    out["ok"] = bool(ok)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/globeflow-official-parity"))
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--odd", type=int, default=2, help="Im2GPS3k photos with odd width - height")
    parser.add_argument("--examples", type=int, default=None, help="use only the first N shipped examples")
    parser.add_argument("--no-pipeline", action="store_true", help="embeddings only")
    parser.add_argument("--pipeline-only", action="store_true", help="skip the embedding comparison")
    args = parser.parse_args()
    if not OFFICIAL_PY.exists():
        print(f"no official environment at {OFFICIAL_PY.parent.parent}; run bash scripts/setup_official_env.sh",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    start = time.time()
    standins = args.work / "standins"
    os.environ.update(TORCH_HOME=str(standins / "torch"), HF_HOME=str(standins / "hf"), HF_HUB_OFFLINE="1")
    env_vars = hs.build_all(standins, vitl=True, full_streetclip=True, full_plonk=True)  # (imports HF after this)
    assert all(os.environ[k] == v for k, v in env_vars.items())
    env = {**os.environ, **env_vars}
    examples = sorted((ROOT / "examples").glob("*.jpg"))
    photos = examples[:args.examples] + hs.odd_im2gps_photos(args.odd) + hs.special_photos(args.work / "made", examples)
    names = [p.name for p in photos]
    from globeflow.data.images import load_image
    from globeflow.encoders import get_encoder

    images = [load_image(p) for p in photos]
    cache = args.work / "globeflow-embeddings.npz"  # reused when the photo list is the same (long on 2 cores)
    if cache.exists() and list(np.load(cache)["names"]) == names:
        with np.load(cache) as data:
            ours = {"dinov2": data["dinov2"], "streetclip": data["streetclip"]}
    else:
        ours = {key: get_encoder(enc).embed(images, batch_size=8)
                for key, enc in (("dinov2", "dinov2-vitl14-reg"), ("streetclip", "streetclip"))}
        np.savez(cache, names=np.array(names), **ours)
    # the raw pass matters only where Image.open differs from globeflow's loader: modes, EXIF, transparency
    raw_idx = [i for i, p in enumerate(photos) if _decodes_differently(p)]
    summary: dict = {"photos": names, "sizes": [Image.open(p).size for p in photos],
                     "modes": [Image.open(p).mode for p in photos], "criterion": f"max|diff| <= {EMB_RTOL} max|emb|"}
    for decode, idx in () if args.pipeline_only else (("decoded", list(range(len(photos)))), ("raw", raw_idx)):
        job = {"images": [str(photos[i]) for i in idx], "decode": "globeflow" if decode == "decoded" else "raw",
               "extractors": ["dinov2", "streetclip"], "threads": args.threads}
        off = run_official(job, env, args.work, f"extract-{decode}")
        summary[decode] = {key: compare(ours[key][idx], off[key], [names[i] for i in idx]) for key in ours}
        summary[decode]["official_clip_processor"] = str(off["streetclip_processor"])
    if not args.no_pipeline:
        summary["pipeline"] = pipeline_parity(env, args.work, examples[0], args.threads)
    summary["seconds"] = round(time.time() - start, 1)
    ok = all(summary["decoded"][k]["ok"] for k in ours if k in summary.get("decoded", {})) and summary.get("pipeline", {"ok": True})["ok"]
    summary["ok"] = ok
    text = json.dumps(summary, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
