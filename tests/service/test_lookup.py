"""Point lookup on the tiny hierarchy, where every right answer can be read off a drawing."""

from __future__ import annotations

import pytest

from geo.areas import LEVELS
from tests.conftest import auth, make_tokens


@pytest.fixture
def city(tiny_db_url):
    return auth(make_tokens(tiny_db_url, {"c": ("city_dispatcher", "990100")})["c"])


def test_point_inside_returns_the_whole_chain(tiny_client, city):
    r = tiny_client.get("/lookup", params={"lon": 106.035, "lat": 26.005}, headers=city)
    assert r.status_code == 200
    body = r.json()
    assert body["matched"] == ["city", "district", "community", "grid"]
    assert body["city"]["code"] == "990100"
    assert body["district"]["code"] == "990102"
    assert body["community"]["code"] == "990102001002"
    assert body["grid"] == {"code": "990102001002002", "name": "Grid 2-2-2"}
    assert "note" not in body


def test_cgcs2000_input_is_accepted(tiny_client, city):
    r = tiny_client.get(
        "/lookup", params={"lon": 106.035, "lat": 26.005, "crs": "EPSG:4490"}, headers=city
    )
    assert r.json()["grid"]["code"] == "990102001002002"
    assert r.json()["point"]["given_crs"] == "EPSG:4490"


@pytest.mark.parametrize("crs", ["GCJ-02", "BD-09"])
def test_chinese_map_sdk_coordinates_are_converted(tiny_client, city, crs):
    from geo.coords import wgs84_to_bd09, wgs84_to_gcj02

    convert = wgs84_to_gcj02 if crs == "GCJ-02" else wgs84_to_bd09
    lon, lat = convert(106.0098, 26.0195)  # 20 m inside the north-western grid's corner
    r = tiny_client.get("/lookup", params={"lon": lon, "lat": lat, "crs": crs}, headers=city)
    assert r.json()["grid"]["code"] == "990101001001001"
    assert abs(r.json()["point"]["lon"] - 106.0098) < 1e-8
    batch = tiny_client.post(
        "/lookup/batch", json={"points": [[lon, lat]], "crs": crs}, headers=city
    ).json()
    assert batch["results"][0]["grid"]["code"] == "990101001001001"
    outside = tiny_client.get(
        "/lookup", params={"lon": 2.35, "lat": 48.85, "crs": crs}, headers=city
    )
    assert outside.status_code == 422 and "China" in outside.json()["detail"]


def test_point_outside_every_area_is_an_answer_not_an_error(tiny_client, city):
    r = tiny_client.get("/lookup", params={"lon": 116.39, "lat": 39.9}, headers=city)
    assert r.status_code == 200
    body = r.json()
    assert body["matched"] == []
    assert body["grid"] is None and body["city"] is None
    assert "outside every area" in body["note"]


@pytest.mark.parametrize(
    ("lon", "lat", "expected"),
    [
        (106.01, 26.015, "990101001001001"),  # edge between two grids of one community
        (106.02, 26.01, "990101001001002"),  # corner of four grids in two districts
        (106.02, 26.005, "990101001002002"),  # edge between two districts
    ],
)
def test_shared_edge_always_goes_to_the_smallest_code(tiny_client, city, lon, lat, expected):
    answers = {
        tiny_client.get("/lookup", params={"lon": lon, "lat": lat}, headers=city).json()["grid"][
            "code"
        ]
        for _ in range(5)
    }
    assert answers == {expected}
    # The chain is that grid's own ancestors, never a mix of neighbours.
    body = tiny_client.get("/lookup", params={"lon": lon, "lat": lat}, headers=city).json()
    assert expected.startswith(body["community"]["code"])
    assert body["community"]["code"].startswith(body["district"]["code"])


def test_outer_boundary_point_is_covered(tiny_client, city):
    r = tiny_client.get("/lookup", params={"lon": 106.0, "lat": 26.0}, headers=city)
    assert r.json()["grid"]["code"] == "990101001002001"


