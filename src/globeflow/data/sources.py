"""Inputs of ``globeflow embed``: image folders, CSV files and WebDataset tar shards → a stream of items.

Every source yields ``Item``s in a deterministic order, so fixed-size chunks of the stream
(shards) are the same on every run and every rank.

* folder: image files found recursively (sorted); id = path relative to the folder (POSIX).
* CSV: one row per item; ``id|img_id|path`` column (resolved by ``globeflow.columns``); image
  paths are relative to the CSV's folder; a ``text`` column, or ``text_columns`` joined with
  ". ", makes it a text source.
* WebDataset: ``.tar`` files (one, or a folder of them), read as a stream with the stdlib
  ``tarfile``; a sample is the consecutive members sharing a key: ``<key>.jpg|jpeg|png|webp``
  and optionally ``<key>.json`` with ``latitude``/``longitude`` (any alias of ``globeflow.columns``).
"""

from __future__ import annotations

import csv
import json
import math
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from globeflow.columns import resolve_columns

from .images import is_image_path

NAN = float("nan")


class SourceError(ValueError):
    """An input that cannot be read as a source (a usage error)."""


@dataclass
class Item:
    """One input: ``id``; where the photo is (``path`` or ``data`` bytes) or its ``text``;
    coordinates in degrees (NaN when unknown); ``group`` ("" when unknown)."""

    id: str
    path: Path | None = None
    data: bytes | None = None
    text: str | None = None
    lat: float = NAN
    lon: float = NAN
    group: str = ""


def parse_float(value: object) -> float:
    """A finite float from a CSV/JSON cell, NaN for blanks and junk."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return NAN
    return x if math.isfinite(x) else NAN


def _coords(record: dict, columns: dict[str, str]) -> tuple[float, float, str]:
    lat = parse_float(record.get(columns["lat"])) if "lat" in columns else NAN
    lon = parse_float(record.get(columns["lon"])) if "lon" in columns else NAN
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        lat = lon = NAN
    group = str(record.get(columns["group"]) or "") if "group" in columns else ""
    return lat, lon, group


def read_csv_rows(path: Path) -> tuple[list[dict], dict[str, str]]:
    """Rows of a CSV file and its resolved canonical columns; SourceError when unreadable or id-less."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = resolve_columns(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SourceError(f"cannot read CSV {path}: {err}") from err
    if "id" not in columns:
        raise SourceError(f"CSV {path} has no id column (one of id, img_id, path); columns: {reader.fieldnames}")
    return rows, columns


@dataclass
class Metadata:
    """Coordinates and groups by id, joined from ``--metadata CSV``."""

    by_id: dict[str, tuple[float, float, str]]

    @classmethod
    def from_csv(cls, path: Path) -> Metadata:
        rows, columns = read_csv_rows(path)
        if "lat" not in columns or "lon" not in columns:
            raise SourceError(f"metadata CSV {path} needs lat/latitude and lon/lng/longitude columns")
        return cls({row[columns["id"]].strip(): _coords(row, columns) for row in rows})

    def apply(self, item: Item) -> Item:
        """Fill ``item``'s coordinates/group by its id, else by its file name."""
        found = self.by_id.get(item.id) or self.by_id.get(Path(item.id).name)
        if found:
            item.lat, item.lon, item.group = found
        return item


def iter_folder(root: Path) -> Iterator[Item]:
    """Image files below ``root`` (recursive, sorted by relative path)."""
    paths = sorted((p for p in root.rglob("*") if p.is_file() and is_image_path(p)),
                   key=lambda p: p.relative_to(root).as_posix())
    for path in paths:
        yield Item(id=path.relative_to(root).as_posix(), path=path)


def text_of(row: dict, fields: Sequence[str]) -> str:
    """Non-empty ``fields`` of ``row`` joined with ". "."""
    return ". ".join(v.strip() for v in (row.get(f) or "" for f in fields) if v.strip())


