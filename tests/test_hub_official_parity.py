"""globeflow's hub encoders against the official extractors (``plonk.pipe``, diff-plonk 0.4), same weights.

The official code runs as released in a subprocess, with the released torchvision 0.28.0 that
``scripts/setup.sh test`` puts in ``.venv/official-preprocessing`` (``pip --target``, no deps: it is
kept off globeflow's own path, where transformers would pick it up). The full check on ≥ 20 photos
and the pipeline's samples/densities is ``scripts/check_official_extractors.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hub_standins as hs

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = Path(os.environ.get("GLOBEFLOW_OFFICIAL_PREPROCESSING", ROOT / ".venv" / "official-preprocessing"))
WORKER = ROOT / "scripts" / "official_extractors_worker.py"
HUB_VARS = ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    examples = sorted((ROOT / "examples").glob("*.jpg"))
    made = hs.special_photos(tmp_path_factory.mktemp("made"), examples)
    return hs.odd_im2gps_photos(1) + made  # crop offset rounds up; CMYK, grey, palette + alpha, EXIF-rotated


def _official(photos: list[Path], env: dict, tmp_path: Path, decode: str) -> dict[str, np.ndarray]:
    if not (OFFICIAL / "plonk" / "pipe.py").is_file():
        pytest.skip(f"no official code at {OFFICIAL}: run `bash scripts/setup.sh test`")
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"images": [str(p) for p in photos], "decode": decode,
                               "extractors": ["dinov2", "streetclip"], "threads": 2}))
    base = {k: v for k, v in os.environ.items() if k not in HUB_VARS}
    proc = subprocess.run([sys.executable, str(WORKER), str(job), str(tmp_path / "out.npz")],
                          env={**base, **env, "PYTHONPATH": str(OFFICIAL)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow
def test_embeddings_equal_the_official_extractors(hub_full, hub_small, photos, tmp_path):
    from globeflow.data.images import load_image
    from globeflow.encoders import get_encoder

    # the official DINOv2 extractor hard-codes ViT-L/14-reg; StreetCLIP: the 1-layer stand-in (same widths)
    env = {"TORCH_HOME": hub_full["TORCH_HOME"], "HF_HOME": hub_small["HF_HOME"], "HF_HUB_OFFLINE": "1"}
    official = _official(photos, env, tmp_path, decode="globeflow")
    assert str(official["streetclip_processor"]) == "CLIPImageProcessor"  # transformers' torchvision backend
    snapshot = Path(hub_small["HF_HOME"]) / "hub" / "models--geolocal--StreetCLIP"
    snapshot = snapshot / "snapshots" / (snapshot / "refs" / "main").read_text().strip()
    images = [load_image(p) for p in photos]
    ours = {"dinov2": get_encoder("dinov2-vitl14-reg", source=Path(hub_full["TORCH_HOME"]) / "hub").embed(images),
            "streetclip": get_encoder("streetclip", source=snapshot).embed(images)}
    for key, emb in ours.items():
        scale = np.abs(official[key]).max()
        worst = np.abs(emb - official[key]).max(axis=1) / scale
        assert worst.max() <= 1e-4, f"{key}: {dict(zip([p.name for p in photos], worst.round(7)))}"
