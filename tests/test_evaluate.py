"""globeflow evaluate: tiny end-to-end runs on a real subset of the committed Im2GPS3k store."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from globeflow import metrics as M
from globeflow.commands import evaluate as cmd
from globeflow.data.store import EmbeddingStore, StoreArrays, write_store
from globeflow.evaluation import (ALL_MODELS, BASELINES, GENERATIVE, EvalData, EvalSettings, base_model,
                                  bootstrap_intervals, check_models, fit_baseline, evaluate, fold_splits, group_folds,
                                  paired_difference, photo_metrics, predict_baseline, r3_densities, train_generative,
                                  truth_admin_keys, uses_prior)

STORE = Path(__file__).resolve().parents[1] / "data" / "im2gps3k" / "efficientnet-lite0"
TINY = EvalSettings(samples=16, best_of=8, steps=8, density_steps=4, r3_photos=4, r3_samples=8, r3_nodes=4,
                    train_steps=40, dim=32, depth=1, batch_size=64, tune_grid=(0.0, 2.0), tune_frac=0.3, tune_photos=12,
                    n_boot=200, val_every=10, patience=1, val_photos=20, prior_rows=1500)
MODELS = [*ALL_MODELS, "rfm+prior", "cells+prior", "vmf_mixture+prior"]


def subset(n_photos: int = 300, seed: int = 0) -> StoreArrays:
    """Whole photographers of the committed store until about n_photos rows."""
    a = EmbeddingStore(STORE).load()
    uniq = np.random.default_rng(seed).permutation(np.unique(a.groups))
    keep, total = [], 0
    for g in uniq:
        if total >= n_photos:
            break
        keep.append(g)
        total += int((a.groups == g).sum())
    return a.select(np.isin(a.groups, keep))


@pytest.fixture(scope="module")
def run():
    data, dropped = EvalData.from_arrays(*(lambda a: (a.ids, a.embeddings, a.latlon, a.groups))(subset()))
    assert dropped == 0
    splits = fold_splits(data, 2, seed=0)
    ev = evaluate(splits, MODELS, [0.0, "tuned"], TINY)
    return data, splits, ev


def test_folds_never_share_a_photographer_and_cover_every_photo():
    data, _ = EvalData.from_store(STORE)
    folds = group_folds(data.groups, 5, seed=0)
    assert set(folds.tolist()) == set(range(5))
    owners = {}
    for g, f in zip(data.groups, folds):
        assert owners.setdefault(g, f) == f, f"photographer {g} in folds {owners[g]} and {f}"
    sizes = np.bincount(folds)
    assert sizes.sum() == len(data) and sizes.max() - sizes.min() <= np.unique(data.groups, return_counts=True)[1].max()
    for train, test in fold_splits(data, 5, seed=0):
        assert not set(train.groups) & set(test.groups)
        assert len(train) + len(test) == len(data)
    assert not np.array_equal(folds, group_folds(data.groups, 5, seed=1))


def test_group_folds_rejects_too_few_photographers():
    with pytest.raises(ValueError, match="groups"):
        group_folds(["a", "a", "b"], 3)


def test_report_schema_and_intervals(run):
    data, splits, ev = run
    assert set(ev.report) == set(MODELS)
    for model, by_cfg in ev.report.items():
        assert set(by_cfg) == ({"cfg=0", "cfg=tuned"} if base_model(model) in GENERATIVE else {"cfg=0"})
        for key, metrics in by_cfg.items():
            for name in ("geoscore", "mean_km", "median_km", "acc_1km", "acc_2500km", "country_acc", "city_acc",
                         "nll_nats", "bits_per_dim_official", "prdc_precision", "prdc_coverage",
                         "localizability_official", "calib_0.9_coverage", "calib_0.95_area_km2", "n"):
                v = metrics[name]
                assert set(v) == {"mean", "ci95", "folds"} and len(v["folds"]) == 2 and len(v["ci95"]) == 2
                if math.isfinite(v["mean"]):
                    lo, hi = v["ci95"]
                    assert lo <= v["mean"] + 1e-9 and v["mean"] <= hi + 1e-9, (model, key, name, v)
            assert metrics["n"]["mean"] == len(data) or model in ("fm", "diffusion")
            json.dumps(metrics)
    # the regression baseline has no density; every other model has one
    assert math.isnan(ev.report["regression"]["cfg=0"]["nll_nats"]["mean"])
    for model in ("rfm", "fm", "diffusion", "cells", "retrieval", "vmf", "vmf_mixture"):
        assert math.isfinite(ev.report[model]["cfg=0"]["nll_nats"]["mean"]), model
    # fm/diffusion densities (and best-of-N points) exist for r3_photos photos per fold
    assert ev.report["fm"]["cfg=0"]["n_density"]["folds"] == [TINY.r3_photos] * 2
    assert ev.report["rfm"]["cfg=0"]["n_density"]["mean"] == len(data)
    # bits/dim is the official rescaling of the NLL
    v = ev.report["vmf"]["cfg=0"]
    assert v["bits_per_dim_official"]["mean"] == pytest.approx(v["nll_nats"]["mean"] / (3 * math.log(2)))


def test_tuned_cfg_sees_only_the_training_folds(run):
    data, splits, ev = run
    for model in [*GENERATIVE, "rfm+prior"]:
        assert [t["fold"] for t in ev.tuned[model]] == [0, 1]
        for t in ev.tuned[model]:
            train_ids, test_ids = ev.splits[t["fold"]]
            val = set(t["val_ids"])
            assert val and val <= set(train_ids) and not val & set(test_ids)
            assert t["train_n"] + t["val_n"] == len(train_ids)
            assert t["cfg"] in TINY.tune_grid and set(t["scores"]) == {"0", "2"}
            # early stopping: validations every 10 steps, the kept EMA step is one of them
            assert t["best_step"] in range(10, TINY.train_steps + 1, 10) and t["steps_run"] <= TINY.train_steps
            # the held-out photographers are whole photographers of the training folds
            train, _ = splits[t["fold"]]
            held = set(train.groups[np.isin(train.ids, list(val))])
            assert not held & set(train.groups[~np.isin(train.ids, list(val))])
        chosen = [t["cfg"] for t in ev.tuned[model]]
        assert [r for r in ev.report[model]["cfg=tuned"]["geoscore"]["folds"]] != [] and len(chosen) == 2


def test_per_photo_metrics_agree_with_the_metrics_module():
    data, _ = EvalData.from_arrays(*(lambda a: (a.ids, a.embeddings, a.latlon, a.groups))(subset(400, seed=3)))
    train, test = fold_splits(data, 2, seed=0)[0]
    model = fit_baseline("vmf", train, seed=0)
    pred = predict_baseline(model, test, TINY, seed=0)
    table = photo_metrics(pred, test.latlon, truth_admin_keys(test.latlon))
    point = M.point_metrics(pred.point, test.latlon)
    assert np.mean(table["geoscore"]) == pytest.approx(point["geoscore"])
    assert np.median(table["dist_km"]) == pytest.approx(point["median_km"])
    admin = M.admin_accuracy(pred.point, test.latlon)
    for lv in M.LEVELS:
        hits = table[f"{lv}_acc"]
        assert np.isfinite(hits).sum() == admin[f"{lv}_n"]
        assert np.nanmean(hits) == pytest.approx(admin[f"{lv}_acc"])
    cal = M.calibration(pred.truth_lp, pred.sample_lp)
    for m in M.MASSES:
        assert np.mean(table[f"calib_{m:g}_coverage"]) == pytest.approx(cal[f"{m:g}"]["coverage"])
        assert np.median(table[f"calib_{m:g}_area_km2"]) == pytest.approx(cal[f"{m:g}"]["area_km2_median"])
    loc = M.localizability_summary(pred.sample_lp)
    assert np.mean(table["info_gain_bits"]) == pytest.approx(loc["info_gain_bits"])
    # the vectorised photographer bootstrap matches metrics.bootstrap_ci's interval
    ci = bootstrap_intervals(table, test.groups, 2000, seed=0)["geoscore"]
    _, lo, hi = M.bootstrap_ci(table["geoscore"], test.groups, n_boot=2000, seed=1)
    width = hi - lo
    assert abs(ci[0] - lo) < 0.15 * width and abs(ci[1] - hi) < 0.15 * width


def test_r3_densities_match_geolocator_log_prob(tmp_path):
    data, _ = EvalData.from_arrays(*(lambda a: (a.ids, a.embeddings, a.latlon, a.groups))(subset(200, seed=5)))
    s = EvalSettings(**{**TINY.to_dict(), "tune_grid": (0.0,), "r3_nodes": 24, "r3_samples": 64,
                        "density_steps": 8})
    geo = train_generative("fm", data, s, seed=0, out=tmp_path / "fm")
    rows = np.arange(2)
    _, truth_lp, sample_lp = r3_densities(geo, data.emb[rows], data.latlon[rows], 0.0, s, seed=0)
    ref = geo.log_prob(torch.as_tensor(data.emb[rows]), torch.as_tensor(data.latlon[rows]), steps=8).numpy()
    np.testing.assert_allclose(truth_lp, ref, atol=0.05)
    assert sample_lp.shape == (2, 64) and np.isfinite(sample_lp).all()


def test_point_rule_geoscore_is_predicts_best_guess_of_the_own_samples(tmp_path):
    from globeflow.evaluation import predict_generative
    from globeflow.prediction import best_guess_index

    data, _ = EvalData.from_arrays(*(lambda a: (a.ids, a.embeddings, a.latlon, a.groups))(subset(150, seed=3)))
    geo = train_generative("rfm", data, TINY, seed=0, out=tmp_path / "rfm")
    test = data.select(np.arange(6))
    dens = predict_generative(geo, test, 0.0, TINY, seed=0)
    gs = predict_generative(geo, test, 0.0, EvalSettings(**{**TINY.to_dict(), "point_rule": "geoscore"}), seed=0)
    ll, lp = geo.sample(test.emb, TINY.samples, steps=TINY.steps, cfg=0.0, seed=list(range(6)), return_log_prob=True)
    ll, lp = ll.double().numpy(), lp.double().numpy()
    for i in range(6):  # same samples, two rules: density among the first best_of, expected GeoScore among all
        np.testing.assert_allclose(dens.point[i], ll[i, lp[i, :TINY.best_of].argmax()], atol=1e-9)
        np.testing.assert_allclose(gs.point[i], ll[i, best_guess_index(ll[i], lp[i], "geoscore")], atol=1e-9)
    np.testing.assert_array_equal(dens.truth_lp, gs.truth_lp)
    with pytest.raises(ValueError, match="point_rule"):
        EvalSettings(point_rule="mode")


def test_point_samples_pick_among_a_plain_pass_for_every_photo(tmp_path):
    """--point-samples: the point is predict's expected-GeoScore pick among that many plain samples (the
    density's own sampler), for every photo — fm too, whose densities cover only some photos."""
    from globeflow.evaluation import predict_generative, ode_sampler
    from globeflow.prediction import best_guess_index

    data, _ = EvalData.from_arrays(*(lambda a: (a.ids, a.embeddings, a.latlon, a.groups))(subset(150, seed=3)))
    s = EvalSettings(**{**TINY.to_dict(), "point_rule": "geoscore", "point_samples": 24})
    test = data.select(np.arange(5))
    for family in ("rfm", "fm"):
        geo = train_generative(family, data, TINY, seed=0, out=tmp_path / family)
        pred = predict_generative(geo, test, 0.0, s, seed=0, density_rows=np.array([1]))
        ll = geo.sample(test.emb, 24, steps=s.steps, cfg=0.0, seed=list(range(5)), **ode_sampler(geo)).double().numpy()
        for i in range(5):
            np.testing.assert_allclose(pred.point[i], ll[i, best_guess_index(ll[i], np.zeros(24), "geoscore")],
                                       atol=1e-9)
    with pytest.raises(ValueError, match="point_samples"):
        EvalSettings(point_samples=16)  # needs the geoscore rule


