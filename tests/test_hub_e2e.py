"""The released models' path end to end, on local stand-ins for torch.hub and the Hugging Face hub.

Every command runs as a subprocess (the real CLI, the real loading code) with ``HF_HUB_OFFLINE=1``
and ``TORCH_HOME``/``HF_HOME`` at the stand-ins (random weights, so the numbers mean nothing
geographically); without them each command must fail at once, in one sentence.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))
HUB_VARS = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "TORCH_HOME",
            "HF_HUB_OFFLINE", "HF_ENDPOINT", "GLOBEFLOW_CACHE")


def cli(args: list[str], env: dict, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in HUB_VARS}
    base.update(OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore", **env)
    return subprocess.run([sys.executable, "-m", "globeflow.cli", *args], env=base, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_complete(rows: list[dict], n: int) -> None:
    """Every prediction column present and filled for each of ``n`` photos."""
    from globeflow.prediction import PREDICTION_COLUMNS

    assert len(rows) == n
    for row in rows:
        assert list(row) == ["path", *PREDICTION_COLUMNS[1:]]
        empty = [k for k, v in row.items() if v in ("", None)]
        assert not empty, f"empty columns {empty}"
        assert -90 <= float(row["pred_lat"]) <= 90 and -180 <= float(row["pred_lon"]) <= 180


def empty_hub(tmp_path: Path, offline: bool) -> dict:
    env = {"TORCH_HOME": str(tmp_path / "no_torch"), "HF_HOME": str(tmp_path / "no_hf"),
           "GLOBEFLOW_CACHE": str(tmp_path / "gf")}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


# ----------------------------------------------------------------------------------- real shapes, once each
@pytest.mark.slow
def test_predict_yfcc_with_the_real_vitl14_reg_end_to_end(hub_full, tmp_path):
    out = tmp_path / "yfcc.csv"
    proc = cli(["predict", str(EXAMPLES[0]), "--model", "nicolas-dufour/PLONK_YFCC", "--samples", "64",
                "--out", str(out), "--no-progress"], hub_full, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_complete(read_rows(out), 1)


@pytest.mark.slow
def test_predict_osv5m_with_the_published_streetclip_config(hub_full, tmp_path):
    out = tmp_path / "osv.csv"
    proc = cli(["predict", str(EXAMPLES[2]), "--model", "nicolas-dufour/PLONK_OSV_5M", "--samples", "64",
                "--out", str(out), "--no-progress"], hub_full, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_complete(read_rows(out), 1)


@pytest.mark.slow
def test_download_yfcc_then_predict_from_the_folder_alone(hub_full, tmp_path):
    target = tmp_path / "models"
    proc = cli(["download", "nicolas-dufour/PLONK_YFCC", "--to", str(target)], hub_full, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((target / "manifest.json").read_text())
    files = {f["path"]: f for f in manifest["files"]}
    assert "encoders/dinov2-vitl14-reg/checkpoints/dinov2_vitl14_reg4_pretrain.pth" in files
    assert "encoders/dinov2-vitl14-reg/facebookresearch_dinov2_main/hubconf.py" in files
    assert files["PLONK_YFCC/model.safetensors"]["bytes"] > 100e6  # dim 512, depth 12
    assert manifest["encoders"]["dinov2-vitl14-reg"]["licence"].startswith("Apache License")
    # nothing but the folder: empty caches, offline
    out = tmp_path / "from_dir.csv"
    proc = cli(["predict", str(EXAMPLES[0]), "--model", str(target), "--samples", "64", "--out", str(out),
                "--no-progress"], empty_hub(tmp_path, offline=True), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_complete(read_rows(out), 1)


# ------------------------------------------------------------------------ small stand-ins for the rest
def test_flow_and_diffusion_variants_load_and_sample(hub_small):
    # predict would also integrate R³ densities (minutes on 2 cores); loading + sampling is what differs here
    code = ("import json, sys; from globeflow.geolocator import Geolocator; "
            "geo = Geolocator.from_pretrained(sys.argv[1]); emb = geo.embed([sys.argv[2]]); "
            "ll = geo.sample(emb, 16, steps=8, seed=0); "
            "print(json.dumps({'family': geo.family, 'encoder': geo.encoder_id, 'dim': int(emb.shape[1]), "
            "'finite': bool(ll.isfinite().all()), 'lat': ll[0, :, 0].tolist()}))")
    base = {k: v for k, v in os.environ.items() if k not in HUB_VARS}
    for name, family in (("PLONK_OSV_5M_flow", "fm"), ("PLONK_OSV_5M_diffusion", "diffusion")):
        proc = subprocess.run([sys.executable, "-c", code, f"nicolas-dufour/{name}", str(EXAMPLES[0])],
                              env={**base, "OMP_NUM_THREADS": "2", **hub_small}, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out == {**out, "family": family, "encoder": "streetclip", "dim": 1024, "finite": True}
        assert all(-90 <= lat <= 90 for lat in out["lat"]) and len(set(out["lat"])) > 1


@pytest.mark.parametrize("encoder", ["dinov2-vits14-reg", "streetclip"])
def test_embed_with_hub_encoders_equals_the_library(hub_small, tmp_path, encoder, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in EXAMPLES[:3]:
        (photos / p.name).symlink_to(p)
    store = tmp_path / "store"
    proc = cli(["embed", str(photos), "--encoder", encoder, "--out", str(store)], hub_small)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from globeflow.data.images import load_image
    from globeflow.data.store import EmbeddingStore

    rows = EmbeddingStore(store).load(labelled_only=False)
    assert rows.embeddings.shape == (3, 384 if encoder.startswith("dinov2") else 1024)
    order = np.argsort([Path(i).name for i in rows.ids])
    for key, value in hub_small.items():
        monkeypatch.setenv(key, value)
    reference = _in_process_encoder(encoder, hub_small).embed([load_image(p) for p in EXAMPLES[:3]])
    scale = np.abs(reference).max()
    assert np.abs(rows.embeddings[order].astype(np.float32) - reference).max() <= 1e-4 * scale


def _in_process_encoder(encoder: str, env: dict):
    """The library's encoder on the same stand-in (an explicit source: HF constants are read at import)."""
    from globeflow.encoders import get_encoder

    if encoder == "streetclip":
        hf = Path(env["HF_HOME"]) / "hub" / "models--geolocal--StreetCLIP"
        return get_encoder(encoder, source=hf / "snapshots" / (hf / "refs" / "main").read_text().strip())
    return get_encoder(encoder, source=Path(env["TORCH_HOME"]) / "hub")


