"""geo.reach: reach radius, UTM frames, uncovered areas and counts, network parts, topology."""

import math

import numpy as np
import pytest
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from shapely.geometry import LineString, Point, box

from geo.reach import (
    UTMFrame,
    Zone,
    assign_points_to_zones,
    build_topology,
    covered_mask,
    disc_reach_parts,
    measure_reach,
    network_reach_parts,
    reach_radius_m,
    reached_edge_parts,
    utm_epsg_for,
)

GUIYANG = (106.63, 26.65)


def test_reach_radius_is_minutes_times_speed_over_detour():
    assert reach_radius_m(15, 80, 1.3) == pytest.approx(1200 / 1.3)
    assert reach_radius_m(10, 60, 1.0) == 600
    for bad in (
        {"minutes": 0},
        {"minutes": -1},
        {"speed_m_per_min": 0},
        {"detour": 0.9},
        {"minutes": math.nan},
    ):
        with pytest.raises(ValueError):
            reach_radius_m(**{"minutes": 15, "speed_m_per_min": 80, "detour": 1.3, **bad})


def test_utm_zone_of_a_position():
    assert utm_epsg_for(*GUIYANG) == 32648
    assert utm_epsg_for(102.0001, 25.0) == 32648  # zone 48 starts at 102°E
    assert utm_epsg_for(101.9999, 25.0) == 32647
    assert utm_epsg_for(-70.6, -33.4) == 32719
    assert utm_epsg_for(180.0, 10.0) == 32601
    with pytest.raises(ValueError):
        utm_epsg_for(106.0, 95.0)


def test_utm_frame_round_trip_and_scale():
    frame = UTMFrame.around(Point(*GUIYANG))
    assert frame.epsg == 32648
    x, y = frame.forward([106.63, 106.64], [26.65, 26.65])
    # 0.01° of longitude at 26.65°N is 995.3 m on the ellipsoid; UTM's scale there ~0.9996.
    assert x[1] - x[0] == pytest.approx(995.3, rel=2e-3)
    lon, lat = frame.inverse(x, y)
    assert np.allclose(lon, [106.63, 106.64], atol=1e-10)
    assert np.allclose(lat, [26.65, 26.65], atol=1e-10)


def _square_zone() -> Zone:
    return Zone("c1", "square", box(0, 0, 2000, 2000))


def test_corner_facility_covers_a_quarter_circle():
    """A 2 km square with one facility in a corner and a 1 km reach: π/4 km² covered."""
    parts = disc_reach_parts([0.0], [0.0], 1000.0)
    (r,) = measure_reach([_square_zone()], parts, {})
    covered = r["area_m2"] - r["uncovered_area_m2"]
    assert r["area_m2"] == pytest.approx(4e6)
    assert covered == pytest.approx(math.pi / 4 * 1e6, rel=0.01)
    assert r["uncovered_share"] == pytest.approx(1 - math.pi / 16, rel=0.01)
    # The uncovered polygon is the square minus the quarter disc.
    assert r["uncovered_m"].area == pytest.approx(r["uncovered_area_m2"])
    assert r["uncovered_m"].covers(Point(1500, 1500))
    assert not r["uncovered_m"].contains(Point(500, 500))


def test_the_same_in_lon_lat_through_the_utm_frame():
    frame = UTMFrame(32648)
    x0, y0 = frame.forward(106.63, 26.65)
    square_m = box(float(x0), float(y0), float(x0) + 2000, float(y0) + 2000)
    square_lonlat = frame.to_lonlat(shapely.segmentize(square_m, 50))
    zone = Zone("c1", "square", frame.to_metric(square_lonlat))
    fx, fy = frame.forward(*square_lonlat.exterior.coords[0])
    (r,) = measure_reach([zone], disc_reach_parts([fx], [fy], reach_radius_m(12.5, 80, 1.0)), {})
    assert r["area_m2"] - r["uncovered_area_m2"] == pytest.approx(math.pi / 4 * 1e6, rel=0.01)


