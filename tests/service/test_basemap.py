"""Street basemaps on the pages, and the offline basemap drawn from the database.

A copy of the tiny hierarchy is laid over central Guiyang (106.69–106.73 E, 26.57–26.59 N)
and the real bus routes of ``../shared/data`` (BD-09, converted on import) are imported as
its road network: the offline basemap's tiles show those streets and the area names, the
pages draw their overlays on them, and a provider URL pointed at a stub tile server on
GCJ-02 gets overlays shifted to land on the stub's own pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import shapely
from PIL import Image
from shapely import affinity

from service.db import migrate
from tests.conftest import _create_database, _drop_database, auth, make_tokens
from tests.reference import reference_path
from tests.service.browser import (
    ARTIFACTS,
    MAP_JS,
    container_point,
    near,
    open_page,
    screenshot_without_overlays,
    shot,
    tiles_loaded,
)

BUS_ROUTES = "guiyang_bus_routes_cityvein_bd09.geojson"
DX, DY = 0.69, 0.57  # the tiny city, moved onto central Guiyang
CITY, D1, NW = "990100", "990101", "990101001001001"
COMMUNITY = "990101001001"
TOKENS = {
    "admin": ("admin", None),
    "city": ("city_dispatcher", CITY),
    "officer": ("grid_officer", NW),
}
#: Inside the officer's grid (the tiny city's 106.005, 26.015, moved).
IN_NW = (106.005 + DX, 26.015 + DY)


def _engine(url):
    from service.db import make_engine

    return make_engine(url)


def bus_routes_bd09(box=(106.672, 26.56, 106.77, 26.62)) -> bytes:
    """Return the bus routes crossing ``box`` (BD-09 degrees) as GeoJSON, still in BD-09."""
    raw = json.loads(reference_path(BUS_ROUTES).read_text(encoding="utf-8"))
    area = shapely.box(*box)
    features = []
    for f in raw["features"]:
        line = shapely.geometry.shape(f["geometry"])
        part = line.intersection(area)
        for piece in getattr(part, "geoms", [part]):
            if piece.geom_type == "LineString" and not piece.is_empty:
                features.append(
                    {
                        "type": "Feature",
                        "properties": {"route": f["properties"].get("idx")},
                        "geometry": shapely.geometry.mapping(piece),
                    }
                )
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def import_bus_routes(url: str, *, name: str = "bus routes") -> dict:
    from service.analysis.network import import_network
    from service.auth import Principal

    admin = Principal(token_id="t", name="t", role="admin", area_code=None, scope_path=None)
    engine = _engine(url)
    with engine.begin() as conn:
        report = import_network(
            conn,
            principal=admin,
            data=bus_routes_bd09(),
            filename="bus.geojson",
            crs="BD-09",
            name=name,
            node="endpoints",
        )
    engine.dispose()
    return report


@pytest.fixture(scope="module")
def guiyang_db_url():
    """A throwaway database: the tiny hierarchy over central Guiyang, the bus routes as roads."""
    from fixtures.tiny import tiny_records
    from geo.areas import AreaRecord
    from service.repositories import boundaries

    url = _create_database("wangge_test_basemap")
    migrate(url)
    records = [
        AreaRecord(r.code, r.name, r.level, r.parent_code, affinity.translate(r.geom, DX, DY))
        for r in tiny_records()
    ]
    engine = _engine(url)
    with engine.begin() as conn:
        gen = boundaries.create_generation(conn, description="tiny over Guiyang")
        boundaries.write_areas(conn, generation_id=gen, records=records, source="tiny")
        boundaries.activate_generation(conn, generation_id=gen)
    engine.dispose()
    import_bus_routes(url)
    yield url
    _drop_database(url)


class Server:
    """The service on a free port, in a thread, with the given basemap settings."""

    def __init__(self, db_url: str, **basemap):
        import uvicorn

        from service.app import create_app
        from service.settings import APISettings, BasemapSettings, DatabaseSettings, Settings

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        settings = Settings(
            db=DatabaseSettings(DATABASE_URL=db_url),
            api=APISettings(token_cache_seconds=0),
            basemap=BasemapSettings(**basemap),
        )
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def tokens(guiyang_db_url):
    return make_tokens(guiyang_db_url, TOKENS)


@pytest.fixture(scope="module")
def client(guiyang_db_url):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import APISettings, DatabaseSettings, Settings

    settings = Settings(
        db=DatabaseSettings(DATABASE_URL=guiyang_db_url), api=APISettings(token_cache_seconds=0)
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    s = np.sin(np.radians(lat))
    y = int((0.5 - np.log((1 + s) / (1 - s)) / (4 * np.pi)) * n)
    return x, y


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def share_of(image: np.ndarray, colour, tol: int = 40) -> float:
    """Return the share of pixels within ``tol`` of ``colour`` (per channel)."""
    close = np.all(np.abs(image.astype(int) - np.array(colour)) <= tol, axis=-1)
    return float(close.mean())


# -- the offline tiles ------------------------------------------------------------------------
def test_offline_tiles_draw_the_imported_streets_and_the_areas(client, tokens):
    from maps.offline import BACKGROUND

    z = 15
    x, y = tile_of(*IN_NW, z)
    r = client.get(f"/tiles/basemap/{z}/{x}/{y}.png", headers=auth(tokens["admin"]))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    image = pixels(r.content)
    assert image.shape == (256, 256, 3)
    # Streets: white fill with casing over the background, a good part of a city tile.
    white = share_of(image, (255, 255, 255), tol=6)
    assert white > 0.02, white
    background = share_of(image, BACKGROUND[:3], tol=6)
    assert 0.2 < background < 0.98, background
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "basemap-tile-z15.png").write_bytes(r.content)

    # The same tile again: from the cache, with an ETag; If-None-Match → 304.
    again = client.get(f"/tiles/basemap/{z}/{x}/{y}.png", headers=auth(tokens["admin"]))
    assert again.content == r.content and again.headers["etag"] == r.headers["etag"]
    not_modified = client.get(
        f"/tiles/basemap/{z}/{x}/{y}.png",
        headers={**auth(tokens["admin"]), "If-None-Match": r.headers["etag"]},
    )
    assert not_modified.status_code == 304
    assert client.get(f"/tiles/basemap/{z}/{x}/{y}.png").status_code == 401


def test_offline_tiles_refuse_bad_numbers_clearly(client, tokens):
    h = auth(tokens["admin"])
    r = client.get("/tiles/basemap/3/8/0.png", headers=h)
    assert r.status_code == 422 and "x must be between 0 and 7" in r.json()["detail"]
    r = client.get("/tiles/basemap/3/0/0.png", params={"datum": "EPSG:3857"}, headers=h)
    assert r.status_code == 422 and "datum" in r.text
    assert client.get("/tiles/basemap/21/0/0.png", headers=h).status_code == 422


def test_a_district_tile_names_its_areas_and_a_grid_officer_sees_no_sibling(client, tokens):
    z = 14
    x, y = tile_of(*IN_NW, z)
    admin = pixels(
        client.get(f"/tiles/basemap/{z}/{x}/{y}.png", headers=auth(tokens["admin"])).content
    )
    officer = pixels(
        client.get(f"/tiles/basemap/{z}/{x}/{y}.png", headers=auth(tokens["officer"])).content
    )
    # Boundaries are drawn in purples; the officer's tile lacks the siblings' grid lines.
    purple = (150, 130, 178)
    assert share_of(admin, purple, 30) > share_of(officer, purple, 30) > 0


def test_gcj02_tiles_are_the_wgs84_drawing_moved_by_the_shift(client, tokens):
    z = 15
    x, y = tile_of(*IN_NW, z)
    h = auth(tokens["admin"])
    wgs = client.get(f"/tiles/basemap/{z}/{x}/{y}.png", headers=h)
    gcj = client.get(f"/tiles/basemap/{z}/{x}/{y}.png", params={"datum": "GCJ-02"}, headers=h)
    assert gcj.status_code == 200 and gcj.content != wgs.content
    assert gcj.headers["etag"] != wgs.headers["etag"]
    bd = client.get(f"/tiles/basemap/{z}/{x}/{y}.png", params={"datum": "BD-09"}, headers=h)
    assert bd.status_code == 200 and bd.content not in (wgs.content, gcj.content)


def test_rail_water_and_road_classes_of_an_import_are_drawn_as_such(client, tokens, guiyang_db_url):
    from maps.offline import STYLE
    from service.analysis.network import import_network
    from service.auth import Principal

    # Tagged lines, as an OpenStreetMap extract's arrive, appended east of the city.
    x0, x1, lat = 106.800, 106.806, 26.650
    features = [
        {"properties": tags, "geometry": {"type": "LineString", "coordinates": line}}
        for tags, line in (
            ({"railway": "rail"}, [[x0, lat + 0.001], [x1, lat + 0.001]]),
            ({"waterway": "river"}, [[x0, lat - 0.001], [x1, lat - 0.001]]),
            ({"highway": "primary", "name": "中山路"}, [[x0, lat], [x1, lat]]),
        )
    ]
    body = {"type": "FeatureCollection", "features": [{"type": "Feature", **f} for f in features]}
    admin = Principal(token_id="t", name="t", role="admin", area_code=None, scope_path=None)
    engine = _engine(guiyang_db_url)
    with engine.begin() as conn:
        import_network(
            conn,
            principal=admin,
            data=json.dumps(body).encode(),
            filename="tagged.geojson",
            append=True,
            node="endpoints",
        )
    engine.dispose()
    z = 16
    x, y = tile_of((x0 + x1) / 2, lat, z)
    r = client.get(f"/tiles/basemap/{z}/{x}/{y}.png", headers=auth(tokens["admin"]))
    assert r.status_code == 200, r.text
    image = pixels(r.content)
    (ARTIFACTS / "basemap-tagged-lines-z16.png").write_bytes(r.content)
    for kind in ("rail", "water", "major"):
        assert share_of(image, STYLE[kind][0], tol=25) > 0.004, kind


def test_a_network_reimport_renews_the_tiles(guiyang_db_url, tokens):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import APISettings, DatabaseSettings, Settings

    settings = Settings(
        db=DatabaseSettings(DATABASE_URL=guiyang_db_url), api=APISettings(token_cache_seconds=0)
    )
    z = 15
    x, y = tile_of(*IN_NW, z)
    path = f"/tiles/basemap/{z}/{x}/{y}.png"
    h = auth(tokens["admin"])

    def page_version() -> str:
        html = c.get("/pages/dispatch", headers=h).text
        (v,) = set(re.findall(r"/tiles/basemap/\{z\}/\{x\}/\{y\}\.png\?v=([\w.]+)", html))
        return v

    with TestClient(create_app(settings)) as c:
        v1 = page_version()
        first = c.get(path, params={"v": v1}, headers=h)
        # Asked for as the page names it: the browser may keep it while it is current.
        assert first.headers["cache-control"] == "private, max-age=86400"
        assert c.get(path, headers=h).headers["etag"] == first.headers["etag"]
        import_bus_routes(guiyang_db_url, name="again")
        second = c.get(path, params={"v": v1}, headers=h)
        assert second.status_code == 200
        assert second.headers["etag"] != first.headers["etag"]
        assert second.headers["cache-control"] == "private, max-age=300"  # an old page's
        assert c.app.state.offline_tiles.misses >= 2
        # A page opened now asks for the new tiles by another address.
        assert page_version() != v1


# -- in a browser ------------------------------------------------------------------------------
class StubTiles:
    """A provider's tile server, local: grey tiles with a grid, and a red dot at ``dot``
    (lon, lat in the provider's datum) wherever a tile holds it.

    ``status``: what it answers instead (403: a bad key; 500: a provider in trouble; 0: it
    takes the request and never answers, as a firewalled network does).
    """

    def __init__(self, dot: tuple[float, float] = (0.0, 0.0), *, status: int = 200):
        self.dot = dot
        self.status = status
        self.requests: list[str] = []
        self.release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                stub.requests.append(self.path)
                if stub.status == 0:
                    stub.release.wait(60)
                    return
                if stub.status != 200:
                    body = b'{"msg": "invalid key"}'
                    self.send_response(stub.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                z, x, y = (int(v) for v in self.path.split("?")[0].strip("/")[:-4].split("/"))
                body = stub.tile(z, x, y)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def tile(self, z: int, x: int, y: int) -> bytes:
        from PIL import ImageDraw

        image = Image.new("RGB", (256, 256), (225, 225, 225))
        draw = ImageDraw.Draw(image)
        for i in range(0, 256, 32):
            draw.line([(i, 0), (i, 255)], fill=(200, 200, 200))
            draw.line([(0, i), (255, i)], fill=(200, 200, 200))
        n = 256 * 2**z
        lon, lat = self.dot
        s = np.sin(np.radians(lat))
        px = (lon + 180) / 360 * n - x * 256
        py = (0.5 - np.log((1 + s) / (1 - s)) / (4 * np.pi)) * n - y * 256
        if -8 <= px < 264 and -8 <= py < 264:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=(255, 0, 0))
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()

    def __enter__(self) -> StubTiles:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


PAGES = {
    "dispatch": ("/pages/dispatch", "admin"),
    "tablet": ("/pages/tablet", "officer"),
    "planning": ("/pages/planning", "admin"),
}


@pytest.mark.parametrize("kind", list(PAGES))
def test_each_page_shows_the_offline_basemap_under_aligned_overlays(
    browser, guiyang_db_url, tokens, kind
):
    from maps.offline import BOUNDARY

    path, who = PAGES[kind]
    with Server(guiyang_db_url) as server:
        ctx, page, watch = open_page(browser, server, path, tokens[who], lang=None, foreign_ok=True)
        try:
            assert tiles_loaded(page, "offline") >= 2
            # The switcher lists the offline basemap as a base layer.
            assert page.locator(".leaflet-control-layers-base input[type=radio]").count() >= 1
            shot(page, f"basemap-offline-{kind}")
            image = screenshot_without_overlays(page)
            # The tiles draw the officer's grid's corner where the page puts it: the north-west
            # corner of the tiny city, a boundary in the tiles' own purples.
            x, y = container_point(page, 106.0 + DX, 26.02 + DY)
            colours = [c for c, _, _ in BOUNDARY.values()]
            assert any(near(image, x, y, c) for c in colours), (
                kind,
                x,
                y,
                image[round(y), round(x)],
            )
            assert not watch.exceptions, watch.exceptions
        finally:
            ctx.close()


@pytest.mark.parametrize("kind", list(PAGES))
def test_a_gcj02_provider_gets_shifted_overlays_that_land_on_its_pixels(
    browser, guiyang_db_url, tokens, kind
):
    from geo.coords import wgs84_to_gcj02

    # A case at a known WGS84 point; the stub provider marks the same place on GCJ-02 tiles.
    lon, lat = IN_NW
    glon, glat = (float(v) for v in wgs84_to_gcj02(lon, lat))
    with (
        StubTiles((glon, glat)) as stub,
        Server(
            guiyang_db_url,
            WANGGE_BASEMAP="custom",
            url=stub.url,
            url_datum="GCJ-02",
            url_name="Stub streets",
        ) as server,
    ):
        http = httpx.Client(base_url=server.base_url, timeout=20)
        body = {"category": "road", "source": "patrol", "lon": lon, "lat": lat}
        if kind != "planning" and not _cases_at(http, tokens["admin"], lon, lat):
            r = http.post("/incidents", json=body, headers=auth(tokens["officer"]))
            assert r.status_code == 201, r.text
        path, who = PAGES[kind]
        ctx, page, watch = open_page(browser, server, path, tokens[who], lang=None, foreign_ok=True)
        try:
            assert tiles_loaded(page, "custom") >= 2 and stub.requests
            shot(page, f"basemap-gcj02-stub-{kind}")
            # The page's overlays are in GCJ-02: the officer's grid's north-west corner, as
            # drawn, is the GCJ-02 image of the stored corner (exact, server side).
            vertices = page.evaluate(
                f"""() => {{
                    const m = {MAP_JS}; const out = [];
                    m.eachLayer((l) => {{
                        if (l.feature && l.feature.properties.code === '{NW}')
                            l.getLatLngs().flat(3).forEach((p) => out.push([p.lng, p.lat]));
                    }});
                    return out;
                }}"""
            )
            assert vertices, "the officer's grid is drawn"
            want = np.array([float(v) for v in wgs84_to_gcj02(106.0 + DX, 26.02 + DY)])
            assert np.abs(np.array(vertices) - want).max(axis=1).min() < 1e-6
            # The browser's own shift (positions that arrive later: GPS, live cases) is the
            # server's to 1e-9°.
            at = page.evaluate(f"() => wg.onPage({lat}, {lon})")
            assert abs(at[0] - glat) < 1e-9 and abs(at[1] - glon) < 1e-9
            if kind != "planning":
                # The case's marker (embedded on the tablet, live from GET /cases on the
                # dispatch page) is at the case's GCJ-02 position ...
                page.wait_for_selector(".leaflet-marker-icon")
                markers = page.evaluate(
                    f"""() => {{
                        const m = {MAP_JS}; const out = [];
                        m.eachLayer((l) => {{
                            if (l instanceof L.Marker && !l.getChildCount) {{
                                const p = l.getLatLng(); out.push([p.lng, p.lat]);
                            }}
                        }});
                        return out;
                    }}"""
                )
                assert markers, "the case's marker is drawn"
                for mlon, mlat in markers:
                    assert abs(mlon - glon) < 1e-6 and abs(mlat - glat) < 1e-6, markers
                mlon, mlat = markers[0]
                # ... and lands on the stub's red dot (the tile drawn by another program).
                image = screenshot_without_overlays(page)
                x, y = container_point(page, mlon, mlat)
                assert near(image, x, y, (255, 0, 0), radius=2, tol=60), image[round(y), round(x)]
                # Where the WGS84 point would have been drawn unshifted, there is no dot.
                ux, uy = container_point(page, lon, lat)
                assert (ux - x) ** 2 + (uy - y) ** 2 > 20**2
                assert not near(image, ux, uy, (255, 0, 0), radius=2, tol=60)
            if kind == "tablet":
                # A tap on the map files a case where the provider's street is: the form
                # sends the tap in GCJ-02 and the server stores its exact WGS84 inverse.
                want = (lon + 0.002, lat - 0.002)
                tap = [float(v) for v in wgs84_to_gcj02(*want)]
                px, py = container_point(page, *tap)
                page.mouse.click(px, py)
                with page.expect_response(
                    lambda r: r.url.endswith("/incidents") and r.request.method == "POST"
                ) as answer:
                    page.locator("#wg-report button[type=submit]").click()
                filed = answer.value.json()
                assert answer.value.status == 201, filed
                sent = json.loads(answer.value.request.post_data)
                assert sent["crs"] == "GCJ-02"
                # One screen pixel at this zoom is ~2 m (2e-5°); unshifted it would be ~500 m.
                assert abs(filed["lon"] - want[0]) < 5e-5 and abs(filed["lat"] - want[1]) < 5e-5
            assert not watch.exceptions, watch.exceptions
        finally:
            ctx.close()
            http.close()


def _cases_at(http, token, lon, lat) -> list:
    r = http.get("/incidents", params={"limit": 100}, headers=auth(token))
    assert r.status_code == 200, r.text
    items = r.json().get("items", r.json().get("features", []))
    return [
        i for i in items if abs(i.get("lon", 0) - lon) < 1e-9 and abs(i.get("lat", 0) - lat) < 1e-9
    ]


#: A provider that fails, on each page: what it does, the page, the page's language.
FAILURES = {
    "bad key (403)": (403, "dispatch", "zh-CN"),
    "provider error (500)": (500, "tablet", "en"),
    "unreachable": (-1, "planning", "zh-CN"),
    "no answer": (0, "dispatch", "en"),
}
NOTICE = {
    "zh-CN": ("底图“Stub streets”无法加载", "，已改用离线底图"),
    "en": ("The basemap “Stub streets” did not load", ": showing the offline map"),
}
OFFLINE_NAME = {"zh-CN": "离线底图", "en": "Offline map"}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_provider_that_fails_gives_way_to_the_offline_basemap_with_a_notice(
    browser, guiyang_db_url, tokens, failure
):
    """A dispatch room without internet, a bad Tianditu key, a provider refusing: the map
    says which basemap failed, in the page's language, and shows the offline one (in the
    page's datum: the overlays stay on it); the switcher still offers the provider."""
    from geo.coords import wgs84_to_gcj02
    from maps.offline import BOUNDARY

    status, kind, lang = FAILURES[failure]
    with contextlib.ExitStack() as stack:
        stub = stack.enter_context(StubTiles(status=max(status, 0)))
        url = stub.url
        if status < 0:  # nothing listens on its port
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                url = f"http://127.0.0.1:{sock.getsockname()[1]}/{{z}}/{{x}}/{{y}}.png"
        server = stack.enter_context(
            Server(
                guiyang_db_url,
                WANGGE_BASEMAP="custom,offline",
                url=url,
                url_datum="GCJ-02",
                url_name="Stub streets",
            )
        )
        path, who = PAGES[kind]
        ctx, page, watch = open_page(
            browser,
            server,
            path,
            tokens[who],
            lang=lang,
            foreign_ok=True,
            # No answer at all: the page waits 2 s for a first tile (15 s by default).
            init_script="window.WG_BASEMAP_WAIT_MS = 2000;",
        )
        try:
            notice = page.locator(".wg-notice[role=alert]")
            notice.wait_for(timeout=20_000)
            failed, fallback = NOTICE[lang]
            text = notice.inner_text()
            assert failed in text and fallback in text, text
            assert tiles_loaded(page, "offline", timeout=60_000) >= 2
            assert page.locator(".wg-basemap-custom").count() == 0  # the provider is gone
            shot(page, f"basemap-fallback-{kind}-{status}")
            # The switcher: the offline basemap is the one checked, the provider still offered.
            base = page.locator(".leaflet-control-layers-base label")
            provider = base.filter(has_text="Stub streets").locator("input")
            offline = base.filter(has_text=OFFLINE_NAME[lang]).locator("input")
            assert offline.is_checked() and not provider.is_checked()
            if status == 403:
                # Picking the provider again tries it again: it fails again, said again.
                page.locator(".leaflet-control-layers").hover()
                asked = len(stub.requests)
                provider.click()
                page.wait_for_function(
                    "() => document.querySelector('.wg-notice') !== null"
                    " && document.querySelectorAll('.wg-basemap-custom').length === 0"
                )
                assert len(stub.requests) > asked
                assert offline.is_checked()
                shot(page, f"basemap-fallback-{kind}-{status}-again")
                # Closed, the notice is gone.
                page.locator(".wg-notice-close").click()
                assert notice.count() == 0
                page.mouse.move(5, 700)
                assert tiles_loaded(page, "offline", timeout=60_000) >= 2
            # The offline tiles are in GCJ-02 like the overlays: the officer's grid's corner
            # is drawn by the tiles where the page puts it.
            page.wait_for_timeout(300)  # the last tiles' fade-in (Leaflet: 0.2 s)
            image = screenshot_without_overlays(page)
            x, y = container_point(
                page, *(float(v) for v in wgs84_to_gcj02(106.0 + DX, 26.02 + DY))
            )
            colours = [c for c, _, _ in BOUNDARY.values()]
            assert any(near(image, x, y, c) for c in colours), (x, y, image[round(y), round(x)])
            assert not watch.exceptions, watch.exceptions
        finally:
            ctx.close()


def test_a_tianditu_key_reaches_served_pages_only(browser, guiyang_db_url, tokens):
    from service.auth import Principal
    from service.pages import export_page

    key = "k3y-not-for-files"
    with Server(guiyang_db_url, WANGGE_BASEMAP="tianditu-vec,offline", tianditu_key=key) as server:
        http = httpx.Client(base_url=server.base_url, timeout=20)
        html = http.get("/pages/dispatch", headers=auth(tokens["admin"])).text
        assert f"tk={key}" in html
        assert json.dumps("天地图矢量") in html  # its name in the layer control, in Chinese
        http.close()
    admin = Principal(token_id="cli", name="cli", role="admin", area_code=None, scope_path=None)
    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        mp.setenv("WANGGE_BASEMAP", "tianditu-vec,offline")
        mp.setenv("WANGGE_BASEMAP_TIANDITU_KEY", key)
        static = export_page(guiyang_db_url, admin, "dispatch")
    assert key not in static and "tianditu.gov.cn" not in static
    # The offline basemap travels inside the file, as pre-rendered tiles.
    assert '"tiles":{"' in static and "data:image/png;base64," in static


def _check_offline_file(browser, path: Path, name: str, frame: bool = False) -> None:
    """Open a static file from disk: its offline tiles load from inside it, aligned."""
    from maps.offline import BOUNDARY

    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(path.as_uri())
        target = page.frames[1] if frame else page
        target.wait_for_selector(".leaflet-control-layers")
        assert tiles_loaded(target, "offline", every=False) >= 2
        shot(page, f"basemap-offline-{name}", full_page=True)
        # Nothing fetched but the file itself and its inline images.
        assert all(u.startswith(("file:", "data:", "about:")) for u in requests), requests
        if not frame:
            image = screenshot_without_overlays(page)
            x, y = container_point(page, 106.0 + DX, 26.02 + DY)
            colours = [c for c, _, _ in BOUNDARY.values()]
            assert any(near(image, x, y, c) for c in colours), (x, y, image[round(y), round(x)])
    finally:
        ctx.close()


def test_static_exports_and_the_report_carry_the_offline_basemap(
    browser, guiyang_db_url, tmp_path, monkeypatch
):
    from maps.report import report_html
    from service.analysis.report import run_report
    from service.auth import Principal
    from service.basemap import static_file_basemaps
    from service.pages import export_page

    monkeypatch.delenv("WANGGE_BASEMAP", raising=False)
    admin = Principal(token_id="cli", name="cli", role="admin", area_code=None, scope_path=None)
    for kind, params in (("dispatch", {}), ("planning", {}), ("tablet", {"grid": NW})):
        path = tmp_path / f"{kind}.html"
        path.write_text(export_page(guiyang_db_url, admin, kind, **params), encoding="utf-8")
        _check_offline_file(browser, path, f"export-{kind}")

    engine = _engine(guiyang_db_url)
    with engine.begin() as conn:
        body = run_report(conn, principal=admin, area_code=None, generation=None)
    engine.dispose()
    shown = body["analyses"]["workload"]["items"]
    html = report_html(body, basemaps=static_file_basemaps(guiyang_db_url, admin, shown))
    assert "wg.basemap(" in html
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    _check_offline_file(browser, path, "report", frame=True)


def test_a_static_file_embeds_the_whole_screen_around_narrow_data():
    """A tall, narrow area (Kaiyang) opens on a wide screen: the embedded offline tiles reach
    the screen's edges at the zoom it opens at, not just twice the data's width (the coverage
    report's map was grey down its right third)."""
    import math

    from maps.offline import TILE, _world_px
    from maps.style import zoom_for_bounds
    from service.basemap import _static_tiles

    bounds = (106.85, 26.95, 107.10, 27.35)  # ~25 km wide, ~45 km tall
    z = math.floor(zoom_for_bounds(bounds, 1280, 800))
    embedded = _static_tiles(bounds)
    # At the zoom it opens at on a laptop, and one in (the report's taller frame opens there).
    for zoom in (z, z + 1):
        tiles = {(x, y) for zz, x, y in embedded if zz == zoom}
        cx, cy = _world_px(np.array([106.975]), np.array([27.15]), zoom)
        for px in (cx[0] - 700, cx[0] + 700):  # a 1400 x 900 view centred on the data
            for py in (cy[0] - 450, cy[0] + 450):
                assert (int(px // TILE), int(py // TILE)) in tiles, (zoom, px, py)


# -- names at the zoom each page opens at ------------------------------------------------------
#: The tiny city grown eight times (grids ~8 km across, as a county's are: Kaiyang's 66 grids
#: cover 2,000 km²), with Chinese names, north of Guiyang.
COUNTY_SCALE, COUNTY_AT = 8.0, (106.60, 26.70)
COUNTY_GRID_NAME = "城关社区第1网格"


@pytest.fixture(scope="module")
def county_db_url():
    from fixtures.tiny import tiny_records
    from geo.areas import AreaRecord
    from tests.conftest import load_tiny

    def grown(geom):
        big = affinity.scale(geom, COUNTY_SCALE, COUNTY_SCALE, origin=(106.0, 26.0))
        return affinity.translate(big, COUNTY_AT[0] - 106.0, COUNTY_AT[1] - 26.0)

    names = {NW: COUNTY_GRID_NAME, NW[:12]: "城关社区", D1: "开阳县", CITY: "贵阳市"}
    records = [
        AreaRecord(r.code, names.get(r.code, r.name), r.level, r.parent_code, grown(r.geom))
        for r in tiny_records()
    ]
    url = _create_database("wangge_test_county")
    load_tiny(url, records=records, description="a county's grids")
    yield url
    _drop_database(url)


def _placed_labels(url: str, scope_path: str | None, tiles) -> dict:
    """Return text → (tile, placed label) of the offline tiles ``tiles`` as the service draws
    them for a caller of ``scope_path``."""
    import asyncio
    import concurrent.futures

    from maps.offline import place_labels
    from service.auth import Principal
    from service.basemap import _read_tile, basemap_state
    from service.db import make_pg_pool

    who = Principal(
        token_id="t", name="t", role="grid_officer", area_code=None, scope_path=scope_path
    )

    async def work():
        pool = await make_pg_pool(url, size=1)
        try:
            async with pool.acquire() as conn:
                generation = int((await basemap_state(conn)).split(".")[1])
                out = {}
                for z, x, y in tiles:
                    data = await _read_tile(conn, who, z, x, y, "WGS84", generation)
                    for p in place_labels(data, z, x, y):
                        out[p.text] = ((z, x, y), p, data)
                return out
        finally:
            await pool.close()

    # Playwright's loop runs in this thread: read on a loop of our own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work()).result()


def test_a_grid_officers_tablet_names_the_grid_at_the_zoom_it_opens_at(browser, county_db_url):
    """A county's grid fills the tablet's map around zoom 13: the offline basemap names it
    there (grid names began at zoom 15: the officer's map showed none)."""
    from maps.offline import LABEL, render_tile

    officer = make_tokens(county_db_url, {"officer": ("grid_officer", NW)})["officer"]
    engine = _engine(county_db_url)
    with engine.begin() as conn:
        (path,) = conn.exec_driver_sql("SELECT path FROM area WHERE code = %s", (NW,)).one()
    engine.dispose()
    with Server(county_db_url) as server:
        ctx, page, watch = open_page(
            browser, server, "/pages/tablet", officer, (1024, 768), lang="zh-CN", has_touch=True
        )
        try:
            assert tiles_loaded(page, "offline") >= 2
            zoom = page.evaluate(f"() => {MAP_JS}.getZoom()")
            srcs = page.evaluate(
                "() => [...document.querySelectorAll('.wg-basemap-offline img.leaflet-tile')]"
                ".map((t) => t.src)"
            )
            tiles = {
                tuple(int(v) for v in m.groups())
                for m in (re.search(r"/tiles/basemap/(\d+)/(\d+)/(\d+)\.png", s) for s in srcs)
                if m
            }
            (tile_zoom,) = {z for z, _, _ in tiles}
            assert tile_zoom < 15, (zoom, tile_zoom)  # below the zoom grid names began at
            shot(page, "basemap-county-tablet")
            placed = _placed_labels(county_db_url, path, tiles)
            assert COUNTY_GRID_NAME in placed, (zoom, sorted(placed))
            (z, x, y), label, data = placed[COUNTY_GRID_NAME]
            # Drawn: the tile differs from one without the grid's name ...
            without = type(data)(
                lines=data.lines,
                areas=data.areas,
                labels=[lb for lb in data.labels if lb.text != COUNTY_GRID_NAME],
            )
            assert render_tile(z, x, y, data) != render_tile(z, x, y, without)
            # ... and on the tablet's screen, inside its map, in the label's colour.
            corners = page.evaluate(
                f"""() => {{
                    const m = {MAP_JS}; const r = m.getContainer().getBoundingClientRect();
                    const box = {list(label.box)};
                    return [[box[0], box[1]], [box[2], box[3]]].map(([px, py]) => {{
                        const p = m.latLngToContainerPoint(m.unproject([px, py], {z}));
                        return [p.x + r.left, p.y + r.top];
                    }});
                }}"""
            )
            (left, top), (right, bottom) = corners
            size = page.viewport_size
            map_box = page.locator(".folium-map").bounding_box()
            assert map_box["x"] <= left and right <= map_box["x"] + map_box["width"], corners
            assert map_box["y"] <= top and bottom <= map_box["y"] + map_box["height"], corners
            assert right <= size["width"] and bottom <= size["height"]
            image = screenshot_without_overlays(page)
            patch = image[round(top) : round(bottom), round(left) : round(right)]
            colour = np.array(LABEL["grid"][1])
            ink = np.all(np.abs(patch.astype(int) - colour) <= 40, axis=-1).mean()
            assert ink > 0.03, ink  # the characters' strokes
            assert not watch.exceptions, watch.exceptions
        finally:
            ctx.close()
