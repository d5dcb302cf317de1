"""Tests of geo.population: density surfaces, population estimates, apportionment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyproj import Geod
from shapely.geometry import Point, Polygon, box

from geo.population import (
    EARTH_RADIUS_M,
    Kernel,
    LocalFrame,
    PopulationSurface,
    apportion,
    random_surface,
)

LON0, LAT0 = 106.7, 26.6


def metric_box(frame: LocalFrame, x0_m, y0_m, x1_m, y1_m) -> Polygon:
    """Return a lon/lat polygon that is an exact rectangle in ``frame``."""
    return frame.to_lonlat(box(x0_m, y0_m, x1_m, y1_m))


# ------------------------------------------------------------------ LocalFrame


def test_frame_scale_is_one_degree_of_great_circle():
    frame = LocalFrame(LON0, LAT0)
    x, y = frame.forward(np.array([LON0 + 1.0]), np.array([LAT0 + 1.0]))
    assert y[0] == pytest.approx(EARTH_RADIUS_M * math.pi / 180, rel=1e-12)
    assert y[0] == pytest.approx(111_195.0, abs=1.0)
    assert x[0] == pytest.approx(y[0] * math.cos(math.radians(LAT0)), rel=1e-12)


def test_frame_round_trip_and_centre():
    frame = LocalFrame.around(box(106.0, 26.0, 107.0, 27.0))
    assert (frame.lon0, frame.lat0) == (106.5, 26.5)
    lon = np.array([106.1, 106.9])
    lat = np.array([26.2, 26.8])
    back = frame.inverse(*frame.forward(lon, lat))
    np.testing.assert_allclose(back[0], lon, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back[1], lat, rtol=0, atol=1e-12)


def test_frame_area_matches_geodesic_area():
    poly = box(106.6, 26.5, 106.7, 26.6)
    frame = LocalFrame.around(poly)
    geodesic_m2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(poly)[0])
    assert frame.to_metric(poly).area == pytest.approx(geodesic_m2, rel=5e-3)


# ------------------------------------------------------------------ density


def test_density_at_centre_and_at_one_sigma():
    surface = PopulationSurface((Kernel(LON0, LAT0, 1000.0, 2000.0),), base_per_km2=50.0)
    frame = LocalFrame(LON0, LAT0)
    lon, lat = frame.inverse(
        np.array([0.0, 2000.0, 0.0, 20_000.0]), np.array([0.0, 0.0, -2000.0, 0.0])
    )
    rho = surface.density(lon, lat)
    expected_sigma = 50.0 + 1000.0 * math.exp(-0.5)
    np.testing.assert_allclose(rho, [1050.0, expected_sigma, expected_sigma, 50.0], rtol=1e-9)


def test_density_is_vectorised_and_broadcasts():
    surface = random_surface(box(106.5, 26.5, 106.8, 26.8), seed=3)
    lon = np.linspace(106.5, 106.8, 12).reshape(3, 4)
    rho = surface.density(lon, 26.6)
    assert rho.shape == (3, 4)
    one_by_one = [surface.density(np.array([v]), np.array([26.6]))[0] for v in lon.ravel()]
    np.testing.assert_allclose(rho.ravel(), one_by_one, rtol=1e-12)
    np.testing.assert_array_equal(surface(lon, 26.6), rho)


def test_kernel_rejects_bad_parameters():
    with pytest.raises(ValueError, match="sigma_m"):
        Kernel(LON0, LAT0, 100.0, 0.0)
    with pytest.raises(ValueError, match="peak_per_km2"):
        Kernel(LON0, LAT0, -1.0, 100.0)
    with pytest.raises(ValueError, match="base_per_km2"):
        PopulationSurface((), base_per_km2=-5.0)


# ------------------------------------------------------------ estimate_population


def test_uniform_density_population_is_density_times_area():
    frame = LocalFrame(LON0, LAT0)
    poly = metric_box(frame, -2000, -1250, 2000, 1250)  # 10 km², centred on the frame
    surface = PopulationSurface((), base_per_km2=300.0)
    assert surface.estimate_population(poly) == pytest.approx(3000.0, rel=1e-9)


def test_gaussian_population_matches_closed_form():
    # A kernel holds peak * 2π σ² people; a box reaching 6σ out holds all of them.
    sigma_m, peak = 1500.0, 4000.0
    surface = PopulationSurface((Kernel(LON0, LAT0, peak, sigma_m),))
    frame = LocalFrame(LON0, LAT0)
    poly = metric_box(frame, -9000, -9000, 9000, 9000)
    expected = peak * 2 * math.pi * (sigma_m / 1000) ** 2
    assert surface.estimate_population(poly) == pytest.approx(expected, rel=0.01)
    # Half the plane holds half of them.
    half = metric_box(frame, 0, -9000, 9000, 9000)
    assert surface.estimate_population(half) == pytest.approx(expected / 2, rel=0.02)


def test_estimate_is_deterministic_and_handles_degenerate_input():
    surface = random_surface(box(106.5, 26.5, 106.8, 26.8), seed=1)
    poly = Point(106.6, 26.6).buffer(0.05)
    assert surface.estimate_population(poly) == surface.estimate_population(poly)
    assert surface.estimate_population(Polygon()) == 0.0
    # Smaller than one lattice cell: valued at its representative point.
    tiny = box(106.6, 26.6, 106.6 + 1e-7, 26.6 + 1e-7)
    assert surface.estimate_population(tiny, samples=1) > 0


# ----------------------------------------------------------------- random_surface


def test_random_surface_is_seeded_and_places_centres_inside():
    county = Polygon([(106.5, 26.5), (107.2, 26.6), (107.0, 27.3), (106.6, 27.1)])
    a = random_surface(county, seed=7, n_centres=6, seat=(106.9, 26.9))
    b = random_surface(county, seed=7, n_centres=6, seat=(106.9, 26.9))
    c = random_surface(county, seed=8, n_centres=6, seat=(106.9, 26.9))
    assert a == b
    assert a != c
    assert len(a.kernels) == 7
    seat = a.kernels[0]
    assert (seat.lon, seat.lat, seat.peak_per_km2) == (106.9, 26.9, 4000.0)
    for k in a.kernels[1:]:
        assert county.contains(Point(k.lon, k.lat))
        assert 150.0 <= k.peak_per_km2 <= 1200.0
    # The seat dominates the density map.
    assert a.density(np.array([106.9]), np.array([26.9]))[0] > 4000.0


# ---------------------------------------------------------------------- apportion


@pytest.mark.parametrize(
    ("total", "weights", "minimum", "expected"),
    [
        (10, [1, 1, 1], 1, [4, 3, 3]),
        (7, [1, 1, 1], 1, [3, 2, 2]),
        (10, [0.5, 0.3, 0.2], 1, [5, 3, 2]),
        (100, [1, 2, 3, 4], 1, [10, 20, 30, 40]),
        (5, [100, 0, 0], 1, [3, 1, 1]),
        # Entries below the minimum are lifted to it; the rest stay proportional.
        (20, [100, 1, 1], 2, [16, 2, 2]),
        (4, [0, 0, 0, 0], 1, [1, 1, 1, 1]),
        (3, [0, 0, 0, 0], 0, [1, 1, 1, 0]),
        (5, [3, 0.1], 0, [5, 0]),
        (66, [1], 1, [66]),
    ],
)
def test_apportion_known_answers(total, weights, minimum, expected):
    assert apportion(total, weights, minimum=minimum) == expected


def test_apportion_sums_and_respects_minimum_on_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 25))
        weights = rng.lognormal(0, 1.5, n)
        minimum = int(rng.integers(0, 3))
        total = minimum * n + int(rng.integers(0, 80))
        counts = np.array(apportion(total, weights, minimum=minimum))
        assert counts.sum() == total
        assert counts.min() >= minimum
        # A heavier entry never gets fewer units than a lighter one.
        order = np.argsort(weights)
        assert np.all(np.diff(counts[order]) >= 0)
        if minimum == 0:
            # Largest remainder stays within one unit of the exact quota.
            quota = total * weights / weights.sum()
            assert np.all(np.abs(counts - quota) < 1.0)


@pytest.mark.parametrize(
    ("total", "weights", "minimum", "message"),
    [
        (5, [], 1, "non-empty"),
        (5, [1, -1], 1, ">= 0"),
        (5, [1, float("nan")], 1, "finite"),
        (2, [1, 1, 1], 1, "at least 1 each"),
        (5, [1, 1], 3, "needs 6"),
        (5.5, [1, 1], 1, "integer"),
        (5, [1, 1], -1, "minimum"),
    ],
)
def test_apportion_errors(total, weights, minimum, message):
    with pytest.raises(ValueError, match=message):
        apportion(total, weights, minimum=minimum)
