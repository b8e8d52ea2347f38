"""``globeflow predict``: where were these photos (or texts) taken?"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Inputs per batch when --batch-size is not given. Texts: 256, sorted by length inside the batch, pad MiniLM's
# batches far less than 16 do (8 against 21 ms per caption): 21.5 against 15.5 texts/s on 2,000 captions
# (AMD EPYC, 2 threads; docs/text.md "Speed"). Photos: 16 decoded images at a time bound the memory.
PHOTO_BATCH, TEXT_BATCH = 16, 256

HELP = "geolocate photos or texts: best guess, uncertainty, countries, maps"
DESCRIPTION = """Geolocate photos (files, folders, globs) or texts with a generative model.

Each input gets one predicted distribution (--samples samples at the model's guidance weight)
and, from it, the radius of its 50 % and 90 % credible regions, its most probable country (the
largest share of the samples) and its localizability (mean log-density of the samples, nats per
steradian: higher = easier to locate); and a best guess, one point picked by the model's rule
(the sample of highest density, or of highest expected GeoScore: a compromise between the likely
places). The best guess's own country is reported apart from the most probable country: when the
model hesitates between continents the two differ. Unreadable files are skipped and reported.

examples:
  globeflow predict examples/                       # the shipped default model, offline
  globeflow predict photos/*.jpg --out results.csv --maps maps/
  globeflow predict photos/ --metadata truth.csv --out results.csv   # passes true_lat/true_lon through
  globeflow predict --text "Springfield" --maps maps/
  globeflow predict --texts captions.csv --text-columns TITLE,TAGS --out results.csv

exit status: 0 every readable input processed, 1 nothing processed, 2 usage error.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", type=str, metavar="PATH", help="photos, folders (recursive) or globs")
    p.add_argument("--text", action="append", default=None, metavar="TEXT", help="a text to geolocate (repeatable)")
    p.add_argument("--texts", type=Path, metavar="CSV", help="CSV of texts: id + text columns (or --text-columns)")
    p.add_argument("--text-columns", type=str, metavar="A,B,C",
                   help="CSV columns joined with '. ' as the text (e.g. TITLE,DESCRIPTION,TAGS)")
    p.add_argument("--model", type=str, default=None, metavar="ID|DIR",
                   help="checkpoint folder or Hub id (default: the shipped offline model for the input kind)")
    p.add_argument("--metadata", type=Path, metavar="CSV", help="truth by file name (id/img_id/path, lat, lon)")
    p.add_argument("--out", type=Path, metavar="FILE", help="results.csv or results.json")
    p.add_argument("--maps", type=Path, metavar="DIR", help="write one PNG density map per input here")
    p.add_argument("--samples", type=int, default=None,
                   help="samples per input (default: the count the model's regions were calibrated with: "
                        "128 for the shipped photo model, 64 for the text model; 512 for models that state none)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps of those samples (default: the count the model's regions were calibrated "
                        "with: 32, 16 for the text model); given, the best guess's own samples use it too")
    p.add_argument("--cfg", type=float, default=None,
                   help="guidance weight w ≥ −1 (default: the model's own; 0 for the official models)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); input i draws from seed + i")
    # globeflow.precision.PRECISIONS, spelled out: commands import no torch until they run (fast --help)
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto",
                   help="network arithmetic: auto (default) = bfloat16 matmuls (sampler and the shipped encoders) "
                        "where the CPU/GPU has them natively (same calibrated answers, ~2x faster), else "
                        "float32; fp32 = the official")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"inputs per batch (default {PHOTO_BATCH} photos, {TEXT_BATCH} texts: texts are sorted by "
                        "length inside a batch, so larger batches pad less)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


@dataclass
class Inputs:
    """What to predict: names, loadable items, truths; and what was skipped (name, reason)."""

    names: list[str] = field(default_factory=list)
    items: list = field(default_factory=list)  # paths (photos) or strings (texts)
    truths: list = field(default_factory=list)  # (lat, lon) or None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _expand(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    from globeflow.data.images import is_image_path

    found, missing = [], []
    for raw in paths:
        matches = sorted(glob.glob(raw, recursive=True)) if any(c in raw for c in "*?[") else [raw]
        if not matches:
            missing.append((raw, "no file matches this pattern"))
        for m in matches:
            path = Path(m)
            if path.is_dir():
                found += sorted(q for q in path.rglob("*") if q.is_file() and is_image_path(q))
            elif path.is_file():
                found.append(path)
            else:
                missing.append((m, "not found"))
    return found, missing


def _photo_inputs(args: argparse.Namespace) -> Inputs:
    from globeflow.data.sources import Item, Metadata

    paths, skipped = _expand(args.paths)
    meta = Metadata.from_csv(args.metadata) if args.metadata else None
    out = Inputs(skipped=skipped)
    for path in paths:
        truth = None
        if meta is not None:
            item = meta.apply(Item(id=path.name, path=path))
            truth = (item.lat, item.lon) if item.lat == item.lat else None
        out.names.append(str(path))
        out.items.append(path)
        out.truths.append(truth)
    return out


def _text_inputs(args: argparse.Namespace) -> Inputs:
    from globeflow.data.sources import iter_csv

    out = Inputs()
    for i, text in enumerate(args.text or []):
        out.names.append(f"text{i}" if len(args.text) > 1 else text)
        out.items.append(text)
        out.truths.append(None)
    if args.texts:
        columns = [c.strip() for c in args.text_columns.split(",")] if args.text_columns else None
        for item in iter_csv(args.texts, columns):
            if item.text is None:
                raise ValueError(f"{args.texts} has no text column; name one with --text-columns")
            if not item.text.strip():
                out.skipped.append((item.id, "empty text"))
                continue
            out.names.append(item.id)
            out.items.append(item.text)
            out.truths.append((item.lat, item.lon) if item.lat == item.lat else None)
    return out


def _usage_error(args: argparse.Namespace) -> str | None:
    has_text = bool(args.text) or args.texts is not None
    if bool(args.paths) == has_text:
        return "give photos (PATH...) or texts (--text / --texts), not both and not neither"
    if args.texts is not None and not args.texts.is_file():
        return f"--texts: no such file {args.texts}"
    if args.metadata is not None and not args.metadata.is_file():
        return f"--metadata: no such file {args.metadata}"
    if args.out is not None and args.out.suffix.lower() not in (".csv", ".json"):
        return f"--out must end in .csv or .json; got {args.out}"
    for name in ("samples", "steps", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be ≥ 1; got {getattr(args, name)}"
    if args.cfg is not None and not args.cfg >= -1:
        return f"--cfg must be ≥ −1; got {args.cfg}"
    return None


def _embed_batch(geo, inputs: Inputs, start: int, stop: int, precision: str):
    """Embeddings of inputs[start:stop] that load; returns (indices, embeddings) and records the skipped."""
    import numpy as np

    from globeflow.data.images import BadImage, load_image

    if geo.info.modality == "text":
        return list(range(start, stop)), geo.embed(inputs.items[start:stop], precision=precision)
    keep, images = [], []
    for i in range(start, stop):
        try:
            images.append(load_image(inputs.items[i]))
            keep.append(i)
        except BadImage as err:
            inputs.skipped.append((inputs.names[i], err.reason))
    if not images:
        return [], np.zeros((0, 0), dtype=np.float32)
    return keep, geo.encoder.embed(images, precision=precision)


def _predict_all(geo, inputs: Inputs, args: argparse.Namespace) -> list:
    from tqdm.auto import tqdm

    results = []
    bar = tqdm(total=len(inputs.items), disable=args.no_progress, desc="predict", unit="input")
    size = args.batch_size or (TEXT_BATCH if geo.info.modality == "text" else PHOTO_BATCH)
    for start in range(0, len(inputs.items), size):
        stop = min(start + size, len(inputs.items))
        keep, emb = _embed_batch(geo, inputs, start, stop, args.precision)
        if keep:  # input i draws from seed + i, whatever the batch size
            preds = geo.predict(emb, num_samples=args.samples, cfg=args.cfg, steps=args.steps,
                                seed=[args.seed + i for i in keep],
                                ids=[inputs.names[i] for i in keep], precision=args.precision)
            new = [_stated(_with_truth(p, inputs.truths[i]), geo, args.cfg) for p, i in zip(preds, keep)]
            results += new
            for pred in new if args.maps else ():
                _write_map(pred, args.maps)
        bar.update(stop - start)
    bar.close()
    return results


def _stated(pred, geo, cfg: float | None):
    """The prediction with the guidance weights of its samples and of a separate best guess recorded."""
    from globeflow.prediction import with_guidance

    return with_guidance(pred, cfg, geo.default_cfg, geo.info.best_guess_cfg)


def _with_truth(pred, truth):
    import dataclasses

    return pred if truth is None else dataclasses.replace(pred, truth=(float(truth[0]), float(truth[1])))


def _write_map(pred, folder: Path) -> None:
    from globeflow.maps import render_png

    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(pred.input_id)).stem)[:80] or "input"
    render_png(None, pred.samples, best_guess=pred.best_guess, truth=pred.truth, modes=pred.modes,
               title=f"{Path(str(pred.input_id)).name} - {pred.model}", out_path=folder / f"{stem}.png")


def _write(results: list, out: Path, photos: bool) -> None:
    from globeflow.prediction import PREDICTION_COLUMNS, TRUTH_COLUMNS

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps([r.to_dict() for r in results], indent=2))
        return
    key = "path" if photos else "id"
    columns = [key, *PREDICTION_COLUMNS[1:]]
    if any(r.truth is not None for r in results):
        columns += list(TRUTH_COLUMNS)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            row = r.to_row()
            row[key] = row.pop("id")
            writer.writerow(row)


OFFLINE_MODEL_NOTE = ("note: the offline default model mostly knows where photos are usually taken, not where "
                      "this one was; for real skill use the paper's models: --model nicolas-dufour/PLONK_YFCC "
                      "or nicolas-dufour/PLONK_OSV_5M (downloaded once)")


def _legend(results: list) -> list[str]:
    """What the columns are and which distribution each figure comes from."""
    if not results:
        return []
    r = results[0]
    w = "the model's default" if r.cfg is None else f"w = {r.cfg:g}"
    return [f"best guess: {r.best_guess_text}; 'guess in' = its country.",
            f"most probable country, r50/r90 (radii of the 50/90 % credible regions) and loc (localizability, "
            f"nats/sr) describe the same {len(r.samples)} samples at guidance {w}."]


def _summary(results: list, skipped: list[tuple[str, str]], limit: int = 20, note: str | None = None) -> str:
    lines = []
    for r in results[:limit]:
        lat, lon = r.best_guess
        name = Path(str(r.input_id)).name if r.input_id else "?"
        line = (f"{name[:40]:40s} {lat:8.3f} {lon:9.3f}  {r.guess_country or '--':^8s}  "
                f"{r.top_country or '--':>2s} {100 * r.top_country_prob:3.0f} %"
                f"  r50 {r.region(0.5).radius_km:6.0f} km  r90 {r.region(0.9).radius_km:6.0f} km"
                f"  loc {r.localizability:6.2f}")
        if r.truth is not None:
            line += f"  error {r.error_km:7.0f} km"
        lines.append(line)
    if len(results) > limit:
        lines.append(f"... and {len(results) - limit} more")
    header = (f"{'input':40s} {'lat':>8s} {'lon':>9s}  guess in  most probable  "
              "uncertainty (radius of the 50/90 % regions)")
    out = [header, *lines, *_legend(results), f"{len(results)} processed, {len(skipped)} skipped"]
    out += [f"  skipped {name}: {reason}" for name, reason in skipped]
    if note and results:
        out.append(note)
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    problem = _usage_error(args)
    if problem:
        print(f"globeflow predict: {problem}", file=sys.stderr)
        return 2
    from globeflow.data.sources import SourceError
    from globeflow.geolocator import Geolocator

    photos = bool(args.paths)
    try:
        inputs = _photo_inputs(args) if photos else _text_inputs(args)
        geo = Geolocator.from_pretrained(args.model, modality="image" if photos else "text")
        if geo.info.encoder:
            geo.encoder  # build it now: a missing encoder fails before any work, in one sentence
    except (SourceError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"globeflow predict: {err}", file=sys.stderr)
        return 2
    if geo.info.modality != ("image" if photos else "text"):
        print(f"globeflow predict: model {geo.model_id} geolocates {geo.info.modality} inputs", file=sys.stderr)
        return 2
    results = _predict_all(geo, inputs, args)
    if args.out is not None:
        _write(results, args.out, photos)
        if inputs.skipped:
            with open(args.out.with_suffix(".skipped.csv"), "w", newline="") as f:
                csv.writer(f).writerows([("path", "reason"), *inputs.skipped])
    offline = args.model is None and photos
    print(_summary(results, inputs.skipped, note=OFFLINE_MODEL_NOTE if offline else None))
    for where in (args.out, args.maps):
        if where is not None:
            print(f"wrote {where}")
    return 0 if results else 1
