"""Tests of globeflow.prediction: modes by vMF mean-shift, credible regions, rows and dicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from globeflow.metrics import geoscore, haversine_km
from globeflow.prediction import PREDICTION_COLUMNS, best_guess_index, find_modes, summarize, with_guidance
from globeflow.sphere import EARTH_RADIUS_KM

PARIS, SYDNEY, LIMA = (48.86, 2.35), (-33.87, 151.21), (-12.05, -77.04)


def _xyz(latlon):
    lat, lon = np.deg2rad(np.asarray(latlon, dtype=np.float64)).T
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)


def vmf_sample(mu_deg, kappa: float, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n exact vMF draws on S² (Wood 1994) → ((n, 2) degrees, (n,) log-density in nats/sr)."""
    mu = _xyz(np.array([mu_deg]))[0]
    u = rng.random(n)
    w = 1.0 + np.log(u + (1.0 - u) * np.exp(-2.0 * kappa)) / kappa  # cos of the angle to mu
    g = rng.standard_normal((n, 3))
    v = g - (g @ mu)[:, None] * mu
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    x = w[:, None] * mu + np.sqrt(np.clip(1 - w**2, 0, None))[:, None] * v
    latlon = np.rad2deg(np.stack([np.arctan2(x[:, 2], np.hypot(x[:, 0], x[:, 1])), np.arctan2(x[:, 1], x[:, 0])], -1))
    log_c = math.log(kappa / (2 * math.pi * -math.expm1(-2 * kappa)))
    return latlon, log_c + kappa * (w - 1.0)


def kappa_for_km(sigma_km: float) -> float:
    return (EARTH_RADIUS_KM / sigma_km) ** 2


def gc_km(a, b) -> float:
    x, y = _xyz(np.array([a]))[0], _xyz(np.array([b]))[0]
    return EARTH_RADIUS_KM * math.atan2(np.linalg.norm(np.cross(x, y)), x @ y)


def test_three_separated_clusters_have_their_masses_and_radii():
    rng = np.random.default_rng(0)
    masses = {PARIS: 0.5, SYDNEY: 0.3, LIMA: 0.2}
    sigma_km = 300.0
    parts = [vmf_sample(c, kappa_for_km(sigma_km), int(1500 * m), rng)[0] for c, m in masses.items()]
    modes = find_modes(np.concatenate(parts), kernel_km=150.0)
    assert len(modes) >= 3
    for mode, (centre, mass) in zip(modes[:3], masses.items()):
        assert gc_km((mode.lat, mode.lon), centre) < 100.0
        assert abs(mode.mass - mass) <= 0.03
        # 50 % of a 2-D isotropic Gaussian of std σ lies within σ·sqrt(2 ln 2) ≈ 1.18 σ
        assert 0.9 * sigma_km < mode.radius_km < 1.45 * sigma_km
    assert sum(m.mass for m in modes[:3]) >= 0.97


def test_cluster_across_the_antimeridian_is_one_mode():
    rng = np.random.default_rng(1)
    samples, _ = vmf_sample((-17.0, 179.9), kappa_for_km(200.0), 800, rng)  # Fiji
    assert (samples[:, 1] > 0).any() and (samples[:, 1] < 0).any()
    modes = find_modes(samples)
    assert modes[0].mass > 0.95
    assert gc_km((modes[0].lat, modes[0].lon), (-17.0, 179.9)) < 50.0


def test_cluster_at_the_pole_is_one_mode():
    rng = np.random.default_rng(2)
    samples, _ = vmf_sample((89.9, 0.0), kappa_for_km(200.0), 800, rng)
    assert np.ptp(samples[:, 1]) > 300  # longitudes all around
    modes = find_modes(samples)
    assert modes[0].mass > 0.95
    assert modes[0].lat > 88.5


def test_many_samples_use_seed_subset_and_keep_masses():
    rng = np.random.default_rng(3)
    a, _ = vmf_sample(PARIS, kappa_for_km(250.0), 3000, rng)
    b, _ = vmf_sample(SYDNEY, kappa_for_km(250.0), 1000, rng)
    modes = find_modes(np.concatenate([a, b]), max_seeds=500)
    assert abs(modes[0].mass - 0.75) <= 0.03 and abs(modes[1].mass - 0.25) <= 0.03


