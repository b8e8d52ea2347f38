"""Highest-density credible regions estimated from samples and their log-densities.

For a density p on S² and samples x_i ~ p with log-densities ℓ_i (nats per
steradian), the highest-density region of mass m is {x : log p(x) ≥ τ_m} with
τ_m = the (1 − m) quantile of ℓ_i. Its area is estimated without any grid by
importance sampling: area = E_p[1(ℓ ≥ τ) / p] ≈ mean_i 1(ℓ_i ≥ τ) · exp(−ℓ_i).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from globeflow.sphere import EARTH_AREA_KM2, EARTH_RADIUS_KM, SPHERE_AREA


@dataclass(frozen=True)
class CredibleRegion:
    mass: float  # nominal probability mass, e.g. 0.9
    log_threshold: float  # nats per steradian
    area_km2: float
    radius_km: float  # radius of the spherical cap with the same area


def cap_radius_km(area_km2: float | np.ndarray) -> np.ndarray:
    """Great-circle radius (km) of a spherical cap of the given area on the Earth sphere."""
    frac = np.clip(np.asarray(area_km2, dtype=np.float64) / (2 * np.pi * EARTH_RADIUS_KM**2), 0.0, 2.0)
    return EARTH_RADIUS_KM * np.arccos(1.0 - frac)


def credible_region(sample_log_prob: np.ndarray, mass: float) -> CredibleRegion:
    """(K,) log-densities of samples from the model → its HPD region of the given mass."""
    if not 0.0 < mass < 1.0:
        raise ValueError(f"mass must be in (0, 1); got {mass}")
    lp = np.asarray(sample_log_prob, dtype=np.float64)
    tau = float(np.quantile(lp, 1.0 - mass))
    steradians = float(np.mean((lp >= tau) * np.exp(-lp)))
    steradians = min(steradians, SPHERE_AREA)
    area = steradians / SPHERE_AREA * EARTH_AREA_KM2
    return CredibleRegion(mass, tau, area, float(cap_radius_km(area)))


def coverage_ranks(truth_log_prob: np.ndarray, sample_log_prob: np.ndarray) -> np.ndarray:
    """(M,) the smallest HPD mass whose region covers each truth: the share of the item's own
    samples (M, K) whose log-density exceeds the truth's (M,)."""
    t = np.asarray(truth_log_prob, dtype=np.float64)
    return (np.asarray(sample_log_prob, dtype=np.float64) > t[:, None]).mean(axis=1)


def conformal_masses(ranks: np.ndarray, levels=(0.5, 0.9)) -> dict[str, float]:
    """Split-conformal credible masses: for each stated level, the HPD mass whose region covers
    ⌈(n + 1)·level⌉ of n held-out truths (``ranks`` from :func:`coverage_ranks`).

    Returns {f"{level:g}": mass}, masses in [0.001, 0.999]; a mass below its level means the model
    was under-confident (its nominal regions covered too often).
    """
    need = np.sort(np.asarray(ranks, dtype=np.float64))
    n = len(need)
    if n == 0:
        raise ValueError("conformal_masses needs at least one held-out item")
    return {f"{lv:g}": float(np.clip(need[min(n - 1, int(np.ceil((n + 1) * lv)) - 1)] + 1e-6, 0.001, 0.999))
            for lv in levels}
