"""The web app: an upload page and a JSON HTTP API around one :class:`~globeflow.geolocator.Geolocator`.

Stack: Starlette (ASGI routing, multipart parsing via python-multipart) served
by uvicorn. Both are small, typed, actively maintained and have no heavy
dependencies; the app needs three routes, not a framework. Inference is
CPU-bound, so it runs in a bounded thread pool (:mod:`globeflow.web.pool`)
while the event loop keeps refusing overflow with ``503`` + ``Retry-After``.

Routes:
  ``GET /``              the page (upload photos or type texts → maps and guesses)
  ``GET /api/health``    model and load status
  ``POST /api/predict``  multipart: ``files`` (photos) or ``text`` fields (text
                         models), and optional ``num_samples``, ``cfg``,
                         ``steps``, ``seed``, ``map`` (``none``|``png``|``html``),
                         ``samples`` (``1`` to include the samples)

Safety: uploads are bounded in size, count and pixels; no URL is ever
fetched; images go through :func:`globeflow.data.images.load_image`, which
never reads EXIF GPS. A bad file yields a per-file error entry while the
others are still processed.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from globeflow import maps
from globeflow.data.images import BadImage, load_image
from globeflow.prediction import with_guidance
from globeflow.web.page import render_page
from globeflow.web.pool import Busy, InferencePool

log = logging.getLogger(__name__)
MAP_KINDS = ("none", "png", "html")


@dataclass(frozen=True)
class ServerConfig:
    """Limits and defaults of one server."""

    max_file_mb: float = 10.0  # per uploaded file
    max_files: int = 8  # photos or texts per request
    max_pixels: int = 50_000_000  # per photo, checked from the header before decoding
    max_text_chars: int = 2000
    workers: int = 2  # inference threads
    queue_size: int = 8  # requests waiting for a worker before 503
    num_samples: int | None = None  # default samples per input (None: the model's, as in predict)
    model_samples: int | None = None  # the model's default_samples, shown on the page (None: read from it)
    max_num_samples: int = 4096
    max_steps: int = 256
    steps: int | None = None  # None: the model's default_steps
    cfg: float | None = None  # None: the model's default_cfg


class BadRequest(ValueError):
    """A request error reported as JSON ``{"error": ...}`` with ``status``."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Params:
    num_samples: int | None
    cfg: float | None
    steps: int | None
    seed: int | None
    map: str
    samples: bool


def _number(form: FormData, name: str, kind: type, default, low, high):
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return default
    if not isinstance(raw, str):
        raise BadRequest(f"{name} must be a form field, not a file")
    try:
        value = kind(raw.strip())
    except ValueError:
        raise BadRequest(f"{name} must be {'an integer' if kind is int else 'a number'}; got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be in [{low}, {high}]; got {value}")
    return value


def parse_params(form: FormData, config: ServerConfig) -> Params:
    """Validated inference parameters from the form; BadRequest names the offending field."""
    map_kind = str(form.get("map") or "none").strip().lower()
    if map_kind not in MAP_KINDS:
        raise BadRequest(f"map must be one of {', '.join(MAP_KINDS)}; got {map_kind!r}")
    return Params(
        num_samples=_number(form, "num_samples", int, config.num_samples, 1, config.max_num_samples),
        cfg=_number(form, "cfg", float, config.cfg, -1.0, 20.0),
        steps=_number(form, "steps", int, config.steps, 1, config.max_steps),
        seed=_number(form, "seed", int, None, 0, 2**62),
        map=map_kind,
        samples=str(form.get("samples") or "0").strip().lower() in ("1", "true", "yes"),
    )


async def read_photo(upload: UploadFile, config: ServerConfig) -> Image.Image:
    """One upload → RGB image, or BadImage(reason) for a file that is too big or not a usable photo."""
    limit = int(config.max_file_mb * 1024 * 1024)
    if upload.size is not None and upload.size > limit:
        raise BadImage(f"file too large: {upload.size / 1e6:.1f} MB (limit {config.max_file_mb:g} MB)")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise BadImage(f"file too large: over {config.max_file_mb:g} MB")
    try:
        with Image.open(io.BytesIO(data)) as header:
            w, h = header.size
    except Exception:  # noqa: BLE001 - load_image gives the precise reason below
        w = h = 0
    if w * h > config.max_pixels:
        raise BadImage(f"too large: {w}x{h} is over {config.max_pixels / 1e6:g} megapixels")
    return load_image(data)


