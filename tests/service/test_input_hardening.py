"""Input that PostgreSQL cannot hold gets a 4xx naming the parameter, never a 500 (issue 10,
items 1 and 8).

Covered here: integers past ``bigint`` or ``integer`` (offsets, ids, generations), NUL
characters in query and path parameters, JSON bodies, forms and imported files, and LIKE
wildcards in the area name search. Open311 answers in its own error format (a list of
``{code, description}``, or ``<errors>`` in XML). The last tests send NUL, huge numbers and
very long strings to every query and path parameter of every GET route.
"""

from __future__ import annotations

import re
from urllib.parse import quote
from xml.etree import ElementTree as ET

import pytest

from geo.tables import read_point_table
from service.inputs import BIGINT_MAX, INTEGER_MAX
from tests.conftest import auth, make_tokens

HUGE = "100000000000000000000"  # 10^20: past bigint
PAST_BIGINT = str(BIGINT_MAX + 1)
PAST_INTEGER = str(INTEGER_MAX + 1)
LON, LAT = 106.71, 26.58  # in a grid of the Guiyang demo


@pytest.fixture(scope="module")
def admin(demo_db_url) -> dict[str, str]:
    return auth(make_tokens(demo_db_url, {"admin": ("admin", None)})["admin"])


@pytest.fixture(scope="module")
def sample(demo_client, admin) -> dict[str, str]:
    """Return codes and ids that exist in the demo, to fill path parameters with."""
    grid = demo_client.get("/areas", params={"level": "grid", "limit": 1}, headers=admin)
    assert grid.status_code == 200, grid.text
    area = grid.json()["items"][0]
    unit = demo_client.get("/units", params={"limit": 1}, headers=admin)
    assert unit.status_code == 200, unit.text
    return {
        "grid": area["code"],
        "community": area["parent_code"],
        "unit_id": str(unit.json()["items"][0]["id"]),
    }


