"""Geometry edge cases: poles, antimeridian, antipodal log/exp, round trips."""

import math

import pytest
import torch

from globeflow import sphere

D = torch.float64


def test_latlon_xyz_round_trip_including_poles_and_antimeridian():
    ll = torch.tensor([[0.0, 0.0], [45.0, 179.999], [-33.9, -179.999], [89.9999, 12.0], [-89.9999, -77.0],
                       [10.0, 180.0]], dtype=D)
    back = sphere.xyz_to_latlon(sphere.latlon_to_xyz(ll))
    assert torch.allclose(back[:, 0], ll[:, 0], atol=1e-9)
    # longitude 180 and -180 are the same meridian
    dlon = torch.remainder(back[:, 1] - ll[:, 1] + 180, 360) - 180
    assert dlon.abs().max() < 1e-7
    assert torch.allclose(sphere.latlon_to_xyz(torch.tensor([[90.0, 0.0]], dtype=D)),
                          torch.tensor([[0.0, 0.0, 1.0]], dtype=D), atol=1e-15)


def test_haversine_known_values():
    # Paris – New York: 5837 km (great circle, R = 6371)
    d = sphere.haversine_km(torch.tensor([48.8566, 2.3522], dtype=D), torch.tensor([40.7128, -74.0060], dtype=D))
    assert abs(d.item() - 5837.2) < 1.0
    # across the antimeridian: 1° of longitude on the equator
    d = sphere.haversine_km(torch.tensor([0.0, 179.5], dtype=D), torch.tensor([0.0, -179.5], dtype=D))
    assert abs(d.item() - 6371 * math.pi / 180) < 1e-6
    # pole to pole = half the circumference, whatever the longitudes
    d = sphere.haversine_km(torch.tensor([90.0, 10.0], dtype=D), torch.tensor([-90.0, -130.0], dtype=D))
    assert abs(d.item() - 6371 * math.pi) < 1e-6


def test_log_exp_inverse_and_antipodal():
    g = torch.Generator().manual_seed(0)
    x = sphere.uniform((500,), generator=g, dtype=D)
    y = sphere.uniform((500,), generator=g, dtype=D)
    v = sphere.log_map(x, y)
    assert torch.allclose((v * x).sum(-1), torch.zeros(500, dtype=D), atol=1e-12)  # tangent
    assert torch.allclose(v.norm(dim=-1), sphere.angle(x, y), atol=1e-12)
    assert torch.allclose(sphere.exp_map(x, v), y, atol=1e-10)
    # coincident: zero vector; antipodal: length pi, tangent, and exp returns the antipode
    assert sphere.log_map(x, x).abs().max() < 1e-12
    va = sphere.log_map(x, -x)
    assert torch.allclose(va.norm(dim=-1), torch.full((500,), math.pi, dtype=D), atol=1e-12)
    assert (va * x).sum(-1).abs().max() < 1e-12
    assert torch.allclose(sphere.exp_map(x, va), -x, atol=1e-10)
    # poles
    n = torch.tensor([[0.0, 0.0, 1.0]], dtype=D)
    assert torch.isfinite(sphere.log_map(n, -n)).all()


def test_geodesic_endpoints_and_midpoint():
    x0 = sphere.latlon_to_xyz(torch.tensor([[0.0, 170.0]], dtype=D))
    x1 = sphere.latlon_to_xyz(torch.tensor([[0.0, -170.0]], dtype=D))
    mid = sphere.xyz_to_latlon(sphere.geodesic(x0, x1, torch.tensor([0.5], dtype=D)))
    assert abs(abs(mid[0, 1].item()) - 180.0) < 1e-9  # crosses the antimeridian, not Greenwich
    assert torch.allclose(sphere.geodesic(x0, x1, 0.0), x0) and torch.allclose(sphere.geodesic(x0, x1, 1.0), x1)


def test_uniform_is_seedable_and_uniform():
    a = sphere.uniform((20000,), generator=torch.Generator().manual_seed(3))
    b = sphere.uniform((20000,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.ones(20000), atol=1e-6)
    # z is uniform on [-1, 1] for the uniform distribution on S² (Archimedes)
    counts = torch.histc(a[:, 2], bins=10, min=-1, max=1)
    assert (counts - 2000).abs().max() < 5 * math.sqrt(2000)


@pytest.mark.parametrize("lat", [90.0, -90.0])
def test_tangent_projection_at_poles(lat):
    x = sphere.latlon_to_xyz(torch.tensor([[lat, 33.0]], dtype=D))
    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=D)
    p = sphere.project_tangent(x, v)
    assert abs((p * x).sum().item()) < 1e-12 and torch.allclose(p[0, :2], v[0, :2], atol=1e-12)
