"""Bad input gets a 4xx problem+json that names the field; nothing is half written."""

from __future__ import annotations

import pytest
from shapely.geometry import box, mapping

from tests.conftest import auth, make_tokens


@pytest.fixture
def tokens(tiny_db_url):
    return make_tokens(
        tiny_db_url, {"admin": ("admin", None), "city": ("city_dispatcher", "990100")}
    )


def _problem(r, status, field):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert field in (body.get("field") or "") + body["title"] + body["detail"]
    return body


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"lon": "abc", "lat": 26}, "lon"),
        ({"lon": 106, "lat": "north"}, "lat"),
        ({"lon": 200, "lat": 26}, "lon"),
        ({"lon": 106, "lat": -91}, "lat"),
        ({"lon": "nan", "lat": 26}, "lon"),
        ({"lon": 106, "lat": "inf"}, "lat"),
        ({"lat": 26}, "lon"),
        ({"lon": 106, "lat": 26, "crs": "EPSG:3857"}, "crs"),
        ({"lon": 106, "lat": 26, "crs": "mars"}, "crs"),
        ({"lon": 106, "lat": 26, "generation": 0}, "generation"),
    ],
)
def test_bad_lookup_parameters(tiny_client, tokens, params, field):
    _problem(tiny_client.get("/lookup", params=params, headers=auth(tokens["city"])), 422, field)


def test_unknown_generation_is_404(tiny_client, tokens):
    r = tiny_client.get(
        "/lookup", params={"lon": 106, "lat": 26, "generation": 99}, headers=auth(tokens["city"])
    )
    _problem(r, 404, "generation")


def test_unknown_and_malformed_codes(tiny_client, tokens):
    h = auth(tokens["city"])
    _problem(tiny_client.get("/areas/990101009009009", headers=h), 404, "code")
    _problem(tiny_client.get("/areas/12ab", headers=h), 422, "code")
    _problem(tiny_client.get("/areas", params={"level": "province"}, headers=h), 422, "level")
    _problem(tiny_client.get("/areas", params={"limit": 10**6}, headers=h), 422, "limit")
    _problem(tiny_client.get("/areas/990100", params={"srid": 99999}, headers=h), 422, "srid")


def test_batch_errors_name_the_point(tiny_client, tokens):
    h = auth(tokens["city"])
    r = tiny_client.post("/lookup/batch", json={"points": [[106, 26], [106, 95]]}, headers=h)
    body = _problem(r, 422, "points.1")
    assert any(e["field"].startswith("points.1") for e in body["errors"])
    _problem(tiny_client.post("/lookup/batch", json={"points": []}, headers=h), 422, "points")
    too_many = {"points": [[106.0, 26.0]] * 2_001}
    _problem(tiny_client.post("/lookup/batch", json=too_many, headers=h), 413, "points")


def test_unauthenticated_requests_are_refused_except_health_and_docs(tiny_client):
    assert tiny_client.get("/health").status_code == 200
    assert tiny_client.get("/docs").status_code == 200
    assert tiny_client.get("/openapi.json").status_code == 200
    for path in ("/areas", "/lookup?lon=106&lat=26", "/generations", "/me", "/version"):
        r = tiny_client.get(path)
        _problem(r, 401, "Authorization")
    r = tiny_client.get("/areas", headers={"Authorization": "Bearer wg_nope_nope"})
    _problem(r, 401, "Authorization")
    r = tiny_client.get("/areas", headers={"X-API-Key": "garbage"})
    _problem(r, 401, "Authorization")


def _count_areas(client, h):
    return client.get("/generations", headers=h).json()[0]["areas"]


def test_malformed_geometry_on_import_names_the_feature_and_imports_nothing(tiny_client, tokens):
    h = auth(tokens["admin"])
    gen = tiny_client.post("/generations", json={"description": "bad import"}, headers=h).json()[
        "id"
    ]
    before = _count_areas(tiny_client, h)
    good = {
        "type": "Feature",
        "properties": {
            "code": "990101001001003",
            "name": "ok",
            "level": "grid",
            "parent_code": "990101001001",
        },
        "geometry": mapping(box(106.0, 26.01, 106.001, 26.011)),
    }
    bowtie = {
        "type": "Feature",
        "properties": {
            "code": "990101001001004",
            "name": "bowtie",
            "level": "grid",
            "parent_code": "990101001001",
        },
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[106, 26], [106.01, 26.01], [106.01, 26], [106, 26.01], [106, 26]]],
        },
    }
    broken = {
        "type": "Feature",
        "properties": {
            "code": "990101001001005",
            "name": "x",
            "level": "grid",
            "parent_code": "990101001001",
        },
        "geometry": {"type": "Polygon", "coordinates": [[[106, 26], [106.01]]]},
    }
    orphan = {
        "type": "Feature",
        "properties": {
            "code": "990101009001001",
            "name": "orphan",
            "level": "grid",
            "parent_code": "990101009001",
        },
        "geometry": mapping(box(106.0, 26.0, 106.001, 26.001)),
    }
    point = {
        **good,
        "properties": {**good["properties"], "code": "990101001001006"},
        "geometry": {"type": "Point", "coordinates": [106, 26]},
    }
    fc = {"type": "FeatureCollection", "features": [good, bowtie, broken, orphan, point]}
    r = tiny_client.post(f"/generations/{gen}/areas", json=fc, headers=h)
    body = _problem(r, 422, "geometry")
    problems = {(e["row"], e["field"]) for e in body["errors"]}
    assert problems == {
        (1, "geometry"),
        (2, "geometry"),
        (3, "properties.parent_code"),
        (4, "geometry"),
    }
    assert "Self-intersection" in body["errors"][0]["reason"]
    assert "Nothing was imported" in body["detail"]
    assert _count_areas(tiny_client, h) == before

    wrong_crs = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
        "features": [good],
    }
    _problem(tiny_client.post(f"/generations/{gen}/areas", json=wrong_crs, headers=h), 422, "crs")
    assert _count_areas(tiny_client, h) == before
