"""The embedding store: a folder of Parquet shards plus ``store.json``.

Layout of ``STORE/``::

    shard-00000.parquet   columns id (string), embedding (fixed_size_list<float32|float16>[dim]),
                          lat, lon (float64 degrees, null when unlabelled), group (string, nullable);
                          schema metadata b"globeflow" = JSON {encoder, encoder_version, shard,
                          items_digest, skipped: [[path, reason], ...]}
    store.json            encoder, encoder_version, dim, dtype, rows, labelled, shards, created_by …
    skipped.csv           path, reason — items that could not be embedded
    unlabelled.csv        id — embedded rows without coordinates

Every file is written atomically (temporary file + ``os.replace``), so a killed writer never
leaves a half shard behind. ``store.json`` is (re)built from whatever shards exist, which is how
several ranks writing disjoint shards into one folder end up with a single store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT = "globeflow-embeddings/1"
META_KEY = b"globeflow"
SHARD_RE = re.compile(r"^shard-(\d{5,})\.parquet$")
DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


class StoreError(RuntimeError):
    """A missing, corrupt or inconsistent embedding store."""


@dataclass
class StoreArrays:
    """Rows of a store: ``ids`` str (N,), ``embeddings`` float32 (N, D),
    ``latlon`` float64 (N, 2) degrees (NaN when unlabelled), ``groups`` str (N,) ("" when none)."""

    ids: np.ndarray
    embeddings: np.ndarray
    latlon: np.ndarray
    groups: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.ids = np.asarray(self.ids, dtype=str).reshape(n)
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != n:
            raise ValueError(f"embeddings must be (N={n}, D), got {self.embeddings.shape}")
        self.latlon = np.asarray(self.latlon, dtype=np.float64).reshape(n, 2)
        self.groups = np.asarray(self.groups, dtype=str).reshape(n)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labelled(self) -> np.ndarray:
        """Boolean (N,): rows whose lat and lon are both finite."""
        return np.isfinite(self.latlon).all(axis=1)

    def select(self, mask: np.ndarray) -> StoreArrays:
        """The rows where ``mask`` (bool (N,) or index array) selects."""
        return StoreArrays(self.ids[mask], self.embeddings[mask], self.latlon[mask], self.groups[mask])

    @staticmethod
    def concat(parts: Sequence[StoreArrays], dim: int) -> StoreArrays:
        """Concatenate rows of several parts (an empty result keeps width ``dim``)."""
        if not parts:
            return StoreArrays(np.array([], dtype=str), np.zeros((0, dim), np.float32),
                               np.zeros((0, 2)), np.array([], dtype=str))
        return StoreArrays(np.concatenate([p.ids for p in parts]), np.concatenate([p.embeddings for p in parts]),
                           np.concatenate([p.latlon for p in parts]), np.concatenate([p.groups for p in parts]))


# ---------------------------------------------------------------- atomic files

def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


# ---------------------------------------------------------------- shards

def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.parquet``."""
    return f"shard-{index:05d}.parquet"


def items_digest(ids: Sequence[str]) -> str:
    """A fingerprint of a shard's input items (their ids, in order)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _table(arrays: StoreArrays, dtype: str) -> pa.Table:
    n, dim = arrays.embeddings.shape
    storage = arrays.embeddings.astype(np.float16 if dtype == "float16" else np.float32).reshape(-1)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(storage, type=DTYPES[dtype]), dim)
    lat, lon = arrays.latlon[:, 0], arrays.latlon[:, 1]
    return pa.table({
        "id": pa.array(arrays.ids.tolist(), type=pa.string()),
        "embedding": embedding,
        "lat": pa.array(lat, type=pa.float64(), mask=~np.isfinite(lat)),
        "lon": pa.array(lon, type=pa.float64(), mask=~np.isfinite(lon)),
        "group": pa.array([g or None for g in arrays.groups.tolist()], type=pa.string()),
    })


def write_shard(store_dir: Path, index: int, arrays: StoreArrays, *, encoder: str, encoder_version: str,
                dtype: str = "float32", item_ids: Sequence[str] | None = None,
                skipped: Sequence[tuple[str, str]] = ()) -> Path:
    """Write one shard atomically; ``item_ids`` (all inputs of the shard, embedded or skipped) are fingerprinted."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    meta = {"encoder": encoder, "encoder_version": encoder_version, "shard": index, "dtype": dtype,
            "dim": int(arrays.embeddings.shape[1]),
            "items_digest": items_digest(list(item_ids) if item_ids is not None else arrays.ids.tolist()),
            "skipped": [list(s) for s in skipped]}
    table = _table(arrays, dtype)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    path = Path(store_dir) / shard_name(index)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


