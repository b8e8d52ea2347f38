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
