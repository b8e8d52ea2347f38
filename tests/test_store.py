"""Embedding store: round trip, labelled filtering, streaming, float16 storage and corruption errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from globeflow.data.store import EmbeddingStore, StoreArrays, StoreError, write_store


def _arrays(n: int = 10, dim: int = 6, seed: int = 0) -> StoreArrays:
    rng = np.random.default_rng(seed)
    latlon = np.column_stack([rng.uniform(-90, 90, n), rng.uniform(-180, 180, n)])
    latlon[[2, 7]] = np.nan  # two unlabelled rows
    return StoreArrays(ids=np.array([f"img_{i}.jpg" for i in range(n)]),
                       embeddings=rng.normal(size=(n, dim)).astype(np.float32),
                       latlon=latlon, groups=np.array([f"user{i % 3}" if i != 4 else "" for i in range(n)]))


def test_round_trip(tmp_path):
    arrays = _arrays()
    store = write_store(tmp_path / "s", arrays, "efficientnet-lite0", "v1", shard_size=4)
    assert (store.encoder, store.encoder_version, store.dim, len(store)) == ("efficientnet-lite0", "v1", 6, 10)
    assert [p.name for p in store.shards] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    full = store.load(labelled_only=False)
    np.testing.assert_array_equal(full.ids, arrays.ids)
    np.testing.assert_array_equal(full.embeddings, arrays.embeddings)
    np.testing.assert_array_equal(full.latlon, arrays.latlon)  # NaNs compare equal here
    np.testing.assert_array_equal(full.groups, arrays.groups)
    assert full.embeddings.dtype == np.float32 and full.latlon.dtype == np.float64

    labelled = store.load()
    assert list(labelled.ids) == [f"img_{i}.jpg" for i in range(10) if i not in (2, 7)]
    assert np.isfinite(labelled.latlon).all()
    assert store.unlabelled() == ["img_2.jpg", "img_7.jpg"]

    parts = list(store.iter_shards(labelled_only=False))
    assert [len(p) for p in parts] == [4, 4, 2]

    # columns on disk are the documented ones, lat/lon null when unlabelled
    table = pq.read_table(store.shards[0])
    assert table.column_names == ["id", "embedding", "lat", "lon", "group"]
    assert table.column("lat").null_count == 1 and str(table.schema.field("embedding").type).startswith("fixed_size_list")


def test_float16_storage_loads_float32(tmp_path):
    arrays = _arrays()
    store = write_store(tmp_path / "s16", arrays, "e", "v", dtype="float16")
    loaded = store.load(labelled_only=False).embeddings
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, arrays.embeddings, rtol=1e-3, atol=1e-3)
    assert not np.array_equal(loaded, arrays.embeddings)  # really stored at half precision
    assert json.loads((tmp_path / "s16" / "store.json").read_text())["dtype"] == "float16"


def test_missing_and_corrupt_stores(tmp_path):
    with pytest.raises(StoreError, match="no embedding store"):
        EmbeddingStore(tmp_path / "nothing")
    store = write_store(tmp_path / "s", _arrays(), "e", "v", shard_size=4)
    store.shards[1].write_bytes(b"not parquet")
    with pytest.raises(StoreError, match="corrupt shard"):
        EmbeddingStore(tmp_path / "s").load()
    store.shards[2].unlink()
    with pytest.raises(StoreError, match="missing shards"):
        EmbeddingStore(tmp_path / "s")
    (tmp_path / "s" / "store.json").write_text("{ not json")
    with pytest.raises(StoreError, match="corrupt store.json"):
        EmbeddingStore(tmp_path / "s")


def test_empty_store(tmp_path):
    empty = _arrays().select(slice(0, 0))
    store = write_store(tmp_path / "e", empty, "e", "v")
    assert len(store) == 0
    assert store.load().embeddings.shape[0] == 0
