"""Map layers as GIS clients and map screens use them: GDAL's OAPIF and MVT drivers read
them, scope holds in items and tiles, the tile cache is invalidated exactly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time

import pytest
from sqlalchemy import text

from service.db import make_engine
from tests.conftest import auth, make_tokens

NW_GRID = "990101001001001"
IN_NW = (106.005, 26.015)


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


@pytest.fixture
def h(tiny_db_url):
    tokens = make_tokens(
        tiny_db_url,
        {
            "admin": ("admin", None),
            "city": ("city_dispatcher", "990100"),
            "grid": ("grid_officer", NW_GRID),
            "planner": ("planner", "990100"),
        },
    )
    return {k: auth(v) for k, v in tokens.items()} | {"raw": tokens}


@pytest.fixture
def incidents(tiny_client, h):
    ids = []
    for lon, lat, _status in (
        (106.005, 26.015, "new"),
        (106.006, 26.016, "new"),
        (106.035, 26.005, "new"),
        (106.025, 26.015, "new"),
    ):
        r = tiny_client.post(
            "/incidents",
            json={"category": "water", "source": "patrol", "lon": lon, "lat": lat},
            headers=h["admin"],
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    r = tiny_client.post(
        f"/cases/{ids[-1]}/actions/reject", json={"reason": "not_a_case"}, headers=h["admin"]
    )
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text
    return ids


def _ogrinfo(args: list[str], token: str) -> str:
    env = {**os.environ, "GDAL_HTTP_HEADERS": f"Authorization: Bearer {token}", "CPL_DEBUG": "OFF"}
    out = subprocess.run(
        ["ogrinfo", "-ro", *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _count(output: str) -> int:
    return int(next(line for line in output.splitlines() if "Feature Count" in line).split(":")[1])


def test_gdal_oapif_reads_every_layer_with_the_right_counts(tiny_server, h, incidents):
    url = f"OAPIF:{tiny_server.base_url}/ogc"
    listing = _ogrinfo(["-so", url], h["raw"]["city"])
    for layer in (
        "cities",
        "districts",
        "communities",
        "grids",
        "incidents",
        "units",
        "facilities",
    ):
        assert f": {layer} (" in listing
    assert "care-households" not in listing  # sensitive: not for the city centre
    counts = {
        layer: _count(_ogrinfo(["-so", url, layer], h["raw"]["city"]))
        for layer in ("districts", "communities", "grids", "incidents")
    }
    assert counts == {"districts": 2, "communities": 4, "grids": 8, "incidents": 4}
    # Attributes come through: GDAL reads the grids' properties.
    full = _ogrinfo(["-al", "-q", url, "grids"], h["raw"]["city"])
    assert f"id (String) = {NW_GRID}" in full and "open_incidents (Integer) = 2" in full


def test_gdal_oapif_for_a_grid_officer_sees_only_their_grid(tiny_server, h, incidents):
    url = f"OAPIF:{tiny_server.base_url}/ogc"
    assert _count(_ogrinfo(["-so", url, "grids"], h["raw"]["grid"])) == 1
    assert _count(_ogrinfo(["-so", url, "incidents"], h["raw"]["grid"])) == 2


def test_items_paging_filters_bbox_properties_and_simplification(tiny_client, h, incidents):
    first = tiny_client.get("/ogc/collections/grids/items", params={"limit": 3}, headers=h["city"])
    assert first.headers["content-type"] == "application/geo+json"
    body = first.json()
    assert body["numberMatched"] == 8 and body["numberReturned"] == 3
    nxt = next(link["href"] for link in body["links"] if link["rel"] == "next")
    second = tiny_client.get(nxt, headers=h["city"]).json()
    assert {f["id"] for f in body["features"]}.isdisjoint(f["id"] for f in second["features"])
    opened = tiny_client.get(
        "/ogc/collections/incidents/items", params={"status": "new"}, headers=h["city"]
    ).json()
    assert opened["numberMatched"] == 3
    west = tiny_client.get(
        "/ogc/collections/grids/items",
        params={"bbox": "106.0,26.0,106.009,26.02"},
        headers=h["city"],
    ).json()
    assert {f["id"] for f in west["features"]} == {NW_GRID, "990101001002001"}
    slim = tiny_client.get(
        "/ogc/collections/grids/items", params={"properties": "code", "zoom": 8}, headers=h["city"]
    )
    full = tiny_client.get(
        "/ogc/collections/grids/items",
        params={"properties": "code,name,level,parent_code,area_km2,open_incidents"},
        headers=h["city"],
    )
    # By default a feature does not repeat its id (the code) nor its layer's level.
    default = tiny_client.get("/ogc/collections/grids/items", headers=h["city"]).json()
    assert set(default["features"][0]["properties"]) == {
        "name",
        "parent_code",
        "area_km2",
        "open_incidents",
    }
    assert default["features"][0]["id"] == "990101001001001"
    assert set(slim.json()["features"][0]["properties"]) == {"code"}
    assert len(slim.content) < len(full.content) * 0.75
    one = tiny_client.get(f"/ogc/collections/grids/items/{NW_GRID}", headers=h["city"]).json()
    assert one["properties"]["open_incidents"] == 2


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/ogc/collections/roads/items", {}, 404, "collectionId"),
        ("/ogc/collections/grids/items", {"bbox": "106,26,105,27"}, 422, "bbox"),
        ("/ogc/collections/grids/items", {"bbox": "0,-100,10,10"}, 422, "bbox"),
        ("/ogc/collections/grids/items", {"bbox": "a,b,c,d"}, 422, "bbox"),
        ("/ogc/collections/grids/items", {"limit": 1_000_000}, 422, "limit"),
        ("/ogc/collections/grids/items", {"colour": "red"}, 422, "colour"),
        ("/tiles/roads/10/0/0.mvt", {}, 404, "collectionId"),
        ("/tiles/grids/23/0/0.mvt", {}, 422, "z"),
        ("/tiles/grids/3/8/0.mvt", {}, 422, "x"),
        ("/tiles/grids/3/0/-1.mvt", {}, 422, "y"),
        ("/ogc/collections/care-households/items", {}, 403, "collectionId"),
    ],
)
def test_bad_layer_requests_are_4xx_problems(tiny_client, h, path, params, status, field):
    r = tiny_client.get(path, params=params, headers=h["planner"])
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in (r.json().get("field") or "") + r.json()["detail"]


def _decode(tmp_path, data: bytes) -> dict[str, int]:
    path = tmp_path / "tile.mvt"
    path.write_bytes(data)
    out = subprocess.run(
        ["ogrinfo", "-ro", "-al", "-so", str(path)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    counts, layer = {}, None
    for line in out.stdout.splitlines():
        if line.startswith("Layer name:"):
            layer = line.split(":", 1)[1].strip()
        if line.startswith("Feature Count:"):
            counts[layer] = int(line.split(":")[1])
    return counts


def test_gdal_mvt_driver_decodes_tiles_and_scope_holds(tiny_client, h, incidents, tmp_path):
    z, x, y = _tile_of(106.02, 26.01, 12)
    r = tiny_client.get(f"/tiles/grids,incidents/{z}/{x}/{y}.mvt", headers=h["city"])
    assert r.status_code == 200 and r.headers["content-type"] == (
        "application/vnd.mapbox-vector-tile"
    )
    assert _decode(tmp_path, r.content) == {"grids": 8, "incidents": 4}
    mine = tiny_client.get(f"/tiles/grids,incidents/{z}/{x}/{y}.mvt", headers=h["grid"])
    assert _decode(tmp_path, mine.content) == {"grids": 1, "incidents": 2}
    open_only = tiny_client.get(
        f"/tiles/incidents/{z}/{x}/{y}.mvt", params={"status": "new"}, headers=h["city"]
    )
    assert _decode(tmp_path, open_only.content) == {"incidents": 3}
    # Below a layer's minimum zoom it is left out rather than drawn as a smear of points; a
    # tile with nothing in it is 204 without a body (a 0-byte 200 is no tile GDAL can open),
    # from the route and, once cached, from the shortcut alike.
    for _ in range(2):
        low = tiny_client.get("/tiles/grids,incidents/5/26/13.mvt", headers=h["city"])
        assert low.status_code == 204 and low.content == b"", low.headers
        assert "content-type" not in low.headers and low.headers["etag"]


def test_tilejson(tiny_client, h):
    tj = tiny_client.get(
        "/tiles/grids,incidents.json", params={"access_token": "x"}, headers=h["city"]
    ).json()
    assert tj["tilejson"] == "3.0.0"
    assert tj["tiles"][0].endswith("/tiles/grids,incidents/{z}/{x}/{y}.mvt?access_token=x")
    assert [v["id"] for v in tj["vector_layers"]] == ["grids", "incidents"]
    assert tj["vector_layers"][0]["fields"]["open_incidents"] == "Number"
    assert tj["bounds"] == [106.0, 26.0, 106.04, 26.02]


def _wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_tile_cache_is_invalidated_exactly_where_data_changed(tiny_client, h, tiny_db_url):
    z = 16
    near = _tile_of(*IN_NW, z)
    far = _tile_of(106.035, 26.005, z)
    urls = {
        name: f"/tiles/grids,incidents/{t[0]}/{t[1]}/{t[2]}.mvt"
        for name, t in (("near", near), ("far", far))
    }
    for url in urls.values():
        assert tiny_client.get(url, headers=h["city"]).headers["x-tile-cache"] == "miss"
    for url in urls.values():
        assert tiny_client.get(url, headers=h["city"]).headers["x-tile-cache"] == "hit"
    etag = tiny_client.get(urls["far"], headers=h["city"]).headers["etag"]
    assert (
        tiny_client.get(urls["far"], headers={**h["city"], "If-None-Match": etag}).status_code
        == 304
    )
    # A new incident in the north-western grid, written straight to the database (as an
    # import from another process would): its tile and the grid's tiles go stale.
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO incident (category, source, geom) VALUES ('road', "
                "'patrol', ST_SetSRID(ST_MakePoint(:x, :y), 4326))"
            ),
            {"x": IN_NW[0], "y": IN_NW[1]},
        )
    engine.dispose()
    assert _wait_for(
        lambda: tiny_client.get(urls["near"], headers=h["city"]).headers["x-tile-cache"] == "miss"
    )
    assert tiny_client.get(urls["far"], headers=h["city"]).headers["x-tile-cache"] == "hit"


def test_a_whole_city_request_at_high_zoom_is_bounded(tiny_client, h):
    r = tiny_client.get(
        "/ogc/collections/grids/items",
        params={"bbox": "-180,-90,180,90", "limit": 10_000, "zoom": 22},
        headers=h["city"],
    )
    assert r.status_code == 200 and r.json()["numberReturned"] == 8
    assert len(json.dumps(r.json())) < 200_000


def test_tile_cache_is_dropped_when_the_change_listener_loses_its_connection(
    tiny_client, h, tiny_db_url
):
    z, x, y = _tile_of(*IN_NW, 14)
    url = f"/tiles/grids/{z}/{x}/{y}.mvt"
    tiny_client.get(url, headers=h["city"])
    assert tiny_client.get(url, headers=h["city"]).headers["x-tile-cache"] == "hit"
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                "datname = current_database() AND query LIKE 'LISTEN%'"
            )
        )
    engine.dispose()
    # While it was not listening, changes may have been missed: nothing stale is served.
    assert _wait_for(
        lambda: tiny_client.get(url, headers=h["city"]).headers["x-tile-cache"] == "miss"
    )


@pytest.fixture
def caching_client(tiny_db_url):
    """A client whose tokens stay verified for a while, so tile hits take the shortcut."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import APISettings, DatabaseSettings, Settings

    settings = Settings(
        db=DatabaseSettings(DATABASE_URL=tiny_db_url), api=APISettings(token_cache_seconds=60)
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_cache_hits_take_the_shortcut_without_crossing_scopes(caching_client, h, tiny_db_url):
    z, x, y = _tile_of(*IN_NW, 15)
    url = f"/tiles/grids,incidents/{z}/{x}/{y}.mvt"
    first = caching_client.get(url, headers=h["city"])
    assert first.headers["x-tile-cache"] == "miss" and "x-tile-shortcut" not in first.headers
    again = caching_client.get(url, headers={**h["city"], "Accept-Encoding": "gzip"})
    assert again.headers["x-tile-shortcut"] == "1"
    assert again.content == first.content  # decoded by the client: same tile, gzipped
    assert again.headers["etag"] == first.headers["etag"]
    # Another scope never reads the city's entry.
    officer = caching_client.get(url, headers=h["grid"])
    assert "x-tile-shortcut" not in officer.headers
    assert officer.headers["x-tile-cache"] == "miss"
    # A sensitive layer is refused by the route, never answered from the cache.
    assert (
        caching_client.get(
            url.replace("grids,incidents", "care-households"), headers=h["planner"]
        ).status_code
        == 403
    )
    # A write in the tile drops it: the next request is rendered again.
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO incident (category, source, geom) VALUES ('road', "
                "'patrol', ST_SetSRID(ST_MakePoint(:x, :y), 4326))"
            ),
            {"x": IN_NW[0], "y": IN_NW[1]},
        )
    engine.dispose()
    assert _wait_for(
        lambda: caching_client.get(url, headers=h["city"]).headers["x-tile-cache"] == "miss"
    )


