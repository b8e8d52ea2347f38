"""Post-training choices written into a model folder: default guidance weight and credible masses."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
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
    out = tuning.choose_default_cfg(folder, emb, truth, grid, steps=16, note="test rows", untils=(1.0, 0.5))
    curve = out["held_out_nll"]  # "w" (guidance on the whole path) or "w until u"
    assert set(curve) == {"-1", "0", "1", "-1 until 0.5", "0 until 0.5", "1 until 0.5"}
    chosen = f"{out['chosen']:g}" + ("" if out["cfg_until"] == 1 else f" until {out['cfg_until']:g}")
    assert curve[chosen] == min(curve.values())
    # the hemisphere condition carries real signal for northern truths: the prior (w = −1) is worst
    assert curve["-1"] > curve["0"] and curve["-1"] > curve["-1 until 0.5"]
    assert curve["0"] == curve["0 until 0.5"]  # w = 0 is the conditional field whatever the interval
    meta = json.loads((folder / "globeflow.json").read_text())
    assert meta["default_cfg"] == out["chosen"] and meta["training"]["default_cfg_selection"]["rows"] == len(truth)
    geo = Geolocator.from_pretrained(folder)
    assert (geo.default_cfg, geo.info.cfg_until) == (out["chosen"], out["cfg_until"])


def test_default_cfg_over_several_held_out_sets_weighs_each_set_equally(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(MODEL, folder)
    emb, truth = held_out_rows()
    rng = np.random.default_rng(1)  # a second kind of input: southern truths under the northern condition
    south = torch.from_numpy(np.stack([rng.uniform(-60, -20, 6), rng.uniform(-120, 30, 6)], 1))
    grid = (-1.0, 0.0, 1.0)
    alone = tuning.choose_default_cfg(folder, emb, truth, grid, steps=16)["held_out_nll"]
    other = tuning.choose_default_cfg(folder, emb[:6], south, grid, steps=16)["held_out_nll"]
    out = tuning.choose_default_cfg(folder, emb, truth, grid, steps=16, also={"south": (emb[:6], south)},
                                    name="north")
    for w in ("-1", "0", "1"):  # the mean of the two sets' means, not of the 30 rows
        assert out["held_out_nll"][w] == pytest.approx((alone[w] + other[w]) / 2, rel=1e-5)
    assert out["held_out_nll"][f"{out['chosen']:g}"] == min(out["held_out_nll"].values())
    # the condition says north: southern truths want the prior, northern ones guidance; together a compromise
    assert min(other, key=other.get) == "-1" and min(alone, key=alone.get) != "-1"
    selection = json.loads((folder / "globeflow.json").read_text())["training"]["default_cfg_selection"]
    assert selection["rows"] == {"north": 24, "south": 6} and set(selection["held_out_nll_by_set"]) == {"north", "south"}


def test_credible_masses_are_fitted_and_stated(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(MODEL, folder)
    emb, truth = held_out_rows()
    masses = tuning.fit_credible_masses(folder, emb, truth, note="test rows", samples=64, steps=8, density_steps=16)
    assert set(masses) == {"0.5", "0.9"} and 0 < masses["0.5"] <= masses["0.9"] < 1
    geo = Geolocator.from_pretrained(folder)
    assert geo.info.credible_masses == masses
    assert "split-conformal on 24 test rows" in geo.info.training["credible_masses_fit"]
    # predictions default to the sample and step counts the masses were fitted with (512 × 32 before: none stated)
    assert (Geolocator.from_pretrained(MODEL).default_samples, Geolocator.from_pretrained(MODEL).default_steps) == (512, 32)
    assert (geo.default_samples, geo.default_steps) == (64, 8)
    (pred,) = geo.predict(emb[:1])
    assert len(pred.samples) == 64
    samples, _ = geo.sample(emb[:1], 64, steps=8, seed=0, return_log_prob=True, precision="auto")
    assert np.allclose(pred.samples, samples[0].double().numpy())  # 8 steps, not 32
    assert not np.allclose(geo.predict(emb[:1], steps=32)[0].samples, pred.samples)
    # cross-fitted ranks of more rows are pooled: 96 truths outside every region push both masses to the top
    pooled = tuning.fit_credible_masses(folder, emb, truth, note="test rows", samples=64, steps=8, density_steps=16,
                                        extra_ranks=np.ones(96), extra_note="cross-fitted rows")
    assert pooled["0.5"] > masses["0.5"] and pooled["0.9"] == 0.999
    fit = Geolocator.from_pretrained(folder).info.training["credible_masses_fit"]
    assert "split-conformal on 120 rows (24 test rows + 96 cross-fitted rows)" in fit
    assert len(geo.predict(emb[:1], num_samples=16, steps=4)[0].samples) == 16


def test_a_separate_best_guess_draws_its_own_samples_and_steps(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(MODEL, folder)
    tuning._update_meta(folder, default_samples=32, default_steps=4, best_guess="geoscore", best_guess_cfg=-1.0,
                        best_guess_samples=48)
    geo = Geolocator.from_pretrained(folder)
    assert geo.best_guess_budget() == (48, 32)  # no best_guess_steps stated: 32
    emb, _ = held_out_rows()
    (pred,) = geo.predict(emb[:1], seed=0)
    assert len(pred.samples) == 32 and pred.best_guess_source == "separate"
    expected = geo.point_estimate(emb[:1], 48, steps=32, seed=0, precision="auto")[0].double().numpy()
    assert np.allclose(pred.best_guess, expected)
    tuning._update_meta(folder, best_guess_steps=6)
    geo = Geolocator.from_pretrained(folder)
    expected = geo.point_estimate(emb[:1], 48, steps=6, seed=0, precision="auto")[0].double().numpy()
    assert np.allclose(geo.predict(emb[:1], seed=0)[0].best_guess, expected)
    # settings given by the caller apply to both passes
    (given,) = geo.predict(emb[:1], seed=0, num_samples=16, steps=4)
    assert np.allclose(given.best_guess, geo.point_estimate(emb[:1], 16, steps=4, seed=0, precision="auto")[0].double().numpy())


def test_more_best_guess_samples_at_the_same_weight_get_their_own_pass(tmp_path):
    """No best_guess_cfg, but best_guess_samples above default_samples: the best guess comes from a
    larger pass of the same distribution (the same weight); a given sample count uses one pass."""
    folder = tmp_path / "m"
    shutil.copytree(MODEL, folder)
    tuning._update_meta(folder, default_samples=16, default_steps=4, best_guess="geoscore", best_guess_samples=64)
    geo = Geolocator.from_pretrained(folder)
    emb, _ = held_out_rows()
    assert geo.separate_best_guess(None) and not geo.separate_best_guess(None, 16) and not geo.separate_best_guess(0.0)
    (pred,) = geo.predict(emb[:1], seed=0)
    assert len(pred.samples) == 16 and pred.best_guess_source == "separate"
    expected = geo.point_estimate(emb[:1], 64, steps=32, seed=0, precision="auto")[0].double().numpy()
    assert np.allclose(pred.best_guess, expected)
    assert geo.predict(emb[:1], seed=0, num_samples=16)[0].best_guess_source != "separate"
    from globeflow.prediction import with_guidance  # the output states the pass's weight: the samples' own
    assert with_guidance(pred, None, geo.default_cfg, None).best_guess_cfg == geo.default_cfg


def test_best_guess_rule_and_weight_of_highest_held_out_geoscore_are_written_and_used(tmp_path):
    from globeflow.metrics import geoscore, haversine_km
    from globeflow.prediction import best_guess_index

    folder = tmp_path / "m"
    shutil.copytree(MODEL, folder)
    emb, truth = held_out_rows()
    geo = Geolocator.from_pretrained(folder)
    latlon, lp = tuning.own_samples(geo, emb, samples=64, steps=8)
    assert latlon.shape == (24, 64, 2) and lp.shape == (24, 64)
    out = tuning.choose_best_guess(folder, emb, truth.numpy(), (latlon, lp), note="test rows", grid=(-1.0, 0.0),
                                   steps=8)
    scores = out["held_out_geoscore"]
    assert set(scores) == {("density", 0.0), ("geoscore", 0.0), ("geoscore", -1.0)}
    for rule in ("density", "geoscore"):  # recomputed from the draws, independently
        best = np.stack([x[best_guess_index(x, l, rule)] for x, l in zip(latlon, lp)])
        assert scores[(rule, 0.0)] == pytest.approx(geoscore(haversine_km(best, truth.numpy())).mean())
    assert (out["rule"], out["cfg"]) == max(scores, key=scores.get)
    # the prior (w = −1) ignores the hemisphere condition: its best guesses score lower
    assert scores[("geoscore", -1.0)] < scores[("geoscore", 0.0)]
    geo = Geolocator.from_pretrained(folder)
    assert geo.info.best_guess == out["rule"] and geo.info.training["best_guess_selection"]["rows"] == 24
    assert geo.best_guess_budget() == (64, 8)  # the draws it was chosen with
    # predictions report the chosen rule's pick; a separate weight draws its own samples
    geo = Geolocator(geo.net, dataclasses.replace(geo.info, best_guess="geoscore", best_guess_cfg=-1.0))
    pred = geo.predict(emb[:2].numpy(), num_samples=64, steps=8, seed=0)
    guess = geo.point_estimate(emb[:2], 64, steps=8, seed=0, precision="auto").numpy()  # predict's precision
    assert np.allclose([p.best_guess for p in pred], guess, atol=1e-5)
    own = [p.samples[best_guess_index(p.samples, p.log_prob, "geoscore")] for p in pred]
    assert not np.allclose([p.best_guess for p in pred], own, atol=1e-3)
    explicit = geo.predict(emb[:2].numpy(), num_samples=64, steps=8, seed=0, cfg=0.0)  # cfg given: one set
    assert all(p.best_guess == tuple(p.samples[best_guess_index(p.samples, p.log_prob, "geoscore")]) for p in explicit)