def _cli_args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    argv = []
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return parser.parse_args(argv)


def test_cli_writes_report_and_ignores_bad_rows(tmp_path):
    a = subset(200, seed=7)
    a.latlon[0] = (np.nan, np.nan)  # unlabelled
    a.latlon[1] = (95.0, 10.0)  # out of range
    store = tmp_path / "store"
    write_store(store, a, encoder="efficientnet-lite0", encoder_version="test")
    out, js = tmp_path / "r.md", tmp_path / "r.json"
    args = _cli_args(store=store, folds=2, models="rfm,regression", cfg="0,1", samples=8, best_of=4, steps=4,
                     density_steps=4, train_steps=20, dim=32, depth=1, batch_size=64, n_boot=50, out=out,
                     json=js, no_progress=True, point_rule="geoscore")
    assert cmd.run(args) == 0
    doc = json.loads(js.read_text())
    assert set(doc) == {"rfm", "regression", "_meta"}
    assert set(doc["rfm"]) == {"cfg=0", "cfg=1"} and set(doc["regression"]) == {"cfg=0"}
    assert doc["_meta"]["rows_ignored"] >= 1 and sum(doc["_meta"]["photos"]) == len(a) - 2
    text = out.read_text()
    assert "| rfm | 1 |" in text and "| regression | 0 |" in text and "Calibration" in text
    assert doc["_meta"]["settings"]["point_rule"] == "geoscore" and "highest expected GeoScore" in text


