"""``globeflow serve``: the web app and JSON API on a local address."""

from __future__ import annotations

import argparse
import sys

HELP = "serve the upload page and the JSON API (POST /api/predict, GET /api/health)"
DESCRIPTION = """Serve the web app: upload photos (or type texts for a text model) and get a density
map, the best guess, the main modes, uncertainty radii and country probabilities.

The JSON API is documented in docs/web.md. Inference runs in a bounded pool: when
--workers jobs run and --queue more wait, further requests get 503 with Retry-After.
No URL is ever fetched; EXIF GPS tags are ignored.

Examples:
  globeflow serve                                  # the shipped default model on 127.0.0.1:8000
  globeflow serve --port 8080 --model path/to/checkpoint
  curl -F files=@photo.jpg http://127.0.0.1:8000/api/predict
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: the shipped model)")
    parser.add_argument("--text", action="store_true", help="serve the shipped default text model")
    parser.add_argument("--workers", type=int, default=2, help="inference threads (default 2)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="PyTorch threads per inference (default 1: one request per core, no oversubscription)")
    parser.add_argument("--queue", type=int, default=8, help="requests waiting before 503 (default 8)")
    parser.add_argument("--max-file-mb", type=float, default=10.0, help="upload limit per file in MB (default 10)")
    parser.add_argument("--max-files", type=int, default=8, help="photos or texts per request (default 8)")
    parser.add_argument("--max-megapixels", type=float, default=50.0, help="pixel limit per photo (default 50)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="default samples per input (default: the model's, as in predict)")


def _check(args: argparse.Namespace) -> str | None:
    if not 0 <= args.port <= 65535:
        return f"--port must be in 0..65535; got {args.port}"
    for name in ("workers", "torch_threads", "max_files", "num_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}"
    if args.queue < 0:
        return f"--queue must be >= 0; got {args.queue}"
    if args.max_file_mb <= 0 or args.max_megapixels <= 0:
        return "--max-file-mb and --max-megapixels must be > 0"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        print(f"globeflow serve: {problem}", file=sys.stderr)
        return 2
    import torch
    import uvicorn
    from PIL import Image

    from globeflow.geolocator import Geolocator
    from globeflow.web import ServerConfig, create_app

    try:
        geolocator = Geolocator.from_pretrained(args.model, modality="text" if args.text else "image")
        if geolocator.info.encoder:
            geolocator.encoder  # build it now: a missing encoder fails at once, in one sentence
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        print(f"globeflow serve: cannot load model {args.model or '(default)'}: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.torch_threads)
    # warm-up: build the encoder, the geocoder and the kernels once, before the first request
    if geolocator.info.modality == "text":
        geolocator.predict(texts=["warm-up"], num_samples=16, steps=2, seed=0)
    else:
        geolocator.predict([Image.new("RGB", (64, 64), (128, 128, 128))], num_samples=16, steps=2, seed=0)
    config = ServerConfig(max_file_mb=args.max_file_mb, max_files=args.max_files,
                          max_pixels=int(args.max_megapixels * 1e6), workers=args.workers,
                          queue_size=args.queue, num_samples=None if args.num_samples is None else min(args.num_samples, 4096))
    app = create_app(geolocator, config)
    print(f"globeflow serve: model {geolocator.model_id} on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                limit_concurrency=64 + config.queue_size, timeout_keep_alive=5)
    return 0
