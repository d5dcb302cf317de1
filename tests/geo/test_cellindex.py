"""Tests of geo.cellindex: every point against brute-force references, and the raster's safety.

Two references, both brute force over the cells whose bounding box holds the point:

- ``geos_reference``: shapely ``covers`` (GEOS, robust predicates) + smallest code;
- ``postgis_reference``: a line-by-line Python transcription of PostGIS 3's
  ``point_in_multipolygon`` / ``point_in_ring`` (``lwgeom_functions_analytic.c``) + smallest
  code. Python floats are IEEE doubles, so this is PostGIS's arithmetic; that it matches the
  real PostGIS is checked in tests/service/test_cellindex_postgis.py.

The two differ only on points within rounding error of a boundary (the "rounding traps");
``CellIndex`` must match the PostGIS one by default and the GEOS one with
``semantics="geos"``, on every point.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

import geo.cellindex as cellindex_module
from fixtures.synthetic import rounding_traps, synthetic_city, synthetic_points
from fixtures.tiny import STEP, X0, Y0, tiny_records
from geo.cellindex import CellIndex, CellIndexError, assign_points_to_cells

# ----------------------------------------------------------------------------- references


def _pg_ring(coords: list[tuple[float, float]], x: float, y: float) -> int:
    """PostGIS point_in_ring: -1 outside, 0 on the boundary, 1 inside."""
    wn = 0
    for (x1, y1), (x2, y2) in zip(coords[:-1], coords[1:], strict=True):
        side = (x2 - x1) * (y - y1) - (x - x1) * (y2 - y1)
        if x1 == x2 and y1 == y2:
            continue
        if side == 0.0 and min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2):
            return 0
        if y1 <= y < y2 and side > 0:
            wn += 1
        elif y2 <= y < y1 and side < 0:
            wn -= 1
    return 1 if wn != 0 else -1


def _pg_covers(geom, x: float, y: float) -> bool:
    """PostGIS ST_Covers(geom, POINT(x y)): bounding box, then point_in_multipolygon."""
    minx, miny, maxx, maxy = geom.bounds
    if not (minx <= x <= maxx and miny <= y <= maxy):
        return False
    for poly in getattr(geom, "geoms", [geom]):
        ext = _pg_ring(list(poly.exterior.coords), x, y)
        if ext == -1:
            continue
        if ext == 0:
            return True
        inside = True
        for hole in poly.interiors:
            status = _pg_ring(list(hole.coords), x, y)
            if status == 1:
                inside = False
                break
            if status == 0:
                return True
        if inside:
            return True
    return False


def _candidates(geoms, lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Return (point, cell) pairs whose cell bounding box holds the point."""
    tree = shapely.STRtree(np.asarray(geoms, dtype=object))
    return tree.query(shapely.points(lon, lat))


def _smallest(codes, n: int, pt: np.ndarray, cell: np.ndarray) -> np.ndarray:
    rank = np.argsort(np.argsort(np.asarray(codes, dtype=object)))
    best = np.full(n, -1)
    for p, c in sorted(zip(pt.tolist(), cell.tolist(), strict=True), key=lambda t: rank[t[1]]):
        if best[p] < 0:
            best[p] = c
    return best


def postgis_reference(codes, geoms, lon, lat) -> np.ndarray:
    pt, cell = _candidates(geoms, lon, lat)
    ok = [_pg_covers(geoms[c], float(lon[p]), float(lat[p])) for p, c in zip(pt, cell, strict=True)]
    ok = np.asarray(ok, dtype=bool)
    return _smallest(codes, len(lon), pt[ok], cell[ok])


def geos_reference(codes, geoms, lon, lat) -> np.ndarray:
    pt, cell = _candidates(geoms, lon, lat)
    ok = shapely.covers(np.asarray(geoms, dtype=object)[cell], shapely.points(lon[pt], lat[pt]))
    return _smallest(codes, len(lon), pt[ok], cell[ok])


