"""The web app and HTTP API against a real server (``globeflow serve``) on 127.0.0.1 with the shipped model."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from globeflow.prediction import PREDICTION_COLUMNS

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGES = SHARED / "data" / "im2gps3k" / "images"
DAMAGED = "254994149_844b89545b_115_79267922@N00.jpg"  # partly damaged, but decodes: kept like any photo

pytestmark = pytest.mark.skipif(not IMAGES.is_dir(), reason=f"real photos not found at {IMAGES}")


def photos(n: int, offset: int = 0) -> list[Path]:
    """n real photos (the damaged one excluded), in a fixed order."""
    names = sorted(p for p in os.listdir(IMAGES) if p != DAMAGED)
    return [IMAGES / name for name in names[offset : offset + n]]


# ---------------------------------------------------------------- a tiny HTTP client (stdlib only)
def multipart(fields: dict[str, str | int | float] | None = None,
              files: list[tuple[str, bytes]] | None = None) -> tuple[bytes, str]:
    """Encode form fields and ``files`` (name, bytes) as multipart/form-data → (body, content type)."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for key, value in (fields or {}).items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    for name, data in files or []:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def request(url: str, body: bytes | None = None, content_type: str | None = None,
            timeout: float = 60.0) -> tuple[int, dict, dict | str]:
    """→ (status, headers with lower-case names, parsed JSON or text); HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, headers, raw = err.code, dict(err.headers), err.read()
    headers = {k.lower(): v for k, v in headers.items()}
    text = raw.decode("utf-8")
    return status, headers, json.loads(text) if headers.get("content-type", "").startswith("application/json") else text


def predict(base: str, paths_or_files, timeout: float = 60.0, **fields):
    files = [(p.name, p.read_bytes()) if isinstance(p, Path) else p for p in paths_or_files]
    body, ctype = multipart(fields, files)
    return request(base + "/api/predict", body, ctype, timeout=timeout)


# ---------------------------------------------------------------- a real server in a subprocess
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(*args: str, startup_s: float = 120.0):
    """``globeflow serve`` on 127.0.0.1 with extra CLI ``args``; yields its base URL, stops it after."""
    port = free_port()
    cmd = [sys.executable, "-m", "globeflow.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if request(base + "/api/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /api/health within {startup_s} s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server():
    """Small limits so that each can be exercised cheaply: 2 MB/file, 4 files, 1 MP; 2 workers (2 cores)."""
    with running_server("--max-file-mb", "2", "--max-files", "4", "--max-megapixels", "1",
                        "--queue", "8", "--num-samples", "256") as base:
        yield base


# ---------------------------------------------------------------- tests
def test_health_and_page(server):
    status, _, body = request(server + "/api/health")
    assert status == 200 and body["status"] == "ok" and body["modality"] == "image"
    assert body["limits"]["max_files"] == 4 and body["limits"]["max_pixels"] == 1_000_000
    status, headers, page = request(server + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert 'id="files"' in page and "api/predict" in page
    assert body["limits"]["num_samples"] == 256 and body["limits"]["model_samples"] == 128  # the operator's, the model's
    assert 'id="num_samples" type="number" min="16" max="4096" placeholder="256"' in page
    assert "http://" not in page and "https://" not in page


def test_predict_one_photo_with_png_map_and_seeded_repeat(server):
    photo = photos(1)[0]
    status, _, body = predict(server, [photo], num_samples=256, seed=7, map="png", samples=1)
    assert status == 200, body
    (result,) = body["results"]
    assert result["input"] == photo.name and len(result["samples"]) == 256
    assert -90 <= result["best_guess"]["lat"] <= 90 and -180 <= result["best_guess"]["lon"] <= 180
    r50, r90 = result["credible_regions"]
    assert 0 < r50["radius_km"] < r90["radius_km"] < 20_016
    probs = list(result["country_probs"].values())
    assert 1 <= len(result["modes"]) <= 5 and 0 < sum(probs) <= 1 + 1e-9 and probs == sorted(probs, reverse=True)
    assert result["top_country"] == next(iter(result["country_probs"]))
    # the best guess's country is stated apart, and the figures name the distribution they describe
    assert result["best_guess"]["country"] == result["guess_country"] and len(result["guess_country"]) == 2
    assert result["distribution"]["num_samples"] == 256 and result["distribution"]["cfg"] is not None
    assert all(m["mass"] > 0 for m in result["modes"])
    png = Image.open(io.BytesIO(base64.b64decode(result["map_png"])))
    assert png.format == "PNG" and png.size[0] > 800
    again = predict(server, [photo], num_samples=256, seed=7)[2]["results"][0]
    assert again["best_guess"] == result["best_guess"] and "map_png" not in again and "samples" not in again
    assert set(PREDICTION_COLUMNS) - {"id", "pred_lat", "pred_lon", "radius50_km", "radius90_km",
                                      "area50_km2", "area90_km2"} <= set(result)


def test_bad_files_are_listed_and_the_rest_processed(server):
    good = photos(2, offset=10)
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1000, 1200, 3), dtype=np.uint8))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=70)  # 1.2 MP, under 2 MB: refused for its pixel count
    truncated = good[1].read_bytes()[:-2000]  # a real photo cut short
    files = [good[0], ("truncated.jpg", truncated), ("notes.jpg", b"this is not an image"),
             ("big.jpg", buf.getvalue())]
    status, _, body = predict(server, files, num_samples=64, seed=0)
    assert status == 200, body
    inputs = [r["input"] for r in body["results"]]
    assert inputs == [good[0].name, "truncated.jpg", "notes.jpg", "big.jpg"]
    ok, *bad = body["results"]
    assert "best_guess" in ok
    assert "undecodable" in bad[0]["error"] and bad[1]["error"] == "not an image"
    assert "megapixels" in bad[2]["error"]
    status, _, body = predict(server, [("empty.jpg", b"")], num_samples=64)
    assert status == 422 and body["results"][0]["error"] == "empty file"


def test_limits_and_field_validation(server):
    photo = photos(1, offset=20)[0]
    noise = np.random.default_rng(1).integers(0, 255, (950, 1000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")  # ~2.8 MB, 0.95 MP: refused for its size
    assert len(buf.getvalue()) > 2 * 1024 * 1024
    status, _, body = predict(server, [photo, ("noise.png", buf.getvalue())], num_samples=64)
    assert status == 200 and "file too large" in body["results"][1]["error"]
    status, _, body = predict(server, [photo] * 5, num_samples=64)
    assert status in (400, 413) and "too many" in body["error"].lower(), body
    for field, value in (("num_samples", "many"), ("num_samples", 100000), ("steps", 0), ("map", "svg"),
                         ("seed", -1)):
        status, _, body = predict(server, [photo], **{field: value})
        assert status == 422 and field in body["error"], (field, body)
    status, _, body = request(server + "/api/predict", *multipart({"num_samples": 8}))
    assert status == 422 and "files" in body["error"]


def test_four_concurrent_uploads_p95_under_10_s(server):
    predict(server, photos(1), num_samples=256)  # warm-up (first-call allocations)
    batch = photos(4, offset=30)

    def one(path: Path) -> tuple[int, float]:
        start = time.perf_counter()
        status = predict(server, [path], timeout=60, map="html")[0]
        return status, time.perf_counter() - start

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(one, batch))
    statuses = [s for s, _ in outcomes]
    latencies = sorted(t for _, t in outcomes)
    p95 = float(np.percentile(latencies, 95))
    print(f"4 concurrent uploads: latencies {[round(t, 2) for t in latencies]} s, p95 {p95:.2f} s")
    assert statuses == [200] * 4
    assert p95 <= 10.0


def test_flood_beyond_the_queue_gets_503_with_retry_after():
    with running_server("--workers", "1", "--queue", "1") as base:
        photo = photos(1, offset=40)[0]
        body, ctype = multipart({"num_samples": 256, "steps": 32, "seed": 0}, [(photo.name, photo.read_bytes())])
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: request(base + "/api/predict", body, ctype, timeout=120), range(8)))
        codes = sorted(r[0] for r in replies)
        busy = [r for r in replies if r[0] == 503]
        assert codes.count(200) >= 2 and busy, codes  # one running + one queued succeed, the rest refused
        assert set(codes) <= {200, 503}
        for _, headers, payload in busy:
            assert int(headers["retry-after"]) >= 1 and "busy" in payload["error"]
        assert request(base + "/api/health")[2]["in_flight"] == 0


def test_pool_refuses_beyond_its_queue_and_recovers():
    import asyncio
    import threading

    from globeflow.web.pool import Busy, InferencePool

    release = threading.Event()

    async def scenario():
        pool = InferencePool(workers=1, queue_size=2)
        jobs = [asyncio.create_task(pool.run(lambda i=i: release.wait(10) and i)) for i in range(3)]
        await asyncio.sleep(0.05)
        assert pool.in_flight == 3
        with pytest.raises(Busy) as refused:
            await pool.run(lambda: 99)
        assert refused.value.retry_after_s >= 1
        release.set()
        assert await asyncio.gather(*jobs) == [0, 1, 2]
        assert pool.in_flight == 0 and await pool.run(lambda: 7) == 7
        pool.shutdown()

    asyncio.run(scenario())


def test_form_fields_are_validated_with_their_names():
    from starlette.datastructures import FormData

    from globeflow.web.app import BadRequest, ServerConfig, parse_params

    config = ServerConfig(num_samples=300)
    params = parse_params(FormData([("seed", "5"), ("cfg", "1.5"), ("map", "HTML")]), config)
    assert (params.num_samples, params.seed, params.cfg, params.map, params.samples) == (300, 5, 1.5, "html", False)
    # no operator default: the model's own sample and step counts (None reaches predict), shown on the page
    params = parse_params(FormData([("num_samples", "")]), ServerConfig())
    assert (params.num_samples, params.steps) == (None, None)
    from globeflow.web.page import render_page

    assert 'placeholder="64"' in render_page(model_id="m", modality="text", config=ServerConfig(model_samples=64))
    for field, value in (("num_samples", "0"), ("steps", "2.5"), ("cfg", "x"), ("map", "pdf")):
        with pytest.raises(BadRequest, match=field):
            parse_params(FormData([(field, value)]), config)