@pytest.mark.parametrize("sigma_km", [300.0, 1500.0])
def test_credible_regions_match_the_analytic_vmf_caps(sigma_km):
    kappa = kappa_for_km(sigma_km)
    samples, lp = vmf_sample(PARIS, kappa, 4000, np.random.default_rng(4))
    pred = summarize(samples, lp, model="m", encoder="e")
    for mass in (0.5, 0.9):
        one_minus_cos = -math.log1p(-mass * -math.expm1(-2 * kappa)) / kappa  # HPD cap of that mass
        area = 2 * math.pi * one_minus_cos * EARTH_RADIUS_KM**2
        assert pred.region(mass).area_km2 == pytest.approx(area, rel=0.05)
        assert pred.region(mass).radius_km == pytest.approx(EARTH_RADIUS_KM * math.acos(1 - one_minus_cos), rel=0.03)
    assert pred.localizability == pytest.approx(lp.mean())
    assert pred.best_guess == tuple(samples[np.argmax(lp)])
    assert gc_km(pred.best_guess, PARIS) < 0.05 * sigma_km


def test_calibrated_credible_masses_widen_the_stated_region():
    """A model's conformal calibration {"0.9": 0.97}: the region keeps its stated level 0.9 and is the
    analytic HPD cap of mass 0.97; levels without calibration stay nominal."""
    kappa = kappa_for_km(300.0)
    samples, lp = vmf_sample(PARIS, kappa, 4000, np.random.default_rng(5))
    pred = summarize(samples, lp, model="m", encoder="e", credible_masses={"0.9": 0.97})
    one_minus_cos = -math.log1p(-0.97 * -math.expm1(-2 * kappa)) / kappa
    assert pred.region(0.9).mass == 0.9
    assert pred.region(0.9).area_km2 == pytest.approx(2 * math.pi * one_minus_cos * EARTH_RADIUS_KM**2, rel=0.05)
    assert pred.region(0.5).area_km2 == summarize(samples, lp, model="m", encoder="e").region(0.5).area_km2


def test_summary_rows_dicts_and_countries():
    rng = np.random.default_rng(5)
    a, la = vmf_sample(PARIS, kappa_for_km(100.0), 700, rng)
    b, lb = vmf_sample(SYDNEY, kappa_for_km(100.0), 300, rng)
    samples, lp = np.concatenate([a, b]), np.concatenate([la + math.log(0.7), lb + math.log(0.3)])
    pred = summarize(samples, lp, model="plonk-test", encoder="enc", input_id="x.jpg", truth_deg=(48.0, 2.0))
    assert pred.top_country == "FR" and 0.6 < pred.top_country_prob < 0.8
    assert pred.country_probs.get("AU", 0) == pytest.approx(0.3, abs=0.03)
    assert [m.country for m in pred.modes[:2]] == ["FR", "AU"]
    row = pred.to_row()
    assert list(row) == [*PREDICTION_COLUMNS, "true_lat", "true_lon"]
    assert row["id"] == "x.jpg" and row["true_lat"] == 48.0 and row["radius50_km"] < row["radius90_km"]
    d = json.loads(json.dumps(pred.to_dict(include_samples=True)))
    assert len(d["samples"]) == 1000 and d["error_km"] == pytest.approx(pred.error_km)
    assert "samples" not in pred.to_dict()
    assert list(summarize(a, la, model="m", encoder="e").to_row()) == list(PREDICTION_COLUMNS)


