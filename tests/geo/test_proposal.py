"""Tests of geo.proposal: balanced, contiguous grids that tile and nest in their communities."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box

from geo.planmetrics import PlanContext, PointLayer, plan_metrics
from geo.population import Kernel, LocalFrame, PopulationSurface, lattice_points
from geo.proposal import ProposalError, make_blocks, propose_grids

FRAME = LocalFrame(106.9, 27.0)


def ll(geom):
    return FRAME.to_lonlat(geom)


# Two communities: a 6x4 km rectangle and an L of 4x4 km minus a 2x2 km corner.
COMMUNITIES = {
    "520121001001": ll(box(0, 0, 6000, 4000)),
    "520121002001": ll(
        Polygon([(6000, 0), (10000, 0), (10000, 2000), (8000, 2000), (8000, 4000), (6000, 4000)])
    ),
}
_KLON, _KLAT = FRAME.inverse(2000.0, 2000.0)
SURFACE = PopulationSurface(
    kernels=(Kernel(float(_KLON), float(_KLAT), 4000.0, 800.0),),
    base_per_km2=200.0,
)


def population() -> PointLayer:
    x, y = lattice_points(box(0, 0, 10000, 4000), 100.0)
    lon, lat = FRAME.inverse(x, y)
    return PointLayer(lon, lat, SURFACE.density(lon, lat) * 0.01)


@pytest.fixture(scope="module")
def proposal():
    return propose_grids(COMMUNITIES, 7, {"population": population()}, seed=1, bursts=3)


def test_grids_tile_each_community_and_are_contiguous(proposal):
    assert len(proposal.geoms) == 7
    geoms = np.array(proposal.geoms, dtype=object)
    assert shapely.is_valid(geoms).all()
    assert (shapely.get_num_geometries(geoms) == 1).all()
    assert all(g.geom_type == "Polygon" for g in geoms)
    for code, comm in COMMUNITIES.items():
        mine = geoms[np.array(proposal.communities) == code]
        union = shapely.union_all(mine)
        assert union.symmetric_difference(comm).area < 1e-12 * comm.area
        # No overlaps: the areas add up to the community's.
        assert shapely.area(mine).sum() == pytest.approx(comm.area, rel=1e-9)


def test_grids_are_balanced_within_their_community(proposal):
    assert proposal.max_abs_dev_in_community <= 0.04 + 1e-9
    m = plan_metrics(
        proposal.codes,
        proposal.geoms,
        context=PlanContext(frame=FRAME, communities=COMMUNITIES, population=population()),
    )
    assert m.plan["straddling"] == 0
    assert m.plan["noncontiguous"] == 0
    assert m.plan["population_max_abs_dev_in_community"] <= 0.05


def test_codes_follow_the_community_and_the_numbering_order(proposal):
    assert len(set(proposal.codes)) == 7
    for code, comm in zip(proposal.codes, proposal.communities, strict=True):
        assert code.startswith(comm) and len(code) == len(comm) + 3
    # The weightier west community gets more grids.
    assert proposal.communities.count("520121001001") > proposal.communities.count("520121002001")


def test_county_wide_mode_balances_the_whole_area():
    p = propose_grids(COMMUNITIES, 5, {"population": population()}, seed=2, bursts=0, nest=False)
    assert p.max_abs_dev <= 0.04 + 1e-9
    geoms = np.array(p.geoms, dtype=object)
    assert (shapely.get_num_geometries(geoms) == 1).all()


def test_same_seed_same_proposal():
    a = propose_grids(COMMUNITIES, 4, {"population": population()}, seed=5, bursts=2)
    b = propose_grids(COMMUNITIES, 4, {"population": population()}, seed=5, bursts=2)
    assert a.codes == b.codes
    assert all(x.equals(y) for x, y in zip(a.geoms, b.geoms, strict=True))


def test_blocks_are_refined_where_people_are_dense():
    blocks = make_blocks(
        {"c": COMMUNITIES["520121001001"]},
        frame=FRAME,
        block_m=1000.0,
        density=population(),
        max_block_weight=population().weight.sum() / 40,
    )
    areas = shapely.area(FRAME.to_metric(blocks.geoms))
    assert areas.max() == pytest.approx(1e6)
    assert areas.min() < 0.3e6  # split near the kernel
    assert areas.sum() == pytest.approx(24e6)


def test_refused_with_the_reason():
    pop = {"population": population()}
    with pytest.raises(ProposalError, match="fewer than the 2 communities"):
        propose_grids(COMMUNITIES, 1, pop)
    with pytest.raises(ProposalError, match="positive integer"):
        propose_grids(COMMUNITIES, 0, pop)
    with pytest.raises(ProposalError, match="unknown balance"):
        propose_grids(COMMUNITIES, 3, pop, balance={"votes": 1})
    with pytest.raises(ProposalError, match="no points for balance"):
        propose_grids(COMMUNITIES, 3, pop, balance={"incidents": 1})


def test_balancing_area_alone():
    p = propose_grids(COMMUNITIES, 4, {}, balance={"area": 1}, seed=3, bursts=0)
    areas = shapely.area(FRAME.to_metric(np.array(p.geoms, dtype=object)))
    by_comm = {}
    for a, c in zip(areas, p.communities, strict=True):
        by_comm.setdefault(c, []).append(a)
    for values in by_comm.values():
        assert max(values) / np.mean(values) - 1 <= 0.04 + 1e-9
