"""The radial rule of the R³ direction densities resolves thin shells with heavy tails."""

import math

import numpy as np
import pytest
import torch

from globeflow.density import RadialShell


@pytest.mark.parametrize("width", [0.002, 0.05])
def test_asinh_nodes_integrate_a_thin_peak_with_tails(width):
    """∫ of a Gaussian peak (sd ``width``) plus a Cauchy-like tail, against the closed form."""
    radii = torch.cat([1 + width * torch.randn(4000, generator=torch.Generator().manual_seed(0)),
                       torch.tensor([0.7, 1.3])])
    shell = RadialShell.from_radii(radii)
    lo, hi = float(shell.lo), float(shell.hi)

    def f(r):
        return np.exp(-0.5 * ((r - 1) / width) ** 2) / (width * math.sqrt(2 * math.pi)) + 0.01 / (1 + ((r - 1) / 0.1) ** 2)

    def phi(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    exact = phi((hi - 1) / width) - phi((lo - 1) / width) + 0.01 * 0.1 * (math.atan((hi - 1) / 0.1) - math.atan((lo - 1) / 0.1))
    r, w = (a[0] for a in shell.nodes(24 if width < 0.01 else 12))  # 24 = Geolocator.log_prob's default radial_nodes
    assert abs(float((w.numpy() * f(r.numpy())).sum()) / exact - 1) < 1e-3
    # a rule uniform in r over the same range, with as many nodes, misses the thin peak badly
    z, wz = np.polynomial.legendre.leggauss(24)
    r_lin = 0.5 * (hi - lo) * z + 0.5 * (hi + lo)
    if width < 0.01:
        assert abs((0.5 * (hi - lo) * wz * f(r_lin)).sum() / exact - 1) > 0.1