def test_hits_with_a_crs_or_filters_take_the_shortcut_as_the_route_reads_them(
    caching_client, h, tiny_db_url
):
    z, x, y = _tile_of(*IN_NW, 15)
    base = f"/tiles/grids,incidents/{z}/{x}/{y}.mvt"
    for query in ("?crs=GCJ-02", "?status=open", "?crs=GCJ-02&status=open&status=closed"):
        first = caching_client.get(base + query, headers=h["city"])
        assert first.headers["x-tile-cache"] == "miss", query
        again = caching_client.get(base + query, headers=h["city"])
        assert again.headers.get("x-tile-shortcut") == "1", query
        assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    # The key the route made: "amap" is GCJ-02, the last of a repeated filter counts, and
    # crs=EPSG:4326 is the plain tile.
    gcj = caching_client.get(base + "?crs=amap&status=closed", headers=h["city"])
    assert gcj.headers.get("x-tile-shortcut") == "1"
    assert (
        gcj.content
        == caching_client.get(base + "?crs=GCJ-02&status=closed", headers=h["city"]).content
    )
    plain = caching_client.get(base, headers=h["city"])
    wgs84 = caching_client.get(base + "?crs=EPSG:4326", headers=h["city"])
    assert wgs84.headers.get("x-tile-shortcut") == "1" and wgs84.content == plain.content
    # Another scope never reads the city's entries.
    officer = caching_client.get(base + "?crs=GCJ-02", headers=h["grid"])
    assert officer.headers["x-tile-cache"] == "miss"
    # What the route refuses stays refused, with the plain tile cached.
    for query, status, field in (
        ("?crs=BD-09", 400, "crs"),
        ("?crs=", 400, "crs"),
        ("?colour=red", 422, "colour"),
        ("?crs=GCJ-02&name=x&kind=y", 422, "kind"),  # grids filter on name, none on kind
    ):
        r = caching_client.get(base + query, headers=h["city"])
        assert r.status_code == status and r.json()["field"] == field, (query, r.text)
    # A generation asked for is checked in the database: the route answers, from the cache.
    engine = make_engine(tiny_db_url)
    with engine.connect() as conn:
        g = conn.execute(text("SELECT max(id) FROM generation WHERE active")).scalar_one()
    engine.dispose()
    for _ in range(2):
        r = caching_client.get(f"{base}?generation={g}", headers=h["city"])
    assert r.headers["x-tile-cache"] == "hit" and "x-tile-shortcut" not in r.headers
    assert caching_client.get(f"{base}?generation=999999", headers=h["city"]).status_code == 404


