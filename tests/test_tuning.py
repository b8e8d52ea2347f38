"""Post-training choices written into a model folder: default guidance weight and credible masses."""

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from globeflow import tuning
from globeflow.geolocator import Geolocator

MODEL = Path(__file__).resolve().parent / "models" / "rfm_hemisphere"


def held_out_rows(n: int = 24):
    """Northern-hemisphere embeddings [1, 0] with MP-16-like northern truths (seeded)."""
    rng = np.random.default_rng(0)
    truth = np.stack([rng.uniform(20, 60, n), rng.uniform(-120, 30, n)], 1)
    return torch.tensor([[1.0, 0.0]]).repeat(n, 1), torch.from_numpy(truth)


def test_default_cfg_is_the_weight_of_lowest_held_out_nll(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(MODEL, folder)
    emb, truth = held_out_rows()
    grid = (-1.0, 0.0, 1.0)
    out = tuning.choose_default_cfg(folder, emb, truth, grid, steps=16, note="test rows")
    curve = out["held_out_nll"]
    assert out["chosen"] == min(curve, key=curve.get)
    # the hemisphere condition carries real signal for northern truths: the prior (w = −1) is worst
    assert curve[-1.0] > curve[0.0]
    meta = json.loads((folder / "globeflow.json").read_text())
    assert meta["default_cfg"] == out["chosen"] and meta["training"]["default_cfg_selection"]["rows"] == len(truth)
    assert Geolocator.from_pretrained(folder).default_cfg == out["chosen"]


def test_credible_masses_are_fitted_and_stated(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(MODEL, folder)
    emb, truth = held_out_rows()
    masses = tuning.fit_credible_masses(folder, emb, truth, note="test rows", samples=64, steps=8, density_steps=16)
    assert set(masses) == {"0.5", "0.9"} and 0 < masses["0.5"] <= masses["0.9"] < 1
    geo = Geolocator.from_pretrained(folder)
    assert geo.info.credible_masses == masses
    assert "split-conformal on 24 test rows" in geo.info.training["credible_masses_fit"]
