"""Tests of geo.planmetrics on hand-made shapes whose measures are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from geo.planmetrics import (
    STANDARD_TEAM,
    PlanContext,
    PointLayer,
    dasymetric_population,
    measure_shapes,
    plan_metrics,
    population_points,
    update_plan_metrics,
)
from geo.population import LocalFrame

FRAME = LocalFrame(106.9, 27.0)


def ll(geom):
    """Return a lon/lat geometry whose shape is exact in FRAME (metres)."""
    return FRAME.to_lonlat(geom)


def pts(*xy_m) -> PointLayer:
    x = np.array([p[0] for p in xy_m], dtype=float)
    y = np.array([p[1] for p in xy_m], dtype=float)
    return PointLayer(*FRAME.inverse(x, y))


# An L of three unit squares (1 km) and its hull: area 3, perimeter 8, hull area 3.5,
# minimum bounding circle through (0,0), (2,0), (0,2): radius sqrt(2).
L_SHAPE = Polygon([(0, 0), (2000, 0), (2000, 1000), (1000, 1000), (1000, 2000), (0, 2000)])
DISC = box(0, 0, 1, 1).centroid.buffer(1000, quad_segs=256)


def test_shape_measures_known_values():
    shapes = measure_shapes(
        np.array([box(0, 0, 1000, 1000), box(0, 0, 4000, 1000), L_SHAPE, DISC], dtype=object)
    )
    sq, rect, lsh, disc = (shapes.iloc[i] for i in range(4))
    assert sq.area_m2 == pytest.approx(1e6)
    assert sq.perimeter_m == pytest.approx(4000)
    assert sq.polsby_popper == pytest.approx(math.pi / 4)
    assert sq.reock == pytest.approx(2 / math.pi)  # square in a circle of radius s/sqrt(2)
    assert sq.convex_hull_ratio == pytest.approx(1.0)
    # 4x1 rectangle: PP = 4pi*4/100, Reock = 4 / (pi * 17/4).
    assert rect.polsby_popper == pytest.approx(16 * math.pi / 100)
    assert rect.reock == pytest.approx(16 / (17 * math.pi))
    assert lsh.area_m2 == pytest.approx(3e6)
    assert lsh.polsby_popper == pytest.approx(4 * math.pi * 3 / 64)
    assert lsh.convex_hull_ratio == pytest.approx(3 / 3.5)
    assert lsh.reock == pytest.approx(3 / (math.pi * 2), rel=1e-6)
    assert disc.polsby_popper == pytest.approx(1.0, abs=1e-4)
    assert disc.reock == pytest.approx(1.0, abs=1e-4)
    assert disc.convex_hull_ratio == pytest.approx(1.0, abs=1e-9)
    assert shapes["contiguous"].all() and (shapes["parts"] == 1).all()


def test_two_part_grid_is_not_contiguous():
    two = MultiPolygon([box(0, 0, 1000, 1000), box(3000, 0, 4000, 1000)])
    shapes = measure_shapes(np.array([two], dtype=object))
    assert shapes.loc[0, "parts"] == 2
    assert not shapes.loc[0, "contiguous"]
    # Scored on total area and perimeter: 4pi*2/64.
    assert shapes.loc[0, "polsby_popper"] == pytest.approx(8 * math.pi / 64)


def test_shapes_measured_in_metres_from_lonlat():
    ctx = PlanContext(frame=FRAME)
    m = plan_metrics(["a", "b"], [ll(box(0, 0, 1000, 1000)), ll(L_SHAPE)], context=ctx)
    assert m.grids.loc["a", "area_m2"] == pytest.approx(1e6, rel=1e-9)
    assert m.grids.loc["a", "polsby_popper"] == pytest.approx(math.pi / 4, rel=1e-9)
    assert m.grids.loc["b", "convex_hull_ratio"] == pytest.approx(3 / 3.5, rel=1e-9)
    assert m.plan["area_m2_total"] == pytest.approx(4e6, rel=1e-9)
    assert m.plan["noncontiguous"] == 0


def tiled_plan():
    """Two communities (west 2x2 km, east 2x2 km) and three grids: west halves and east."""
    communities = {"c1": ll(box(0, 0, 2000, 2000)), "c2": ll(box(2000, 0, 4000, 2000))}
    grids = {
        "g1": ll(box(0, 0, 1000, 2000)),
        "g2": ll(box(1000, 0, 2000, 2000)),
        "g3": ll(box(2000, 0, 4000, 2000)),
    }
    ctx = PlanContext(
        frame=FRAME,
        communities=communities,
        # 4 points: the grids' loads are 1, 1, 2 people-points weighted 100 each.
        population=PointLayer(
            *FRAME.inverse(np.array([500, 1500, 2500, 3500]), np.array([500, 500, 500, 1500])),
            np.array([100.0, 100.0, 100.0, 100.0]),
        ),
        households=pts((100, 100), (200, 200), (1100, 100)),
        units=pts((2100, 100)),
        incidents=pts((500, 500), (500, 600), (1500, 500), (2500, 500), (2600, 600), (2700, 700)),
        incident_years=0.5,
    )
    return ctx, grids


def test_loads_and_deviations_from_the_mean():
    ctx, grids = tiled_plan()
    m = plan_metrics(list(grids), list(grids.values()), context=ctx, team_sizes={"g3": 6})
    g = m.grids
    assert list(g["population"]) == [100, 100, 200]
    assert list(g["households"]) == [2, 1, 0]
    assert list(g["units"]) == [0, 0, 1]
    # 2, 1 and 3 incidents over half a year.
    assert list(g["incidents_per_year"]) == [4, 2, 6]
    assert list(g["team_members"]) == [STANDARD_TEAM, STANDARD_TEAM, 6]
    assert g["incidents_per_member"].tolist() == pytest.approx([4 / 3, 2 / 3, 1.0])
    mean = 400 / 3
    assert g["population_dev"].tolist() == pytest.approx([100 / mean - 1, 100 / mean - 1, 0.5])
    assert m.plan["population_total"] == 400
    assert m.plan["population_max_abs_dev"] == pytest.approx(0.5)
    assert m.plan["incidents_per_year_mean"] == pytest.approx(4)
    # Each grid is alone in its community or shares it equally: no in-community deviation.
    assert g["population_dev_in_community"].tolist() == pytest.approx([0, 0, 0])
    assert list(g["community_code"]) == ["c1", "c1", "c2"]
    assert list(g["straddles"]) == [0, 0, 0]
    assert m.plan["straddling"] == 0


def test_a_grid_straddling_two_communities():
    ctx, _ = tiled_plan()
    # 1 km in c1, 0.5 km in c2 (by area: 2/3 in c1); a sliver 0.1 m into c2 is ignored.
    grids = [ll(box(1000, 0, 2500, 2000)), ll(box(0, 0, 1000.0001, 2000))]
    m = plan_metrics(["x", "y"], grids, context=ctx)
    assert m.grids.loc["x", "communities"] == 2
    assert m.grids.loc["x", "straddles"] == 1
    assert m.grids.loc["x", "community_code"] == "c1"
    assert m.grids.loc["y", "straddles"] == 0
    assert m.plan["straddling"] == 1


def test_population_points_spread_a_value_by_area():
    comm = ll(box(0, 0, 2000, 1000))
    layer = population_points([comm], [1000.0], frame=FRAME, samples=200)
    assert layer.weight.sum() == pytest.approx(1000.0)
    ctx = PlanContext(frame=FRAME, population=layer)
    m = plan_metrics(
        ["w", "e"], [ll(box(0, 0, 1000, 1000)), ll(box(1000, 0, 2000, 1000))], context=ctx
    )
    assert m.grids["population"].tolist() == pytest.approx([500, 500], rel=0.05)


def test_update_measures_only_changed_grids_and_matches_a_full_run():
    ctx, grids = tiled_plan()
    before = plan_metrics(list(grids), list(grids.values()), context=ctx)
    # Merge g1 and g2 into g12.
    merged = ll(box(0, 0, 2000, 2000))
    after = update_plan_metrics(before, changed={"g12": merged}, removed=["g1", "g2"], context=ctx)
    full = plan_metrics(["g3", "g12"], [grids["g3"], merged], context=ctx)
    assert sorted(after.grids.index) == ["g12", "g3"]
    for col in ("population", "households", "incidents_per_year", "population_dev", "reock"):
        assert after.grids.loc[["g3", "g12"], col].tolist() == pytest.approx(
            full.grids.loc[["g3", "g12"], col].tolist()
        )
    assert after.plan == pytest.approx(full.plan)
    assert after.plan["grids"] == 2


def test_grid_records_are_json_ready():
    ctx, grids = tiled_plan()
    m = plan_metrics(list(grids), list(grids.values()), context=ctx)
    rows = m.grid_records()
    assert [r["code"] for r in rows] == ["g1", "g2", "g3"]
    assert rows[0]["population"] == 100
    assert isinstance(rows[0]["contiguous"], bool)


def test_bad_input_is_named():
    ctx, grids = tiled_plan()
    with pytest.raises(ValueError, match="unique"):
        plan_metrics(["a", "a"], [grids["g1"], grids["g2"]], context=ctx)
    with pytest.raises(ValueError, match="2 codes for 1"):
        plan_metrics(["a", "b"], [grids["g1"]], context=ctx)
    with pytest.raises(ValueError, match="incident_years"):
        PlanContext(frame=FRAME, incident_years=0)


def test_dasymetric_population_follows_the_points():
    comms = [ll(box(0, 0, 2000, 1000)), ll(box(2000, 0, 4000, 1000))]
    # 30 points in the west half of the first community; 3 in the second (too few).
    xy = [(100 + 25 * i, 500) for i in range(30)] + [(2500, 500)] * 3
    layer = dasymetric_population(comms, [600.0, 200.0], pts(*xy), frame=FRAME, samples=100)
    assert layer.weight.sum() == pytest.approx(800.0)
    ctx = PlanContext(frame=FRAME, population=layer)
    halves = [ll(box(0, 0, 1000, 1000)), ll(box(1000, 0, 2000, 1000))]
    east = [ll(box(2000, 0, 3000, 1000)), ll(box(3000, 0, 4000, 1000))]
    m = plan_metrics(["w", "e", "x", "y"], halves + east, context=ctx)
    assert m.grids["population"].tolist()[:2] == pytest.approx([600, 0])
    # Spread evenly where the points are too few.
    assert m.grids["population"].tolist()[2:] == pytest.approx([100, 100], rel=0.05)
