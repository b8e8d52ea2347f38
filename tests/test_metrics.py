"""Metrics against independent hand computations and the published OSV-5M game sample."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from globeflow import metrics
from globeflow.baselines import vmf
from globeflow.geocoding import reverse_geocode

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SELECT = SHARED / "data" / "osv5m_sample" / "select.csv"
DATA = Path(__file__).resolve().parent / "data"
R = 6371.0


def _chord_angle_km(a, b):
    """Independent distance: angle between unit vectors via atan2(|a×b|, a·b)."""
    def xyz(p):
        lat, lon = np.radians(p[..., 0]), np.radians(p[..., 1])
        return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)
    u, v = xyz(np.asarray(a, float)), xyz(np.asarray(b, float))
    return R * np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), (u * v).sum(-1))


def test_haversine_hand_cases_poles_and_antimeridian():
    a = np.array([[0, 0], [90, 0], [0, 179.5], [89, 0], [90, 10], [-90, 45], [0, -180], [45, 0]])
    b = np.array([[0, 1], [-90, 0], [0, -179.5], [89, 180], [90, -170], [-89, 45], [0, 180], [45, 0]])
    deg = R * math.pi / 180
    expected = [deg, math.pi * R, deg, 2 * deg, 0.0, deg, 0.0, 0.0]
    np.testing.assert_allclose(metrics.haversine_km(a, b), expected, atol=1e-6)
    rng = np.random.default_rng(1)
    p = np.c_[rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500)]
    q = np.c_[rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500)]
    np.testing.assert_allclose(metrics.haversine_km(p, q), _chord_angle_km(p, q), atol=1e-6)


def test_geoscore_and_strict_accuracy():
    np.testing.assert_allclose(metrics.geoscore([0.0, 1492.7, 2 * 1492.7]), [5000, 5000 / math.e, 5000 / math.e**2])
    acc = metrics.accuracy_at(np.array([0.5, 1.0, 24.9, 25.0, 199.0, 750.0, 2499.0, 3000.0]))
    # strict d < r: exactly 1 km and exactly 25 km do not count
    assert acc == {"acc_1km": 1 / 8, "acc_25km": 3 / 8, "acc_200km": 5 / 8, "acc_750km": 5 / 8, "acc_2500km": 7 / 8}


def test_point_metrics_hand_example():
    true = np.array([[0.0, 0.0], [0.0, 179.9], [90.0, 0.0]])
    pred = np.array([[0.0, 1.0], [0.0, -179.9], [-90.0, 0.0]])
    d = np.array([1, 0.2, 180]) * R * math.pi / 180
    out = metrics.point_metrics(pred, true)
    assert out["n"] == 3
    assert out["mean_km"] == pytest.approx(d.mean())
    assert out["median_km"] == pytest.approx(d[0])
    assert out["geoscore"] == pytest.approx(np.mean(5000 * np.exp(-d / 1492.7)))
    assert out["acc_25km"] == pytest.approx(1 / 3) and out["acc_200km"] == pytest.approx(2 / 3)
    assert metrics.point_metrics(np.zeros((0, 2)), np.zeros((0, 2)))["n"] == 0


# ---------------------------------------------------------------- OSV-5M admin labels

def _select_rows():
    if not SELECT.exists():
        pytest.skip(f"shared data missing: {SELECT}")
    with open(SELECT, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


LEVEL_COLS = {"city": "city", "area": "area", "region": "region", "country": "country"}


def _names(place):
    return {"city": place.name, "area": place.admin2, "region": place.admin1, "country": place.cc}


@pytest.mark.parametrize("suffix", ["", "_base"])
def test_reverse_geocoding_reproduces_osv5m_labels_and_hits(suffix):
    rows = _select_rows()
    assert len(rows) == 50
    truth = reverse_geocode(np.array([[float(r["true_lat"]), float(r["true_lon"])] for r in rows]))
    pred = reverse_geocode(np.array([[float(r[f"pred_lat{suffix}"]), float(r[f"pred_lon{suffix}"])] for r in rows]))
    for r, t, p in zip(rows, truth, pred):
        tn, pn = _names(t), _names(p)
        for lv in LEVEL_COLS:
            assert tn[lv] == r[lv], (r["id"], lv)
            assert pn[lv] == r[f"pred_{lv}{suffix}"], (r["id"], lv)
            # the OSV-5M game rule: plain-name equality
            assert (pn[lv] == tn[lv]) == (r[f"{lv}_hit{suffix}"] == "True"), (r["id"], lv)


def test_lookup_equals_the_packages_own_query_and_rejects_non_finite_rows():
    import reverse_geocoder

    from globeflow import geocoding

    rows = _select_rows()
    rng = np.random.default_rng(0)
    world = np.stack([np.degrees(np.arcsin(rng.uniform(-1, 1, 3000))), rng.uniform(-180, 180, 3000)], axis=1)
    latlon = np.concatenate([np.array([[float(r[k]) for k in ("true_lat", "true_lon")] for r in rows]
                                      + [[float(r[k]) for k in ("pred_lat", "pred_lon")] for r in rows]),
                             world, [[-22.56, 17.08]]])  # Windhoek: cc "NA" must stay a string
    package = reverse_geocoder.RGeocoder(mode=1, verbose=False).query([tuple(p) for p in latlon])
    ours = reverse_geocode(latlon)
    assert [(p.cc, p.admin1, p.admin2, p.name) for p in ours] == [
        (r["cc"], r["admin1"], r["admin2"], r["name"]) for r in package]
    assert geocoding.country_codes(latlon).tolist() == [r["cc"] for r in package]
    assert ours[-1].cc == "NA"
    assert [r["country"] for r in rows] == [r["cc"] for r in package[:len(rows)]]
    assert geocoding.country_codes(np.zeros((0, 2))).tolist() == []
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        geocoding.country_codes(np.array([[0.0, 0.0], [np.nan, 1.0]]))


def composite_vs_plain_differences(rows, suffix):
    """Rows (id, level, reason) where the official composite-key rule and plain names disagree."""
    labels = {lv: [r[lv] for r in rows] for lv in LEVEL_COLS}
    pred_labels = {lv: [r[f"pred_{lv}{suffix}"] for r in rows] for lv in LEVEL_COLS}
    truth, pred = metrics.label_keys(labels), metrics.label_keys(pred_labels)
    out = []
    for i, r in enumerate(rows):
        for lv in LEVEL_COLS:
            plain = r[f"{lv}_hit{suffix}"] == "True"
            if truth[lv][i] is None:
                out.append((r["id"], lv, "truth label empty: left out by the official rule, plain '' == '' is a hit"
                            if plain else "truth label empty: left out"))
            elif (pred[lv][i] == truth[lv][i]) != plain:
                out.append((r["id"], lv, "same name, different parent unit"))
    return out


def test_composite_keys_differ_from_plain_names_only_where_explained():
    rows = _select_rows()
    diffs = composite_vs_plain_differences(rows, "")
    print("\ncomposite-key vs plain-name differences (model):")
    for d in diffs:
        print("  ", *d)
    reasons = {d[2] for d in diffs}
    assert reasons <= {"truth label empty: left out by the official rule, plain '' == '' is a hit",
                       "truth label empty: left out", "same name, different parent unit"}
    # every row with an empty area is a plain-name area "hit" when the prediction's area is empty too
    empty_area = [r for r in rows if r["area"] == ""]
    assert len([d for d in diffs if d[1] == "area"]) == len(empty_area) == 26
    # a composite hit is always a plain hit: the keys only add conditions
    labels = metrics.label_keys({lv: [r[lv] for r in rows] for lv in LEVEL_COLS})
    preds = metrics.label_keys({lv: [r[f"pred_{lv}"] for r in rows] for lv in LEVEL_COLS})
    for lv in LEVEL_COLS:
        for i, r in enumerate(rows):
            if labels[lv][i] is not None and preds[lv][i] == labels[lv][i]:
                assert r[f"{lv}_hit"] == "True"


@pytest.mark.parametrize("tag,suffix", [("model", ""), ("base", "_base")])
def test_admin_accuracy_matches_published_labels(tag, suffix):
    rows = _select_rows()
    expected = json.loads((DATA / "osv5m_select_expected.json").read_text())[tag]["admin"]
    pred = np.array([[float(r[f"pred_lat{suffix}"]), float(r[f"pred_lon{suffix}"])] for r in rows])
    true = np.array([[float(r["true_lat"]), float(r["true_lon"])] for r in rows])
    from_labels = metrics.admin_accuracy(pred, true_labels={lv: [r[lv] for r in rows] for lv in LEVEL_COLS})
    from_coords = metrics.admin_accuracy(pred, true_deg=true)
    for key, value in expected.items():
        assert from_labels[key] == pytest.approx(value), key
        assert from_coords[key] == pytest.approx(value), key


def test_admin_accuracy_needs_a_truth():
    with pytest.raises(ValueError, match="true_deg or true_labels"):
        metrics.admin_accuracy(np.zeros((1, 2)))


# ---------------------------------------------------------------- densities

def test_nll_and_official_bits_per_dim():
    uniform = np.full(7, -math.log(4 * math.pi))
    out = metrics.nll_summary(uniform)
    assert out["nll_nats"] == pytest.approx(2.5310242469692907)
    assert out["bits_per_dim_official"] == pytest.approx(2.5310242469692907 / (3 * 0.6931471805599453))


def test_localizability_uniform_is_zero_information():
    lp = np.full((4, 16), -math.log(4 * math.pi))
    out = metrics.localizability_summary(lp)
    assert out["info_gain_bits"] == pytest.approx(0.0, abs=1e-12)
    assert out["localizability_official"] == pytest.approx(-math.log(4 * math.pi) / (4 * math.pi * math.log(2)))


def test_wilson_interval_textbook_values():
    lo, hi = metrics.wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # Newcombe (1998), Table I
    lo, hi = metrics.wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))


def _vmf_items(kappa_model, kappa_truth, m=300, k=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    from globeflow.sphere import uniform
    mu = uniform((m,), generator=gen, dtype=torch.float64)
    samples = vmf.sample(mu[:, None].expand(-1, k, -1), torch.tensor(kappa_model, dtype=torch.float64), generator=gen)
    truth = vmf.sample(mu, torch.tensor(kappa_truth, dtype=torch.float64), generator=gen)
    km = torch.tensor(kappa_model, dtype=torch.float64)
    return vmf.log_prob(truth, mu, km).numpy(), vmf.log_prob(samples, mu[:, None], km).numpy()


def test_calibration_of_a_correct_and_an_overconfident_model():
    kappa = 200.0
    truth_lp, sample_lp = _vmf_items(kappa, kappa)
    cal = metrics.calibration(truth_lp, sample_lp)
    for mass in metrics.MASSES:
        c = cal[f"{mass:g}"]
        assert c["wilson_low"] - 0.03 <= mass <= c["wilson_high"] + 0.03, (mass, c)
        # the HPD region of a vMF is a cap with 1 − cos θ = −log(1 − m(1 − e^{−2κ}))/κ
        cap_sr = 2 * math.pi * -math.log1p(-mass * (1 - math.exp(-2 * kappa))) / kappa
        assert c["area_km2_median"] == pytest.approx(cap_sr * R**2, rel=0.08)
    over = metrics.calibration(*_vmf_items(2000.0, 200.0))
    assert over["0.9"]["coverage"] < 0.3


def test_bootstrap_ci_over_groups():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 10)
    values = np.repeat(rng.normal(size=20), 10) + 0.1 * rng.normal(size=200)  # strongly clustered
    est, lo, hi = metrics.bootstrap_ci(values, groups, n_boot=500, seed=1)
    assert est == pytest.approx(values.mean()) and lo < est < hi
    _, lo_i, hi_i = metrics.bootstrap_ci(values, None, n_boot=500, seed=1)
    # clustered data: resampling photographers gives a much wider interval than resampling items
    assert (hi - lo) > 2.5 * (hi_i - lo_i)
    # the group-level standard error of the mean is about sd(group means)/sqrt(20)
    se = np.std(values.reshape(20, 10).mean(1), ddof=1) / math.sqrt(20)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert metrics.bootstrap_ci(values, groups, n_boot=200, seed=3) == metrics.bootstrap_ci(values, groups, n_boot=200, seed=3)


# ---------------------------------------------------------------- PRDC

def _prdc_reference(real_deg, fake_deg, k):
    """Naeem et al. definitions with sklearn's haversine and explicit sorting (independent code)."""
    from sklearn.metrics import pairwise_distances
    real, fake = np.radians(real_deg), np.radians(fake_deg)
    rr = pairwise_distances(real, metric="haversine")
    ff = pairwise_distances(fake, metric="haversine")
    rf = pairwise_distances(real, fake, metric="haversine")
    r_real = np.sort(rr, axis=1)[:, k]
    r_fake = np.sort(ff, axis=1)[:, k]
    precision = np.mean([any(rf[i, j] < r_real[i] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(rf[i, j] < r_fake[j] for j in range(len(fake))) for i in range(len(real))])
    density = np.mean([sum(rf[i, j] < r_real[i] for i in range(len(real))) for j in range(len(fake))]) / k
    coverage = np.mean([rf[i].min() < r_real[i] for i in range(len(real))])
    return precision, recall, density, coverage


def test_prdc_matches_reference_definitions():
    rng = np.random.default_rng(0)
    real = np.c_[rng.uniform(-60, 60, 90), rng.uniform(-180, 180, 90)]
    fake = real + rng.normal(scale=5, size=real.shape)
    fake[:, 0] = np.clip(fake[:, 0], -90, 90)
    fake[:30] = np.c_[rng.uniform(-90, 90, 30), rng.uniform(-180, 180, 30)]
    out = metrics.prdc(real, fake, k=3)
    assert tuple(out.values()) == pytest.approx(_prdc_reference(real, fake, 3))
    # official chunking: torch.chunk into 20 pieces, metrics averaged over pieces
    pieces = zip(torch.tensor(real).chunk(20), torch.tensor(fake).chunk(20))
    ref = np.mean([_prdc_reference(r.numpy(), f.numpy(), 3) for r, f in pieces], axis=0)
    assert tuple(metrics.prdc(real, fake, k=3, num_splits=20).values()) == pytest.approx(tuple(ref))
    same = metrics.prdc(real, real, k=3)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0


def test_same_region_name_in_two_countries_is_a_plain_hit_but_not_a_composite_hit():
    bolivia, argentina = [-17.78, -63.18], [-51.62, -69.22]  # both in an admin1 called "Santa Cruz"
    t, p = reverse_geocode(np.array([bolivia, argentina]))
    assert t.admin1 == p.admin1 == "Santa Cruz" and t.cc != p.cc
    out = metrics.admin_accuracy(np.array([argentina]), true_deg=np.array([bolivia]))
    assert out["region_acc"] == 0.0 and out["region_n"] == 1
    assert out["area_n"] == 0 and math.isnan(out["area_acc"])  # GeoNames has no admin2 there: left out
