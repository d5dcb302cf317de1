"""Service reach and siting on the tiny hierarchy (hand-computed answers) and on the demo.

The tiny hierarchy's south-west community 990101001002 spans 106.00–106.02°E,
26.00–26.01°N (about 2.0 × 1.1 km). One service hall stands at its centre F. A hand-made
street grid, 100 m apart, is laid around F, with a "river" between 200 and 300 m north of
F that no street crosses.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import LineString
from sqlalchemy import text

from fixtures.tiny import grid_box
from service.auth import Principal
from service.db import make_engine
from service.errors import NotFoundError, UnprocessableError
from tests.conftest import _client, _drop_database, auth, make_tokens, tiny_database

SW = "990101001002"  # the facility's community
NW = "990101001001"
NE = "990102001001"
F = (106.01, 26.005)
TO_UTM = Transformer.from_crs(4326, 32648, always_xy=True)
TO_LONLAT = Transformer.from_crs(32648, 4326, always_xy=True)
FX, FY = TO_UTM.transform(*F)
RIVER_SOUTH, RIVER_NORTH = 200.0, 300.0  # metres north of F


def _lonlat(dx: float, dy: float) -> tuple[float, float]:
    """Return lon/lat of the point dx metres east and dy north of F (UTM 48N)."""
    return TO_LONLAT.transform(FX + dx, FY + dy)


def _community_m(code: str):
    d, c = int(code[4:6]), int(code[-1])
    poly = grid_box(d, c, 1).union(grid_box(d, c, 2)).envelope
    return shapely.transform(
        shapely.segmentize(poly, 1e-4),
        lambda xy: np.column_stack(TO_UTM.transform(xy[:, 0], xy[:, 1])),
    )


def _admin() -> Principal:
    return Principal(token_id="t", name="t", role="admin", area_code=None, scope_path=None)


def _principal(role: str, code: str, path: str) -> Principal:
    return Principal(token_id="t", name="t", role=role, area_code=code, scope_path=path)


CITY = _principal("city_dispatcher", "990100", "990100")

# Households: (dx, dy) from F. 500 m east and 280 m north are within the straight-line reach
# (923 m; 15 min, 80 m/min, detour 1.3); 950 m east is beyond it; one lies in NE.
HOUSEHOLDS = [(500.0, 0.0), (950.0, 0.0), (0.0, 280.0), (-300.0, -300.0)]
UNITS = [(-100.0, 0.0)]


def _road_grid_geojson() -> bytes:
    """Return a GeoJSON of the street grid around F: lines 100 m apart, a river across.

    Rows (east-west streets) every 100 m from 500 m south to 500 m north of F, each one
    line 1.8 km long; columns (north-south streets) every 100 m, each two lines: south of
    the river (−500 … +200 m) and north of it (+300 … +500 m). Lines carry a vertex at
    every crossing, as OpenStreetMap ways do.
    """
    features = []

    def line(points):
        coords = [list(_lonlat(x, y)) for x, y in points]
        features.append(
            {
                "type": "Feature",
                "properties": {"name": f"street {len(features)}"},
                "geometry": {"type": "LineString", "coordinates": coords},
            }
        )

    for j in range(-5, 6):
        line([(100.0 * i, 100.0 * j) for i in range(-9, 10)])
    for i in range(-9, 10):
        line([(100.0 * i, 100.0 * j) for j in range(-5, 3)])
        line([(100.0 * i, 100.0 * j) for j in range(3, 6)])
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def _expected_reached_segments(walk_m: float) -> list[LineString]:
    """Return the street parts within ``walk_m`` of F along the grid, by hand (L1 distance)."""
    out = []
    for j in range(-5, 3):  # rows south of the river are reachable
        left = walk_m - 100 * abs(j)
        if left > 0:
            out.append(LineString([(FX - left, FY + 100 * j), (FX + left, FY + 100 * j)]))
    for i in range(-9, 10):
        left = walk_m - 100 * abs(i)
        if left > 0:
            y0, y1 = max(-left, -500.0), min(left, RIVER_SOUTH)
            out.append(LineString([(FX + 100 * i, FY + y0), (FX + 100 * i, FY + y1)]))
    return out


@pytest.fixture(scope="module")
def url():
    url = tiny_database("wangge_test_reach")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO facility (name, kind, geom) VALUES "
                "('hall', 'service_hall', ST_SetSRID(ST_MakePoint(:x, :y), 4326)), "
                "('party', 'party_member_station', ST_SetSRID(ST_MakePoint(106.03, 26.015), 4326))"
            ),
            {"x": F[0], "y": F[1]},
        )
        for i, (dx, dy) in enumerate(HOUSEHOLDS):
            x, y = _lonlat(dx, dy)
            conn.execute(
                text(
                    "INSERT INTO care_household (kind, head_name, geom) VALUES "
                    "('hardship', :n, ST_SetSRID(ST_MakePoint(:x, :y), 4326))"
                ),
                {"n": f"Secret Name {i}", "x": x, "y": y},
            )
        conn.execute(
            text(
                "INSERT INTO care_household (kind, head_name, geom) VALUES "
                "('elderly_alone', 'Secret NE', ST_SetSRID(ST_MakePoint(106.035, 26.015), 4326))"
            )
        )
        for dx, dy in UNITS:
            x, y = _lonlat(dx, dy)
            conn.execute(
                text(
                    "INSERT INTO unit (name, kind, geom) VALUES "
                    "('shop', 'shop', ST_SetSRID(ST_MakePoint(:x, :y), 4326))"
                ),
                {"x": x, "y": y},
            )
    engine.dispose()
    yield url
    _drop_database(url)


@pytest.fixture(scope="module")
def engine(url):
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def client(url):
    with _client(url) as c:
        paths = {getattr(r, "path", None) for r in c.app.router.routes}
        assert "/analysis/reach" in paths  # the app serves the reach analysis itself
        yield c


@pytest.fixture(scope="module")
def h(url):
    tokens = make_tokens(
        url,
        {
            "admin": ("admin", None),
            "city": ("city_dispatcher", "990100"),
            "planner": ("planner", "990101"),
            "nw": ("community_dispatcher", NW),
            "grid": ("grid_officer", SW + "001"),
        },
    )
    return {name: auth(tok) for name, tok in tokens.items()}


def _reach(engine, principal=CITY, **kw):
    from service.analysis.reach import run_reach

    with engine.connect() as conn:
        return run_reach(conn, principal=principal, **kw)


def _item(body, code):
    (item,) = [i for i in body["items"] if i["code"] == code]
    return item


# ----------------------------------------------------------------------- straight line


def test_straight_line_reach_matches_the_disc_by_hand(engine):
    body = _reach(engine, use_network=False)
    radius = 15 * 80 / 1.3
    assert body["parameters"]["distance"] == "straight_line"
    assert body["parameters"]["radius_m"] == pytest.approx(radius, abs=0.1)
    assert body["parameters"]["area_crs"] == "EPSG:32648"
    disc = shapely.Point(FX, FY).buffer(radius, quad_segs=256)
    for code in (SW, NW, NE):
        community = _community_m(code)
        item = _item(body, code)
        assert item["area_m2"] == pytest.approx(community.area, rel=1e-3)
        covered = item["area_m2"] - item["uncovered_area_m2"]
        assert covered == pytest.approx(community.intersection(disc).area, rel=0.01, abs=1.0)
        assert 0 <= item["uncovered_share"] <= 1
    assert _item(body, NE)["uncovered_share"] == 1.0  # 1.1 km away; the party station is no hall
    # The facility's own community: 500 m east, 280 m north covered; 950 m east and
    # 300 m south-west … (424 m) covered; so one of four beyond reach.
    assert _item(body, SW)["households"] == {"total": 4, "uncovered": 1, "uncovered_share": 0.25}
    assert _item(body, SW)["units"]["uncovered"] == 0
    assert _item(body, NE)["households"] == {"total": 1, "uncovered": 1, "uncovered_share": 1.0}
    # Worst first; the uncovered polygon is GeoJSON in lon/lat, without any names.
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4]
    assert body["items"][-1]["code"] == SW
    geometry = shapely.geometry.shape(_item(body, SW)["geometry"])
    assert geometry.covers(shapely.Point(*_lonlat(950, 0)))
    assert not geometry.covers(shapely.Point(*_lonlat(500, 0)))
    assert "Secret" not in json.dumps(body)
    s = body["summary"]
    assert s["communities"] == 4 and s["facilities"] == 1
    assert s["households"] == {"total": 5, "uncovered": 2, "uncovered_share": 0.4}
    assert s["uncovered_area_m2"] == pytest.approx(
        sum(i["uncovered_area_m2"] for i in body["items"])
    )


def test_party_stations_count_when_asked(engine):
    body = _reach(engine, use_network=False, kinds="service_hall,party_member_station")
    assert body["summary"]["facilities"] == 2
    assert _item(body, NE)["households"]["uncovered"] == 0
    with pytest.raises(UnprocessableError) as err:
        _reach(engine, kinds="hospital")
    assert err.value.field == "kinds"


def test_a_longer_walk_covers_more(engine):
    short = _reach(engine, use_network=False, minutes=5)["summary"]["uncovered_area_m2"]
    long = _reach(engine, use_network=False, minutes=30)["summary"]["uncovered_area_m2"]
    assert long < short


# ----------------------------------------------------------------------------- scope


def test_a_community_dispatcher_sees_only_their_community(engine):
    nw = _principal("community_dispatcher", NW, f"990100/990101/{NW}")
    body = _reach(engine, principal=nw, use_network=False)
    assert [i["code"] for i in body["items"]] == [NW]
    assert body["area"]["code"] == NW
    with pytest.raises(NotFoundError) as err:
        _reach(engine, principal=nw, area_code=SW)
    assert err.value.field == "area"
    district = _principal("district_dispatcher", "990101", "990100/990101")
    assert {i["code"] for i in _reach(engine, principal=district)["items"]} == {NW, SW}
    grid = _principal("grid_officer", SW + "001", f"990100/990101/{SW}/{SW}001")
    assert [i["code"] for i in _reach(engine, principal=grid, use_network=False)["items"]] == [
        SW + "001"
    ]


def test_scope_over_http(client, h):
    r = client.get("/analysis/reach", headers=h["nw"], params={"network": "false"})
    assert r.status_code == 200, r.text
    assert [i["code"] for i in r.json()["items"]] == [NW]
    r = client.get("/analysis/reach", headers=h["nw"], params={"area": SW})
    assert r.status_code == 404 and r.json()["field"] == "area"
    r = client.get("/analysis/siting", headers=h["nw"], params={"area": "990102", "k": 1})
    assert r.status_code == 404
    assert client.get("/analysis/reach").status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/analysis/reach", {"minutes": 0}, "minutes"),
        ("/analysis/reach", {"minutes": -5}, "minutes"),
        ("/analysis/reach", {"minutes": "soon"}, "minutes"),
        ("/analysis/reach", {"detour": 0.5}, "detour"),
        ("/analysis/reach", {"speed_m_per_min": 0}, "speed_m_per_min"),
        ("/analysis/reach", {"rank_by": "beauty"}, "rank_by"),
        ("/analysis/reach", {"kinds": "hospital"}, "kinds"),
        ("/analysis/reach", {"colour": "red"}, "colour"),
        ("/analysis/siting", {"k": 1000}, "k"),
        ("/analysis/siting", {"k": 0}, "k"),
        ("/analysis/siting", {"k": 2, "lscp": "true"}, "lscp"),
        ("/analysis/siting", {"k": 2, "minutes": 0}, "minutes"),
        ("/analysis/siting", {"k": 2, "spacing_m": 1}, "spacing_m"),
        ("/analysis/siting", {"k": 2, "demand": "votes"}, "demand"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(client, h, path, params, field):
    r = client.get(path, headers=h["city"], params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    fields = {body.get("field")} | {e["field"] for e in body.get("errors", [])}
    assert field in fields, body


# ---------------------------------------------------------------------------- siting


def test_siting_without_k_places_the_default_number(client, h):
    # The documented default (k=5, as the report's) is one the server accepts.
    from service.schemas.analysis import DEFAULT_K

    default = client.get("/analysis/siting", headers=h["city"], params={"area": SW})
    assert default.status_code == 200, default.text
    params = {"area": SW, "k": DEFAULT_K}
    explicit = client.get("/analysis/siting", headers=h["city"], params=params)
    assert default.json()["summary"] == explicit.json()["summary"]


def test_siting_on_supplied_candidates_picks_the_useful_one(client, h):
    # The household 950 m east is the only one left uncovered in SW; a candidate 900 m
    # east reaches it, one 900 m west reaches nothing new.
    body = {"k": 1, "area": SW, "candidates": [list(_lonlat(-900, 0)), list(_lonlat(900, 0))]}
    r = client.post("/analysis/siting", headers=h["city"], json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    s = out["summary"]
    assert (s["covered_before"], s["covered_after"], s["demand_total"]) == (3, 4, 4)
    assert s["share_after"] == 1.0 and s["new_sites"] == 1
    (site,) = out["items"]
    assert site["candidate"] == 1 and site["community_code"] == SW
    assert site["geometry"]["coordinates"] == pytest.approx(list(_lonlat(900, 0)), abs=1e-7)
    assert out["sites"]["features"][0]["geometry"]["type"] == "Point"
    # A candidate outside the area is refused, naming it.
    body["candidates"].append([106.035, 26.015])
    r = client.post("/analysis/siting", headers=h["city"], json=body)
    assert r.status_code == 422 and r.json()["field"] == "candidates[2]"


def test_siting_on_a_lattice_lscp_and_mclp(engine):
    from service.analysis.siting import run_siting

    with engine.connect() as conn:
        lscp = run_siting(conn, principal=CITY, lscp=True)
        mclp = run_siting(conn, principal=CITY, k=1, spacing_m=100)
    # Beyond reach: 950 m east of F and the NE household; no single site reaches both.
    assert lscp["summary"]["new_sites"] == 2 and lscp["summary"]["share_after"] == 1.0
    assert lscp["summary"]["households"]["covered_after"] == 5
    assert mclp["summary"]["new_sites"] == 1 and mclp["summary"]["added"] == 1
    assert mclp["parameters"]["spacing_m"] == 100 and mclp["parameters"]["candidates"] == "lattice"
    assert mclp["parameters"]["solver"] in ("HiGHS", "PULP_CBC_CMD")


# --------------------------------------------------------------------------- network


def test_network_import_and_reach_along_the_streets(client, h, engine):
    files = {"file": ("roads.geojson", io.BytesIO(_road_grid_geojson()), "application/geo+json")}
    r = client.post("/network/import", headers=h["planner"], files=files)
    assert r.status_code == 403
    files = {"file": ("roads.geojson", io.BytesIO(_road_grid_geojson()), "application/geo+json")}
    r = client.post("/network/import", headers=h["admin"], files=files)
    assert r.status_code == 201, r.text
    report = r.json()
    # 11 rows × 18 blocks + 19 columns × (7 + 2) blocks; two parts: south and north.
    assert report["edges"] == 11 * 18 + 19 * 9
    assert report["vertices"] == 11 * 19
    assert report["components"] == 2 and report["pgrouting"] is True
    assert client.get("/network", headers=h["city"]).json()["edges"] == report["edges"]

    walk = 400.0
    args = {"minutes": walk / 80, "speed_m_per_min": 80, "frontage_m": 25.0}
    network = _reach(engine, use_network=True, **args)
    assert network["parameters"]["distance"] == "network"
    assert _reach(engine, **args)["parameters"]["distance"] == "network"  # auto: imported
    stats = network["summary"]["network"]
    assert stats["facilities_on_network"] == 1
    # By hand: rows 2·(400 − 100|j|) for j = −3…2, columns from −(400 − 100|i|) up to the
    # river (200 m): 3,000 + 2,800 m.
    expected = _expected_reached_segments(walk)
    assert sum(s.length for s in expected) == pytest.approx(5800.0)
    assert stats["reached_street_m"] == pytest.approx(5800.0, rel=0.01)
    community = _community_m(SW)
    expected_area = community.intersection(
        shapely.union_all([s.buffer(25.0) for s in expected])
    ).area
    sw = _item(network, SW)
    assert sw["area_m2"] - sw["uncovered_area_m2"] == pytest.approx(expected_area, rel=0.01)

    # Straight line without a detour reaches farther than the streets do.
    straight = _reach(engine, use_network=False, detour=1.0, **args)
    assert _item(straight, SW)["uncovered_area_m2"] < sw["uncovered_area_m2"]
    # The household 280 m north, across the river: 280 m in a straight line (covered even
    # with the detour, 308 m), but no street crosses the river.
    # (The others are beyond both: 500 m and 950 m east, 424 m south-west.)
    with_detour = _reach(engine, use_network=False, **args)
    assert _item(with_detour, SW)["households"]["uncovered"] == 3
    assert sw["households"]["uncovered"] == 4
    river = shapely.Point(*_lonlat(0, 280))
    assert shapely.geometry.shape(sw["geometry"]).covers(river)
    assert not shapely.geometry.shape(_item(with_detour, SW)["geometry"]).covers(river)

    # Network asked where there is none, or with bad parameters.
    with pytest.raises(UnprocessableError) as err:
        _reach(engine, use_network=True, area_code=NE)
    assert err.value.field == "network"
    r = client.get("/analysis/reach", headers=h["city"], params={"frontage_m": -1})
    assert r.status_code == 422


def test_network_import_of_lines_without_properties(client, h):
    # OpenStreetMap extracts cut down to geometry carry no attributes at all.
    lines = json.loads(_road_grid_geojson())
    for feature in lines["features"]:
        feature["properties"] = {}
    files = {"file": ("bare.geojson", io.BytesIO(json.dumps(lines).encode()), "application/json")}
    r = client.post("/network/import", headers=h["admin"], files=files)
    assert r.status_code == 201, r.text
    assert r.json()["edges"] == 11 * 18 + 19 * 9


def test_network_import_refuses_what_is_not_lines(client, h):
    points = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": F}}
        ],
    }
    files = {"file": ("p.geojson", io.BytesIO(json.dumps(points).encode()), "application/json")}
    r = client.post("/network/import", headers=h["admin"], files=files)
    assert r.status_code == 422 and r.json()["field"] == "file"
    files = {"file": ("roads.csv", io.BytesIO(b"a,b\n1,2\n"), "text/csv")}
    r = client.post("/network/import", headers=h["admin"], files=files)
    assert r.status_code == 422 and r.json()["field"] == "file"


# ------------------------------------------------------------------------------ demo


def test_demo_end_to_end(demo_db_url):
    from service.analysis.reach import run_reach
    from service.analysis.siting import run_siting

    city = _principal("city_dispatcher", "520100", "520100")
    engine = make_engine(demo_db_url)
    try:
        with engine.connect() as conn:
            body = run_reach(conn, principal=city, geometry=False)
            communities = conn.execute(
                text(
                    "SELECT count(*) FROM area WHERE level = 'community' AND generation_high = "
                    "(SELECT max(id) FROM generation WHERE active)"
                )
            ).scalar()
            households = conn.execute(
                text("SELECT count(*) FROM care_household WHERE community_code IS NOT NULL")
            ).scalar()
            siting = run_siting(conn, principal=city, k=5)
    finally:
        engine.dispose()
    items = body["items"]
    s = body["summary"]
    assert len(items) == s["communities"] == communities
    for i in items:
        assert 0 <= i["uncovered_share"] <= 1
        assert 0 <= i["uncovered_area_m2"] <= i["area_m2"]
        for kind in ("households", "units"):
            assert 0 <= i[kind]["uncovered"] <= i[kind]["total"]
    assert s["area_m2"] == pytest.approx(sum(i["area_m2"] for i in items), rel=1e-9)
    assert s["uncovered_area_m2"] == pytest.approx(
        sum(i["uncovered_area_m2"] for i in items), rel=1e-9
    )
    assert s["households"]["total"] == households
    assert s["households"]["uncovered"] == sum(i["households"]["uncovered"] for i in items)
    assert 0 < s["uncovered_share"] < 1
    shares = [i["uncovered_share"] for i in items]
    assert shares == sorted(shares, reverse=True)
    assert math.isclose(s["uncovered_share"], s["uncovered_area_m2"] / s["area_m2"], abs_tol=1e-4)
    t = siting["summary"]
    assert t["new_sites"] == 5
    assert t["households"]["total"] == households
    assert t["covered_after"] > t["covered_before"]
    # Before the new sites, siting and reach agree on who is served.
    assert t["households"]["covered_before"] == households - s["households"]["uncovered"]