def shard_meta(path: Path) -> dict:
    """The globeflow metadata of a shard (plus ``rows`` and ``labelled``); StoreError if unreadable."""
    try:
        pf = pq.ParquetFile(path)
        meta = json.loads(pf.schema_arrow.metadata[META_KEY])
        stats = pq.read_table(path, columns=["lat", "lon"])
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError/KeyError… for damaged files
        raise StoreError(f"corrupt shard {path}: {err}") from err
    meta["rows"] = stats.num_rows
    meta["labelled"] = stats.num_rows - max(stats["lat"].null_count, stats["lon"].null_count)
    return meta


def read_shard(path: Path, labelled_only: bool = True) -> StoreArrays:
    """Rows of one shard as StoreArrays (float32 embeddings whatever the storage dtype)."""
    try:
        table = pq.read_table(path)
        emb = table.column("embedding").combine_chunks()
        dim = emb.type.list_size
        values = emb.flatten().to_numpy(zero_copy_only=False)
    except Exception as err:
        raise StoreError(f"corrupt shard {path}: {err}") from err
    latlon = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in ("lat", "lon")], 1)
    groups = np.array([g or "" for g in table.column("group").to_pylist()], dtype=str)
    arrays = StoreArrays(np.array(table.column("id").to_pylist(), dtype=str),
                         values.astype(np.float32).reshape(-1, dim), latlon, groups)
    return arrays.select(arrays.labelled) if labelled_only else arrays


def list_shards(store_dir: Path) -> list[Path]:
    """Shard files present in ``store_dir``, in index order."""
    return sorted(p for p in Path(store_dir).iterdir() if SHARD_RE.match(p.name))


# ---------------------------------------------------------------- store.json