def test_households_inside_and_outside_reach_are_counted():
    parts = disc_reach_parts([0.0], [0.0], 1000.0)
    # Inside reach: 999 m along the diagonal, 10 m; beyond: 1001 m, the far corner;
    # outside the community altogether: (-5, -5) and (2500, 100) count nowhere.
    d = 999 / math.sqrt(2)
    e = 1001 / math.sqrt(2)
    x = np.array([d, 10.0, e, 1999.0, -5.0, 2500.0])
    y = np.array([d, 0.0, e, 1999.0, -5.0, 100.0])
    (r,) = measure_reach([_square_zone()], parts, {"households": (x, y), "units": (x[:1], y[:1])})
    assert r["counts"]["households"] == {"total": 4, "uncovered": 2, "uncovered_share": 0.5}
    assert r["counts"]["units"] == {"total": 1, "uncovered": 0, "uncovered_share": 0.0}


def test_no_facility_leaves_everything_uncovered():
    (r,) = measure_reach([_square_zone()], [], {"households": ([1.0], [1.0])})
    assert r["uncovered_share"] == 1.0
    assert r["counts"]["households"]["uncovered"] == 1


def test_a_point_on_a_shared_edge_counts_once_in_the_smallest_code():
    zones = [box(0, 0, 10, 10), box(10, 0, 20, 10)]
    assert assign_points_to_zones(zones, [10.0, 5.0, 15.0, 30.0], [5.0] * 4).tolist() == [
        0,
        0,
        1,
        -1,
    ]


def test_covered_mask_includes_the_boundary():
    parts = [box(0, 0, 10, 10)]
    assert covered_mask(parts, [10.0, 10.5, 5.0], [5.0, 5.0, 5.0]).tolist() == [True, False, True]


def test_edge_parts_walked_in_from_both_ends():
    line = LineString([(0, 0), (100, 0)])
    # Source 20 m away, target 50 m away, budget 70: 50 m from the source end and
    # 20 m from the target end.
    parts = reached_edge_parts([line], [100.0], [20.0], [50.0], 70.0)
    assert sorted(round(p.length, 6) for p in parts) == [20.0, 50.0]
    # The two stubs meet: the whole edge.
    (whole,) = reached_edge_parts([line], [100.0], [20.0], [50.0], 90.0)
    assert whole.equals(line)
    # Neither end reached: nothing, unless a start lies on the edge.
    assert reached_edge_parts([line], [100.0], [math.inf], [math.inf], 30.0) == []
    (mid,) = reached_edge_parts([line], [100.0], [math.inf], [math.inf], 30.0, [(0, 0.5)])
    assert mid.coords[0] == (20.0, 0.0) and mid.coords[-1] == (80.0, 0.0)


def _street_grid(n: int, step: float) -> tuple[list[LineString], list[tuple[int, int]], dict]:
    """Return the segments of an (2n+1)² street grid, their end node pairs, node → (x, y)."""
    nodes = {}
    for i in range(-n, n + 1):
        for j in range(-n, n + 1):
            nodes[(i, j)] = len(nodes)
    segs, ends = [], []
    for (i, j), k in nodes.items():
        for di, dj in ((1, 0), (0, 1)):
            if (i + di, j + dj) in nodes:
                segs.append(LineString([(i * step, j * step), ((i + di) * step, (j + dj) * step)]))
                ends.append((k, nodes[(i + di, j + dj)]))
    return segs, ends, nodes