def _check_both(codes, geoms, lon, lat, **options) -> np.ndarray:
    """Assert CellIndex equals both references in its two semantics; return the PostGIS one."""
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    pg = postgis_reference(codes, geoms, lon, lat)
    geos = geos_reference(codes, geoms, lon, lat)
    got_pg = CellIndex(codes, geoms, **options).assign(lon, lat)
    got_geos = CellIndex(codes, geoms, semantics="geos", **options).assign(lon, lat)
    bad = np.flatnonzero(got_pg != pg)
    assert bad.size == 0, [(lon[i], lat[i], got_pg[i], pg[i]) for i in bad[:5]]
    bad = np.flatnonzero(got_geos != geos)
    assert bad.size == 0, [(lon[i], lat[i], got_geos[i], geos[i]) for i in bad[:5]]
    return pg


# ---------------------------------------------------------------------------- tiny grid

TINY = [r for r in tiny_records() if r.level == "grid"]
TINY_CODES = [r.code for r in TINY]
TINY_GEOMS = [r.geom for r in TINY]


def _tiny_points() -> tuple[np.ndarray, np.ndarray]:
    xs = 106.00 + 0.005 * np.arange(-1, 10)  # every vertex line and midway between
    ys = 26.00 + 0.005 * np.arange(-1, 6)
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel(), gy.ravel()


def test_tiny_grid_matches_references_on_vertices_edges_and_outside():
    lon, lat = _tiny_points()
    expected = _check_both(TINY_CODES, TINY_GEOMS, lon, lat)
    # The 4x2 boxes tile the bbox: everything inside is covered, everything outside is not.
    inside = (lon >= 106.0) & (lon <= 106.04) & (lat >= 26.0) & (lat <= 26.02)
    assert ((expected >= 0) == inside).all()


def _at(i: float, j: float) -> tuple[float, float]:
    """Return the point i steps east and j steps north of the tiny grid's origin.

    Whole steps are computed as fixtures.tiny computes box corners, so they are exactly
    on the boxes' edges.
    """
    return X0 + i * STEP, Y0 + j * STEP


@pytest.mark.parametrize(
    ("ij", "code"),
    [
        ((0.5, 1.5), "990101001001001"),  # inside north-west grid
        ((3.5, 0.5), "990102001002002"),  # inside south-east grid
        ((1, 1.5), "990101001001001"),  # edge between 001001001 and 001001002
        ((1, 1), "990101001001001"),  # vertex shared by four grids
        ((2, 1), "990101001001002"),  # vertex shared across the district line
        ((2, 0.5), "990101001002002"),  # district line, south row
        ((4, 2), "990102001001002"),  # outer corner
        ((0, 0), "990101001002001"),  # outer corner
        ((3, 0), "990102001002001"),  # outer edge vertex: two grids
        ((4.1, 1), None),  # just east of the city
        ((-100, -600), None),  # far away
    ],
)
def test_tiny_grid_hand_checked(ij, code):
    lon, lat = _at(*ij)
    index = CellIndex(TINY_CODES, TINY_GEOMS)
    assert index.assign_codes([lon], [lat]) == [code]
    assert [
        TINY_CODES[i] if i >= 0 else None
        for i in postgis_reference(TINY_CODES, TINY_GEOMS, np.array([lon]), np.array([lat]))
    ] == [code]


# ----------------------------------------------------------------------- synthetic city


@pytest.fixture(scope="module")
def small_city():
    return synthetic_city(n_communities=8, n_grids=300)


def test_synthetic_city_every_point_matches(small_city):
    codes, geoms = small_city.codes, small_city.geoms
    lon, lat = synthetic_points(small_city, 12_000, seed=11, on_vertex=0.1, on_edge=0.2)
    traps_lon, traps_lat = rounding_traps(small_city, 60, seed=12)
    lon, lat = np.r_[lon, traps_lon], np.r_[lat, traps_lat]
    expected = _check_both(codes, geoms, lon, lat)
    # The data holds the hard cases: points several cells cover, and points outside.
    pt, cell = _candidates(geoms, lon, lat)
    covering = np.bincount(
        pt[[_pg_covers(geoms[c], lon[p], lat[p]) for p, c in zip(pt, cell, strict=True)]],
        minlength=lon.size,
    )
    assert (covering >= 2).sum() > 500
    assert (covering >= 3).sum() > 50
    assert (expected == -1).sum() > 100