def test_map_and_serve_with_a_hub_model(hub_small, tmp_path):
    png = tmp_path / "map.png"
    proc = cli(["map", str(EXAMPLES[0]), "--model", "nicolas-dufour/PLONK_OSV_5M", "--out", str(png),
                "--num-samples", "64", "--steps", "8", "--grid-resolution", "0"], hub_small)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if k not in HUB_VARS}
    server = subprocess.Popen([sys.executable, "-m", "globeflow.cli", "serve", "--model",
                               "nicolas-dufour/PLONK_OSV_5M", "--port", str(port), "--num-samples", "64"],
                              env={**base, "OMP_NUM_THREADS": "2", **hub_small}, stderr=subprocess.PIPE, text=True)
    try:
        body = _wait_and_predict(f"http://127.0.0.1:{port}", EXAMPLES[1], server)
    finally:
        server.terminate()
        server.wait(timeout=30)
    (result,) = body["results"]
    assert body["model"] == "nicolas-dufour/PLONK_OSV_5M"
    guess = result["best_guess"]
    assert result["encoder"] == "streetclip" and -90 <= guess["lat"] <= 90 and -180 <= guess["lon"] <= 180, result


def _wait_and_predict(base: str, photo: Path, server: subprocess.Popen) -> dict:
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve exited: {server.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(base + "/api/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    boundary = "globeflowtest"
    data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{photo.name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(base + "/api/predict", data=data,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------------ without stand-ins: fail at once
@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "no-network"])
def test_every_command_fails_at_once_in_one_sentence_without_the_sources(tmp_path, offline):
    from globeflow.encoders._network import reachable

    if not offline and (reachable("huggingface.co") or reachable("github.com")):
        pytest.skip("network available: the offline failure cannot be observed")
    env = empty_hub(tmp_path, offline)
    photo = str(EXAMPLES[0])
    commands = {"predict": ["predict", photo, "--model", "nicolas-dufour/PLONK_YFCC"],
                "map": ["map", photo, "--model", "nicolas-dufour/PLONK_OSV_5M", "--out", str(tmp_path / "m.png")],
                "serve": ["serve", "--model", "nicolas-dufour/PLONK_OSV_5M_diffusion", "--port", "0"],
                "embed dinov2": ["embed", str(ROOT / "examples"), "--encoder", "dinov2-vitl14-reg", "--out",
                                 str(tmp_path / "s1")],
                "embed streetclip": ["embed", str(ROOT / "examples"), "--encoder", "streetclip", "--out",
                                     str(tmp_path / "s2")],
                "download": ["download", "nicolas-dufour/PLONK_YFCC", "--to", str(tmp_path / "d")]}
    if not offline:  # the reachability checks: one command per source is enough
        commands = {k: v for k, v in commands.items() if k in ("predict", "embed streetclip", "download")}
    for name, args in commands.items():
        start = time.time()
        proc = cli(args, env, timeout=120)
        seconds = time.time() - start
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("model ")]
        assert proc.returncode != 0, name
        assert "Traceback" not in proc.stderr, f"{name}: {proc.stderr[-1500:]}"
        assert len(lines) == 1, f"{name}: {proc.stderr}"
        assert "globeflow download" in lines[0] or "HF_HOME" in lines[0], f"{name}: {lines[0]}"
        assert seconds < 45, f"{name} took {seconds:.1f} s"  # ~3-5 s on a quiet machine: the imports


def test_encoder_missing_but_model_cached_names_the_encoder(hub_small, tmp_path):
    env = {**hub_small, "TORCH_HOME": str(tmp_path / "no_torch")}
    proc = cli(["predict", str(EXAMPLES[0]), "--model", "nicolas-dufour/PLONK_YFCC_flow"], env, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "dinov2_vitl14_reg needs the DINOv2 hub code and weights" in proc.stderr
    assert "globeflow download nicolas-dufour/PLONK_YFCC" in proc.stderr


# --------------------------------------------------------------------- download through the real HTTP code
def test_download_from_a_stand_in_hub_then_predict_offline(hub_small, tmp_path):
    import hub_standins as hs

    hf_cache = Path(hub_small["HF_HOME"]) / "hub"
    repos = {}
    for repo in ("nicolas-dufour/PLONK_OSV_5M", "geolocal/StreetCLIP"):
        folder = hf_cache / f"models--{repo.replace('/', '--')}"
        repos[repo] = folder / "snapshots" / (folder / "refs" / "main").read_text().strip()
    target = tmp_path / "models"
    with hs.serve_hub(repos) as (endpoint, requests):
        env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "fresh_hf"), "TORCH_HOME": str(tmp_path / "t")}
        proc = cli(["download", "PLONK_OSV_5M", "--to", str(target)], env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(r.startswith("GET /nicolas-dufour/PLONK_OSV_5M/resolve/") for r in requests), requests
    assert any(r.startswith("GET /geolocal/StreetCLIP/resolve/") and r.endswith("model.safetensors") for r in requests)
    from globeflow.hub import verify

    assert verify(target) == []
    manifest = json.loads((target / "manifest.json").read_text())
    assert set(manifest["models"]) == {"PLONK_OSV_5M"} and set(manifest["encoders"]) == {"streetclip"}
    assert manifest["models"]["PLONK_OSV_5M"]["family"] == "rfm"
    for f in manifest["files"]:
        assert f["bytes"] == (target / f["path"]).stat().st_size and len(f["sha256"]) == 64 and f["licence"]
    # the folder alone, offline, with empty caches
    out = tmp_path / "p.csv"
    proc = cli(["predict", *map(str, EXAMPLES[:2]), "--model", str(target), "--samples", "32", "--steps", "8",
                "--out", str(out), "--no-progress"], empty_hub(tmp_path, offline=True))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_complete(read_rows(out), 2)
    # and the listing sees it
    proc = cli(["models", "--dir", str(target), "--json"], empty_hub(tmp_path, offline=True))
    rows = {r["model_id"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert rows["nicolas-dufour/PLONK_OSV_5M"]["offline"].startswith("yes (")
    assert rows["nicolas-dufour/PLONK_YFCC"]["offline"] == "no"
    assert rows["nicolas-dufour/PLONK_YFCC"]["encoder"] == "dinov2-vitl14-reg"


def test_models_lists_the_stand_in_cache_as_offline(hub_small):
    proc = cli(["models", "--json"], hub_small)
    assert proc.returncode == 0, proc.stderr
    rows = {r["model_id"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert rows["nicolas-dufour/PLONK_OSV_5M"]["offline"] == "yes (caches)"
    assert rows["nicolas-dufour/PLONK_YFCC"]["offline"] == "model only (encoder not cached)"  # ViT-S only here
    assert rows["nicolas-dufour/PLONK_iNaturalist"]["offline"] == "no"
    assert rows["nicolas-dufour/PLONK_OSV_5M"]["family"] == "rfm"