def create_app(geolocator, config: ServerConfig | None = None) -> Starlette:
    """The ASGI app serving ``geolocator`` (anything with ``predict`` and ``info``, e.g. a Geolocator)."""
    config = config or ServerConfig()
    if config.model_samples is None:
        from globeflow.checkpoints import DEFAULT_SAMPLES

        config = replace(config, model_samples=int(getattr(geolocator, "default_samples", DEFAULT_SAMPLES)))
    pool = InferencePool(config.workers, config.queue_size)
    modality = getattr(getattr(geolocator, "info", None), "modality", "image")
    model_id = str(getattr(geolocator, "model_id", "model"))

    async def page(request: Request) -> Response:
        return HTMLResponse(render_page(model_id=model_id, modality=modality, config=config))

    async def health(request: Request) -> Response:
        return JSONResponse({
            "status": "ok", "model": model_id, "encoder": getattr(geolocator, "encoder_id", None),
            "modality": modality, "workers": pool.workers, "queue_size": pool.queue_size,
            "in_flight": pool.in_flight, "limits": asdict(config),
        })

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        try:
            _check_length(request, config)
            form = await request.form(max_files=config.max_files, max_fields=config.max_files + 16,
                                      max_part_size=max(1 << 20, 8 * config.max_text_chars))
        except BadRequest as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        except Exception as err:  # noqa: BLE001 - multipart errors (too many files, malformed body)
            return JSONResponse({"error": f"malformed upload: {getattr(err, 'detail', err)}"}, status_code=400)
        try:
            params = parse_params(form, config)
            inputs, errors = await _collect_inputs(form, config, modality)
            if not inputs:
                return JSONResponse({"error": "no valid input", "results": [e for _, e in errors]}, status_code=422)
            results = await pool.run(lambda: _infer(geolocator, modality, inputs, params))
        except BadRequest as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        except Busy as busy:
            return JSONResponse({"error": str(busy)}, status_code=503,
                                headers={"Retry-After": str(busy.retry_after_s)})
        finally:
            await form.close()
        ordered = [entry for _, entry in sorted(results + errors, key=lambda r: r[0])]
        return JSONResponse({"model": model_id, "results": ordered,
                             "elapsed_s": round(time.perf_counter() - start, 3)})

    app = Starlette(routes=[Route("/", page), Route("/api/health", health),
                            Route("/api/predict", predict, methods=["POST"])])
    app.state.pool = pool
    app.state.config = config
    return app


def _check_length(request: Request, config: ServerConfig) -> None:
    raw = request.headers.get("content-length")
    if raw is None:
        raise BadRequest("a Content-Length header is required", 411)
    limit = int(config.max_files * (config.max_file_mb * 1024 * 1024 + 64 * 1024) + 1024 * 1024)
    if not raw.isdigit() or int(raw) > limit:
        raise BadRequest(f"request too large: {raw} bytes (limit {limit})", 413)


Indexed = list[tuple[int, Any]]  # (position in the request, item)


async def _collect_inputs(form: FormData, config: ServerConfig, modality: str) -> tuple[Indexed, Indexed]:
    """Valid inputs as (position, (name, photo or text)) and error entries as (position, dict)."""
    inputs: Indexed = []
    errors: Indexed = []
    if modality == "text":
        texts = [t for t in form.getlist("text") if isinstance(t, str)]
        if not texts:
            raise BadRequest("this is a text model: send one or more 'text' fields")
        if len(texts) > config.max_files:
            raise BadRequest(f"too many texts: {len(texts)} (limit {config.max_files})", 413)
        for i, text in enumerate(texts):
            name = f"text {i + 1}"
            if not text.strip():
                errors.append((i, {"input": name, "error": "empty text"}))
            elif len(text) > config.max_text_chars:
                errors.append((i, {"input": name, "error": f"text over {config.max_text_chars} characters"}))
            else:
                inputs.append((i, (name, text)))
        return inputs, errors
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not uploads:
        raise BadRequest("send one or more photos as multipart 'files' fields")
    for i, upload in enumerate(uploads):
        name = upload.filename or f"file {i + 1}"
        try:
            inputs.append((i, (name, await read_photo(upload, config))))
        except BadImage as err:
            errors.append((i, {"input": name, "error": err.reason}))
    return inputs, errors


def _infer(geolocator, modality: str, inputs: Indexed, params: Params) -> Indexed:
    """Run the model on the valid inputs → (position, result dict) each (runs in a worker thread)."""
    kwargs = dict(num_samples=params.num_samples, cfg=params.cfg, steps=params.steps, seed=params.seed)
    items = [item for _, (_, item) in inputs]
    names = [name for _, (name, _) in inputs]
    # the model is thread-safe: its Jacobians are hand-written forward mode (no global AD state)
    if modality == "text":
        predictions = geolocator.predict(texts=items, ids=names, **kwargs)
    else:
        predictions = geolocator.predict(items, ids=names, **kwargs)
    results = []
    info = getattr(geolocator, "info", None)
    for (i, (name, _)), pred in zip(inputs, predictions):
        pred = with_guidance(pred, params.cfg, getattr(info, "default_cfg", None), getattr(info, "best_guess_cfg", None))
        entry = {"input": name, **pred.to_dict(include_samples=params.samples)}
        if params.map != "none":
            entry[f"map_{params.map}"] = _render_map(pred, name, params.map)
        results.append((i, entry))
    return results


def _render_map(pred, title: str, kind: str) -> str:
    """The prediction's map: a base64 PNG or a self-contained HTML page."""
    density = maps.kde_grid(pred.samples, resolution_deg=2.0)
    args = dict(best_guess=pred.best_guess, truth=pred.truth, modes=pred.modes, title=title)
    if kind == "png":
        return base64.b64encode(maps.render_png(density, pred.samples, width=900, **args)).decode("ascii")
    return maps.render_html(density, pred.samples, width=900, **args)
