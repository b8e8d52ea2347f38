"""`globeflow train` killed with SIGKILL after a checkpoint, then resumed, ends bit-identical to an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from globeflow import training as T
from globeflow.data.store import StoreArrays, write_store

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MP16 = SHARED / "data" / "mp16" / "coordinates_100k.csv"
STEPS, EVERY = 400, 25


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """2,000 real MP-16 locations with a smooth 8-d embedding of the location, 4 shards, 'photographers' of 5."""
    ll = np.loadtxt(MP16, delimiter=",", skiprows=1, max_rows=2000)
    xyz = T.sphere.latlon_to_xyz(torch.from_numpy(ll)).float()
    emb = torch.cat([xyz, torch.sin(3 * xyz), xyz[:, :2] * xyz[:, 2:]], dim=1).numpy()
    arrays = StoreArrays(np.array([f"mp16_{i}" for i in range(len(ll))]), emb, ll,
                         np.array([f"user{i // 5}" for i in range(len(ll))]))
    return write_store(tmp_path_factory.mktemp("store") / "mp16", arrays, "xyz-features", "1", shard_size=500)


def _cmd(store, out: Path) -> list[str]:
    return [sys.executable, "-m", "globeflow.cli", "train", str(store.path), "--out", str(out), "--dim", "32",
            "--depth", "2", "--steps", str(STEPS), "--batch-size", "64", "--warmup-steps", "20",
            "--checkpoint-every", str(EVERY), "--val-every", "100", "--threads", "1", "--no-progress",
            "--optimizer", "lamb"]


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr


def _state_step(out: Path) -> int:
    try:
        return int(json.loads((out / T.STATE_JSON).read_text())["progress"]["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.mark.timeout(240)
def test_sigkill_then_resume_is_bit_identical(store, tmp_path):
    _run(_cmd(store, tmp_path / "full"))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(store, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _state_step(killed) < 2 * EVERY and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = _state_step(killed)
    assert proc.returncode == -signal.SIGKILL and 0 < at_kill < STEPS, (proc.returncode, at_kill)

    _run(_cmd(store, killed) + ["--resume"])

    a, b = load_file(str(tmp_path / "full" / T.STATE_FILE)), load_file(str(killed / T.STATE_FILE))
    assert a.keys() == b.keys() and int(b["step"]) == STEPS
    for key in a:  # rng.torch: the process-global generator, seeded at random by torch and unused by training
        assert key == "rng.torch" or torch.equal(a[key], b[key]), key
    ema_a, ema_b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    log_rows = (killed / T.LOG_FILE).read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in log_rows] == sorted({int(r.split(",")[0]) for r in log_rows})
    assert (killed / "log.csv").read_text() .count("\n") == (tmp_path / "full" / "log.csv").read_text().count("\n")


def test_resume_refuses_a_different_config(store, tmp_path):
    cmd = _cmd(store, tmp_path / "r")
    cmd[cmd.index("--steps") + 1] = "30"
    _run(cmd)
    cmd[cmd.index("--dim") + 1] = "64"
    out = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "dim" in out.stdout


def test_resume_without_state_is_a_usage_error(store, tmp_path):
    out = subprocess.run(_cmd(store, tmp_path / "none") + ["--resume"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "train_state" in out.stdout
