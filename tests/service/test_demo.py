"""The Guiyang demo as a user finds it: real divisions, 93 + 18 communities, Kaiyang's 66 grids,
children tiling their parents, lookups that land where they should."""

from __future__ import annotations

import json

import pytest
import shapely
from shapely.geometry import shape
from sqlalchemy import text

from fixtures.guiyang import KAIYANG, URBAN_COMMUNITIES
from service.db import make_engine
from tests.conftest import auth, make_tokens
from tests.reference import reference_path

CURRENT = "generation_low <= g.id AND generation_high >= g.id"
G = "(SELECT max(id) AS id FROM generation WHERE active) g"


@pytest.fixture(scope="module")
def db(demo_db_url):
    engine = make_engine(demo_db_url)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


@pytest.fixture(scope="module")
def tokens(demo_db_url):
    return make_tokens(
        demo_db_url,
        {"city": ("city_dispatcher", "520100"), "kaiyang": ("district_dispatcher", KAIYANG)},
    )


def test_city_and_its_ten_real_divisions(db):
    rows = db.execute(
        text(
            f"SELECT code, level, name FROM area a, {G} WHERE {CURRENT} "
            "AND level IN ('city', 'district') ORDER BY code"
        )
    ).all()
    assert rows[0] == ("520100", "city", "贵阳市")
    assert {r.code for r in rows[1:]} == {
        "520102",
        "520103",
        "520111",
        "520112",
        "520113",
        "520115",
        "520121",
        "520122",
        "520123",
        "520181",
    }
    # The stored districts are the Tianditu survey boundaries (the shared reference copy).
    reference = json.loads(
        reference_path("guiyang_520100_districts_tianditu_cgcs2000.geojson").read_text()
    )
    for feat in reference["features"]:
        code = str(feat["properties"]["adcode"])
        wkb = db.execute(
            text(f"SELECT ST_AsBinary(geom) FROM area a, {G} WHERE {CURRENT} AND code = :c"),
            {"c": code},
        ).scalar()
        stored = shapely.from_wkb(bytes(wkb))
        ref = shape(feat["geometry"])
        assert stored.symmetric_difference(ref).area / ref.area < 1e-9, code


def test_community_and_grid_counts(db):
    rows = dict(
        db.execute(
            text(
                f"SELECT parent_code, count(*) FROM area a, {G} WHERE {CURRENT} "
                "AND level = 'community' "
                "GROUP BY parent_code"
            )
        ).all()
    )
    assert {k: rows[k] for k in URBAN_COMMUNITIES} == URBAN_COMMUNITIES
    assert sum(URBAN_COMMUNITIES.values()) == 93
    assert rows[KAIYANG] == 18
    kaiyang_grids = db.execute(
        text(
            f"SELECT count(*) FROM area a, {G} WHERE {CURRENT} AND level = 'grid' AND path LIKE :p"
        ),
        {"p": f"520100/{KAIYANG}/%"},
    ).scalar()
    assert kaiyang_grids == 66
    # Kaiyang's communities follow its townships: official 9-digit codes + community 001.
    codes = (
        db.execute(
            text(
                f"SELECT code FROM area a, {G} WHERE {CURRENT} AND parent_code = :k ORDER BY code"
            ),
            {"k": KAIYANG},
        )
        .scalars()
        .all()
    )
    assert codes[0] == "520121001001" and codes[-1] == "520121209001"