def test_a_bulk_write_flushes_its_layers_not_the_others(tiny_client, h, tiny_db_url):
    z, x, y = _tile_of(106.035, 26.005, 14)
    incidents = f"/tiles/incidents/{z}/{x}/{y}.mvt"
    units = f"/tiles/units/{z}/{x}/{y}.mvt"
    for url in (incidents, units, incidents, units):
        tiny_client.get(url, headers=h["city"])
    assert tiny_client.get(units, headers=h["city"]).headers["x-tile-cache"] == "hit"
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:  # 6,000 rows in one statement, far from that tile
        conn.execute(
            text(
                "INSERT INTO incident (category, source, geom) SELECT 'road', 'patrol', "
                "ST_SetSRID(ST_MakePoint(106.001 + i * 1e-7, 26.019), 4326) "
                "FROM generate_series(1, 6000) i"
            )
        )
    engine.dispose()
    assert _wait_for(
        lambda: tiny_client.get(incidents, headers=h["city"]).headers["x-tile-cache"] == "miss"
    )
    assert tiny_client.get(units, headers=h["city"]).headers["x-tile-cache"] == "hit"


def test_number_matched_is_counted_a_bounded_way_past_the_page(tiny_client, h, monkeypatch):
    # Counting stops COUNT_AHEAD features past the page (its cost must not grow with the
    # layer): past that numberMatched is left out, as OGC API Features allows, and the next
    # link still leads on; a page whose matches end within reach gets the exact count.
    from service.repositories import layers

    monkeypatch.setattr(layers, "COUNT_AHEAD", 2)
    seen, url, pages = [], "/ogc/collections/grids/items?limit=3", []
    while url:
        body = tiny_client.get(url, headers=h["city"]).json()
        pages.append(body.get("numberMatched"))
        seen += [f["id"] for f in body["features"]]
        url = next((link["href"] for link in body["links"] if link["rel"] == "next"), None)
    # 8 grids: bounds 3+2=5 and 6+2=8 are reached (not counted), 9+2=11 is not (exact).
    assert pages == [None, None, 8]
    assert len(seen) == len(set(seen)) == 8
    monkeypatch.setattr(layers, "COUNT_AHEAD", 6)  # 3 + 6 > 8: counted
    first = tiny_client.get("/ogc/collections/grids/items?limit=3", headers=h["city"]).json()
    assert first["numberMatched"] == 8
    past = tiny_client.get("/ogc/collections/grids/items?limit=3&offset=20", headers=h["city"])
    assert past.json()["numberMatched"] == 8 and past.json()["features"] == []


def test_a_pending_generation_is_for_planners_like_everywhere_else(tiny_client, h):
    pending = tiny_client.post(
        "/generations", json={"description": "plan"}, headers=h["admin"]
    ).json()["id"]
    params = {"generation": pending}
    r = tiny_client.get("/ogc/collections/grids/items", params=params, headers=h["city"])
    assert r.status_code == 403 and r.json()["field"] == "generation"
    assert tiny_client.get("/areas", params=params, headers=h["city"]).status_code == 403
    ok = tiny_client.get("/ogc/collections/grids/items", params=params, headers=h["planner"])
    assert ok.status_code == 200 and ok.json()["numberMatched"] == 8