def test_rounding_traps_separate_postgis_from_geos(small_city):
    """On traps PostGIS (and the default index) calls edges covered where GEOS does not."""
    codes, geoms = small_city.codes, small_city.geoms
    lon, lat = rounding_traps(small_city, 60, seed=13)
    pg = CellIndex(codes, geoms).assign(lon, lat)
    geos = CellIndex(codes, geoms, semantics="geos").assign(lon, lat)
    assert (pg != geos).sum() >= 10
    # Where they differ, PostGIS's pick covers the point by its arithmetic, and the
    # point is within rounding error (well below a micrometre) of that cell's boundary.
    for i in np.flatnonzero(pg != geos):
        assert pg[i] >= 0
        assert _pg_covers(geoms[pg[i]], lon[i], lat[i])
        assert geoms[pg[i]].boundary.distance(Point(lon[i], lat[i])) < 1e-12


def test_results_do_not_depend_on_resolution(small_city):
    codes, geoms = small_city.codes, small_city.geoms
    lon, lat = synthetic_points(small_city, 6_000, seed=14, on_vertex=0.1, on_edge=0.2)
    traps_lon, traps_lat = rounding_traps(small_city, 30, seed=15)
    lon, lat = np.r_[lon, traps_lon], np.r_[lat, traps_lat]
    results = [
        CellIndex(codes, geoms, pixel_size=size).assign(lon, lat)
        for size in (0.05, 0.01, 0.002, 0.0004)
    ]
    results.append(CellIndex(codes, geoms, max_pixels=1).assign(lon, lat))  # all exact
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def _pixel_values(index: CellIndex) -> np.ndarray:
    """Return every fine pixel's value: a cell, -1 (outside) or -2 (edge, tested exactly)."""
    nrows, ncols = index.shape
    rows, cols = np.divmod(np.arange(nrows * ncols), ncols)
    return index._lookup(rows, cols)[0]


def _assert_conservative(index: CellIndex, geoms, grow: float) -> None:
    """Assert no interior/outside pixel, grown by ``grow``, meets a boundary; and its answer."""
    geoms = np.asarray(geoms, dtype=object)
    nrows, ncols = index.shape
    w, h = index.pixel_size
    west, south, _, _ = index.bounds
    values = _pixel_values(index)
    plain = np.flatnonzero(values > -2)
    r, c = np.divmod(plain, ncols)
    boxes = shapely.box(
        west + c * w - grow,
        south + r * h - grow,
        west + (c + 1) * w + grow,
        south + (r + 1) * h + grow,
    )
    boundaries = shapely.STRtree(shapely.boundary(geoms))
    touching, _ = boundaries.query(boxes, predicate="intersects")
    assert touching.size == 0, f"{np.unique(touching).size} non-edge pixels meet a boundary"
    centres = shapely.points(west + (c + 0.5) * w, south + (r + 0.5) * h)
    pt, cell = shapely.STRtree(geoms).query(centres, predicate="intersects")
    holder = np.full(plain.size, -1)
    holder[pt] = cell
    assert np.bincount(pt, minlength=plain.size).max() <= 1  # the cells tile: no overlaps
    np.testing.assert_array_equal(holder, values[plain])