@pytest.mark.parametrize("kw, message", [
    ({"models": "rfm,plonk"}, "plonk"),
    ({"cfg": "0,x"}, "'x'"),
    ({"folds": 1}, "folds"),
])
def test_cli_usage_errors(tmp_path, capsys, kw, message):
    args = _cli_args(store=STORE, no_progress=True, **kw)
    assert cmd.run(args) == 2
    assert message in capsys.readouterr().out


def test_cli_needs_a_source(capsys):
    assert cmd.run(_cli_args(no_progress=True)) == 2
    assert "--store" in capsys.readouterr().out


def test_nll_comparisons_pair_each_model_with_the_best_baseline_of_its_data(run):
    """rfm against the best baseline without prior rows, rfm+prior against the best of all; the paired
    difference is the mean per-photo difference, and its interval the photographer bootstrap's."""
    data, splits, ev = run
    nll = {m: ev.report[m]["cfg=0"]["nll_nats"]["mean"] for m in MODELS if base_model(m) in BASELINES}
    plain = min((m for m in nll if not uses_prior(m) and np.isfinite(nll[m])), key=nll.get)
    every = min((m for m in nll if np.isfinite(nll[m])), key=nll.get)
    assert ev.comparisons["rfm cfg=tuned"]["baseline"] == plain
    assert ev.comparisons["rfm+prior cfg=0"]["baseline"] == every
    assert ev.comparisons["fm cfg=0"]["n"] == 2 * TINY.r3_photos  # fm: its density photos only
    c = ev.comparisons["rfm cfg=0"]
    assert c["baseline_nll"] == pytest.approx(nll[plain]) and c["n"] == len(data)
    assert c["mean"] == pytest.approx(ev.report["rfm"]["cfg=0"]["nll_nats"]["mean"] - nll[plain])
    lo, hi = c["ci95"]
    assert lo < c["mean"] < hi


