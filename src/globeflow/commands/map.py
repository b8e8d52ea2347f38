"""``globeflow map``: the predicted distribution of one photo (or text) as a PNG and/or HTML map."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "draw the predicted location density of one photo or text (PNG, optional interactive HTML)"
DESCRIPTION = """Draw where on Earth one photo (or one text) was likely taken: the model's density on
an Equal Earth world map (Natural Earth land, drawn offline), its 50 % and 90 % regions, the
samples, the main modes and the best guess; the truth when given.

The density layer is a kernel density estimate of the samples (fast; the default), or with
--grid-resolution DEG the model's exact log-density on a lat/lon grid (one density evaluation
per cell: slow on a CPU, e.g. 10 gives 648 cells).

Examples:
  globeflow map photo.jpg --out map.png
  globeflow map photo.jpg --out map.png --html map.html --truth 48.858,2.294
  globeflow map --text "Sunset over the Bosphorus" --out istanbul.png --model path/to/text-model
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photo", nargs="?", type=Path, help="the photo (omit with --text)")
    parser.add_argument("--text", default=None, help="a text to locate instead of a photo (text model)")
    parser.add_argument("--out", type=Path, default=None, help="PNG file to write")
    parser.add_argument("--html", type=Path, default=None, help="self-contained interactive HTML file to write")
    parser.add_argument("--truth", default=None, metavar="LAT,LON", help="true location in degrees, e.g. 48.86,2.35")
    parser.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: the shipped model)")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples drawn (default 1000)")
    parser.add_argument("--steps", type=int, default=32, help="sampler steps (default 32)")
    parser.add_argument("--cfg", type=float, default=None,
                        help="guidance weight w ≥ −1 (default: the model's own; 0 for the official models)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--grid-resolution", type=float, default=0.0,
                        help="exact model density on a grid of this step in degrees, dividing 180 "
                             "(default 0: a KDE of the samples)")
    parser.add_argument("--title", default=None, help="map title (default: the input's name)")


def parse_truth(text: str | None) -> tuple[float, float] | None:
    """``"LAT,LON"`` in degrees → (lat, lon); ValueError naming the value when malformed."""
    if text is None:
        return None
    try:
        lat, lon = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--truth must be LAT,LON in degrees, e.g. 48.86,2.35; got {text!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 360):
        raise ValueError(f"--truth out of range (lat in [-90, 90], lon in [-180, 360]); got {text!r}")
    return lat, lon


def _usage_error(args: argparse.Namespace) -> str | None:
    if (args.photo is None) == (args.text is None):
        return "give exactly one of PHOTO or --text"
    if args.out is None and args.html is None:
        return "give --out map.png and/or --html map.html"
    if args.num_samples < 2 or args.steps < 1:
        return f"--num-samples must be >= 2 and --steps >= 1; got {args.num_samples}, {args.steps}"
    res = args.grid_resolution
    if res < 0 or (res > 0 and (abs(180 / res - round(180 / res)) > 1e-9 or res > 30)):
        return f"--grid-resolution must divide 180 (e.g. 0.5, 1, 2, 5) or be 0; got {res}"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _usage_error(args)
    try:
        truth = parse_truth(args.truth)
    except ValueError as err:
        problem = problem or str(err)
    if problem:
        print(f"globeflow map: {problem}", file=sys.stderr)
        return 2
    from globeflow.data.images import BadImage, load_image
    from globeflow.geolocator import Geolocator
    from globeflow.maps import LogDensityGrid, render_html, render_png

    modality = "text" if args.text is not None else "image"
    try:
        item = args.text if modality == "text" else load_image(args.photo)
    except BadImage as err:
        print(f"globeflow map: cannot use {args.photo}: {err.reason}", file=sys.stderr)
        return 1
    try:
        geolocator = Geolocator.from_pretrained(args.model, modality=modality)
        if geolocator.info.encoder:
            geolocator.encoder  # build it now: a missing encoder fails at once, in one sentence
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        print(f"globeflow map: cannot load model {args.model or '(default)'}: {err}", file=sys.stderr)
        return 2
    if geolocator.info.modality != modality:
        print(f"globeflow map: model {geolocator.model_id} takes {geolocator.info.modality} inputs, "
              f"not {modality}", file=sys.stderr)
        return 2
    name = args.photo.name if args.photo is not None else args.text
    embedding = geolocator.embed([item])
    (pred,) = geolocator.predict(embedding, num_samples=args.num_samples, steps=args.steps, cfg=args.cfg,
                                 seed=args.seed, ids=[name], truths=None if truth is None else [truth])
    density = None
    if args.grid_resolution > 0:
        density = LogDensityGrid.from_array(geolocator.log_prob_grid(embedding[0], args.grid_resolution, cfg=args.cfg))
    draw = dict(best_guess=pred.best_guess, truth=pred.truth, modes=pred.modes,
                title=args.title if args.title is not None else f"{name} — {geolocator.model_id}")
    if args.out is not None:
        render_png(density, pred.samples, out_path=args.out, **draw)
    if args.html is not None:
        render_html(density, pred.samples, out_path=args.html, **draw)
    lat, lon = pred.best_guess
    print(f"best guess {lat:.4f}, {lon:.4f}; 50 % region radius {pred.region(0.5).radius_km:,.0f} km; "
          f"top country {pred.top_country} ({100 * pred.top_country_prob:.0f} %)"
          + (f"; error {pred.error_km:,.0f} km" if truth else ""))
    for path in (args.out, args.html):
        if path is not None:
            print(f"wrote {path}")
    return 0
