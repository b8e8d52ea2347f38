"""``globeflow embed``: photos (or captions) → a restartable, shardable embedding store."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from globeflow.data.images import BadImage, load_image
from globeflow.data.sources import Item, Metadata, SourceError, iter_items, kind_of
from globeflow.data.store import (StoreArrays, StoreError, finalize_store, items_digest, shard_meta,
                                  shard_name, write_shard)
from globeflow.encoders import (DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, ENCODERS, Encoder,
                                EncoderUnavailable, canonical_id, get_encoder, modality)

log = logging.getLogger(__name__)

HELP = "embed photos (folder, CSV or WebDataset tars) or captions into an embedding store"
DESCRIPTION = f"""{HELP}.

INPUT is an image folder (searched recursively), a CSV (photo paths in an id|img_id|path
column, relative to the CSV, with lat/lon columns; or captions in a `text` column or the
--text-columns), or WebDataset .tar shards (a .tar file or a folder of them: <key>.jpg +
<key>.json with latitude/longitude).

Work is cut into shards of --shard-size items, each written atomically: re-running the same
command after an interruption skips the finished shards. With --rank R --world-size W (default:
torchrun's RANK/WORLD_SIZE) a process embeds only shards i with i % W == R; all ranks write into
the same STORE, whose store.json is rebuilt from the shards present.

Encoders: {', '.join(ENCODERS)} (image default {DEFAULT_IMAGE_ENCODER}, text default {DEFAULT_TEXT_ENCODER}).

examples:
  globeflow embed photos/ --metadata photos.csv --out stores/photos
  globeflow embed captions.csv --text-columns TITLE,DESCRIPTION,TAGS --out stores/captions
  torchrun --nproc-per-node 4 -m globeflow.cli embed osv5m/train/ --encoder dinov2 --out stores/osv5m
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="image folder, CSV file, or WebDataset .tar (or folder of .tar)")
    parser.add_argument("--out", type=Path, required=True, help="store folder to create or complete")
    parser.add_argument("--metadata", type=Path, help="CSV of coordinates/groups joined by id (or file name)")
    parser.add_argument("--encoder", help=f"encoder id: {', '.join(ENCODERS)}")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="items per forward pass (default: the encoder's own; efficientnet-lite0 8 on a CPU, 32 for most)")
    parser.add_argument("--shard-size", type=int, default=512, help="items per store shard (default 512)")
    parser.add_argument("--text-columns", help="CSV columns joined with '. ' as the text to embed, e.g. TITLE,TAGS")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="embedding storage type (loading always returns float32)")
    parser.add_argument("--device", help="torch device (default: cuda:LOCAL_RANK when a GPU is visible, else cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--rank", type=int, default=int(os.environ.get("RANK", 0)), help="this process's rank")
    parser.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 1)),
                        help="number of processes sharing the work")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


class UsageError(ValueError):
    """A bad argument value (exit status 2)."""


def _choose_encoder(requested: str | None, kind: str) -> str:
    wanted = "text" if kind == "text-csv" else "image"
    if requested is None:
        return DEFAULT_TEXT_ENCODER if wanted == "text" else DEFAULT_IMAGE_ENCODER
    try:
        encoder_id = canonical_id(requested)
    except KeyError as err:
        raise UsageError(f"--encoder: {err.args[0]}") from err
    if modality(encoder_id) != wanted:
        raise UsageError(f"--encoder {requested} embeds {modality(encoder_id)}, but INPUT holds {wanted}")
    return encoder_id


def _check_args(args: argparse.Namespace) -> None:
    for name in ("batch_size", "shard_size", "world_size", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.rank < args.world_size:
        raise UsageError(f"--rank must be in [0, {args.world_size}), got {args.rank}")
    if args.metadata is not None and not args.metadata.is_file():
        raise UsageError(f"--metadata {args.metadata} does not exist")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")


def _default_device() -> str:
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return "cpu"


def _check_existing(out: Path, encoder: Encoder, shard_size: int, dtype: str) -> None:
    """Refuse to mix a different encoder, shard size or dtype into an existing store."""
    manifest = out / "store.json"
    if not manifest.is_file():
        return
    info = json.loads(manifest.read_text())
    have = (info.get("encoder"), info.get("encoder_version"), info.get("shard_size"), info.get("dtype"))
    want = (encoder.id, encoder.version, shard_size, dtype)
    if have != want:
        raise UsageError(f"--out {out} already holds a store made with encoder/version/shard size/dtype {have}, "
                         f"not {want}; choose another --out or delete it")


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _is_done(out: Path, index: int, encoder: Encoder, digest: str, dtype: str) -> bool:
    path = out / shard_name(index)
    if not path.is_file():
        return False
    try:
        meta = shard_meta(path)
    except StoreError:
        return False
    return (meta["encoder"], meta["encoder_version"], meta["items_digest"], meta["dtype"]) == \
        (encoder.id, encoder.version, digest, dtype)


def _where(item: Item) -> str:
    return str(item.path) if item.path is not None else item.id


def _load(item: Item, text: bool) -> object:
    """The encoder input of ``item`` (PIL image or string); BadImage(reason) when unusable."""
    if text:
        if not item.text:
            raise BadImage("empty text")
        return item.text
    if item.path is None and item.data is None:
        raise BadImage("no image in sample")
    return load_image(item.path if item.path is not None else item.data)


def embed_chunk(chunk: list[Item], encoder: Encoder, batch_size: int,
                bar: tqdm) -> tuple[StoreArrays, list[tuple[str, str]]]:
    """Embed one shard's items, batch by batch; returns its rows and (path, reason) of skipped items."""
    kept: list[Item] = []
    vectors: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    batch: list[object] = []
    text = encoder.modality == "text"
    for pos, item in enumerate(chunk):
        try:
            batch.append(_load(item, text))
            kept.append(item)
        except BadImage as err:
            skipped.append((_where(item), err.reason))
            log.info("skipped %s: %s", _where(item), err.reason)
        if len(batch) == batch_size or (pos == len(chunk) - 1 and batch):
            vectors.append(encoder.embed(batch, batch_size=batch_size))
            batch = []
        bar.update(1)
    emb = np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)
    arrays = StoreArrays(np.array([i.id for i in kept], dtype=str), emb,
                         np.array([[i.lat, i.lon] for i in kept], dtype=np.float64).reshape(-1, 2),
                         np.array([i.group for i in kept], dtype=str))
    return arrays, skipped