def test_paired_difference_is_a_photographer_bootstrap_of_the_mean_difference():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 5).astype(str)
    a = rng.normal(size=200) + np.repeat(rng.normal(size=40), 5)  # photographer effects shared by a and b
    b = a + 0.3 + 0.1 * rng.normal(size=200)
    b[:10] = np.nan  # photos without a density are left out
    d = paired_difference(a, b, groups, 2000, seed=0)
    assert d["n"] == 190 and d["mean"] == pytest.approx(np.mean((a - b)[10:]))
    assert d["ci95"][1] < 0 and d["ci95"][1] - d["ci95"][0] < 0.1  # pairing removes the photographer effects
    _, lo, hi = M.bootstrap_ci((a - b)[10:], groups[10:], n_boot=2000, seed=1)
    assert d["ci95"][0] == pytest.approx(lo, abs=0.01) and d["ci95"][1] == pytest.approx(hi, abs=0.01)


def test_prior_variants_only_for_models_that_can_use_the_rows():
    check_models(["rfm+prior", "cells+prior", "vmf_mixture+prior", "fm"])
    for bad in ("regression+prior", "retrieval+prior", "plonk"):
        with pytest.raises(ValueError, match="unknown models"):
            check_models([bad])


def test_stated_regions_use_masses_fitted_on_held_out_photographers(run):
    """rfm models report the coverage of the regions they would state (split-conformal masses from the
    held-out photographers, per fold and cfg); other models have none."""
    _, _, ev = run
    for model in ("rfm", "rfm+prior"):
        for t in ev.tuned[model]:
            masses = t["stated_masses"]
            assert set(masses) == {"cfg=0", "cfg=tuned"}
            for m in masses.values():
                assert set(m) == {"0.5", "0.9"} and 0 < m["0.5"] <= m["0.9"] < 1
        for key in ("cfg=0", "cfg=tuned"):
            cov = ev.report[model][key]["stated_0.9_coverage"]["mean"]
            assert 0.0 <= cov <= 1.0 and cov >= ev.report[model][key]["stated_0.5_coverage"]["mean"]
    for model in ("fm", "cells"):
        for key in ev.report[model]:
            assert math.isnan(ev.report[model][key]["stated_0.9_coverage"]["mean"])
    assert "stated_masses" not in ev.tuned["fm"][0]