def assert_problem(response, status: int, field: str) -> dict:
    """Assert a problem+json answer of ``status`` that names ``field``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    named = f"{body.get('field') or ''} {body['title']} {body['detail']}"
    assert re.search(rf"(?<!\w){re.escape(field)}(?!\w)", named), body
    return body


def assert_open311_error(response, status: int, field: str, fmt: str) -> str:
    """Assert an Open311 error (JSON list or XML ``<errors>``) whose description names
    ``field``; return the description."""
    assert response.status_code == status, response.text
    if fmt == "json":
        assert response.headers["content-type"].startswith("application/json")
        (error,) = response.json()
        code, description = error["code"], error["description"]
    else:
        assert response.headers["content-type"].startswith("text/xml")
        root = ET.fromstring(response.content)
        assert root.tag == "errors"
        code = int(root.find("error/code").text)
        description = root.find("error/description").text
    assert code == status
    assert description.startswith(f"{field}: "), description
    return description


# -- issue 10 item 1: the requests that answered 500 ------------------------------------------
@pytest.mark.parametrize(
    ("path", "field", "words"),
    [
        (f"/incidents?offset={HUGE}", "offset", str(BIGINT_MAX)),
        (f"/areas?offset={HUGE}", "offset", str(BIGINT_MAX)),
        (f"/units?offset={HUGE}", "offset", str(BIGINT_MAX)),
        (f"/members?offset={HUGE}", "offset", str(BIGINT_MAX)),
        (f"/incidents?offset={PAST_BIGINT}", "offset", str(BIGINT_MAX)),
        ("/areas?q=%00", "q", "NUL"),
        ("/incidents?reported_grid_code=%00", "reported_grid_code", "NUL"),
        ("/members?home_community_code=%00", "home_community_code", "NUL"),
        ("/ogc/collections/incidents/items?status=%00", "status", "NUL"),
        ("/ogc/collections/units/items?kind=%00", "kind", "NUL"),
        ("/tiles/units/14/13380/6984.mvt?kind=%00", "kind", "NUL"),
        ("/tiles/incidents/14/13380/6984.mvt?status=%00", "status", "NUL"),
    ],
)
def test_reported_requests_are_refused_naming_the_parameter(demo_client, admin, path, field, words):
    body = assert_problem(demo_client.get(path, headers=admin), 422, field)
    assert words in body["detail"]


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(
    "path",
    [
        "/open311/v2/requests.{fmt}?service_request_id=99999999999999999999",
        "/open311/v2/requests.{fmt}?service_request_id=1,99999999999999999999",
        "/open311/v2/requests/99999999999999999999.{fmt}",
        "/open311/v2/requests/%C2%B2.{fmt}",  # "²": a digit to str.isdigit, not to int()
    ],
)
def test_open311_ids_past_bigint_are_refused_in_open311_format(demo_client, admin, path, fmt):
    response = demo_client.get(path.format(fmt=fmt), headers=admin)
    description = assert_open311_error(response, 400, "service_request_id", fmt)
    assert str(BIGINT_MAX) in description


# -- NUL anywhere in the query string or the path ---------------------------------------------
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/areas/%00", "code"),
        ("/areas/5201%0002", "code"),
        ("/ogc/collections/%00", "collection_id"),
        ("/ogc/collections/grids/items/%00", "feature_id"),
        ("/ogc/collections/incidents/items/1%00", "feature_id"),
        ("/tiles/%00/1/1/1.mvt", "layers"),
        ("/tiles/%00.json", "layer"),
        ("/tokens/%00", "token_id"),
        ("/areas?level=grid&q=a%00b", "q"),
        ("/areas?access_token=%00", "access_token"),
        ("/lookup?lon=106.7&lat=26.6&crs=%00", "crs"),
        ("/analysis/reach?kinds=%00", "kinds"),
        ("/ogc/collections/incidents/items?datetime=%00", "datetime"),
        ("/ogc/collections/incidents/items?properties=%00", "properties"),
        ("/pages/tablet?grid=%00", "grid"),
        ("/areas?%00=1", "\\x00"),
    ],
)
def test_nul_in_a_query_or_path_parameter_is_refused_naming_it(demo_client, admin, path, field):
    response = demo_client.request(
        "DELETE" if path.startswith("/tokens") else "GET", path, headers=admin
    )
    body = assert_problem(response, 422, field)
    assert body["detail"] == f"{field}: must not contain a NUL character"
    assert body["errors"] == [{"field": field, "reason": "must not contain a NUL character"}]


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/open311/v2/services/%00.{fmt}", "service_code"),
        ("/open311/v2/requests/1%00.{fmt}", "service_request_id"),
        ("/open311/v2/requests.{fmt}?status=%00", "status"),
        ("/open311/v2/requests.{fmt}?service_code=water%00", "service_code"),
        ("/open311/v2/requests.{fmt}?start_date=%00", "start_date"),
        ("/open311/v2/requests.{fmt}?api_key=%00", "api_key"),
    ],
)
def test_open311_nul_is_refused_in_open311_format(demo_client, admin, path, field, fmt):
    response = demo_client.get(path.format(fmt=fmt), headers=admin)
    assert_open311_error(response, 400, field, fmt)


# -- ids and generations past their column ----------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", f"/incidents/{HUGE}", "entity_id"),
        ("GET", f"/units/{PAST_BIGINT}", "entity_id"),
        ("PATCH", f"/units/{HUGE}", "entity_id"),
        ("DELETE", f"/members/{HUGE}", "entity_id"),
        ("GET", f"/care-households?cadre_member_id={HUGE}", "cadre_member_id"),
        ("GET", f"/areas?generation={PAST_INTEGER}", "generation"),
        ("GET", f"/areas/520102?generation={HUGE}", "generation"),
        ("GET", f"/lookup?lon=106.7&lat=26.6&generation={HUGE}", "generation"),
        ("GET", f"/analysis/staffing?generation={HUGE}", "generation"),
        ("GET", f"/analysis/report?generation={HUGE}", "generation"),
        ("GET", f"/ogc/collections/incidents/items?generation={HUGE}", "generation"),
        ("GET", f"/ogc/collections/grids/items/520102?generation={PAST_INTEGER}", "generation"),
        ("GET", f"/tiles/grids/10/836/436.mvt?generation={HUGE}", "generation"),
        ("GET", "/ogc/collections/incidents/items?generation=%C2%B2", "generation"),
        ("POST", f"/generations/{HUGE}/activate", "generation_id"),
        ("POST", f"/generations/{PAST_INTEGER}/retire", "generation_id"),
    ],
)
def test_numbers_past_their_column_are_refused(demo_client, admin, method, path, field):
    kwargs = {"json": {}} if method == "PATCH" else {}
    if path.endswith("/retire"):
        kwargs = {"json": {"codes": ["520102"]}}
    assert_problem(demo_client.request(method, path, headers=admin, **kwargs), 422, field)


@pytest.mark.parametrize("feature_id", [HUGE, PAST_BIGINT, "%C2%B2", "0x1F"])
def test_ogc_feature_ids_that_cannot_exist_are_not_found(demo_client, admin, feature_id):
    response = demo_client.get(f"/ogc/collections/units/items/{feature_id}", headers=admin)
    assert_problem(response, 404, "featureId")


def test_bounds_are_published_in_openapi(demo_client):
    spec = demo_client.get("/openapi.json").json()

    def parameter(path, name):
        (param,) = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name]
        return param["schema"]

    assert parameter("/areas", "offset")["maximum"] == BIGINT_MAX
    assert parameter("/incidents", "offset")["maximum"] == BIGINT_MAX
    assert parameter("/incidents/{entity_id}", "entity_id")["maximum"] == BIGINT_MAX
    # An optional parameter is documented without its null (it is left out instead).
    assert parameter("/areas", "generation")["maximum"] == INTEGER_MAX


# -- NUL in bodies, forms and files -----------------------------------------------------------
NUL = "a\x00b"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/incidents", {"category": "water", "description": NUL}, "description"),
        ("POST", "/incidents", {"category": "water", "address": NUL}, "address"),
        ("POST", "/units", {"name": NUL, "kind": "shop"}, "name"),
        ("POST", "/facilities", {"name": "x", "kind": "service_hall", "address": NUL}, "address"),
        ("POST", "/care-households", {"kind": "hardship", "head_name": NUL}, "head_name"),
        ("POST", "/care-households", {"kind": "hardship", "head_name": "x", "notes": NUL}, "notes"),
        (
            "POST",
            "/care-households",
            {"kind": "hardship", "head_name": "x", "cadre_member_id": int(HUGE)},
            "cadre_member_id",
        ),
        ("PATCH", "/units/{unit_id}", {"address": NUL}, "address"),
        ("PATCH", "/units/{unit_id}", {"name": NUL}, "name"),
        ("POST", "/generations", {"description": NUL}, "description"),
        ("POST", "/tokens", {"name": NUL, "role": "admin"}, "name"),
        ("POST", "/lookup/batch", {"points": [[LON, LAT]], "generation": int(HUGE)}, "generation"),
    ],
)
def test_nul_and_huge_numbers_in_json_bodies_are_refused(
    demo_client, admin, sample, method, path, body, field
):
    if path in ("/incidents", "/units", "/facilities", "/care-households"):
        body = {"lon": LON, "lat": LAT, "source": "patrol", **body}
        if path != "/incidents":
            body.pop("source")
    response = demo_client.request(method, path.format(**sample), json=body, headers=admin)
    assert_problem(response, 422, field)


def test_nul_in_a_member_is_refused(demo_client, admin, sample):
    member = {"name": "x", "kind": "volunteer", "home_community_code": sample["community"]}
    for field in ("name", "phone"):
        response = demo_client.post("/members", json={**member, field: NUL}, headers=admin)
        assert_problem(response, 422, field)


def test_nul_in_a_geojson_area_import_is_refused_naming_the_feature(tiny_client, tiny_db_url):
    h = auth(make_tokens(tiny_db_url, {"admin": ("admin", None)})["admin"])
    gen = tiny_client.post("/generations", json={"description": "next"}, headers=h)
    assert gen.status_code == 201, gen.text
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {
                    "code": "990101001001009",
                    "name": NUL,
                    "level": "grid",
                    "parent_code": "990101001001",
                },
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[106.0, 26.0], [106.01, 26.0], [106.01, 26.01], [106.0, 26.0]]
                    ],
                },
            }
        ],
    }
    response = tiny_client.post(
        f"/generations/{gen.json()['id']}/areas", json=collection, headers=h
    )
    body = assert_problem(response, 422, "features.0.properties.name")
    assert "nothing was imported" in body["detail"]


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize("field", ["description", "address_string", "email", "lat"])
def test_open311_form_with_nul_is_refused_in_open311_format(demo_client, admin, field, fmt):
    form = {"service_code": "water", "lat": str(LAT), "long": str(LON), field: NUL}
    response = demo_client.post(f"/open311/v2/requests.{fmt}", data=form, headers=admin)
    assert_open311_error(response, 400, field, fmt)


def test_nul_in_an_import_form_field_is_refused(demo_client, admin):
    road = (
        b'{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
        b'"geometry":{"type":"LineString","coordinates":[[106.71,26.58],[106.711,26.58]]}}]}'
    )
    for field in ("name", "layer", "crs"):
        response = demo_client.post(
            "/network/import",
            files={"file": ("roads.geojson", road, "application/geo+json")},
            data={field: NUL, "append": "true"},
            headers=admin,
        )
        assert_problem(response, 422, field)
    units = b"name,kind,lon,lat\nx,shop,106.71,26.58\n"
    for field in ("crs", "lon_column", "lat_column", "layer"):
        response = demo_client.post(
            "/units/import",
            files={"file": ("units.csv", units, "text/csv")},
            data={field: NUL},
            headers=admin,
        )
        assert_problem(response, 422, field)


@pytest.mark.parametrize(
    ("name", "data", "field"),
    [
        ("members.csv", "name,kind,home_community_code\na\x00b,volunteer,{community}\n", "name"),
        # Past the first 8 KiB, where the CSV reader sniffs for binary files.
        (
            "units.csv",
            "name,kind,lon,lat,note\n"
            + "x,shop,106.71,26.58,ok\n" * 600
            + "y,shop,106.71,26.58,a\x00b\n",
            "note",
        ),
    ],
)
def test_nul_in_an_imported_file_is_refused_naming_row_and_column(
    demo_client, admin, sample, name, data, field
):
    entity = name.split(".")[0]
    before = demo_client.get(f"/{entity}", params={"limit": 1}, headers=admin).json()["total"]
    content = data.format(**sample).encode()
    response = demo_client.post(
        f"/{entity}/import", files={"file": (name, content, "text/plain")}, headers=admin
    )
    body = assert_problem(response, 422, field)
    assert "must not contain a NUL character" in body["detail"]
    problems = body["report"]["problems"]
    assert [p["field"] for p in problems] == [field]
    after = demo_client.get(f"/{entity}", params={"limit": 1}, headers=admin).json()["total"]
    assert after == before


def test_nul_in_an_imported_geojson_is_refused_not_cut(demo_client, admin):
    # GDAL would read "a\u0000b" as "a": the file is refused instead.
    geojson = (
        b'{"type":"FeatureCollection","features":[{"type":"Feature",'
        b'"properties":{"name":"a\\u0000b","kind":"shop"},'
        b'"geometry":{"type":"Point","coordinates":[106.71,26.58]}}]}'
    )
    response = demo_client.post(
        "/units/import", files={"file": ("units.geojson", geojson, "text/plain")}, headers=admin
    )
    body = assert_problem(response, 422, "file")
    assert "NUL" in body["detail"]
    # The text \u0000 (an escaped backslash, then "u0000") is no NUL and reads as it is.
    escaped = geojson.replace(b"a\\u0000b", b"a\\\\u0000b")
    table = read_point_table(escaped, filename="units.geojson")
    assert table.attributes["name"].tolist() == ["a\\u0000b"]


# -- date-times at the ends of Python's calendar ---------------------------------------------
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/incidents?since=0001-01-01T00:00:00%2B05:00", "since"),
        ("/incidents?until=9999-12-31T23:59:59-05:00", "until"),
        ("/analysis/workload?until=0001-01-01", "until"),
        ("/analysis/workload?since=9999-12-31", "since"),
        ("/ogc/collections/incidents/items?datetime=0001-01-01T00:00:00%2B05:00/..", "datetime"),
        ("/ogc/collections/incidents/items?datetime=9999-12-31T23:59:59-05:00", "datetime"),
    ],
)
def test_date_times_beyond_the_calendar_are_refused(demo_client, admin, path, field):
    body = assert_problem(demo_client.get(path, headers=admin), 422, field)
    assert "between the years 1000 and 9000" in body["detail"]


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(
    "query",
    [
        "start_date=0001-01-01T00:00:00%2B05:00",
        "start_date=9999-12-31T23:59:59-05:00",
        "end_date=0001-01-01",
        "end_date=9999-12-31T23:59:59-05:00",
    ],
)
def test_open311_dates_beyond_the_calendar_are_refused_in_open311_format(
    demo_client, admin, query, fmt
):
    response = demo_client.get(f"/open311/v2/requests.{fmt}?{query}", headers=admin)
    description = assert_open311_error(response, 400, query.split("=")[0], fmt)
    assert "between the years 1000 and 9000" in description


def test_open311_xml_stays_well_formed_with_control_characters(tiny_client, tiny_db_url):
    # PostgreSQL keeps a vertical tab or \x01 (they come in from spreadsheets); XML 1.0
    # cannot carry them at all, so Open311's XML shows them as U+FFFD.
    h = auth(make_tokens(tiny_db_url, {"admin": ("admin", None)})["admin"])
    incident = {"lon": 106.005, "lat": 26.015, "category": "water", "source": "patrol"}
    created = tiny_client.post(
        "/incidents", json={**incident, "description": "a\x01b\x0bc\td"}, headers=h
    )
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    xml = tiny_client.get(f"/open311/v2/requests/{rid}.xml", headers=h)
    assert xml.status_code == 200, xml.text
    root = ET.fromstring(xml.content)
    assert root.find("request/description").text == "a\ufffdb\ufffdc\td"
    listed = ET.fromstring(tiny_client.get("/open311/v2/requests.xml", headers=h).content)
    assert [r.find("description").text for r in listed] == ["a\ufffdb\ufffdc\td"]
    as_json = tiny_client.get(f"/open311/v2/requests/{rid}.json", headers=h).json()
    assert as_json[0]["description"] == "a\x01b\x0bc\td"


def test_an_incident_reported_beyond_the_calendar_is_refused(demo_client, admin):
    incident = {"lon": LON, "lat": LAT, "category": "water", "source": "patrol"}
    for moment in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"):
        response = demo_client.post(
            "/incidents", json={**incident, "reported_at": moment}, headers=admin
        )
        assert_problem(response, 422, "reported_at")


# -- issue 10 item 8: LIKE wildcards are matched literally ------------------------------------
def test_area_name_search_matches_wildcards_literally(tiny_client, tiny_db_url):
    from sqlalchemy import text

    from service.db import make_engine

    h = auth(make_tokens(tiny_db_url, {"admin": ("admin", None)})["admin"])
    everything = tiny_client.get("/areas", params={"limit": 100}, headers=h).json()["total"]
    assert everything > 3
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        names = dict(conn.execute(text("SELECT code, name FROM area ORDER BY code LIMIT 3")).all())
        literal = {"%": "100% covered", "_": "grid_one", "\\": "back\\slash"}
        for (code, _), name in zip(names.items(), literal.values(), strict=True):
            conn.execute(text("UPDATE area SET name = :n WHERE code = :c"), {"n": name, "c": code})
    engine.dispose()

    def search(q):
        r = tiny_client.get("/areas", params={"q": q, "limit": 100}, headers=h)
        assert r.status_code == 200, r.text
        return [a["name"] for a in r.json()["items"]]

    assert search("%") == ["100% covered"]
    assert search("_") == ["grid_one"]
    assert search("\\") == ["back\\slash"]
    assert search("0% c") == ["100% covered"]
    assert search("d_o") == ["grid_one"]
    assert search("%%") == [] and search("__") == []
    assert search("k\\s") == ["back\\slash"]


# -- every GET route: NUL, numbers past 64 bits, long strings, dates at the ends of time -------
BAD_VALUES = [
    "\x00",
    "a\x00",
    HUGE,
    f"-{HUGE}",
    "x" * 5000,
    "nan",
    "5e-324",  # the smallest float: PostgreSQL's float8 arithmetic raises on underflow
    "1.7976931348623157e308",
    "0001-01-01T00:00:00+05:00",  # in UTC, before year 1
    "9999-12-31T23:59:59-05:00",  # in UTC, after year 9999
    "0001-01-01",
]
PATH_SAMPLES = {
    "fmt": "json",
    "service_code": "water",
    "service_request_id": "1",
    "collection_id": "units",
    "feature_id": "{unit_id}",
    "layers": "units",
    "layer": "units",
    "z": "14",
    "x": "13380",
    "y": "6984",
    "code": "{community}",
    "entity_id": "{unit_id}",
}
#: Query parameters read by hand, which OpenAPI does not list.
EXTRA_ROUTES = {  # other layers: their own filters and, for incidents, datetime
    "/ogc/collections/incidents/items": [
        "datetime",
        "status",
        "category",
        "source",
        "reported_grid_code",
        "generation",
    ],
    "/ogc/collections/grids/items": ["code", "name", "parent_code", "datetime"],
    "/tiles/incidents/14/13380/6984.mvt": ["status", "category", "source"],
    "/tiles/grids,units/14/13380/6984.mvt": ["generation", "kind", "code"],
}
HAND_READ = {
    "/ogc/collections/{collection_id}/items": [
        "limit",
        "offset",
        "bbox",
        "bbox-crs",
        "datetime",
        "f",
        "properties",
        "zoom",
        "simplify_m",
        "generation",
        "kind",
        "party_org",
    ],
    "/ogc/collections/{collection_id}/items/{feature_id}": ["generation"],
    "/tiles/{layers}/{z}/{x}/{y}.mvt": ["generation", "kind", "party_org"],
    "/open311/v2/requests.{fmt}": [
        "service_request_id",
        "service_code",
        "start_date",
        "end_date",
        "status",
        "jurisdiction_id",
    ],
}
# Slow routes answer 4xx to these values quickly; a value they accept would run them in full.
SKIP = {"/health", "/version"}


def _get_routes(client) -> list[tuple[str, list[str], list[str]]]:
    spec = client.get("/openapi.json").json()
    routes = []
    for path, operations in spec["paths"].items():
        if "get" not in operations or path in SKIP:
            continue
        parameters = operations["get"].get("parameters", [])
        query = [p["name"] for p in parameters if p["in"] == "query"]
        query += [q for q in HAND_READ.get(path, []) if q not in query]
        path_params = [p["name"] for p in parameters if p["in"] == "path"]
        routes.append((path, path_params, query))
    return routes + [(path, [], query) for path, query in EXTRA_ROUTES.items()]


def _answers_in_kind(path: str, response) -> str | None:
    """Return what is wrong with a refusal (None: a 4xx in the API's error format)."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:200]}"
    if response.status_code < 400:
        return None
    kind = response.headers.get("content-type", "")
    if path.startswith("/open311/"):
        return None if kind.startswith(("application/json", "text/xml")) else kind
    return None if kind.startswith("application/problem+json") else kind


def test_every_get_route_refuses_bad_parameters_without_a_server_error(demo_client, admin, sample):
    failures = []
    for path, path_params, query in _get_routes(demo_client):
        filled = {n: PATH_SAMPLES.get(n, "1").format(**sample) for n in path_params}
        url = path.format(**filled)
        for name in query:
            for value in BAD_VALUES:
                response = demo_client.get(url, params={name: value}, headers=admin)
                wrong = _answers_in_kind(path, response)
                if wrong:
                    failures.append(f"GET {url}?{name}={value[:30]!r} → {wrong}")
        for name in path_params:
            for value in BAD_VALUES:
                if "/" in value:
                    continue
                bad = path.format(**{**filled, name: quote(value, safe="")})
                response = demo_client.get(bad, headers=admin)
                wrong = _answers_in_kind(path, response)
                if wrong:
                    failures.append(f"GET {bad[:80]} → {wrong}")
    assert not failures, "\n".join(failures)
