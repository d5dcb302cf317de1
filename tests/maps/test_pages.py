"""The page builders, from hand-made GeoJSON: layers, legend, links, form, gap themes, refusals.

The words are checked in English (``lang="en"``); tests/maps/test_i18n.py checks the Chinese.
"""

from __future__ import annotations

import re

import folium.plugins
import pytest

from maps.assets import STATIC_DIR
from maps.geojson import PageDataError, collection
from maps.pages import (
    Basemap,
    add_coverage_gap_layer,
    dispatch_page,
    planning_page,
    render_page,
    tablet_page,
)
from tests.maps.data import GRID_CODES, controls, embedded, feature, point, square

AREA_URL = "/pages/dispatch?area={code}&access_token=t0k"
TABLET_URL = "/pages/tablet?grid={code}&access_token=t0k"
CRUMBS = [
    {"code": "990100", "name": "Tiny City", "level": "city"},
    {"code": "990101", "name": "D1", "level": "district"},
]


def _dispatch(city, districts, grids, incidents, **kw):
    args = {
        "areas": {"city": city, "district": districts, "grid": grids},
        "incidents": incidents,
        "breadcrumb": CRUMBS,
        "focus": "990101",
        "area_url": AREA_URL,
        "tablet_url": TABLET_URL,
        "lang": "en",
        **kw,
    }
    return dispatch_page(**args)


def _overlays(html: str) -> list[str]:
    block = re.search(r"overlays :\s*\{(.*?)\}", html, re.S).group(1)
    return re.findall(r'"([^"]+)" :', block)


def _tablet(grids, incidents, **kw):
    args = {
        "grid": grids["features"][0],
        "team": [
            {"name": "Li Na", "team_role": "grid_manager", "phone": "138-0000-0001"},
            {"name": "Wang Wei", "team_role": "grid_police", "phone": ""},
        ],
        "units": collection([point(106.002, 26.002, name="Noodle shop", kind="shop")]),
        "incidents": incidents,
        "report_endpoint": "/incidents",
        "csrf_token": "c5rf",
        "lang": "en",
        **kw,
    }
    return tablet_page(**args)


# -- dispatch --------------------------------------------------------------------------------
def test_dispatch_page_has_levels_choropleth_clusters_legend_and_layer_control(
    city, districts, grids, incidents
):
    html = render_page(_dispatch(city, districts, grids, incidents))
    assert _overlays(html) == [
        "City outline",
        "Districts",
        "Grids (open incidents)",
        "Open incidents",
    ]
    assert "L.control.layers(" in html
    layers = embedded(html, "wg.areas")
    assert [len(fc["features"]) for fc in layers] == [1, 2, 4]
    assert {f["properties"]["code"] for f in layers[2]["features"]} == set(GRID_CODES)
    # Grids are a choropleth of open incidents; its classes are in the legend.
    options = re.findall(r"wg\.areas\(.*?\}\]\}, (\{.*?\})\);", html)
    grid_options = [o for o in options if '"choropleth"' in o]
    assert len(grid_options) == 1 and '"property":"open_incidents"' in grid_options[0]
    assert "Open incidents per grid" in html and "≥ 7" in html
    assert "wg-legend" in html
    # Open incidents are clustered (Leaflet.markercluster), all five of them.
    assert "L.markerClusterGroup(" in html
    assert len(embedded(html, "wg.points")[0]["features"]) == 5


def test_dispatch_page_links_drill_down_and_breadcrumb(city, districts, grids, incidents):
    html = render_page(_dispatch(city, districts, grids, incidents))
    # Every area's popup links to its own dispatch view; grids also to their tablet page.
    assert '"/pages/dispatch?area={code}&access_token=t0k","Open this grid →"' in html
    assert '"/pages/tablet?grid={code}&access_token=t0k","Tablet page of this grid →"' in html
    # The breadcrumb links the ancestors, not the focused area itself.
    crumbs = controls(html)
    assert '<a href="/pages/dispatch?area=990100&amp;access_token=t0k">City Tiny City</a>' in crumbs
    assert "<span>District D1</span>" in crumbs