def test_grids_are_numbered_west_to_east_north_to_south(db):
    rows = db.execute(
        text(
            f"SELECT parent_code, code, ST_Y(ST_PointOnSurface(geom)) AS y, "
            f"ST_X(ST_PointOnSurface(geom)) AS x FROM area a, {G} WHERE {CURRENT} "
            "AND level = 'grid' AND parent_code = '520121001001' ORDER BY code"
        )
    ).all()
    assert len(rows) >= 2
    assert [r.code[-3:] for r in rows] == [f"{i:03d}" for i in range(1, len(rows) + 1)]
    # The first grid is in the northern half of the community, the last in the southern.
    ys = [r.y for r in rows]
    assert ys[0] >= sorted(ys)[len(ys) // 2 - (len(ys) % 2 == 0)]
    assert ys[-1] <= sorted(ys)[(len(ys) - 1) // 2 + 1]


# Boundaries are stored as planar lon/lat polygons, so coverage is measured in that plane:
# a child vertex inserted on a parent's straight edge is exactly on it there, while in
# geodesic or projected measure long edges bend and show phantom slivers.
TILING_SQL = f"""
WITH cur AS (SELECT a.* FROM area a, {G} WHERE {CURRENT}),
kids AS (
    SELECT p.code AS parent, p.level, p.geom AS pgeom,
           ST_Union(c.geom) AS ugeom, sum(ST_Area(c.geom::geography)) AS kids_m2
    FROM cur p JOIN cur c ON c.parent_code = p.code
    GROUP BY p.code, p.level, p.geom
)
SELECT parent, level,
       ST_Area(ST_SymDifference(pgeom, ugeom)) / ST_Area(pgeom) AS diff,
       (kids_m2 - ST_Area(ugeom::geography)) AS overlap_m2
FROM kids
"""


def test_every_parent_is_tiled_by_its_children(db):
    rows = db.execute(text(TILING_SQL)).all()
    levels = {r.level for r in rows}
    assert levels == {"city", "district", "community"}
    assert len(rows) == 1 + 7 + 111
    for r in rows:
        assert r.diff < 1e-4, f"{r.parent}: children differ from parent by {r.diff:.2e}"
        assert r.overlap_m2 < 1.0, f"{r.parent}: children overlap by {r.overlap_m2:.2f} m²"


def test_no_two_kaiyang_grids_overlap_by_more_than_a_square_metre(db):
    worst = db.execute(
        text(f"""
        WITH g66 AS (SELECT a.code, a.geom FROM area a, {G} WHERE {CURRENT}
                     AND level = 'grid' AND code LIKE '520121%')
        SELECT coalesce(max(ST_Area(ST_Intersection(x.geom, y.geom)::geography)), 0)
        FROM g66 x JOIN g66 y ON x.code < y.code AND ST_Intersects(x.geom, y.geom)
    """)
    ).scalar()
    assert worst < 1.0
    single = db.execute(
        text(
            f"SELECT bool_and(ST_NumGeometries(geom) = 1) FROM area a, {G} "
            f"WHERE {CURRENT} AND level = 'grid'"
        )
    ).scalar()
    assert single, "every grid is one contiguous polygon"


def test_lookup_inside_kaiyang_returns_the_full_chain(demo_client, db, tokens):
    rows = db.execute(
        text(
            f"SELECT code, parent_code, ST_X(p) AS lon, ST_Y(p) AS lat FROM ("
            f"SELECT code, parent_code, ST_PointOnSurface(geom) AS p FROM area a, {G} "
            f"WHERE {CURRENT} AND level = 'grid' AND code LIKE '520121%') s ORDER BY code"
        )
    ).all()
    assert len(rows) == 66
    h = auth(tokens["kaiyang"])
    for r in rows[::5]:
        body = demo_client.get("/lookup", params={"lon": r.lon, "lat": r.lat}, headers=h).json()
        assert body["grid"]["code"] == r.code
        assert body["community"]["code"] == r.parent_code
        assert body["district"]["code"] == KAIYANG
        assert body["city"]["code"] == "520100"
    batch = demo_client.post(
        "/lookup/batch", json={"points": [[r.lon, r.lat] for r in rows]}, headers=h
    ).json()
    assert [x["grid"]["code"] for x in batch["results"]] == [r.code for r in rows]


def test_point_in_another_city_has_no_grid_and_says_so(demo_client, tokens):
    # Zunyi, the next city north.
    r = demo_client.get(
        "/lookup", params={"lon": 106.93, "lat": 27.70}, headers=auth(tokens["city"])
    )
    assert r.status_code == 200
    assert r.json()["matched"] == [] and r.json()["grid"] is None
    # Xifeng county is in Guiyang but has no communities: the answer says which levels matched.
    r = demo_client.get(
        "/lookup", params={"lon": 106.74, "lat": 27.09}, headers=auth(tokens["city"])
    )
    body = r.json()
    assert body["matched"] == ["city", "district"]
    assert body["district"]["code"] == "520122"
    assert "no community" in body["note"]


def test_metro_stations_land_in_urban_grids(demo_client, tokens):
    stations = json.loads(reference_path("guiyang_rail_stations_osm_wgs84.geojson").read_text())
    pts = [
        f["geometry"]["coordinates"][:2]
        for f in stations["features"]
        if f["geometry"]["type"] == "Point"
    ]
    body = demo_client.post(
        "/lookup/batch", json={"points": pts}, headers=auth(tokens["city"])
    ).json()
    assert body["summary"]["total"] == len(pts)
    # Most metro and rail stations are in the six urban districts, which are fully gridded.
    assert body["summary"]["matched"] / len(pts) > 0.6


def test_area_geometry_simplified_and_reprojected(demo_client, tokens):
    h = auth(tokens["city"])
    full = demo_client.get("/areas/520121", headers=h).json()
    simple = demo_client.get("/areas/520121", params={"simplify_m": 500}, headers=h).json()
    n_full = len(shapely.get_coordinates(shape(full["geometry"])))
    n_simple = len(shapely.get_coordinates(shape(simple["geometry"])))
    assert n_simple < n_full
    utm = demo_client.get("/areas/520121", params={"srid": 32648}, headers=h).json()
    x, y = shapely.get_coordinates(shape(utm["geometry"]))[0]
    assert 300_000 < x < 900_000 and 2_900_000 < y < 3_100_000  # UTM 48N metres
    assert 1900 < full["area_km2"] < 2100  # Kaiyang is 2,019 km²


def test_listing_pages_with_next_links(demo_client, tokens):
    h = auth(tokens["city"])
    first = demo_client.get("/areas", params={"level": "grid", "limit": 50}, headers=h).json()
    assert len(first["items"]) == 50 and first["total"] > 300
    second = demo_client.get(first["next"], headers=h).json()
    assert second["offset"] == 50
    assert {a["code"] for a in first["items"]}.isdisjoint(a["code"] for a in second["items"])
    ancestors = demo_client.get(f"/areas/{first['items'][0]['code']}/ancestors", headers=h).json()
    assert [a["level"] for a in ancestors] == ["city", "district", "community"]


def test_demo_entities_are_plausible_with_deliberate_gaps(db):
    counts = dict(
        db.execute(
            text(
                "SELECT 'facility', count(*) FROM facility "
                "UNION ALL SELECT 'unit', count(*) FROM unit "
                "UNION ALL SELECT 'care', count(*) FROM care_household "
                "UNION ALL SELECT 'incident', count(*) FROM incident "
                "UNION ALL SELECT 'member', count(*) FROM member"
            )
        ).all()
    )
    assert counts["facility"] == 111 * 7  # one hall, five stations, one member station each
    assert counts["unit"] > 1000 and counts["care"] > 1000 and counts["member"] > 2000
    assert 2000 < counts["incident"] < 10000
    # A full 1+1+1 team in most Kaiyang grids, some gaps and doubles on purpose.
    teams = db.execute(
        text(
            "SELECT g.code, count(DISTINCT m.team_role) AS roles, count(m.id) AS people "
            "FROM area g LEFT JOIN member m ON m.serving_grid_code = g.code "
            "WHERE g.level = 'grid' AND g.code LIKE '520121%' GROUP BY g.code"
        )
    ).all()
    full = [t for t in teams if t.roles == 3 and t.people == 3]
    assert 50 <= len(full) < 66
    assert any(t.roles < 3 for t in teams) and any(t.people > t.roles for t in teams)
    # Every point entity was mapped on write; incidents span the last year; some wait unassigned.
    span = db.execute(
        text(
            "SELECT min(reported_at), max(reported_at), count(*) FILTER (WHERE grid_code IS NULL), "
            "count(*) FILTER (WHERE generation IS NULL) FROM incident"
        )
    ).one()
    assert (span[1] - span[0]).days > 300
    assert span[2] > 0 and span[3] == 0
    unmapped = db.execute(text("SELECT count(*) FROM unit WHERE grid_code IS NULL")).scalar()
    assert unmapped == 0


def test_unassigned_incidents_wait_in_the_lowest_level_that_contains_them(demo_client, demo_db_url):
    tokens = make_tokens(
        demo_db_url,
        {"xifeng": ("district_dispatcher", "520122"), "kaiyang": ("district_dispatcher", KAIYANG)},
    )
    queue = demo_client.get(
        "/incidents", params={"unassigned": "true", "limit": 1000}, headers=auth(tokens["xifeng"])
    ).json()
    assert queue["total"] == 40  # the demo files 40 in each county without grids
    assert {i["cells"]["district_code"] for i in queue["items"]} == {"520122"}
    assert all(i["cells"]["grid_code"] is None for i in queue["items"])
    kaiyang = demo_client.get(
        "/incidents", params={"unassigned": "true"}, headers=auth(tokens["kaiyang"])
    ).json()
    assert kaiyang["total"] == 0
