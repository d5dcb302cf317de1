"""geo.siting: MCLP and LSCP with spopt on cases whose answer is known by hand."""

import itertools
import math

import numpy as np
import pytest
from shapely.geometry import box

from geo.siting import (
    SitingError,
    aggregate_demand,
    candidate_lattice,
    covered_by,
    make_solver,
    site_facilities,
)


def test_mclp_picks_the_candidate_that_covers_most_demand():
    # A cluster of 10 households around (0, 0), two stragglers far apart.
    rng = np.random.default_rng(1)
    cx = np.r_[rng.uniform(-50, 50, 10), 2000.0, -2000.0]
    cy = np.r_[rng.uniform(-50, 50, 10), 0.0, 0.0]
    r = site_facilities(cx, cy, np.ones(12), [2000.0, 10.0, -2000.0], [0.0, 0.0, 0.0], 200.0, k=1)
    assert r.chosen.tolist() == [1]
    assert r.covered_before == 0 and r.covered_after == 10 and r.total == 12
    assert r.gains.tolist() == [10.0]
    assert r.method == "mclp"


def test_mclp_weights_decide():
    # One heavy household beats three light ones.
    x = [0.0, 1000.0, 1010.0, 1020.0]
    w = [10.0, 1.0, 1.0, 1.0]
    r = site_facilities(x, [0.0] * 4, w, [0.0, 1010.0], [0.0, 0.0], 50.0, k=1)
    assert r.chosen.tolist() == [0] and r.covered_after == 10.0


def test_mclp_ignores_demand_existing_facilities_cover():
    # The cluster is already served: the new site goes to the stragglers.
    x = [0.0, 5.0, 10.0, 3000.0, 3010.0]
    r = site_facilities(
        x,
        [0.0] * 5,
        np.ones(5),
        [5.0, 3005.0],
        [0.0, 0.0],
        100.0,
        k=1,
        existing_x=[0.0],
        existing_y=[50.0],
    )
    assert r.chosen.tolist() == [1]
    assert (r.covered_before, r.covered_after) == (3.0, 5.0)


def test_lscp_on_a_line_needs_the_known_minimum():
    """11 households 100 m apart on a line; a site covers its neighbours: ⌈11/3⌉ = 4."""
    x = np.arange(11) * 100.0
    y = np.zeros(11)
    r = site_facilities(x, y, np.ones(11), x, y, 150.0, lscp=True)
    assert len(r.chosen) == 4
    assert r.covered_after == 11 and r.unreachable == 0
    assert covered_by(x, y, x[r.chosen], y[r.chosen], 150.0).all()
    # With a 250 m reach a site covers five: ⌈11/5⌉ = 3.
    assert len(site_facilities(x, y, np.ones(11), x, y, 250.0, lscp=True).chosen) == 3


def test_lscp_leaves_out_what_no_candidate_reaches():
    x = [0.0, 100.0, 5000.0]
    r = site_facilities(x, [0.0] * 3, np.ones(3), [50.0], [0.0], 60.0, lscp=True)
    assert r.chosen.tolist() == [0]
    assert r.unreachable == 1.0 and r.covered_after == 2.0


def test_mclp_matches_brute_force_on_a_random_instance():
    rng = np.random.default_rng(7)
    dx, dy = rng.uniform(0, 1000, 40), rng.uniform(0, 1000, 40)
    w = rng.integers(1, 5, 40).astype(float)
    sx, sy = rng.uniform(0, 1000, 9), rng.uniform(0, 1000, 9)
    ex, ey = [500.0], [500.0]
    radius = 220.0
    before = covered_by(dx, dy, ex, ey, radius)
    best = 0.0
    for combo in itertools.combinations(range(9), 3):
        cov = before | covered_by(dx, dy, sx[list(combo)], sy[list(combo)], radius)
        best = max(best, float(w[cov].sum()))
    r = site_facilities(dx, dy, w, sx, sy, radius, k=3, existing_x=ex, existing_y=ey)
    assert r.covered_after == best
    assert r.gains.sum() == pytest.approx(r.covered_after - r.covered_before)
    assert list(r.gains) == sorted(r.gains, reverse=True)


def test_more_sites_asked_than_can_help():
    r = site_facilities(
        [0.0, 10.0], [0.0, 0.0], [1.0, 1.0], [5.0, 900.0, 950.0], [0.0] * 3, 20.0, k=3
    )
    assert r.chosen.tolist() == [0]
    assert "only 1" in r.note
    r = site_facilities(
        [0.0], [0.0], [1.0], [5.0], [0.0], 20.0, k=2, existing_x=[0.0], existing_y=[1.0]
    )
    assert len(r.chosen) == 0 and "already cover" in r.note


def test_bad_questions_are_refused():
    with pytest.raises(SitingError) as err:
        site_facilities([0.0], [0.0], [1.0], [0.0], [0.0], 10.0, k=1, lscp=True)
    assert err.value.field == "k"
    with pytest.raises(SitingError):
        site_facilities([0.0], [0.0], [1.0], [0.0], [0.0], 10.0)
    with pytest.raises(SitingError):
        site_facilities([0.0], [0.0], [1.0], [0.0], [0.0], 10.0, k=0)


def test_demand_is_aggregated_above_the_cap_keeping_its_weight():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 10_000, 12_000), rng.uniform(0, 10_000, 12_000)
    ax, ay, aw, cell = aggregate_demand(x, y, np.ones(12_000), max_points=5_000)
    assert len(ax) <= 5_000 and cell is not None and cell > 100
    assert aw.sum() == 12_000
    assert ax.min() >= 0 and ax.max() <= 10_000
    # Below the cap nothing changes.
    bx, _, bw, cell = aggregate_demand(x[:100], y[:100], np.ones(100))
    assert cell is None and np.array_equal(bx, x[:100]) and bw.sum() == 100


def test_candidate_lattice_respects_the_cap():
    area = box(0, 0, 10_000, 10_000)
    x, y, spacing = candidate_lattice(area, max_candidates=2_000)
    assert 1_500 <= len(x) <= 2_000 and spacing == pytest.approx(math.sqrt(1e8 / 2000), rel=0.1)
    x, y, spacing = candidate_lattice(area, spacing_m=1000)
    assert len(x) == 100 and spacing == 1000
    with pytest.raises(SitingError) as err:
        candidate_lattice(area, spacing_m=100, max_candidates=2_000)
    assert err.value.field == "spacing_m" and "use spacing_m >= " in str(err.value)
    # Only where uncovered demand is: the budget is spent there, at a finer spacing.
    near = (np.array([500.0]), np.array([500.0]), 300.0)
    x, y, spacing = candidate_lattice(area, near=near, max_candidates=2_000)
    assert np.hypot(x - 500, y - 500).max() <= 300
    assert spacing == 100.0 and len(x) > 20


def test_solver_is_highs_or_cbc():
    assert type(make_solver()).__name__ in ("HiGHS", "PULP_CBC_CMD")
