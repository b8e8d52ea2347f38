"""Training: EMA direction, LR schedule, counter-based draws, data streams, learning on real MP-16 data."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from globeflow import training as T
from globeflow.checkpoints import load_checkpoint
from globeflow.data.store import StoreArrays, write_store
from globeflow.geolocator import Geolocator
from globeflow.sphere import LOG_UNIFORM_DENSITY

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MP16 = SHARED / "data" / "mp16" / "coordinates_100k.csv"


def mp16(n: int | None = None) -> np.ndarray:
    rows = np.loadtxt(MP16, delimiter=",", skiprows=1)
    return rows if n is None else rows[:n]


# ------------------------------------------------------------------ EMA and LR

def test_ema_moves_slowly_towards_the_parameters():
    ema, theta = [torch.zeros(3)], [torch.ones(3)]
    T.ema_update(ema, theta, decay=0.9)
    # correct direction: ema = 0.9·0 + 0.1·1; the official (inverted) lerp weight would give 0.9
    assert torch.allclose(ema[0], torch.full((3,), 0.1))
    for _ in range(9):
        T.ema_update(ema, theta, decay=0.9)
    assert torch.allclose(ema[0], torch.full((3,), 1 - 0.9 ** 10))


def test_ema_warmup_and_plain_decay():
    cfg = T.TrainConfig(ema_decay=0.999, ema_warmup=True)
    assert T.ema_decay_at(0, cfg) == pytest.approx(0.1)
    assert T.ema_decay_at(100000, cfg) == 0.999
    assert T.ema_decay_at(0, T.TrainConfig(ema_decay=0.99, ema_warmup=False)) == 0.99


def test_lr_schedule_warmup_then_cosine():
    cfg = T.TrainConfig(lr=1e-3, warmup_steps=10, steps=110, min_lr_ratio=0.1)
    lrs = [T.lr_at(s, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert T.lr_at(60, cfg) == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half-way through the cosine
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert T.lr_at(110, cfg) == pytest.approx(1e-4)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="cond_drop"):
        T.TrainConfig(cond_drop=1.5)
    with pytest.raises(ValueError, match="family"):
        T.TrainConfig(family="gan")
    cfg = T.TrainConfig(family="fm", betas=(0.9, 0.95))
    assert T.TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ------------------------------------------------------------------ determinism

@pytest.mark.parametrize("family", ["rfm", "fm"])
def test_draws_depend_only_on_seed_step_and_index(family):
    whole = T.draw(7, 123, np.arange(8), family, 0.5)
    halves = [T.draw(7, 123, np.arange(4 * r, 4 * r + 4), family, 0.5) for r in range(2)]
    for name in ("t", "noise", "drop"):
        joined = torch.cat([getattr(h, name) for h in halves])
        assert torch.equal(getattr(whole, name), joined), name
    assert not torch.equal(whole.noise, T.draw(7, 124, np.arange(8), family, 0.5).noise)
    assert not torch.equal(whole.noise, T.draw(8, 123, np.arange(8), family, 0.5).noise)


def test_draw_distributions():
    n = 200_000
    rfm = T.draw(0, 5, np.arange(n), "rfm", 0.1)
    assert torch.allclose(rfm.noise.norm(dim=1), torch.ones(n), atol=1e-5)
    assert rfm.noise.mean(0).abs().max() < 0.01  # uniform on S²: mean 0, E[z²] = 1/3
    assert abs(float((rfm.noise[:, 2] ** 2).mean()) - 1 / 3) < 0.005
    assert abs(float(rfm.t.mean()) - 0.5) < 0.005 and 0 < rfm.t.min() and rfm.t.max() < 1
    assert abs(float(rfm.drop.float().mean()) - 0.1) < 0.005
    fm = T.draw(0, 5, np.arange(n), "fm", 0.0)
    assert fm.noise.mean(0).abs().max() < 0.01 and (fm.noise.var(0) - 1).abs().max() < 0.02
    assert not fm.drop.any()


def test_memory_stream_is_a_permutation_per_epoch_and_independent_of_split():
    ll = mp16(50)
    src = T.MemorySource(T.MemoryData.from_latlon(ll, np.arange(50, dtype=np.float32)[:, None]), seed=3)
    _, emb = src.gather(np.arange(100))
    ids = emb[:, 0].long().numpy()
    assert sorted(ids[:50]) == list(range(50)) and sorted(ids[50:]) == list(range(50))
    assert not np.array_equal(ids[:50], ids[50:])  # a new order each epoch
    parts = [src.gather(np.arange(40 + 5 * r, 45 + 5 * r))[1] for r in range(4)]
    assert torch.equal(torch.cat(parts), emb[40:60])


def _tiny_store(path: Path, n: int, dim: int = 4, shard: int = 100):
    ll = mp16(n)
    groups = np.array([f"author{i // 7}" for i in range(n)])
    emb = np.concatenate([np.arange(n, dtype=np.float32)[:, None], np.zeros((n, dim - 1), np.float32)], 1)
    return write_store(path, StoreArrays(np.array([f"p{i}" for i in range(n)]), emb, ll, groups),
                       "test-encoder", "1", shard_size=shard), groups


def test_store_stream_covers_training_rows_and_never_validation_groups(tmp_path):
    store, groups = _tiny_store(tmp_path / "s", 950)
    src = T.StoreSource(store, seed=1, val_frac=0.2, window_shards=3)
    held = T.val_mask(groups, 0.2)
    assert len(src) == (~held).sum() and 0 < held.sum() < 950
    _, emb = src.gather(np.arange(2 * len(src)))
    ids = emb[:, 0].long().numpy()
    assert sorted(ids[:len(src)]) == sorted(np.nonzero(~held)[0].tolist())
    assert sorted(ids[len(src):]) == sorted(ids[:len(src)])
    val = T.store_validation(store, 0.2, max_rows=10_000)
    assert len(val) == held.sum() and not set(val.groups) & set(groups[~held])
    again = T.StoreSource(store, seed=1, val_frac=0.2, window_shards=3).gather(np.arange(33, 77))[1]
    assert torch.equal(again, emb[33:77])


def test_group_split_keeps_cells_together():
    ll = mp16(20_000)
    groups = T.cell_groups(ll)
    mask = T.val_mask(groups, 0.1)
    assert 0.07 < mask.mean() < 0.13
    assert not set(groups[mask]) & set(groups[~mask])


# ------------------------------------------------------------------ streaming memory

_RSS_CHILD = textwrap.dedent("""
    import json, sys, torch
    from globeflow import training as T
    from globeflow.data.store import EmbeddingStore
    torch.set_num_threads(1)
    store = EmbeddingStore(sys.argv[1])
    cfg = T.TrainConfig(dim=16, depth=1, steps=4, batch_size=256, val_every=4, val_max=256,
                        checkpoint_every=4, window_shards=2)
    src = T.StoreSource(store, 0, val_frac=0.1, window_shards=2)
    val = T.store_validation(store, 0.1, max_rows=256)
    T.train(cfg, src, sys.argv[2], val=val, resume=False)
    # VmHWM (peak RSS of this process image); ru_maxrss would include the parent's peak (kept across exec)
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    print(json.dumps({"rss_mb": int(hwm) / 1024, "rows": len(store)}))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_streaming_peak_memory_does_not_grow_with_the_store(tmp_path):
    n, dim, shard = 4000, 1024, 1000
    rng = np.random.default_rng(0)
    rss = {}
    for scale in (1, 10):
        rows = n * scale
        ll = np.stack([rng.uniform(-80, 80, rows), rng.uniform(-180, 180, rows)], 1)
        emb = rng.standard_normal((rows, dim), dtype=np.float32)
        write_store(tmp_path / f"s{scale}", StoreArrays(np.arange(rows).astype(str), emb, ll,
                                                         (np.arange(rows) // 10).astype(str)),
                    "synthetic", "1", shard_size=shard, dtype="float16")
        del emb
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(tmp_path / f"s{scale}"), str(tmp_path / f"r{scale}")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        rss[scale] = json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"]
    full_load_growth_mb = 9 * n * dim * 4 / 2**20  # what loading everything as float32 would add
    assert full_load_growth_mb > 130
    assert rss[10] - rss[1] <= 100, rss


# ------------------------------------------------------------------ learning

@pytest.mark.slow
def test_unconditional_rfm_learns_the_mp16_prior(tmp_path):
    """Held-out NLL (0.1° cells never seen in training) ≤ 1.0 nats; uniform is 2.531."""
    torch.set_num_threads(1)  # tiny model: one thread is fastest and immune to busy neighbours
    ll = mp16()
    data = T.MemoryData.from_latlon(ll, groups=T.cell_groups(ll, 0.1))
    train, val = data.split(0.1)
    cfg = T.TrainConfig(dim=64, depth=2, steps=800, batch_size=512, lr=3e-3, warmup_steps=100, cond_drop=0.0,
                        ema_decay=0.995, val_every=800, val_max=500, checkpoint_every=800)
    T.train(cfg, T.MemorySource(train, cfg.seed), tmp_path / "prior", val=val, resume=False)
    net, info = load_checkpoint(tmp_path / "prior")
    assert info.family == "rfm" and net.config.cond_dim == 1
    geo = Geolocator(net, info)
    idx = np.random.default_rng(0).choice(len(val), 500, replace=False)
    latlon = T.sphere.xyz_to_latlon(val.xyz[idx].double())
    nll = float(-geo.log_prob(torch.zeros(1, 1), latlon, steps=64).mean())
    assert nll <= 1.0, nll
    assert nll < -LOG_UNIFORM_DENSITY - 1.0
    assert math.isfinite(nll)


# ------------------------------------------------------------------ validation NLL


@pytest.mark.parametrize("family", ["rfm", "fm"])
def test_validation_nll_scores_a_shared_condition_once(family):
    """Held-out locations under one (null) condition: validation_nll scores them as one condition
    (one field, one radial shell for R³ families) and agrees with scoring each row on its own."""
    geo = Geolocator.from_pretrained(Path(__file__).parent / "models" / f"{family}_uncond")
    latlon = mp16(2000)[::100]  # 20 real photo locations
    data = T.MemoryData.from_latlon(latlon, np.zeros((len(latlon), geo.net.config.cond_dim)))
    cfg = T.TrainConfig(family=family, val_nll_steps=16)
    shared = T.validation_nll(geo.net, data, cfg, geo.info, len(latlon))
    emb = torch.zeros(len(latlon), geo.net.config.cond_dim)
    per_row = float(-geo.log_prob(emb, latlon, steps=16).mean())
    # rfm: the same ODE per point; fm: shells from 256 samples each, shared or per row
    assert shared == pytest.approx(per_row, abs=1e-4 if family == "rfm" else 0.05)
    assert np.isfinite(shared)