def test_raster_is_conservative(small_city):
    """No interior or outside pixel comes within half the margin of a cell boundary.

    Points land in a pixel by floating-point arithmetic, i.e. within a few ulps of its
    box, far less than the margin; so every point answered without an exact test is far
    from every boundary, where all point-in-polygon methods agree. And the pixel's answer
    holds at its centre (GEOS).
    """
    index = CellIndex(small_city.codes, small_city.geoms, pixel_size=0.002)
    assert 100_000 < index.shape[0] * index.shape[1] < 800_000
    assert index.n_pixels < 0.5 * index.shape[0] * index.shape[1]  # most tiles not stored
    assert index._margin > 1e-10
    _assert_conservative(index, small_city.geoms, index._margin / 2)
    # Edge pixels: a few per cent here, the whole point of the raster.
    assert 0.01 < index.edge_fraction < 0.5


def test_packed_crossing_sort_equals_the_exact_sort(small_city, monkeypatch):
    """Scanline crossings sorted by rounded x (the fast path) give the same pixels."""
    fast = CellIndex(small_city.codes, small_city.geoms, pixel_size=0.002)
    monkeypatch.setattr(cellindex_module, "_PACK_LIMIT", 0)
    exact = CellIndex(small_city.codes, small_city.geoms, pixel_size=0.002)
    np.testing.assert_array_equal(_pixel_values(fast), _pixel_values(exact))


# ------------------------------------------------------------------ holes, multipolygons


def _square(x, y, size):
    return box(x, y, x + size, y + size)


def test_holes_and_multipolygons():
    outer = Polygon(
        [(0, 0), (4, 0), (4, 4), (0, 4)],
        [[(1, 1), (2, 1), (2, 2), (1, 2)], [(2.5, 2.5), (3.5, 2.5), (3, 3.5)]],
    )
    hole_filler = _square(1, 1, 1)
    # A cell of two parts: the triangular hole's filler and a detached square.
    two_parts = MultiPolygon([Polygon([(2.5, 2.5), (3.5, 2.5), (3, 3.5)]), _square(6, 0, 1)])
    # A hole touching the exterior at a vertex (valid).
    notch = Polygon([(4, 0), (6, 0), (6, 2), (4, 2)], [[(4, 1), (5, 0.5), (5, 1.5)]])
    notch_filler = Polygon([(4, 1), (5, 0.5), (5, 1.5)])
    codes = ["300", "200", "100", "400", "050"]
    geoms = [outer, hole_filler, two_parts, notch, notch_filler]
    for g in geoms:
        assert g.is_valid
    pts = [
        (0.5, 0.5),  # outer only
        (1.5, 1.5),  # inside the square hole: filler only
        (1.0, 1.5),  # on the hole edge: outer and filler
        (1.0, 1.0),  # hole vertex
        (3.0, 2.8),  # inside the triangular hole: the multipolygon
        (3.0, 2.5),  # on the triangle's edge
        (6.5, 0.5),  # detached part of the multipolygon
        (6.0, 0.5),  # its west edge, shared with the notch cell's east edge
        (4.0, 1.0),  # where the notch hole touches its exterior, on outer's edge too
        (4.5, 1.0),  # inside the notch hole
        (5.0, 0.5),  # notch hole vertex
        (5.5, 1.0),  # notch cell
        (8.0, 8.0),  # nowhere
    ]
    lon, lat = np.array(pts).T
    got = _check_both(codes, geoms, lon, lat)
    expect = ["300", "200", "200", "200", "100", "100", "100", "100", "050", "050", "050", "400"]
    assert [codes[i] if i >= 0 else None for i in got] == [*expect, None]
    # And the same on a raster so fine that every kind of pixel occurs.
    fine = CellIndex(codes, geoms, pixel_size=0.05)
    np.testing.assert_array_equal(fine.assign(lon, lat), got)


def test_overlapping_cells_take_the_smallest_code():
    """Not a tiling (cells overlap, one lies inside another): still ST_Covers + smallest."""
    codes = ["20", "10", "30", "05"]
    geoms = [_square(0, 0, 2), _square(1, 1, 2), _square(0, 0, 10), _square(4, 4, 1)]
    xs = np.linspace(-0.5, 10.5, 45)
    gx, gy = np.meshgrid(xs, xs)
    lon, lat = gx.ravel(), gy.ravel()
    expected = _check_both(codes, geoms, lon, lat, pixel_size=0.3)
    assert set(np.unique(expected)) == {-1, 0, 1, 2, 3}
    _check_both(codes, geoms, lon, lat, pixel_size=0.01)