def test_batch_keeps_order_ids_and_reports_each_status(tiny_client, tiny_db_url):
    tokens = make_tokens(
        tiny_db_url,
        {"c": ("city_dispatcher", "990100"), "d": ("district_dispatcher", "990101")},
    )
    points = [
        {"lon": 106.005, "lat": 26.005, "id": "a"},
        [106.035, 26.015],
        {"lon": 0.5, "lat": 0.5, "id": 7},
    ]
    r = tiny_client.post("/lookup/batch", json={"points": points}, headers=auth(tokens["c"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] == {
        "matched": 2,
        "partial": 0,
        "unmatched": 1,
        "outside_scope": 0,
        "total": 3,
    }
    res = body["results"]
    assert [x["index"] for x in res] == [0, 1, 2]
    assert res[0]["id"] == "a" and res[0]["grid"]["code"] == "990101001002001"
    assert res[1]["grid"]["code"] == "990102001001002" and "id" not in res[1]
    assert res[2]["id"] == 7 and res[2]["status"] == "unmatched"

    # A district dispatcher sees the other district's point as outside scope, with no codes.
    r = tiny_client.post("/lookup/batch", json={"points": points}, headers=auth(tokens["d"]))
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["matched", "outside_scope", "unmatched"]
    assert res[1]["grid"] is None and res[1]["district"] is None


def _expected_chains(areas, points):
    """Return, per point, the chain codes an independent shapely computation gives.

    Covering is shapely's ``covers`` on the stored polygons; the documented tie-break picks
    the deepest level that covers the point, then the smallest code of that level, and the
    chain is that area's ancestors (its materialised path).
    """
    import shapely
    from shapely import STRtree

    levels = ("grid", "community", "district", "city")
    trees = {}
    for level in levels:
        mine = [a for a in areas if a["level"] == level]
        trees[level] = (STRtree([a["geom"] for a in mine]), mine)
    out = []
    for lon, lat in points:
        point = shapely.Point(lon, lat)
        chain: list[str] = []
        for level in levels:
            tree, mine = trees[level]
            hits = [mine[i] for i in tree.query(point) if mine[i]["geom"].covers(point)]
            if hits:
                chain = min(hits, key=lambda a: a["code"])["path"].split("/")
                break
        out.append(chain)
    return out


def _codes(item) -> list[str]:
    return [item[level]["code"] for level in LEVELS if item[level] is not None]


def test_batch_and_single_lookups_agree_with_shapely_on_every_demo_point(demo_client, demo_db_url):
    import numpy as np
    import shapely
    from sqlalchemy import text

    from service.db import make_engine

    engine = make_engine(demo_db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.code, a.level, a.path, ST_AsBinary(a.geom) AS wkb FROM area a, "
                "(SELECT max(id) AS g FROM generation WHERE active) c "
                "WHERE a.generation_low <= c.g AND a.generation_high >= c.g"
            )
        ).all()
    engine.dispose()
    areas = [
        {"code": r.code, "level": r.level, "path": r.path, "geom": shapely.from_wkb(bytes(r.wkb))}
        for r in rows
    ]
    grids = [a for a in areas if a["level"] == "grid"]
    city = next(a for a in areas if a["level"] == "city")
    rng = np.random.default_rng(9)
    # Uniform points over the city's box (grids, undivided counties, outside the city), a
    # point inside each of 400 grids, and 300 grid vertices: most are shared by two or more
    # grids, so the tie-break decides them.
    x0, y0, x1, y1 = city["geom"].bounds
    uniform = np.column_stack([rng.uniform(x0, x1, 1000), rng.uniform(y0, y1, 1000)])
    inside = [
        grids[i]["geom"].point_on_surface().coords[0]
        for i in rng.choice(len(grids), size=min(400, len(grids)), replace=False)
    ]
    vertices = np.concatenate([shapely.get_coordinates(g["geom"]) for g in grids])
    corners = vertices[rng.choice(len(vertices), size=300, replace=False)]
    points = [(float(x), float(y)) for x, y in [*uniform, *inside, *corners]]
    expected = _expected_chains(areas, points)
    statuses = {"matched" if len(c) == 4 else "partial" if c else "unmatched" for c in expected}
    assert statuses == {"matched", "partial", "unmatched"}  # every kind of answer is tested

    admin = auth(make_tokens(demo_db_url, {"admin": ("admin", None)})["admin"])
    r = demo_client.post("/lookup/batch", json={"points": points}, headers=admin)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(points)
    wrong = [
        (i, points[i], _codes(item), expected[i])
        for i, item in enumerate(results)
        if _codes(item) != expected[i]
    ]
    assert wrong == []
    want_status = ["matched" if len(c) == 4 else "partial" if c else "unmatched" for c in expected]
    assert [item["status"] for item in results] == want_status
    # The single-point path (coalesced batches of concurrent requests) gives the same answers.
    for i in [*range(0, 1000, 25), *range(1000, len(points), 7)]:
        lon, lat = points[i]
        single = demo_client.get("/lookup", params={"lon": lon, "lat": lat}, headers=admin)
        assert single.status_code == 200, single.text
        assert _codes(single.json()) == expected[i], (i, points[i])


def test_a_point_in_a_community_left_without_a_grid_is_partial(tiny_client, tiny_db_url, city):
    admin = auth(make_tokens(tiny_db_url, {"a": ("admin", None)})["a"])
    gen = tiny_client.post("/generations", json={"description": "no grid"}, headers=admin)
    assert gen.status_code == 201, gen.text
    gen_id = gen.json()["id"]
    retired = tiny_client.post(
        f"/generations/{gen_id}/retire", json={"codes": ["990102001002002"]}, headers=admin
    )
    assert retired.json() == {"retired": 1}
    assert tiny_client.post(f"/generations/{gen_id}/activate", headers=admin).status_code == 200

    hole = {"lon": 106.035, "lat": 26.005}  # where grid 990102001002002 was
    body = tiny_client.get("/lookup", params=hole, headers=city).json()
    assert body["matched"] == ["city", "district", "community"]
    assert body["community"]["code"] == "990102001002" and body["grid"] is None
    assert body["note"] == "the point lies in community 990102001002 but in no grid of it"
    points = [[106.035, 26.005], [106.025, 26.005], [0.5, 0.5]]
    r = tiny_client.post("/lookup/batch", json={"points": points}, headers=city)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["partial", "matched", "unmatched"]
    assert res[0]["community"]["code"] == "990102001002" and res[0]["grid"] is None
    assert r.json()["summary"] == {
        "matched": 1,
        "partial": 1,
        "unmatched": 1,
        "outside_scope": 0,
        "total": 3,
    }


def test_chains_of_an_active_generation_are_kept_and_a_pending_ones_are_not(
    tiny_client, tiny_db_url, city
):
    # The batcher keeps each area's chain per active generation (they never change) and
    # asks the database only for the deepest area; a pending generation's areas may still
    # change, so its lookups read the whole chain every time and keep nothing.
    chains = tiny_client.app.state.lookup_batcher.chains
    chains.clear()
    point = {"lon": 106.035, "lat": 26.005}
    first = tiny_client.get("/lookup", params=point, headers=city).json()
    gen = first["generation"]
    assert list(chains) == [(gen, next(iter(chains))[1])]
    (kept,) = chains.values()
    assert kept["codes"] == [first[level]["code"] for level in LEVELS]
    again = tiny_client.get("/lookup", params=point, headers=city).json()
    assert again == first and len(chains) == 1
    tokens = make_tokens(tiny_db_url, {"a": ("admin", None), "p": ("planner", "990100")})
    pending = tiny_client.post(
        "/generations", json={"description": "plan"}, headers=auth(tokens["a"])
    ).json()["id"]
    r = tiny_client.get(
        "/lookup", params={**point, "generation": pending}, headers=auth(tokens["p"])
    )
    assert r.status_code == 200 and r.json()["generation"] == pending
    assert all(g == gen for g, _ in chains)


def test_batch_lookups_take_chains_from_the_single_lookups_cache(tiny_client, tiny_db_url, city):
    # POST /lookup/batch finds each point's deepest area only and takes its chain from the
    # cache single lookups keep (one per pool): what one path read, the other reuses; the
    # answers are those of the whole-chain query (lookup_batch.sql), cached or not.
    import asyncio

    import asyncpg

    from service.repositories import lookup

    chains = tiny_client.app.state.lookup_batcher.chains
    chains.clear()
    points = [
        [106.005, 26.015],
        [106.015, 26.015],
        [106.005, 26.005],
        [106.035, 26.005],
        [106.025, 26.015],
        [106.005, 26.015],  # again: one chain for both
        [0.5, 0.5],  # outside every area
        [106.0, 26.01],  # on an edge between grids
    ]
    r = tiny_client.post("/lookup/batch", json={"points": points}, headers=city)
    assert r.status_code == 200, r.text
    gen = r.json()["generation"]
    first = r.json()["results"]
    kept = dict(chains)
    areas = {tuple(x[level]["code"] for level in LEVELS if x[level]) for x in first}
    assert len(kept) == len(areas - {()}) and all(g == gen for g, _ in kept)
    # A single lookup of a point the batch saw asks the database for no chain.
    one = tiny_client.get("/lookup", params={"lon": 106.005, "lat": 26.015}, headers=city).json()
    assert [one[level]["code"] for level in LEVELS] == [first[0][level]["code"] for level in LEVELS]
    assert dict(chains) == kept
    again = tiny_client.post("/lookup/batch", json={"points": points}, headers=city).json()
    assert again["results"] == first

    async def both():
        conn = await asyncpg.connect("postgresql://" + tiny_db_url.split("://", 1)[1])
        try:
            lons, lats = [p[0] for p in points], [p[1] for p in points]
            whole = await lookup._fetch_chains(conn, lons, lats, gen)
            cold = await lookup._fetch_with_chains(conn, {}, lons, lats, gen)
            warm = await lookup._fetch_with_chains(conn, dict(kept), lons, lats, gen)
            return whole, cold, warm
        finally:
            await conn.close()

    whole, cold, warm = asyncio.run(both())
    fields = ("i", "generation", "generation_active", "path", "codes", "names")
    whole = [{k: (list(r[k]) if k in ("codes", "names") else r[k]) for k in fields} for r in whole]
    assert cold == whole and warm == whole