def _clean_tmp(out: Path, rank: int, world: int) -> None:
    """Remove temporary files left by a killed run of this rank (other ranks' files are left alone)."""
    for tmp in out.glob(".shard-*.parquet.*.tmp"):
        index = int(tmp.name.split("-")[1].split(".")[0])
        if index % world == rank:
            tmp.unlink(missing_ok=True)


def embed(args: argparse.Namespace, kind: str, encoder: Encoder) -> dict:
    """Embed this rank's shards of INPUT into ``args.out``; returns the rebuilt store.json."""
    metadata = Metadata.from_csv(args.metadata) if args.metadata else None
    text_columns = [c.strip() for c in args.text_columns.split(",") if c.strip()] if args.text_columns else None
    items: Iterable[Item] = iter_items(args.input, kind, text_columns, metadata)
    total = None
    if kind != "webdataset":
        items = list(items)
        total = len(items)
    args.out.mkdir(parents=True, exist_ok=True)
    _clean_tmp(args.out, args.rank, args.world_size)
    count, done, redone = 0, 0, 0
    with tqdm(total=total, unit="item", desc=f"embed rank {args.rank}", disable=args.no_progress) as bar:
        for index, chunk in enumerate(_chunks(items, args.shard_size)):
            count = index + 1
            digest = items_digest([i.id for i in chunk])
            if index % args.world_size != args.rank or _is_done(args.out, index, encoder, digest, args.dtype):
                done += index % args.world_size == args.rank
                bar.update(len(chunk))
                continue
            arrays, skipped = embed_chunk(chunk, encoder, args.batch_size or encoder.batch_size, bar)
            write_shard(args.out, index, arrays, encoder=encoder.id, encoder_version=encoder.version,
                        dtype=args.dtype, item_ids=[i.id for i in chunk], skipped=skipped)
            redone += 1
            log.info("wrote %s (%d rows, %d skipped)", shard_name(index), len(arrays), len(skipped))
    info = finalize_store(args.out, encoder=encoder.id, encoder_version=encoder.version, expected_shards=count,
                          extra={"shard_size": args.shard_size, "input": str(args.input), "kind": kind})
    info["_this_run"] = {"embedded_shards": redone, "already_done": done}
    return info


def _report(info: dict, out: Path) -> None:
    run = info.pop("_this_run")
    print(f"{out}: {info['rows']} rows ({info['labelled']} labelled, {info['unlabelled']} unlabelled), "
          f"{info['skipped']} skipped; encoder {info['encoder']} ({info['dim']}-d); "
          f"{len(info['shards'])}/{info['expected_shards']} shards "
          f"({run['embedded_shards']} embedded now, {run['already_done']} already done)")
    unlabelled = (out / "unlabelled.csv").read_text().splitlines()[1:]
    if unlabelled:
        print(f"unlabelled ({len(unlabelled)}): " + ", ".join(unlabelled[:20]) + (" …" if len(unlabelled) > 20 else ""))
    if info["skipped"]:
        print(f"skipped ({info['skipped']}): see {out / 'skipped.csv'}")
    if not info["complete"]:
        print(f"incomplete: {len(info['shards'])} of {info['expected_shards']} shards written "
              "(other ranks still running, or re-run this command)")


def run(args: argparse.Namespace) -> int:
    try:
        _check_args(args)
        kind = kind_of(args.input, args.text_columns.split(",") if args.text_columns else None)
        if args.text_columns and kind != "text-csv":
            raise UsageError(f"--text-columns needs a CSV INPUT, but {args.input} is a {kind}")
        encoder_id = _choose_encoder(args.encoder, kind)
    except (UsageError, SourceError) as err:
        print(f"globeflow embed: error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        encoder = get_encoder(encoder_id, device=args.device or _default_device())
    except EncoderUnavailable as err:
        print(f"globeflow embed: error: {err}", file=sys.stderr)
        return 1
    try:
        _check_existing(args.out, encoder, args.shard_size, args.dtype)
        info = embed(args, kind, encoder)
    except (UsageError, SourceError) as err:
        print(f"globeflow embed: error: {err}", file=sys.stderr)
        return 2
    except StoreError as err:
        print(f"globeflow embed: error: {err}", file=sys.stderr)
        return 1
    _report(info, args.out)
    return 0 if info["rows"] > 0 else 1
