"""Basemap configuration, the switcher, the datum shift of page data, the offline renderer."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from geo.coords import to_wgs84, wgs84_to_bd09, wgs84_to_gcj02
from maps.basemap import (
    WGS84,
    BasemapError,
    add_basemaps,
    configure_basemaps,
    geojson_bounds,
    shift_geojson,
)
from maps.offline import STYLE, Line, TileData, render_tile, tile_bounds, tiles_covering
from maps.pages import dispatch_page, render_page

OFFLINE_URL = "/tiles/basemap/{z}/{x}/{y}.png"


def configure(names, **kw):
    return configure_basemaps(names, offline_url=OFFLINE_URL, **kw)


def test_the_offline_basemap_is_the_default_and_always_offered():
    only = configure([])
    assert [c.key for c in only.choices] == ["offline"] and only.datum == WGS84
    assert only.choices[0].sources[0].url == OFFLINE_URL
    both = configure(["osm"])
    assert [c.key for c in both.choices] == ["osm", "offline"]
    first = configure(["offline", "osm"])
    assert [c.key for c in first.choices] == ["offline", "osm"]


def test_a_gcj02_provider_makes_the_page_and_the_offline_tiles_gcj02():
    basemaps = configure(["amap", "tencent"])
    assert basemaps.datum == "GCJ-02"
    assert [c.key for c in basemaps.choices] == ["amap", "tencent", "offline"]
    assert basemaps.offline.sources[0].url == OFFLINE_URL + "?datum=GCJ-02"
    assert "{-y}" in basemaps.choices[1].sources[0].url  # Tencent counts rows from the south


@pytest.mark.parametrize(
    ("names", "kw", "message"),
    [
        (["google"], {}, "unknown basemap 'google'"),
        (["tianditu-vec"], {}, "WANGGE_BASEMAP_TIANDITU_KEY"),
        (["osm", "osm"], {}, "named twice"),
        (["amap", "osm"], {}, "share a datum"),
        (["custom"], {}, "needs WANGGE_BASEMAP_URL"),
        (["custom"], {"url": "https://t.example/{z}/{x}.png"}, "needs {y}"),
        (["custom"], {"url": "javascript:alert(1)//{z}{x}{y}"}, "http(s)://"),
        (["custom"], {"url": "https://{s}.t.example/{z}/{x}/{y}.png"}, "subdomains"),
        (["custom"], {"url": "https://t.example/{z}/{x}/{y}.png?k={key}"}, "URL_KEY"),
        (["custom"], {"url": "https://t.example/{z}/{x}/{y}.png", "url_datum": "x"}, "datum"),
    ],
)
def test_configurations_that_cannot_work_are_refused_saying_why(names, kw, message):
    with pytest.raises(BasemapError, match=message.replace("(", r"\(").replace(")", r"\)")):
        configure(names, **kw)


def test_keys_go_into_served_tile_urls_only():
    basemaps = configure(
        ["tianditu-vec", "custom"],
        tianditu_key="tk/secret",
        url="https://t.example/{z}/{x}/{y}.png?key={key}",
        url_key="u-secret",
    )
    vec, custom, offline = basemaps.choices
    assert vec.keyed and custom.keyed and not offline.keyed
    assert [s.url.rsplit("tk=", 1)[1] for s in vec.sources] == ["tk%2Fsecret"] * 2
    assert custom.sources[0].url.endswith("key=u-secret")
    static = basemaps.for_static_file({"12/1/2": "data:image/png;base64,AA=="})
    assert [c.key for c in static.choices] == ["offline"]
    assert static.choices[0].tiles == {"12/1/2": "data:image/png;base64,AA=="}
    # Without pre-rendered tiles a file keeps what it may fetch: nothing keyed.
    assert [c.key for c in configure(["osm"]).for_static_file().choices] == ["osm"]


def test_settings_never_echo_a_key(monkeypatch):
    from pydantic import ValidationError

    from service.settings import BasemapSettings

    monkeypatch.setenv("WANGGE_BASEMAP", "tianditu-vec,amap")
    monkeypatch.setenv("WANGGE_BASEMAP_TIANDITU_KEY", "very-secret-tk")
    with pytest.raises(ValidationError) as caught:
        BasemapSettings()
    assert "share a datum" in str(caught.value) and "very-secret-tk" not in str(caught.value)
    monkeypatch.setenv("WANGGE_BASEMAP", "Tianditu-Img, offline")
    settings = BasemapSettings()
    assert settings.choices == ["tianditu-img", "offline"]
    assert "very-secret-tk" not in repr(settings) and "very-secret-tk" not in str(settings)


def test_page_data_are_shifted_with_the_input_kernels(grids, incidents):
    data = {"areas": {"grid": grids}, "incidents": incidents, "title": "x"}
    for datum, kernel in (("GCJ-02", wgs84_to_gcj02), ("BD-09", wgs84_to_bd09)):
        moved = shift_geojson(data, datum)
        assert moved["title"] == "x" and data["areas"]["grid"] is grids  # a copy
        before = np.array(grids["features"][0]["geometry"]["coordinates"][0])
        after = np.array(moved["areas"]["grid"]["features"][0]["geometry"]["coordinates"][0])
        lon, lat = kernel(before[:, 0], before[:, 1])
        assert np.array_equal(after, np.column_stack([lon, lat]))
        # Back with the input conversion: the stored points to < 1e-9°.
        back = np.column_stack(to_wgs84(after[:, 0], after[:, 1], datum))
        assert np.abs(back - before).max() < 1e-9
        point = moved["incidents"]["features"][0]["geometry"]["coordinates"]
        assert point != incidents["features"][0]["geometry"]["coordinates"]
    assert shift_geojson(data, WGS84) is data
    assert geojson_bounds(data) == [106.0, 26.0, 106.04, 26.01]


def test_the_switcher_lists_the_basemaps_before_the_layer_control(city, grids, incidents):
    page = dispatch_page(areas={"city": city, "grid": grids}, incidents=incidents)
    add_basemaps(page.map, configure(["osm"]))
    html = render_page(page)
    assert html.count("wg.basemap(") == 2
    assert html.index("wg.basemap(") < html.index("L.control.layers(")
    assert (
        "wangge/basemap.js" in html and '"https://tile.openstreetmap.org/{z}/{x}/{y}.png"' in html
    )
    assert '"OpenStreetMap"' in html and '"Offline map (own data)"' in html


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_the_offline_renderer_draws_roads_rail_and_water_by_kind():
    z, x, y = 15, 26482, 13953
    x0, y0, x1, y1 = tile_bounds(z, x, y)
    mid_lat = (y0 + y1) / 2
    lines = [
        Line(np.array([[x0 - 0.01, mid_lat], [x1 + 0.01, mid_lat]]), "road"),
        Line(np.array([[x0 + (x1 - x0) / 4, y0 - 0.01], [x0 + (x1 - x0) / 4, y1 + 0.01]]), "rail"),
        Line(
            np.array([[x0 + 3 * (x1 - x0) / 4, y0 - 0.01], [x0 + 3 * (x1 - x0) / 4, y1]]), "water"
        ),
    ]
    image = _png(render_tile(z, x, y, TileData(lines=lines)))
    assert image.shape == (256, 256, 3)
    row = image[128]
    assert (np.abs(row.astype(int) - 255).max(axis=1) <= 3).sum() > 100  # the white road
    water = np.array(STYLE["water"][0])
    column = image[:, 192]
    assert (np.abs(column.astype(int) - water).max(axis=1) <= 12).sum() > 150
    rail = np.array(STYLE["rail"][0])
    assert (np.abs(image[:, 60:68].astype(int) - rail).max(axis=2) <= 30).sum() > 150


def test_tiles_covering_stop_at_the_limit_by_whole_zooms():
    bounds = [106.69, 26.57, 106.73, 26.59]
    tiles = tiles_covering(bounds, [13, 14, 15, 16], limit=20)
    zooms = sorted({z for z, _, _ in tiles})
    assert zooms[0] == 13 and len(tiles) <= 20
    for z, tx, ty in tiles:
        b = tile_bounds(z, tx, ty)
        assert b[0] <= bounds[2] and b[2] >= bounds[0] and b[1] <= bounds[3] and b[3] >= bounds[1]
