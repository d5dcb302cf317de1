"""Answers in the client's coordinate system (``crs=GCJ-02|BD-09|EPSG:4490``): OGC items,
lookups, entity reads and GCJ-02 vector tiles, each back to the stored WGS84 to < 1e-6°."""

from __future__ import annotations

import json
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geo.coords import CRS_URIS, to_wgs84, wgs84_to_gcj02
from service.crs_output import shift_geojson
from tests.conftest import auth, make_tokens

CRS84 = CRS_URIS["EPSG:4326"]


@pytest.fixture
def admin(tiny_db_url):
    return auth(make_tokens(tiny_db_url, {"admin": ("admin", None)})["admin"])


def _coords(geometry: dict) -> np.ndarray:
    out = []

    def walk(c):
        if isinstance(c[0], (int, float)):
            out.append(c[:2])
        else:
            for part in c:
                walk(part)

    walk(geometry["coordinates"])
    return np.array(out, dtype=float)


def _items(client, headers, layer: str, **params):
    r = client.get(
        f"/ogc/collections/{layer}/items", params={"limit": 1000, **params}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r


@pytest.mark.parametrize(
    ("crs", "name"),
    [("GCJ-02", "GCJ-02"), ("BD-09", "BD-09"), (CRS_URIS["GCJ-02"], "GCJ-02"), ("baidu", "BD-09")],
)
def test_items_round_trip(tiny_client, admin, crs, name):
    plain = _items(tiny_client, admin, "grids").json()["features"]
    r = _items(tiny_client, admin, "grids", crs=crs)
    shifted = r.json()["features"]
    assert r.headers["content-crs"] == f"<{CRS_URIS[name]}>"
    assert [f["id"] for f in plain] == [f["id"] for f in shifted] and plain
    for a, b in zip(plain, shifted, strict=True):
        wgs, got = _coords(a["geometry"]), _coords(b["geometry"])
        assert np.abs(got - wgs).max() > 1e-3  # shifted by hundreds of metres
        back = np.column_stack(to_wgs84(got[:, 0], got[:, 1], crs))
        assert np.abs(back - wgs).max() < 1e-6


# --------------------------------------------------------------------------- vector tiles


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes):
    """Yield (field number, value) of a protobuf message (varints and byte strings)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        else:  # wire == 5
            value, i = buf[i : i + 4], i + 4
        yield field, value


def _vertices(geometry: bytes) -> list[tuple[int, int]]:
    ints, i = [], 0
    while i < len(geometry):
        v, i = _varint(geometry, i)
        ints.append(v)
    out, x, y, k = [], 0, 0, 0
    while k < len(ints):
        command, count = ints[k] & 7, ints[k] >> 3
        k += 1
        if command == 7:  # ClosePath
            continue
        for _ in range(count):
            dx, dy = ints[k], ints[k + 1]
            k += 2
            x += (dx >> 1) ^ -(dx & 1)
            y += (dy >> 1) ^ -(dy & 1)
            out.append((x, y))
    return out


def decode_tile(data: bytes) -> dict[str, dict[int, list[tuple[int, int]]]]:
    """Return {layer: {feature id: tile-pixel vertices}} of an MVT (extent 4096)."""
    layers = {}
    for field, layer in _fields(data):
        if field != 3:
            continue
        name, features = None, {}
        for f, value in _fields(layer):
            if f == 1:
                name = value.decode()
            elif f == 2:
                parts = dict(_fields(value))
                features[parts.get(1, len(features))] = _vertices(parts[4])
        layers[name] = features
    return layers


def _lonlat(z: int, x: int, y: int, px: np.ndarray, py: np.ndarray):
    """Return lon/lat of tile pixels (extent 4096) of Web Mercator tile z/x/y."""
    n = 2**z
    fx = (x + px / 4096.0) / n
    fy = (y + py / 4096.0) / n
    return fx * 360.0 - 180.0, np.degrees(np.arctan(np.sinh(np.pi * (1.0 - 2.0 * fy))))


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - np.arcsinh(np.tan(np.radians(lat))) / np.pi) / 2 * n)
    return z, x, y


def test_gcj02_tiles_round_trip_and_are_cached(tiny_client, admin, tiny_db_url):
    from geo.coords import gcj02_to_wgs84, wgs84_to_gcj02

    point = (106.0123456, 26.0123456)
    r = tiny_client.post(
        "/incidents",
        json={"category": "water", "source": "patrol", "lon": point[0], "lat": point[1]},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    fid = r.json()["id"]
    shifted = wgs84_to_gcj02(*point)
    # Zoom 20: one pixel of the 4096 extent is 8e-8° (quantisation stays below 1e-6°).
    z, x, y = _tile_of(*shifted, 20)
    url = f"/tiles/incidents/{z}/{x}/{y}.mvt"
    gcj = tiny_client.get(url, params={"crs": "GCJ-02"}, headers=admin)
    assert gcj.status_code == 200 and gcj.headers["x-tile-cache"] == "miss"
    ((px, py),) = decode_tile(gcj.content)["incidents"][fid]
    back = gcj02_to_wgs84(*_lonlat(z, x, y, np.array(px), np.array(py)))
    assert max(abs(back[0] - point[0]), abs(back[1] - point[1])) < 1e-6
    # The WGS84 tile of the same numbers is ~500 m away: it does not hold the incident.
    assert tiny_client.get(url, headers=admin).status_code == 204
    # "amap" is the same tile, cached under one key.
    again = tiny_client.get(url, params={"crs": "amap"}, headers=admin)
    assert again.headers["x-tile-cache"] == "hit" and again.content == gcj.content
    # A change at the stored (WGS84) point drops the GCJ-02 tile that draws it.
    moved = tiny_client.patch(
        f"/incidents/{fid}", json={"lon": point[0] + 1e-5, "lat": point[1]}, headers=admin
    )
    assert moved.status_code == 200, moved.text
    deadline = time.monotonic() + 5
    while True:
        r = tiny_client.get(url, params={"crs": "GCJ-02"}, headers=admin)
        if r.headers["x-tile-cache"] == "miss" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.headers["x-tile-cache"] == "miss"
    ((px2, _),) = decode_tile(r.content)["incidents"][fid]
    assert px2 > px


def test_gcj02_polygon_tiles_hold_the_grids_shifted(tiny_client, admin):
    from geo.coords import gcj02_to_wgs84

    z, x, y = _tile_of(106.02, 26.01, 12)
    plain = decode_tile(tiny_client.get(f"/tiles/grids/{z}/{x}/{y}.mvt", headers=admin).content)
    gcj = tiny_client.get(f"/tiles/grids/{z}/{x}/{y}.mvt?crs=gcj02", headers=admin)
    shifted = decode_tile(gcj.content)
    assert set(shifted["grids"]) == set(plain["grids"]) and len(plain["grids"]) == 8
    grids = {f["id"]: f for f in _items(tiny_client, admin, "grids").json()["features"]}
    for fid, pixels in shifted["grids"].items():
        px, py = np.array(pixels, dtype=float).T
        lon, lat = gcj02_to_wgs84(*_lonlat(z, x, y, px, py))
        # Every vertex, unshifted, is a vertex of the stored grid to the tile's pixel
        # (zoom 12: 9e-5°).
        stored = _coords(grids[str(fid)]["geometry"])
        d = np.hypot(lon[:, None] - stored[None, :, 0], lat[:, None] - stored[None, :, 1])
        assert d.min(axis=1).max() < 360 / 2**12 / 4096 * 2


@pytest.mark.parametrize(
    ("params", "status"),
    [({"crs": "BD-09"}, 400), ({"crs": "EPSG:3857"}, 400), ({"crs": "mars"}, 400)],
)
def test_tiles_refuse_a_crs_they_cannot_draw(tiny_client, admin, params, status):
    r = tiny_client.get("/tiles/grids/12/3262/1734.mvt", params=params, headers=admin)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == "crs" and params["crs"] in r.json()["detail"]


# --------------------------------------------------------------------------- reference data

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_tianditu_districts_shifted_for_output_line_up_with_amap_datav():
    """Tianditu's districts (CGCS2000) as a GCJ-02 client receives them lie a median
    96–172 m from DataV's GCJ-02 lines (two surveys, simplified differently); unshifted,
    336–383 m (SOURCES.md)."""
    tianditu = gpd.read_file(DATA / "guiyang_520100_districts_tianditu_cgcs2000.geojson")
    datav = gpd.read_file(DATA / "guiyang_520100_districts_datav_gcj02.geojson")
    tianditu, datav = tianditu.set_index("adcode"), datav.set_index("adcode")
    texts = shift_geojson(list(shapely.to_wkb(tianditu.geometry.values)), "GCJ-02", 7)
    utm = 32648  # UTM 48N: metres around Guiyang
    shifted = gpd.GeoSeries(shapely.from_geojson(texts), index=tianditu.index, crs=4326)
    shifted = shifted.to_crs(utm)
    plain = tianditu.geometry.set_crs(4326, allow_override=True).to_crs(utm)
    theirs = datav.geometry.set_crs(4326, allow_override=True).to_crs(utm)
    assert len(tianditu) == 10 and set(tianditu.index) == set(datav.index)
    for code in tianditu.index:
        vertices = shapely.points(shapely.get_coordinates(theirs[code].boundary))
        near = np.median(shapely.distance(vertices, shifted[code].boundary))
        far = np.median(shapely.distance(vertices, plain[code].boundary))
        assert 80 < near < 190 and 320 < far < 400, (code, near, far)


def test_osm_stations_read_in_bd09_line_up_with_baidu_bus_routes(tiny_client, admin):
    """OSM's metro stations (WGS84), stored and read back with crs=BD-09, pass a median ~6 m
    from the BD-09 bus routes; as stored (WGS84) ~125 m (SOURCES.md)."""
    stations = gpd.read_file(DATA / "guiyang_rail_stations_osm_wgs84.geojson")
    stations = stations[stations["station"] == "subway"]  # railway stations lie off the routes
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [p.x, p.y]},
            "properties": {"name": f"station {i}", "kind": "service_station"},
        }
        for i, p in enumerate(stations.geometry)
    ]
    body = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    r = tiny_client.post(
        "/facilities/import",
        files={"file": ("stations.geojson", body, "application/geo+json")},
        headers=admin,
    )
    assert r.status_code in (200, 201), r.text
    r = tiny_client.get("/facilities", params={"crs": "BD-09", "limit": 1000}, headers=admin)
    assert r.status_code == 200 and r.headers["content-crs"] == f"<{CRS_URIS['BD-09']}>"
    read = [i for i in r.json()["items"] if i["name"].startswith("station ")]
    assert len(read) == len(stations)
    routes = gpd.read_file(DATA / "guiyang_bus_routes_cityvein_bd09.geojson")
    utm = 32648
    lines = shapely.union_all(routes.geometry.set_crs(4326, allow_override=True).to_crs(utm))
    baidu = gpd.GeoSeries(
        gpd.points_from_xy([i["lon"] for i in read], [i["lat"] for i in read]), crs=4326
    ).to_crs(utm)
    stored = stations.geometry.to_crs(utm)
    near = np.median(shapely.distance(baidu.values, lines))
    far = np.median(shapely.distance(stored.values, lines))
    assert near < 15 and 100 < far < 150, (near, far)
    # One by id too, and back to the stored point to < 1e-6°.
    one = read[0]
    again = tiny_client.get(f"/facilities/{one['id']}", params={"crs": "baidu"}, headers=admin)
    assert (
        again.json()["lon"] == one["lon"]
        and again.headers["content-crs"] == r.headers["content-crs"]
    )
    plain = tiny_client.get(f"/facilities/{one['id']}", headers=admin).json()
    back = to_wgs84(one["lon"], one["lat"], "BD-09")
    assert max(abs(back[0] - plain["lon"]), abs(back[1] - plain["lat"])) < 1e-9


# --------------------------------------------------------------------------- lookups, entities


def test_a_point_written_in_gcj02_reads_back_in_gcj02(tiny_client, admin):
    given = (106.0165432, 26.0134567)
    r = tiny_client.post(
        "/incidents",
        json={
            "category": "water",
            "source": "patrol",
            "lon": given[0],
            "lat": given[1],
            "crs": "GCJ-02",
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    fid = r.json()["id"]
    stored = (r.json()["lon"], r.json()["lat"])
    assert abs(stored[0] - given[0]) > 1e-3  # stored in WGS84
    got = tiny_client.get(f"/incidents/{fid}", params={"crs": "GCJ-02"}, headers=admin).json()
    assert max(abs(got["lon"] - given[0]), abs(got["lat"] - given[1])) < 1e-6
    page = tiny_client.get("/incidents", params={"crs": "gcj02"}, headers=admin).json()
    mine = next(i for i in page["items"] if i["id"] == fid)
    assert (mine["lon"], mine["lat"]) == (got["lon"], got["lat"])
    item = tiny_client.get(
        f"/ogc/collections/incidents/items/{fid}", params={"crs": "GCJ-02"}, headers=admin
    ).json()
    lon, lat = item["geometry"]["coordinates"]
    assert max(abs(lon - given[0]), abs(lat - given[1])) < 1e-6
    look = tiny_client.get(
        "/lookup", params={"lon": given[0], "lat": given[1], "crs": "GCJ-02"}, headers=admin
    ).json()["point"]
    assert abs(look["lon"] - stored[0]) < 1e-9 and abs(look["lat"] - stored[1]) < 1e-9
    assert max(abs(look["given"]["lon"] - given[0]), abs(look["given"]["lat"] - given[1])) < 1e-9


def test_ogc_crs_metadata_axis_order_and_bad_crs(tiny_client, admin):
    meta = tiny_client.get("/ogc/collections/grids", headers=admin).json()
    assert meta["crs"] == list(CRS_URIS.values()) and meta["storageCrs"] == CRS84
    plain = _items(tiny_client, admin, "grids").json()["features"][0]
    r = _items(tiny_client, admin, "grids", crs=CRS_URIS["EPSG:4490"])
    assert r.headers["content-crs"] == f"<{CRS_URIS['EPSG:4490']}>"
    flipped = r.json()["features"][0]
    # An EPSG URI: latitude first (EPSG's axis order, OGC API – Features Part 2).
    assert np.allclose(_coords(flipped["geometry"])[:, ::-1], _coords(plain["geometry"]))
    short = _items(tiny_client, admin, "grids", crs="EPSG:4490").json()["features"][0]
    assert short["geometry"] == plain["geometry"]
    # bbox in GCJ-02: the grids whose shifted shapes meet it.
    x, y = wgs84_to_gcj02(106.005, 26.015)
    box = f"{x - 1e-4},{y - 1e-4},{x + 1e-4},{y + 1e-4}"
    inside = _items(tiny_client, admin, "grids", bbox=box, **{"bbox-crs": "GCJ-02"}).json()
    assert "990101001001001" in {f["id"] for f in inside["features"]}
    # OGC API answers an invalid parameter 400, the REST API 422 (its status for any).
    for path, params, status in (
        ("/ogc/collections/grids/items", {"crs": "EPSG:3857"}, 400),
        ("/ogc/collections/grids/items", {"bbox-crs": "mars", "bbox": "0,0,1,1"}, 400),
        ("/ogc/collections/grids/items/990101001001001", {"crs": "mars"}, 400),
        ("/incidents", {"crs": "mars"}, 422),
        ("/incidents", {"crs": "null"}, 422),
        ("/lookup", {"lon": 106.0, "lat": 26.0, "crs": "mars"}, 422),
    ):
        r = tiny_client.get(path, params=params, headers=admin)
        assert r.status_code == status, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "crs" in r.json()["field"], r.json()


def test_the_sql_formula_of_point_tiles_is_the_kernel(tiny_db_url):
    """Point tiles shift in SQL (one statement): the formula written out there gives what
    geo.coords' numpy kernel gives, to < 1e-12°, over China and at its box's edges."""
    from sqlalchemy import text

    from service.db import make_engine
    from service.tiles.shifted import _gcj02_sql

    rng = np.random.default_rng(3)
    lon = np.concatenate([rng.uniform(73.5, 135.1, 2000), [72.0, 137.9, 106.7]])
    lat = np.concatenate([rng.uniform(18.1, 53.6, 2000), [30.0, 30.0, 0.5]])
    x, y, source = _gcj02_sql(
        "SELECT u.lon, u.lat, u.i FROM unnest(CAST(:lon AS float8[]), CAST(:lat AS float8[])) "
        "WITH ORDINALITY AS u(lon, lat, i)"
    )
    query = f"SELECT {x}, {y} FROM {source} ORDER BY k.i"
    engine = make_engine(tiny_db_url)
    with engine.connect() as conn:
        rows = conn.execute(text(query), {"lon": lon.tolist(), "lat": lat.tolist()}).all()
    engine.dispose()
    got = np.array(rows)
    want = np.column_stack(wgs84_to_gcj02(lon, lat))
    assert np.abs(got - want).max() < 1e-12
    assert (got[-3:-1] == np.column_stack([lon, lat])[-3:-1]).all()  # outside: unchanged


def test_gcj02_incident_tiles_draw_shifted_clusters(tiny_client, admin, monkeypatch):
    """Past cluster_above, a GCJ-02 tile draws the cells' centroids, shifted, with counts."""
    import dataclasses

    from geo.coords import gcj02_to_wgs84
    from service.specs.map_layers import LAYERS

    monkeypatch.setitem(
        LAYERS, "incidents", dataclasses.replace(LAYERS["incidents"], cluster_above=1)
    )
    for lon, lat in ((106.005, 26.015), (106.006, 26.016), (106.035, 26.005)):
        r = tiny_client.post(
            "/incidents",
            json={"category": "water", "source": "patrol", "lon": lon, "lat": lat},
            headers=admin,
        )
        assert r.status_code == 201, r.text
    z, x, y = _tile_of(*wgs84_to_gcj02(106.02, 26.01), 10)
    r = tiny_client.get(f"/tiles/incidents/{z}/{x}/{y}.mvt?crs=GCJ-02", headers=admin)
    assert r.status_code == 200
    layer = next(v for f, v in _fields(r.content) if f == 3)
    keys = {v.decode() for f, v in _fields(layer) if f == 3}
    assert keys == {"point_count", "open_count"}
    points = [p for f in decode_tile(r.content)["incidents"].values() for p in f]
    px, py = np.array(points, dtype=float).T
    lon, lat = gcj02_to_wgs84(*_lonlat(z, x, y, px, py))
    # Each cluster sits at the incidents it counts (a cell is 1/32 of the tile), unshifted.
    assert len(points) >= 2
    assert (np.abs(lon - 106.02) < 0.03).all() and (np.abs(lat - 26.01) < 0.02).all()