def test_dispatch_static_export_has_no_links(city, districts, grids, incidents):
    page = _dispatch(city, districts, grids, incidents, area_url=None, tablet_url=None)
    html = render_page(page, assets="inline")
    assert "/pages/" not in html
    assert "access_token" not in html


def test_dispatch_page_says_when_incidents_are_capped(city, grids, incidents):
    page = dispatch_page(
        areas={"grid": grids}, incidents=incidents, incidents_matched=900, lang="en"
    )
    assert "5 of 900 open incidents shown" in render_page(page)


def test_rendering_twice_gives_the_same_assets(city, grids, incidents):
    page = dispatch_page(areas={"city": city, "grid": grids}, incidents=incidents)
    first, second = render_page(page), render_page(page)
    scripts = re.compile(r'<script src="([^"]+)"')
    assert scripts.findall(first) == scripts.findall(second)
    assert any("markercluster" in s for s in scripts.findall(second))


# -- tablet ----------------------------------------------------------------------------------
def test_tablet_page_has_grid_team_units_incidents_and_report_form(grids, incidents):
    html = render_page(_tablet(grids, incidents))
    assert [len(fc["features"]) for fc in embedded(html, "wg.areas")] == [1]
    points = embedded(html, "wg.points")
    assert [len(fc["features"]) for fc in points] == [1, 5]  # units, incidents
    assert '"size":44' in html  # fingertip-sized incident markers
    assert "Li Na" in html and "Grid manager" in html and 'href="tel:13800000001"' in html
    assert "No party-building instructor assigned" in html
    assert '<form id="wg-report"' in html
    for category in ("water", "gas", "street_light", "road", "sanitation", "public_order"):
        assert f'<option value="{category}">' in html
    assert '<textarea id="wg-description" name="description"' in html
    assert "wg.reportForm(" in html
    form = re.search(r"wg\.reportForm\(map_\w+, (\{.*?\})\);", html).group(1)
    assert '"endpoint":"/incidents"' in form
    assert '"source":"patrol"' in form and '"crs":"EPSG:4326"' in form
    assert '"csrf":"c5rf"' in form and "token" not in form


def test_the_report_form_posts_with_an_idempotency_key():
    runtime = (STATIC_DIR / "wangge" / "wangge.js").read_text()
    assert '"Idempotency-Key": key' in runtime
    assert "crypto.randomUUID" in runtime and "getRandomValues" in runtime
    assert "navigator.geolocation.getCurrentPosition" in runtime
    assert 'method: "POST"' in runtime and "JSON.stringify(body)" in runtime
    assert 'headers["X-CSRF-Token"] = o.csrf' in runtime and "Authorization" not in runtime
    assert "wg.refusal({ status: r.status, body: j }" in runtime  # the refusal, in words
    assert "j.cells && j.cells.grid_code" in runtime


def test_tablet_static_copy_has_no_endpoint_nor_token(grids, incidents):
    html = render_page(_tablet(grids, incidents, report_endpoint=None, csrf_token=None))
    form = re.search(r"wg\.reportForm\(map_\w+, (\{.*?\})\);", html).group(1)
    assert '"endpoint":null' in form and '"csrf":null' in form


def test_tablet_page_is_small(grids, incidents):
    html = render_page(_tablet(grids, incidents))
    # Scripts are linked (cached by the tablet); the page itself is a few kilobytes.
    assert len(html.encode()) < 15_000


# -- planning --------------------------------------------------------------------------------
def test_planning_page_has_workload_choropleth_and_no_gap_theme_yet(city, districts, grids):
    page = planning_page(grids=grids, outlines={"city": city, "district": districts}, lang="en")
    html = render_page(page)
    assert _overlays(html) == [
        "Grids: incidents in the last 90 days",
        "Districts",
        "City outline",
    ]
    assert "wg.themes(" not in html  # no chooser without a theme
    grid_fc = embedded(html, "wg.areas")[0]
    props = grid_fc["features"][3]["properties"]
    assert (props["incidents_90d"], props["units"], props["team_roles"]) == (9, 3, 0)
    assert "Incidents, 90 days" in html and "Team roles (of 3)" in html  # popup fields
    assert "Incidents in the last 90 days" in html  # legend title