# ------------------------------------------------------------------------- pixel borders


def test_points_exactly_on_pixel_borders():
    """Cells aligned with the pixels at the equator (square pixels in degrees)."""
    step = 0.01
    codes, geoms = [], []
    for i in range(4):
        for j in range(2):
            codes.append(f"{9 - i}{j}")
            geoms.append(box(10 + i * step, -step + j * step, 10 + (i + 1) * step, j * step))
    index = CellIndex(codes, geoms, pixel_size=step / 4)
    w, h = index.pixel_size
    assert w == h == step / 4
    west, south, east, north = index.bounds
    # Every pixel border inside and around the raster, as the index computes it, and
    # its floating-point neighbours.
    xs = west + w * np.arange(-1, index.shape[1] + 2)
    ys = south + h * np.arange(-1, index.shape[0] + 2)
    xs = np.unique(np.r_[xs, np.nextafter(xs, -np.inf), np.nextafter(xs, np.inf)])
    ys = np.unique(np.r_[ys, np.nextafter(ys, -np.inf), np.nextafter(ys, np.inf)])
    gx, gy = np.meshgrid(xs, ys)
    _check_both(codes, geoms, gx.ravel(), gy.ravel(), pixel_size=step / 4)
    # Edges on pixel borders make the pixels on both sides edge pixels.
    _assert_conservative(index, geoms, 0.0)
    assert index.edge_fraction > 0.5


def test_diagonal_edges_through_pixel_corners():
    """An edge at one pixel per pixel through pixel corners meets three rows a column."""
    geoms = [
        Polygon([(10, -0.01), (10.02, -0.01), (10.02, 0.01)]),
        Polygon([(10, -0.01), (10.02, 0.01), (10, 0.01)]),
        Polygon([(10.02, -0.01), (10.03, -0.01), (10.02, 0.01)]),  # steeper: walked by row
    ]
    codes = ["2", "1", "0"]
    index = CellIndex(codes, geoms, pixel_size=0.0025)
    w, h = index.pixel_size
    assert w == h
    _assert_conservative(index, geoms, 0.0)
    west, south, _, _ = index.bounds
    xs = west + w * np.arange(-1, index.shape[1] + 2)
    ys = south + h * np.arange(-1, index.shape[0] + 2)
    xs = np.unique(np.r_[xs, np.nextafter(xs, -np.inf), np.nextafter(xs, np.inf), xs + w / 2])
    ys = np.unique(np.r_[ys, np.nextafter(ys, -np.inf), np.nextafter(ys, np.inf), ys + h / 2])
    gx, gy = np.meshgrid(xs, ys)
    _check_both(codes, geoms, gx.ravel(), gy.ravel(), pixel_size=0.0025)


