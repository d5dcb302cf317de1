"""CellIndex gives exactly PostGIS's answer: ``ST_Covers`` + smallest code, on every point.

A throwaway database in the project's cluster holds ~3,000 synthetic grid cells (real
Guiyang outline, enclaves with holes, one two-part cell) and ~50,000 points: where people
live, outside the city, exactly on vertices, on edges within rounding, and "rounding traps"
(points PostGIS's plain double arithmetic puts on an edge they are not on, where GEOS and
PostGIS disagree). Geometries go in as hex EWKB, so PostGIS sees bit-identical coordinates.
"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
import shapely

from fixtures.synthetic import rounding_traps, synthetic_city, synthetic_points
from geo.cellindex import CellIndex
from tests.conftest import _create_database, _drop_database

N_POINTS = 50_000
N_TRAPS = 300

COVERS_SQL = """
SELECT DISTINCT ON (p.id) p.id, c.code
FROM pts p LEFT JOIN {table} c ON ST_Covers(c.geom, p.geom)
ORDER BY p.id, c.code
"""


@pytest.fixture(scope="module")
def city():
    return synthetic_city()


@pytest.fixture(scope="module")
def points(city):
    lon, lat = synthetic_points(city, N_POINTS, seed=21, on_vertex=0.04, on_edge=0.08)
    traps_lon, traps_lat = rounding_traps(city, N_TRAPS, seed=22)
    return np.r_[lon, traps_lon], np.r_[lat, traps_lat]


def _polygons(city) -> list:
    """Return the cells as Polygons where they have one part (PostGIS's other code path)."""
    return [g.geoms[0] if len(g.geoms) == 1 else g for g in city.geoms]


def _ewkb(geoms) -> list[str]:
    return [f"SRID=4326;{w}" for w in shapely.to_wkb(np.asarray(geoms, dtype=object), hex=True)]


@pytest.fixture(scope="module")
def pg(city, points):
    url = _create_database("wangge_test_cellindex")
    conn = psycopg.connect(url.replace("+psycopg", ""), autocommit=True)
    try:
        conn.execute("CREATE EXTENSION postgis")
        conn.execute(
            "CREATE TABLE cells (code text PRIMARY KEY, geom geometry(MultiPolygon, 4326))"
        )
        conn.execute(
            "CREATE TABLE cells_poly (code text PRIMARY KEY, geom geometry(Geometry, 4326))"
        )
        conn.execute("CREATE TABLE pts (id integer PRIMARY KEY, geom geometry(Point, 4326))")
        for table, geoms in (("cells", city.geoms), ("cells_poly", _polygons(city))):
            with conn.cursor().copy(f"COPY {table} (code, geom) FROM STDIN") as copy:
                for row in zip(city.codes, _ewkb(geoms), strict=True):
                    copy.write_row(row)
            conn.execute(f"CREATE INDEX ON {table} USING gist (geom)")
        lon, lat = points
        with conn.cursor().copy("COPY pts (id, geom) FROM STDIN") as copy:
            for row in enumerate(_ewkb(shapely.points(lon, lat))):
                copy.write_row(row)
        conn.execute("ANALYZE")
        yield conn
    finally:
        conn.close()
        _drop_database(url)


def _postgis_codes(conn, table: str) -> list[str | None]:
    rows = conn.execute(COVERS_SQL.format(table=table)).fetchall()
    assert [r[0] for r in rows] == list(range(len(rows)))
    return [r[1] for r in rows]


def test_coordinates_reach_postgis_bit_identical(pg, city, points):
    lon, lat = points
    xy = np.array(pg.execute("SELECT ST_X(geom), ST_Y(geom) FROM pts ORDER BY id").fetchall())
    assert np.array_equal(xy[:, 0], lon) and np.array_equal(xy[:, 1], lat)
    stored = pg.execute("SELECT ST_AsBinary(geom) FROM cells ORDER BY code").fetchall()
    ours = dict(zip(city.codes, shapely.to_wkb(np.asarray(city.geoms, dtype=object)), strict=True))
    assert [bytes(r[0]) for r in stored] == [ours[c] for c in sorted(city.codes)]


@pytest.mark.parametrize("table", ["cells", "cells_poly"])
def test_cellindex_equals_postgis_on_every_point(pg, city, points, table):
    geoms = city.geoms if table == "cells" else _polygons(city)
    expected = _postgis_codes(pg, table)
    lon, lat = points
    got = CellIndex(city.codes, geoms).assign_codes(lon, lat)
    bad = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    assert not bad, [(float(lon[i]), float(lat[i]), got[i], expected[i]) for i in bad[:10]]
    assert sum(c is None for c in expected) > 1000


def test_the_points_hold_the_hard_cases(pg, city, points):
    """Shared edges and vertices, and traps on which GEOS's answer is not PostGIS's."""
    covering = dict(
        pg.execute(
            "SELECT n, count(*) FROM (SELECT p.id, count(c.code) n FROM pts p "
            "LEFT JOIN cells c ON ST_Covers(c.geom, p.geom) GROUP BY p.id) s GROUP BY n"
        ).fetchall()
    )
    assert covering.get(0, 0) > 1000
    assert covering.get(2, 0) > 400  # shared edges (vertices on them, exact midpoints, traps)
    assert covering.get(3, 0) > 1000  # vertices where three grids meet
    expected = _postgis_codes(pg, "cells")
    lon, lat = points
    geos = CellIndex(city.codes, city.geoms, semantics="geos").assign_codes(lon, lat)
    differ = [i for i, (a, b) in enumerate(zip(geos, expected, strict=True)) if a != b]
    # Only the points within rounding of a boundary, mostly the traps, and plenty of them.
    assert len(differ) >= 50
    assert sum(i >= N_POINTS for i in differ) >= 0.9 * len(differ)