def test_best_guess_rules_pick_the_tallest_peak_or_the_most_mass():
    """700 samples in a broad Paris cluster, 300 in a sharp Sydney one: the density rule takes a Sydney
    sample (the tallest peak); the expected-GeoScore rule takes the Paris sample that maximises the
    mean GeoScore over all samples, checked against a brute-force haversine computation."""
    rng = np.random.default_rng(3)
    a, la = vmf_sample(PARIS, kappa_for_km(400.0), 700, rng)
    b, lb = vmf_sample(SYDNEY, kappa_for_km(30.0), 300, rng)
    samples, lp = np.concatenate([a, b]), np.concatenate([la + math.log(0.7), lb + math.log(0.3)])
    dens = best_guess_index(samples, lp, "density")
    gs = best_guess_index(samples, lp, "geoscore")
    assert gc_km(samples[dens], SYDNEY) < 100 and gc_km(samples[gs], PARIS) < 300
    brute = geoscore(haversine_km(samples[:512, None, :], samples[None, :, :])).mean(1)
    assert gs == int(np.argmax(brute))
    pred = summarize(samples, lp, model="m", encoder="e", best_guess="geoscore")
    assert pred.best_guess == tuple(samples[gs])
    assert summarize(samples, lp, model="m", encoder="e").best_guess == tuple(samples[dens])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        summarize(np.zeros((0, 2)), np.zeros(0), model="m", encoder="e")
    with pytest.raises(ValueError, match="3 samples but 2"):
        summarize(np.zeros((3, 2)), np.zeros(2), model="m", encoder="e")
    with pytest.raises(ValueError, match="truth_deg"):
        summarize(np.zeros((3, 2)), np.zeros(3), model="m", encoder="e", truth_deg=(100.0, 0.0))
    with pytest.raises(ValueError, match="best guess rule 'median'"):
        summarize(np.zeros((3, 2)), np.zeros(3), model="m", encoder="e", best_guess="median")
    with pytest.raises(ValueError, match="kernel_km"):
        find_modes(np.zeros((3, 2)), kernel_km=0)


def test_conformal_masses_follow_the_held_out_ranks():
    """Ranks uniform on (0, 1) (a calibrated model) give masses ≈ the levels; ranks squeezed into
    (0, 0.5) (an under-confident model) give masses about half the levels."""
    from globeflow.credible import conformal_masses, coverage_ranks

    lp = np.arange(100.0)[None, :].repeat(3, 0)
    assert coverage_ranks(np.array([-1.0, 49.5, 100.0]), lp).tolist() == [1.0, 0.5, 0.0]
    ranks = (np.arange(999) + 0.5) / 999
    m = conformal_masses(ranks, (0.5, 0.9))
    assert abs(m["0.5"] - 0.5) < 0.01 and abs(m["0.9"] - 0.9) < 0.01
    m = conformal_masses(ranks / 2, (0.5, 0.9))
    assert abs(m["0.5"] - 0.25) < 0.01 and abs(m["0.9"] - 0.45) < 0.01
    # the stated share of held-out truths is covered at the fitted mass
    assert (ranks / 2 <= m["0.9"]).mean() >= 0.9


def test_best_guess_country_and_most_probable_country_are_told_apart():
    """Samples split 45 % Paris, 55 % across three US cities: the density rule picks the sharp Paris
    cluster, so the best guess is in France while the most probable country is the US. The row, the
    dict and the CLI/web guidance fields say which figure is which."""
    rng = np.random.default_rng(3)
    parts = [vmf_sample(PARIS, kappa_for_km(20.0), 450, rng)]
    for city in ((40.7, -74.0), (34.05, -118.25), (41.9, -87.6)):
        x, lx = vmf_sample(city, kappa_for_km(300.0), 183, rng)
        parts.append((x, lx + math.log(0.55 / 3)))
    samples = np.concatenate([p[0] for p in parts])
    lp = np.concatenate([parts[0][1] + math.log(0.45)] + [p[1] for p in parts[1:]])
    pred = summarize(samples, lp, model="m", encoder="e", best_guess="density")
    assert pred.guess_country == "FR" and pred.top_country == "US" and pred.top_country_prob > pred.country_probs["FR"]
    row = pred.to_row()
    assert row["guess_country"] == "FR" and row["top_country"] == "US"
    assert row["best_guess_rule"] == "highest-density sample of the same samples"
    stated = with_guidance(pred, None, -0.85, -0.3)  # same samples: the separate weight does not apply
    d = stated.to_dict()
    assert d["best_guess"]["country"] == "FR" and d["best_guess"]["cfg"] == -0.85
    assert d["distribution"] == {"cfg": -0.85, "num_samples": len(samples),
                                 "describes": "modes, credible_regions, country_probs, top_country, localizability"}
    apart = with_guidance(summarize(samples, lp, model="m", encoder="e", best_guess_point=(10.0, 20.0)), None, -0.85, -0.3)
    assert apart.best_guess_source == "separate" and apart.to_dict()["best_guess"]["cfg"] == -0.3
    assert "separate samples at guidance w = -0.3" in apart.best_guess_text