def test_points_on_pixel_borders_of_synthetic_cells(small_city):
    index = CellIndex(small_city.codes, small_city.geoms, pixel_size=0.003)
    w, h = index.pixel_size
    west, south, _, _ = index.bounds
    rng = np.random.default_rng(3)
    n = 3000
    lon = west + w * rng.integers(0, index.shape[1] + 1, n)
    lat = south + h * rng.integers(0, index.shape[0] + 1, n)
    # Half of them slide along a pixel border instead of sitting on a pixel corner.
    lon[: n // 2] = rng.uniform(west, west + w * index.shape[1], n // 2)
    _check_both(small_city.codes, small_city.geoms, lon, lat, pixel_size=0.003)


# ------------------------------------------------------------------------ input handling


def test_empty_and_shaped_input():
    index = CellIndex(TINY_CODES, TINY_GEOMS)
    out = index.assign(np.array([]), np.array([]))
    assert out.shape == (0,) and out.dtype == np.intp
    lon = np.array([[106.005, 106.015], [106.025, 107.0]])
    lat = np.full((2, 2), 26.015)
    out = index.assign(lon, lat)
    assert out.shape == (2, 2)
    assert out.tolist() == index.assign(lon.ravel(), lat.ravel()).reshape(2, 2).tolist()
    assert out[1, 1] == -1
    # Lists, ints, scalars.
    assert index.assign([106.005], [26.015]).tolist() == [TINY_CODES.index("990101001001001")]
    assert index.assign(106.005, 26.015).shape == ()
    assert index.assign(np.array([106, 107]), np.array([26, 26])).tolist() == [
        TINY_CODES.index("990101001002001"),
        -1,
    ]


def test_non_finite_points_are_outside():
    index = CellIndex(TINY_CODES, TINY_GEOMS)
    lon = np.array([np.nan, 106.005, np.inf, -np.inf, 106.005, 1e308])
    lat = np.array([26.005, np.nan, 26.005, 26.005, np.inf, 26.005])
    assert index.assign(lon, lat).tolist() == [-1] * 6


def test_convenience_function_and_codes():
    lon, lat = _tiny_points()
    index = CellIndex(TINY_CODES, TINY_GEOMS)
    np.testing.assert_array_equal(
        assign_points_to_cells(lon, lat, TINY_CODES, TINY_GEOMS), index.assign(lon, lat)
    )
    codes = index.assign_codes(lon, lat)
    got = index.assign(lon, lat)
    assert codes == [TINY_CODES[i] if i >= 0 else None for i in got]
    assert index.codes == tuple(TINY_CODES)


def test_error_cases():
    good = [box(0, 0, 1, 1), box(1, 0, 2, 1)]
    with pytest.raises(CellIndexError, match="2 codes but 1"):
        CellIndex(["a", "b"], good[:1])
    with pytest.raises(CellIndexError, match="no cells"):
        CellIndex([], [])
    with pytest.raises(CellIndexError, match="duplicate code '1'"):
        CellIndex(["1", "1"], good)
    with pytest.raises(CellIndexError, match="non-empty strings"):
        CellIndex([1, 2], good)
    with pytest.raises(CellIndexError, match="non-empty strings"):
        CellIndex(["", "2"], good)
    with pytest.raises(CellIndexError, match="got LineString"):
        CellIndex(["1", "2"], [good[0], LineString([(0, 0), (1, 1)])])
    with pytest.raises(CellIndexError, match="got NoneType"):
        CellIndex(["1", "2"], [good[0], None])
    with pytest.raises(CellIndexError, match="empty geometry"):
        CellIndex(["1", "2"], [good[0], Polygon()])
    with pytest.raises(CellIndexError, match="invalid geometry"):
        CellIndex(["1", "2"], [good[0], Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])])
    with pytest.raises(CellIndexError, match="non-finite"):
        CellIndex(["1", "2"], [good[0], Polygon([(0, 0), (math.inf, 0), (0, 1)])])
    for bad in (0, -1.0, math.nan, math.inf, "0.1"):
        with pytest.raises(CellIndexError, match="pixel_size"):
            CellIndex(["1", "2"], good, pixel_size=bad)
    for bad in (0, 1.5, True):
        with pytest.raises(CellIndexError, match="max_pixels"):
            CellIndex(["1", "2"], good, max_pixels=bad)
    with pytest.raises(CellIndexError, match="semantics"):
        CellIndex(["1", "2"], good, semantics="jts")
    index = CellIndex(["1", "2"], good)
    with pytest.raises(CellIndexError, match="shapes differ"):
        index.assign(np.zeros(3), np.zeros(2))
    assert issubclass(CellIndexError, ValueError)


def test_max_pixels_bounds_the_raster():
    index = CellIndex(TINY_CODES, TINY_GEOMS, pixel_size=1e-6, max_pixels=5000)
    assert index.n_pixels <= 5000
    lon, lat = _tiny_points()
    np.testing.assert_array_equal(
        index.assign(lon, lat), CellIndex(TINY_CODES, TINY_GEOMS).assign(lon, lat)
    )