def _versions() -> dict[str, str]:
    out = {}
    for dist in ("globeflow", "torch", "pyarrow", "numpy", "pillow"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def finalize_store(store_dir: Path, *, encoder: str, encoder_version: str,
                   expected_shards: int | None = None, extra: dict | None = None) -> dict:
    """(Re)write ``store.json``, ``skipped.csv`` and ``unlabelled.csv`` from the shards present.

    Only shards written by ``encoder``/``encoder_version`` are accepted (StoreError otherwise).
    Returns the store.json dictionary; ``complete`` tells whether all ``expected_shards`` exist.
    """
    store_dir = Path(store_dir)
    shards, skipped, unlabelled, dims, dtypes = [], [], [], set(), set()
    for path in list_shards(store_dir):
        meta = shard_meta(path)
        if (meta["encoder"], meta["encoder_version"]) != (encoder, encoder_version):
            raise StoreError(f"{path} was written by encoder {meta['encoder']} {meta['encoder_version']}, "
                             f"not {encoder} {encoder_version}")
        dims.add(meta["dim"])
        dtypes.add(meta["dtype"])
        skipped += [tuple(s) for s in meta["skipped"]]
        if meta["labelled"] < meta["rows"]:
            arrays = read_shard(path, labelled_only=False)
            unlabelled += arrays.ids[~arrays.labelled].tolist()
        shards.append({"file": path.name, "rows": meta["rows"], "labelled": meta["labelled"],
                       "items_digest": meta["items_digest"]})
    if len(dims) > 1 or len(dtypes) > 1:
        raise StoreError(f"shards in {store_dir} disagree on width {sorted(dims)} or dtype {sorted(dtypes)}")
    info = {
        "format": FORMAT, "encoder": encoder, "encoder_version": encoder_version,
        "dim": dims.pop() if dims else None, "dtype": dtypes.pop() if dtypes else "float32",
        "rows": sum(s["rows"] for s in shards), "labelled": sum(s["labelled"] for s in shards),
        "unlabelled": len(unlabelled), "skipped": len(skipped),
        "shards": shards, "expected_shards": expected_shards,
        "complete": expected_shards is None or len(shards) == expected_shards,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "created_by": _versions(), **(extra or {}),
    }
    atomic_write_bytes(store_dir / "skipped.csv", _csv_bytes(["path", "reason"], skipped))
    atomic_write_bytes(store_dir / "unlabelled.csv", _csv_bytes(["id"], [[i] for i in unlabelled]))
    atomic_write_bytes(store_dir / "store.json", (json.dumps(info, indent=1) + "\n").encode())
    return info


def write_store(path: str | Path, arrays: StoreArrays, encoder: str, encoder_version: str,
                shard_size: int = 4096, dtype: str = "float32") -> EmbeddingStore:
    """Write ``arrays`` as a new store at ``path`` (shards of ``shard_size`` rows) and open it."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    store_dir = Path(path)
    store_dir.mkdir(parents=True, exist_ok=True)
    for old in list_shards(store_dir):
        old.unlink()
    n = len(arrays)
    count = max(1, -(-n // shard_size))
    for i in range(count):
        part = arrays.select(slice(i * shard_size, (i + 1) * shard_size))
        write_shard(store_dir, i, part, encoder=encoder, encoder_version=encoder_version, dtype=dtype)
    finalize_store(store_dir, encoder=encoder, encoder_version=encoder_version, expected_shards=count)
    return EmbeddingStore(store_dir)


class EmbeddingStore:
    """Read access to a store folder written by ``write_store`` or ``globeflow embed``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest = self.path / "store.json"
        if not manifest.is_file():
            raise StoreError(f"no embedding store at {self.path} (missing store.json); "
                             "create one with `globeflow embed INPUT --out STORE`")
        try:
            self.info = json.loads(manifest.read_text())
            self.encoder: str = self.info["encoder"]
            self.encoder_version: str = self.info["encoder_version"]
            self.dim: int = int(self.info["dim"] or 0)
            self._rows = int(self.info["rows"])
            self.shards: list[Path] = [self.path / s["file"] for s in self.info["shards"]]
        except (ValueError, KeyError, TypeError) as err:
            raise StoreError(f"corrupt store.json in {self.path}: {err}") from err
        missing = [p.name for p in self.shards if not p.is_file()]
        if missing:
            raise StoreError(f"store {self.path} lists missing shards: {', '.join(missing[:5])}")

    def __len__(self) -> int:
        return self._rows

    @property
    def complete(self) -> bool:
        """False while some ranks of a multi-process embed have not written their shards yet."""
        return bool(self.info.get("complete", True))

    def iter_shards(self, labelled_only: bool = True) -> Iterator[StoreArrays]:
        """Stream the store one shard at a time (for stores larger than memory)."""
        for path in self.shards:
            arrays = read_shard(path, labelled_only)
            if self.dim and arrays.embeddings.shape[1] != self.dim and len(arrays):
                raise StoreError(f"{path} has width {arrays.embeddings.shape[1]}, store.json says {self.dim}")
            yield arrays

    def load(self, labelled_only: bool = True) -> StoreArrays:
        """All rows (labelled ones only by default) in shard order."""
        return StoreArrays.concat(list(self.iter_shards(labelled_only)), self.dim)

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of the items that could not be embedded."""
        path = self.path / "skipped.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return [(r["path"], r["reason"]) for r in csv.DictReader(f)]

    def unlabelled(self) -> list[str]:
        """Ids of embedded rows without coordinates."""
        path = self.path / "unlabelled.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return [r["id"] for r in csv.DictReader(f)]

    def __repr__(self) -> str:
        return f"<EmbeddingStore {self.path} encoder={self.encoder} rows={len(self)} dim={self.dim}>"