def test_planning_team_metric_uses_fixed_classes(grids):
    html = render_page(planning_page(grids=grids, metric="team_roles", lang="en"))
    assert '"breaks":[0,1,2,3]' in html and "complete" in html


def test_adding_a_coverage_gap_layer_is_one_call(grids):
    page = planning_page(grids=grids, lang="en")
    gaps = collection([feature(square(106.001, 26.001, 0.003), kind="unserved")])
    layer = add_coverage_gap_layer(page, gaps, name="Beyond 15 minutes", color="#ff00ff")
    points = collection([point(106.02, 26.005, kind="household")])
    second = add_coverage_gap_layer(page, points, name="Far households")
    html = render_page(page)
    # Themes, one at a time: made, not added to the map; the chooser shows the first.
    assert f"{layer.get_name()}.addTo(" not in html and f"{second.get_name()}.addTo(" not in html
    chooser = re.search(r"wg\.themes\((map_\w+), \[(.*?)\], (\{.*?\})\);", html)
    assert chooser.group(2) == (
        f'["Beyond 15 minutes",{layer.get_name()}],["Far households",{second.get_name()}]'
    )
    assert '"none":"No gap layer"' in chooser.group(3)
    # The chooser's script comes after the layers it names.
    assert html.index(f"var {second.get_name()} =") < chooser.start()
    assert "Beyond 15 minutes" in html and "#ff00ff" in html
    assert len(embedded(html, "wg.points")) == 1


# -- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda g: g.update(type="Feature"), "expected a GeoJSON FeatureCollection"),
        (lambda g: g["features"][1]["properties"].pop("code"), "feature 1 lacks the property"),
        (
            lambda g: g["features"][2]["properties"].update(open_incidents=-1),
            "'open_incidents' must be a non-negative number",
        ),
        (
            lambda g: g["features"][0].update(geometry={"type": "Point", "coordinates": [1, 2]}),
            "has a Point geometry; grid areas takes Polygon/MultiPolygon",
        ),
        (
            lambda g: g["features"][0]["geometry"].update(coordinates=[[[26, 106], [26, 107]]]),
            "coordinates must be WGS84",
        ),
        (lambda g: g["features"][0]["properties"].pop("open_incidents"), "open_incidents"),
    ],
)
def test_dispatch_refuses_malformed_grids(grids, incidents, mutate, message):
    mutate(grids)
    with pytest.raises(PageDataError, match=re.escape(message)):
        dispatch_page(areas={"grid": grids}, incidents=incidents)


def test_builders_refuse_bad_arguments_clearly(city, grids, incidents):
    with pytest.raises(PageDataError, match="unknown level 'county'"):
        dispatch_page(areas={"county": city}, incidents=incidents)
    with pytest.raises(PageDataError, match="at least one area"):
        dispatch_page(areas={"grid": collection([])}, incidents=incidents)
    with pytest.raises(PageDataError, match=r"must contain \{code\}"):
        dispatch_page(areas={"grid": grids}, incidents=incidents, area_url="/pages/dispatch")
    with pytest.raises(PageDataError, match="http"):
        dispatch_page(areas={"grid": grids}, incidents=incidents, area_url="javascript:{code}")
    with pytest.raises(PageDataError, match="incidents: feature 0 lacks the property 'category'"):
        dispatch_page(
            areas={"grid": grids}, incidents=collection([point(106.0, 26.0, status="new")])
        )
    with pytest.raises(PageDataError, match="team: member 0 has role 'boss'"):
        _tablet(grids, incidents, team=[{"name": "X", "team_role": "boss"}])
    with pytest.raises(PageDataError, match="unknown metric 'cost'"):
        planning_page(grids=grids, metric="cost")
    grids["features"][0]["properties"]["team_roles"] = 4
    with pytest.raises(PageDataError, match="team_roles is 0 to 3"):
        planning_page(grids=grids)