def test_prdc_intervals_reuse_one_distance_matrix_per_set():
    """Half-samples index rows and columns of the full distance matrices: the same replicates as
    recomputing PRDC on every half-sample's points."""
    from globeflow.evaluation import prdc_intervals

    a = subset(600, seed=11)
    rng = np.random.default_rng(0)
    draws = a.latlon + rng.normal(0, 5, a.latlon.shape)
    draws[:, 0] = np.clip(draws[:, 0], -90, 90)
    got = prdc_intervals(a.latlon, draws, a.groups, n_boot=200, seed=3)
    uniq, inverse = np.unique(a.groups, return_inverse=True)
    rng, reps = np.random.default_rng(3), []
    for _ in range(20):
        keep = np.isin(inverse, rng.choice(len(uniq), len(uniq) // 2, replace=False))
        reps.append([M.prdc(a.latlon[keep], draws[keep])[k] for k in ("precision", "recall", "density", "coverage")])
    reps, full = np.asarray(reps), M.prdc(a.latlon, draws)
    for j, k in enumerate(("precision", "recall", "density", "coverage")):
        dev = reps[:, j] - reps[:, j].mean()
        lo, hi = full[k] + np.quantile(dev, 0.025), full[k] + np.quantile(dev, 0.975)
        assert got[f"prdc_{k}"][0] == pytest.approx(max(0.0, min(lo, full[k])), abs=1e-12)
        assert got[f"prdc_{k}"][1] == pytest.approx(min(math.inf if k == "density" else 1.0, max(hi, full[k])), abs=1e-12)