def iter_csv(path: Path, text_columns: Sequence[str] | None = None) -> Iterator[Item]:
    """Rows of a CSV as image items (paths relative to the CSV) or, with text, as text items."""
    rows, columns = read_csv_rows(path)
    fields = list(text_columns or ([columns["text"]] if "text" in columns else []))
    if rows and fields:
        lower = {k.lower(): k for k in rows[0]}
        missing = [f for f in fields if f.lower() not in lower]
        if missing:
            raise SourceError(f"--text-columns {','.join(missing)} not in {path}; columns: {list(rows[0])}")
        fields = [lower[f.lower()] for f in fields]
    for row in rows:
        lat, lon, group = _coords(row, columns)
        key = (row.get(columns["id"]) or "").strip()
        if fields:
            yield Item(id=key, text=text_of(row, fields), lat=lat, lon=lon, group=group)
        else:
            yield Item(id=key, path=path.parent / key, lat=lat, lon=lon, group=group)


def is_text_csv(path: Path, text_columns: Sequence[str] | None) -> bool:
    """True when the CSV is a text source (``text_columns`` given or a ``text`` column present)."""
    if text_columns:
        return True
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SourceError(f"cannot read CSV {path}: {err}") from err
    return "text" in resolve_columns(header)


WDS_IMAGE_EXT = ("jpg", "jpeg", "png", "webp")


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset key and extension: the key is everything before the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _sample_item(key: str, files: dict[str, bytes]) -> Item:
    image_ext = next((e for e in WDS_IMAGE_EXT if e in files), None)
    item = Item(id=key, data=files.get(image_ext, b"") if image_ext else None)
    if "json" in files:
        try:
            record = json.loads(files["json"])
        except (ValueError, UnicodeDecodeError):
            record = {}
        if isinstance(record, dict):
            item.lat, item.lon, item.group = _coords(record, resolve_columns(record))
    return item


def iter_tar(path: Path) -> Iterator[Item]:
    """Samples of one WebDataset tar, streamed (members are read in order, never all at once)."""
    key, files = None, {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name_key, ext = _split_member(member.name)
                if name_key != key and key is not None:
                    yield _sample_item(key, files)
                    files = {}
                key = name_key
                files[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as err:
        raise SourceError(f"cannot read tar {path}: {err}") from err
    if key is not None:
        yield _sample_item(key, files)


def tar_files(source: Path) -> list[Path]:
    """The tar shards of ``source`` (a .tar file, or a folder holding .tar files)."""
    if source.is_file():
        return [source]
    return sorted(source.glob("*.tar"))


def kind_of(source: Path, text_columns: Sequence[str] | None = None) -> str:
    """``"folder"``, ``"csv"``, ``"text-csv"`` or ``"webdataset"``; SourceError when unusable."""
    if not source.exists():
        raise SourceError(f"input {source} does not exist")
    if source.is_file():
        suffix = source.suffix.lower()
        if suffix == ".csv":
            return "text-csv" if is_text_csv(source, text_columns) else "csv"
        if suffix == ".tar":
            return "webdataset"
        raise SourceError(f"input {source} is neither a folder, a .csv nor a .tar file")
    has_images = any(p.is_file() and is_image_path(p) for p in source.rglob("*"))
    if not has_images and tar_files(source):
        return "webdataset"
    return "folder"


def iter_items(source: Path, kind: str, text_columns: Sequence[str] | None = None,
               metadata: Metadata | None = None) -> Iterator[Item]:
    """All items of ``source`` in a fixed order, joined with ``metadata`` when given."""
    if kind == "folder":
        items: Iterator[Item] = iter_folder(source)
    elif kind in ("csv", "text-csv"):
        items = iter_csv(source, text_columns if kind == "text-csv" else None)
    elif kind == "webdataset":
        items = (item for tar in tar_files(source) for item in iter_tar(tar))
    else:
        raise SourceError(f"unknown source kind {kind!r}")
    for item in items:
        yield metadata.apply(item) if metadata else item