def test_gap_layers_only_go_on_the_planning_page(grids, incidents):
    page = dispatch_page(areas={"grid": grids}, incidents=incidents, lang="en")
    with pytest.raises(PageDataError, match="has no 'Coverage gaps' group"):
        add_coverage_gap_layer(page, collection([]), name="x")
    planning = planning_page(grids=grids)
    with pytest.raises(PageDataError, match="CSS colour"):
        add_coverage_gap_layer(planning, collection([]), name="x", color="red;x:url(a)")


def test_a_plugin_that_is_not_vendored_is_refused(grids, incidents):
    page = dispatch_page(areas={"grid": grids}, incidents=incidents)
    folium.plugins.Fullscreen().add_to(page.map)
    with pytest.raises(ValueError, match="not vendored in maps/static"):
        render_page(page)


# -- safety ----------------------------------------------------------------------------------
def test_names_cannot_break_out_of_scripts_or_templates(grids, incidents):
    grids["features"][0]["properties"]["name"] = "</script><script>alert(1)</script>"
    grids["features"][1]["properties"]["name"] = "{{ 7*7 }} {% if 1 %}x{% endif %} {# c #}"
    incidents["features"][0]["properties"]["description"] = "<!--<script>"
    html = render_page(dispatch_page(areas={"grid": grids}, incidents=incidents, lang="en"))
    assert "<script>alert(1)" not in html and "</script><script>alert" not in html
    names = [f["properties"]["name"] for f in embedded(html, "wg.areas")[0]["features"]]
    assert names[:2] == [
        "</script><script>alert(1)</script>",
        "{{ 7*7 }} {% if 1 %}x{% endif %} {# c #}",
    ]
    assert embedded(html, "wg.points")[0]["features"][0]["properties"]["description"] == (
        "<!--<script>"
    )
    page = _tablet(grids, incidents)
    html = render_page(page)
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html


# -- assets ----------------------------------------------------------------------------------
def test_served_pages_link_only_local_versioned_assets(city, grids, incidents):
    html = render_page(dispatch_page(areas={"city": city, "grid": grids}, incidents=incidents))
    sources = re.findall(r'<(?:script src|link rel="stylesheet" href)="([^"]+)"', html)
    assert sources and all(
        re.fullmatch(r"/static/maps/[\w@./-]+\?v=[0-9a-f]{12}", s) for s in sources
    )
    assert "cdn" not in html and "https://" not in html and "jquery" not in html.lower()
    html = render_page(
        dispatch_page(areas={"grid": grids}, incidents=incidents), static_url="/wg/static/maps"
    )
    assert '<script src="/wg/static/maps/leaflet@1.9.4/leaflet.js?v=' in html


def test_static_export_inlines_everything(city, grids, incidents):
    html = render_page(
        dispatch_page(areas={"city": city, "grid": grids}, incidents=incidents), assets="inline"
    )
    assert "<script src=" not in html and '<link rel="stylesheet"' not in html
    assert "/static/maps/" not in html
    assert "Leaflet 1.9.4" in html  # leaflet.js's banner
    assert "MarkerClusterGroup" in html
    assert "url(data:image/png;base64," in html  # layer-control icon, inlined


def test_a_basemap_is_optional_and_off_by_default(city, grids, incidents):
    page = dispatch_page(areas={"grid": grids}, incidents=incidents)
    assert "L.tileLayer(" not in render_page(page)
    tiles = Basemap("https://tiles.example/{z}/{x}/{y}.png", "© example")
    page = dispatch_page(areas={"grid": grids}, incidents=incidents, tiles=tiles)
    assert '"https://tiles.example/{z}/{x}/{y}.png"' in render_page(page)
