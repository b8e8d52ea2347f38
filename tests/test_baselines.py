"""Baselines on real MP-16 photo locations: normalisation, sampler/density agreement, signal."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from globeflow.baselines import BASELINES, Baseline, make_baseline, vmf
from globeflow.baselines.base import group_split, to_xyz
from globeflow.baselines.cells import assign_cells, build_quadtree, cell_area_sr
from globeflow.metrics import haversine_km, point_metrics
from globeflow.sphere import uniform

ROOT = Path(__file__).resolve().parents[1]
MP16 = ROOT.parent / "shared" / "data" / "mp16" / "coordinates_100k.csv"
DENSITY = ("cells", "retrieval", "vmf", "vmf_mixture")


def sphere_grid(n_z: int = 600, n_lon: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes in sin(lat) × uniform longitudes → (P, 2) degrees and (P,) weights in sr."""
    z, wz = np.polynomial.legendre.leggauss(n_z)
    lon = -180.0 + (np.arange(n_lon) + 0.5) * 360.0 / n_lon
    lat = np.degrees(np.arcsin(z))
    grid = np.stack(np.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2)
    weights = np.repeat(wz, n_lon) * (2 * np.pi / n_lon)
    return grid, weights


# ---------------------------------------------------------------- vMF utilities

@pytest.mark.parametrize("kappa", [0.0, 1e-9, 1e-5, 1e-3, 0.5, 1.0, 10.0, 100.0, 700.0, 1e4, 1e6])
def test_log_normalizer_against_mpmath(kappa):
    import mpmath
    mpmath.mp.dps = 50
    k = mpmath.mpf(kappa)
    exact = -mpmath.log(4 * mpmath.pi) if kappa == 0 else mpmath.log(k / (4 * mpmath.pi * mpmath.sinh(k)))
    got = float(vmf.log_normalizer(torch.tensor(kappa, dtype=torch.float64)))
    assert got == pytest.approx(float(exact), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("kappa", [0.0, 1.0, 100.0, 1e4, 1e6])
def test_vmf_density_integrates_to_one(kappa):
    # μ at the north pole: ∫ p = 2π ∫ p(t) dt with t = 1 − z = ‖x − μ‖²/2 ∈ [0, 2]
    upper = 2.0 if kappa == 0 else min(2.0, 80.0 / kappa)
    t, w = np.polynomial.legendre.leggauss(200)
    t, w = (t + 1) * upper / 2, w * upper / 2
    z = 1.0 - t
    x = torch.tensor(np.stack([np.sqrt(np.clip(1 - z**2, 0, None)), np.zeros_like(z), z], -1))
    mu = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    p = torch.exp(vmf.log_prob(x, mu, torch.tensor(kappa, dtype=torch.float64))).numpy()
    assert 2 * np.pi * np.sum(w * p) == pytest.approx(1.0, rel=1e-8)


def test_vmf_density_on_the_latlon_grid_and_mixture():
    grid, weights = sphere_grid(300, 600)
    x = to_xyz(grid)
    mu = to_xyz(np.array([[60.0, 179.0], [-89.0, 10.0], [0.0, -179.9]]))
    kappa = torch.tensor([50.0, 300.0, 5.0], dtype=torch.float64)
    log_w = torch.log(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    for i in range(3):
        assert np.sum(weights * np.exp(vmf.log_prob(x, mu[i], kappa[i]).numpy())) == pytest.approx(1.0, abs=1e-6)
    mix = vmf.mixture_log_prob(x, log_w, mu, kappa).numpy()
    assert np.sum(weights * np.exp(mix)) == pytest.approx(1.0, abs=1e-6)
    # sampler vs density: probability of the northern hemisphere and mean log-density
    gen = torch.Generator().manual_seed(0)
    s = vmf.mixture_sample(log_w[None], mu[None], kappa[None], 20000, generator=gen)[0]
    north_quad = np.sum(weights * np.exp(mix) * (grid[:, 0] > 0))
    north_mc = float((s[:, 2] > 0).double().mean())
    assert north_mc == pytest.approx(north_quad, abs=4 * math.sqrt(north_quad * (1 - north_quad) / 20000))
    neg_entropy = np.sum(weights * np.exp(mix) * mix)
    lp = vmf.mixture_log_prob(s, log_w, mu, kappa).numpy()
    assert lp.mean() == pytest.approx(neg_entropy, abs=4 * lp.std() / math.sqrt(len(lp)))


@pytest.mark.parametrize("kappa", [0.0, 2.0, 50.0, 1e5])
@pytest.mark.parametrize("mu_deg", [[90.0, 0.0], [0.0, 180.0], [-33.0, -70.0]])
def test_wood_sampler_matches_the_exact_distribution(kappa, mu_deg):
    gen = torch.Generator().manual_seed(1)
    n = 20000
    mu = to_xyz(np.array(mu_deg))
    x = vmf.sample(mu.expand(n, 3), torch.tensor(kappa, dtype=torch.float64), generator=gen)
    assert torch.allclose(x.norm(dim=-1), torch.ones(n, dtype=torch.float64))
    t = (0.5 * ((x - mu) ** 2).sum(-1)).numpy()  # 1 − μ·x, exact for nearby points
    if kappa == 0:
        cdf = lambda v: np.clip(v / 2, 0, 1)  # noqa: E731
    else:
        cdf = lambda v: -np.expm1(-kappa * np.clip(v, 0, 2)) / -np.expm1(-2 * kappa)  # noqa: E731
    assert stats.kstest(t, cdf).pvalue > 1e-3
    # azimuth around μ is uniform (chi-square over 8 sectors)
    e1 = torch.linalg.cross(mu, torch.tensor([0.0, 1.0, 0.3], dtype=torch.float64))
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(mu, e1)
    phi = torch.atan2(x @ e2, x @ e1).numpy()
    counts = np.histogram(phi, bins=8, range=(-np.pi, np.pi))[0]
    assert stats.chisquare(counts).pvalue > 1e-3
    # mean log-density of the samples = −entropy = log C(κ) + κ − κ E[1 − μ·x]
    lp = vmf.log_prob(x, mu, torch.tensor(kappa, dtype=torch.float64)).numpy()
    expected_t = 1.0 if kappa == 0 else 1 / kappa - 2 / math.expm1(2 * kappa) if kappa < 300 else 1 / kappa
    expected = float(vmf.log_normalizer(torch.tensor(kappa, dtype=torch.float64))) + kappa - kappa * expected_t
    assert lp.mean() == pytest.approx(expected, abs=4 * lp.std() / math.sqrt(n) + 1e-9)


# ---------------------------------------------------------------- fitted baselines on MP-16

def synthetic_embeddings(latlon: np.ndarray, dim: int = 32, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    """Embeddings that carry signal: noisy random Fourier features of the location."""
    rng = np.random.default_rng(seed)
    proj = rng.normal(scale=3.0, size=(3, dim // 2))
    xyz = to_xyz(latlon).numpy()
    feats = np.concatenate([np.sin(xyz @ proj), np.cos(xyz @ proj)], 1)
    return (feats + noise * np.random.default_rng(seed + 1).normal(size=feats.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def mp16():
    if not MP16.exists():
        pytest.skip(f"shared data missing: {MP16}")
    coords = np.loadtxt(MP16, delimiter=",", skiprows=1, max_rows=2500)
    emb = synthetic_embeddings(coords)
    groups = np.random.default_rng(2).integers(0, 400, len(coords))  # pseudo-photographers
    return {"train": (emb[:2000], coords[:2000], groups[:2000]), "test": (emb[2000:], coords[2000:])}


@pytest.fixture(scope="module")
def fitted(mp16):
    emb, coords, groups = mp16["train"]
    return {name: make_baseline(name).fit(emb, coords, groups, seed=0) for name in BASELINES}


def test_all_baselines_share_the_interface(fitted, mp16):
    emb, _ = mp16["test"]
    for name, model in fitted.items():
        assert isinstance(model, Baseline) and model.id == name
        point = model.point_estimate(emb[:7])
        assert point.shape == (7, 2) and np.isfinite(point).all() and (np.abs(point[:, 0]) <= 90).all()
        s1, s2 = model.sample(emb[:3], 5, seed=4), model.sample(emb[:3], 5, seed=4)
        assert s1.shape == (3, 5, 2) and np.array_equal(s1, s2), name
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("nope")


def test_regression_has_no_density_and_beats_the_mean_direction(fitted, mp16):
    model = fitted["regression"]
    emb, coords = mp16["test"]
    with pytest.raises(NotImplementedError, match="no density"):
        model.log_prob(emb, coords)
    s = model.sample(emb[:2], 4)
    assert np.allclose(s, model.point_estimate(emb[:2])[:, None, :])
    train_xyz = to_xyz(mp16["train"][1]).mean(0)
    mean_dir = np.degrees([math.asin(train_xyz[2] / train_xyz.norm()), math.atan2(train_xyz[1], train_xyz[0])])
    ours = point_metrics(model.point_estimate(emb), coords)["median_km"]
    constant = float(np.median(haversine_km(np.broadcast_to(mean_dir, coords.shape), coords)))
    assert ours < 0.8 * constant


@pytest.mark.parametrize("name", ["retrieval", "vmf", "vmf_mixture"])
def test_density_integrates_to_one_and_agrees_with_samples(fitted, mp16, name):
    """∫ p = 1 by quadrature; P(cap of 1500 km around the point estimate) and E[log p] by Monte Carlo
    from ``sample`` agree with the same quadrature of ``log_prob``."""
    model = fitted[name]
    emb, _ = mp16["test"]
    grid, weights = sphere_grid(400, 800)
    k = 4000
    for i in (0, 1):
        e = emb[i:i + 1]
        lp_grid = model.log_prob(np.repeat(e, len(grid), 0), grid)
        p_grid = weights * np.exp(lp_grid)
        assert p_grid.sum() == pytest.approx(1.0, abs=0.01), (name, i)
        centre = model.point_estimate(e)[0]
        samples = model.sample(e, k, seed=5)[0]
        p_quad = float(p_grid[haversine_km(grid, centre) < 1500].sum())
        p_mc = float(np.mean(haversine_km(samples, centre) < 1500))
        assert p_mc == pytest.approx(p_quad, abs=4 * math.sqrt(p_quad * (1 - p_quad) / k) + 0.01), (name, i)
        lp_samples = model.log_prob(np.repeat(e, k, 0), samples)
        neg_entropy = float(np.sum(p_grid * lp_grid))
        assert lp_samples.mean() == pytest.approx(neg_entropy, abs=5 * lp_samples.std() / math.sqrt(k) + 0.05)


def _uniform_in_cells(cells: np.ndarray, per_cell: int, rng: np.random.Generator) -> np.ndarray:
    """(C, per_cell, 2) area-uniform random points inside each lat/lon rectangle (independent of the model)."""
    lat0, lat1, lon0, lon1 = (np.radians(cells[:, j])[:, None] for j in range(4))
    z = rng.uniform(np.sin(lat0), np.sin(lat1), (len(cells), per_cell))
    lon = rng.uniform(lon0, lon1, (len(cells), per_cell))
    return np.degrees(np.stack([np.arcsin(z), lon], -1))


def test_cells_density_integrates_to_one_exactly(fitted, mp16):
    """The density is piecewise constant on cells that partition S², so ∫ p = Σ_c p(x_c)·area_c exactly,
    for any x_c inside cell c (a Gauss–Legendre grid converges only slowly at the cell edges:
    0.95 at 400×800 nodes, 0.98 at 800×1600, for 0.4°-wide cells)."""
    model = fitted["cells"]
    emb, _ = mp16["test"]
    area = cell_area_sr(model.cells)
    assert area.sum() == pytest.approx(4 * np.pi, rel=1e-12)
    pts = _uniform_in_cells(model.cells, 10, np.random.default_rng(0))
    assert np.array_equal(assign_cells(model.cells, pts.reshape(-1, 2)), np.repeat(np.arange(len(area)), 10))
    for i in (0, 1):
        lp = model.log_prob(np.repeat(emb[i:i + 1], pts.size // 2, 0), pts.reshape(-1, 2)).reshape(len(area), 10)
        assert np.ptp(lp, axis=1).max() < 1e-9  # constant inside each cell
        assert np.sum(np.exp(lp[:, 0]) * area) == pytest.approx(1.0, rel=1e-9)


def test_cells_sampler_agrees_with_its_density(fitted, mp16):
    model = fitted["cells"]
    emb, _ = mp16["test"]
    k = 20000
    e = emb[2:3]
    samples = model.sample(e, k, seed=7)[0]
    idx = assign_cells(model.cells, samples)
    area = cell_area_sr(model.cells)
    centres = _uniform_in_cells(model.cells, 1, np.random.default_rng(1))[:, 0]
    mass = np.exp(model.log_prob(np.repeat(e, len(area), 0), centres)) * area  # P(cell) from log_prob
    observed = np.bincount(idx, minlength=len(area))
    big = mass * k >= 5  # chi-square on cells with enough expected draws, the rest pooled
    obs = np.r_[observed[big], observed[~big].sum()]
    exp = np.r_[mass[big], mass[~big].sum()] * k
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3
    # inside a cell, sin(lat) and lon are uniform
    top = np.argmax(observed)
    inside = samples[idx == top]
    lat0, lat1, lon0, lon1 = model.cells[top]
    u = (np.sin(np.radians(inside[:, 0])) - np.sin(np.radians(lat0))) / (np.sin(np.radians(lat1)) - np.sin(np.radians(lat0)))
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert stats.kstest((inside[:, 1] - lon0) / (lon1 - lon0), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("name", DENSITY)
def test_density_baselines_beat_the_uniform_density_on_held_out_photos(fitted, mp16, name):
    emb, coords = mp16["test"]
    nll = -fitted[name].log_prob(emb, coords).mean()
    assert nll < math.log(4 * math.pi) - 1.0, (name, nll)


def test_group_split_keeps_groups_apart():
    groups = np.repeat(np.arange(50), 3)
    tr, va = group_split(len(groups), groups, seed=3)
    assert not set(groups[tr]) & set(groups[va]) and len(tr) + len(va) == len(groups)
    with pytest.raises(ValueError, match="two groups"):
        group_split(4, np.zeros(4), seed=0)


def test_quadtree_respects_max_points():
    coords = np.loadtxt(MP16, delimiter=",", skiprows=1, max_rows=3000) if MP16.exists() else None
    if coords is None:
        pytest.skip("shared data missing")
    cells = build_quadtree(coords, max_points=40, max_depth=10)
    counts = np.bincount(assign_cells(cells, coords), minlength=len(cells))
    at_max_depth = np.isclose(cells[:, 3] - cells[:, 2], 360.0 / 2**10)
    assert counts[~at_max_depth].max() <= 40 and counts.sum() == len(coords)
    # only cells that cannot be split further hold more (many photos at one spot)
    assert (cells[counts > 40, 3] - cells[counts > 40, 2] == 360.0 / 2**10).all()
    # antimeridian and pole points land in a cell
    edge = np.array([[90.0, 180.0], [-90.0, -180.0], [0.0, 180.0], [10.0, 540.0]])
    assert (assign_cells(cells, edge) >= 0).all()


def test_retrieval_density_has_its_vmf_form(fitted):
    model = fitted["retrieval"]
    assert model.kappa in model.kappas and 0.0 <= model.epsilon < 1.0
    # the density at a training photo's own location, with its own embedding, is at least the
    # share of its own component: (1 − ε)/k · vMF(μ; μ, κ)
    emb, coords = model.db_emb[:5], model._db_latlon[:5]
    floor = math.log((1 - model.epsilon) / model.k) + float(
        vmf.log_normalizer(torch.tensor(model.kappa, dtype=torch.float64))) + model.kappa
    assert (model.log_prob(emb, coords) >= floor - 1e-9).all()


IM2GPS3K = ROOT / "data" / "im2gps3k"


def _im2gps3k_stores() -> list[Path]:
    return sorted(p.parent for p in IM2GPS3K.glob("*/store.json")) if IM2GPS3K.exists() else []


@pytest.mark.slow
@pytest.mark.skipif(not _im2gps3k_stores(), reason="no finished im2gps3k embedding store under data/im2gps3k/")
def test_real_im2gps3k_embeddings_give_normalised_densities():
    from globeflow.data.store import EmbeddingStore

    rows = EmbeddingStore(_im2gps3k_stores()[0]).load(labelled_only=True)
    emb, coords, groups = rows.embeddings, rows.latlon, rows.groups
    grid, weights = sphere_grid(400, 800)
    for name in ("retrieval", "vmf", "vmf_mixture"):
        model = make_baseline(name).fit(emb, coords, groups, seed=0)
        lp = model.log_prob(np.repeat(emb[:1], len(grid), 0), grid)
        assert np.sum(weights * np.exp(lp)) == pytest.approx(1.0, abs=0.01), name
    cells = make_baseline("cells").fit(emb, coords, groups, seed=0)
    pts = _uniform_in_cells(cells.cells, 1, np.random.default_rng(0))[:, 0]
    lp = cells.log_prob(np.repeat(emb[:1], len(pts), 0), pts)
    assert np.sum(np.exp(lp) * cell_area_sr(cells.cells)) == pytest.approx(1.0, rel=1e-9)


def test_prior_rows_fit_the_prior_part_of_cells_and_vmf_mixture(mp16):
    """300 photos plus 10,000 other MP-16 locations as unconditional rows: cells builds its quadtree
    from all of them and starts from their histogram, vmf_mixture fits its components on them; both
    stay normalised and give held-out locations a higher density than without the rows."""
    emb, coords, groups = (x[:300] for x in mp16["train"])
    prior = np.loadtxt(MP16, delimiter=",", skiprows=2501, max_rows=10_000)
    test_emb, test_coords = mp16["test"]
    for name, margin in (("cells", 0.3), ("vmf_mixture", 0.05)):  # nats/sr
        plain = make_baseline(name).fit(emb, coords, groups, seed=0)
        rich = make_baseline(name).fit(emb, coords, groups, seed=0, prior=prior)
        gain = plain.log_prob(test_emb, test_coords).mean() - rich.log_prob(test_emb, test_coords).mean()
        assert gain < -margin, (name, gain)
    assert len(rich.params(test_emb[:1])[0][0]) == 16
    cells = make_baseline("cells").fit(emb, coords, groups, seed=0, prior=prior)
    assert len(cells.cells) > 4 * len(make_baseline("cells").fit(emb, coords, groups, seed=0).cells)
    pts = _uniform_in_cells(cells.cells, 1, np.random.default_rng(1)).reshape(-1, 2)
    lp = cells.log_prob(np.repeat(test_emb[:1], len(pts), 0), pts)
    assert np.sum(np.exp(lp) * cell_area_sr(cells.cells)) == pytest.approx(1.0, rel=1e-9)
    grid, weights = sphere_grid(400, 800)
    p = weights * np.exp(rich.log_prob(np.repeat(test_emb[:1], len(grid), 0), grid))
    assert p.sum() == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="prior rows"):
        make_baseline("cells").fit(emb, coords, groups, prior=np.array([[95.0, 0.0]]))