def test_reached_street_length_on_a_grid_is_the_l1_diamond():
    """From a crossing of a 100 m grid, a 250 m walk reaches 2,600 m of street."""
    segs, ends, nodes = _street_grid(5, 100.0)
    n = len(nodes)
    src = np.array([a for a, _ in ends])
    dst = np.array([b for _, b in ends])
    graph = coo_matrix((np.full(len(ends), 100.0), (src, dst)), shape=(n, n))
    dist = dijkstra(graph, directed=False, indices=nodes[(0, 0)], limit=250.0)
    parts = reached_edge_parts(segs, [100.0] * len(segs), dist[src], dist[dst], 250.0)
    # Rows |j| ≤ 2 reach 2·(250 − 100|j|) each, and so do the columns: 2 × 1,300 m.
    assert sum(p.length for p in parts) == pytest.approx(2600.0, abs=1e-6)
    polygons = network_reach_parts(parts, 25.0)
    reach = shapely.union_all(polygons)
    assert reach.covers(Point(0, 240)) and not reach.covers(Point(0, 280))
    assert not reach.covers(Point(150, 150))  # mid-block, 50 m from any street
    with pytest.raises(ValueError):
        network_reach_parts(parts, -1.0)


def _lonlat(frame: UTMFrame, coords) -> LineString:
    x0, y0 = frame.forward(106.0, 26.0)
    xy = np.asarray(coords, dtype=float) + [float(x0), float(y0)]
    return LineString(np.column_stack(frame.inverse(xy[:, 0], xy[:, 1])))


def test_topology_of_crossing_streets_by_node_mode():
    frame = UTMFrame(32648)
    ew = _lonlat(frame, [(0, 0), (100, 0), (200, 0)])
    ns = _lonlat(frame, [(100, -100), (100, 0), (100, 100)])  # shares the vertex (100, 0)
    t = build_topology([ew, ns], frame=frame)
    assert len(t.edge_lonlat) == 4 and len(t.vertex_lonlat) == 5
    assert t.edge_length_m == pytest.approx([100.0] * 4, abs=1e-6)
    assert t.components == (1, 1.0)
    # Only line ends join: two separate streets.
    t = build_topology([ew, ns], node="endpoints", frame=frame)
    assert len(t.edge_lonlat) == 2 and t.components[0] == 2
    # A crossing without a shared vertex splits only in "crossings" mode.
    ns2 = _lonlat(frame, [(50, -100), (50, 100)])
    assert build_topology([ew, ns2], frame=frame).components[0] == 2
    t = build_topology([ew, ns2], node="crossings", frame=frame)
    # East-west: 0–50 and 50–200 (its vertex at 100 is no junction); north-south: halves.
    assert len(t.edge_lonlat) == 4 and t.components == (1, 1.0)
    assert sorted(np.round(t.edge_length_m, 6)) == [50.0, 100.0, 100.0, 150.0]
    assert sorted(t.edge_feature.tolist()) == [0, 0, 1, 1]


def test_topology_t_junction_snapping_and_existing_vertices():
    frame = UTMFrame(32648)
    main = _lonlat(frame, [(0, 0), (200, 0)])
    branch = _lonlat(frame, [(70, 0.4), (70, 100)])  # ends 0.4 m off the main street
    t = build_topology([main, branch], snap_m=1.0, frame=frame)
    assert len(t.edge_lonlat) == 3 and t.components == (1, 1.0)
    # Ends 0.5 m apart join; 5 m apart do not.
    a = _lonlat(frame, [(0, 0), (100, 0)])
    b = _lonlat(frame, [(100.5, 0), (200, 0)])
    c = _lonlat(frame, [(105, 0), (200, 50)])
    assert build_topology([a, b], frame=frame).components[0] == 1
    assert build_topology([a, c], frame=frame).components[0] == 2
    # Appending: an end near a stored vertex becomes that vertex.
    stored = np.array([[106.0, 26.0]])
    x0, y0 = frame.forward(106.0, 26.0)
    t = build_topology([a], frame=frame, existing_vertices=(np.array([42]), stored))
    assert sorted(t.vertex_existing.tolist()) == [-1, 42]
    # Not lines at all: dropped and counted.
    t = build_topology([Point(106, 26), None, a], frame=frame)
    assert t.dropped["not_a_line"] == 2 and len(t.edge_lonlat) == 1
    with pytest.raises(ValueError):
        build_topology([a], node="magic")
