"""A 2-rank CPU (gloo) DDP run matches the 1-process run: same global batches, same draws, same updates."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from globeflow import training as T

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MP16 = SHARED / "data" / "mp16" / "coordinates_100k.csv"
STEPS = 20


def _data() -> T.MemoryData:
    ll = np.loadtxt(MP16, delimiter=",", skiprows=1, max_rows=3000)
    xyz = T.sphere.latlon_to_xyz(torch.from_numpy(ll)).float()
    emb = torch.cat([xyz, xyz ** 2], dim=1)  # a deterministic stand-in embedding (N, 6)
    return T.MemoryData.from_latlon(ll, emb.numpy(), T.cell_groups(ll, 1.0))


def _config() -> T.TrainConfig:
    return T.TrainConfig(dim=32, depth=2, steps=STEPS, batch_size=64, lr=2e-3, warmup_steps=5, cond_drop=0.3,
                         val_every=10, val_max=256, checkpoint_every=10, log_every=1)


def _run(out: Path) -> list[float]:
    torch.set_num_threads(1)
    train, val = _data().split(0.1)
    result = T.train(_config(), T.MemorySource(train, 0), out, val=val, resume=False, device="cpu")
    return result.losses


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    losses = _run(Path(out))
    Path(out, f"losses{rank}.json").write_text(json.dumps(losses))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(180)
def test_two_ranks_match_one_process(tmp_path):
    single = _run(tmp_path / "single")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / "ddp" / f"losses{r}.json").read_text()) for r in range(2)]
    assert len(single) == STEPS and ranks[0] == ranks[1]
    assert np.max(np.abs(np.array(single) - np.array(ranks[0]))) <= 1e-5
    a = load_file(str(tmp_path / "single" / T.STATE_FILE))
    b = load_file(str(tmp_path / "ddp" / T.STATE_FILE))
    assert int(a["step"]) == int(b["step"]) == STEPS
    for prefix in ("model.", "ema."):
        va = torch.cat([v.flatten() for k, v in sorted(a.items()) if k.startswith(prefix)])
        vb = torch.cat([v.flatten() for k, v in sorted(b.items()) if k.startswith(prefix)])
        assert float((va - vb).norm() / va.norm()) <= 1e-5, prefix
    # the run did move the weights (the comparison is not between two untouched initialisations)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_config().seed)
        init = T.Denoiser(dim=32, depth=2, cond_dim=6)
    assert not torch.allclose(a["model.final_linear.weight"], init.final_linear.weight)
