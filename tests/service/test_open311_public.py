"""Open311 reads without a key (issue 10 item 4): what a GeoReport v2 client sees.

Discovery and reads are keyless in the specification; filing needs a key. A keyless read
shows public fields only; a key still sees what its role and area allow; a setting turns
keyless reads off.
"""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import pandas as pd
import pytest
from sqlalchemy import text

from service.db import make_engine
from service.open311_public import PUBLIC_FIELDS
from tests.conftest import auth, make_tokens

IN_NW = (106.005, 26.015)
IN_EAST = (106.025, 26.015)  # district 990102
#: What a resident may send with a filing that names them; none of it may be shown publicly.
IDENTITY = {
    "email": "li.na@example.org",
    "first_name": "娜",
    "last_name": "李",
    "phone": "13912345678",
    "device_id": "device-5f1e-77aa",
    "account_id": "acct-90210",
}


@pytest.fixture
def keys(tiny_db_url):
    from service.auth import create_token

    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        hotline = create_token(
            conn, name="12319", role="intake", area_code="990100", source="hotline_12319"
        )
    engine.dispose()
    tokens = make_tokens(
        tiny_db_url,
        {
            "admin": ("admin", None),
            "city": ("city_dispatcher", "990100"),
            "grid_ne": ("grid_officer", "990101001001002"),
        },
    )
    return {"hotline": hotline, **tokens}


def _file(client, key, lon_lat=IN_NW, **fields):
    form = {
        "api_key": key,
        "service_code": "water",
        "lat": str(lon_lat[1]),
        "long": str(lon_lat[0]),
        "description": "水停了",
        "address_string": "1 Zhonghua Rd",
        **fields,
    }
    r = client.post("/open311/v2/requests.json", data=form)
    assert r.status_code == 201, r.text
    return r.json()[0]["service_request_id"]


def _count_incidents(url) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM incident")).scalar()
    engine.dispose()
    return n


def test_discovery_and_reads_need_no_key(tiny_client, keys):
    rid = _file(tiny_client, keys["hotline"])
    services = tiny_client.get("/open311/v2/services.json")
    assert services.status_code == 200, services.text
    assert [s["service_code"] for s in services.json()][:2] == ["water", "gas"]
    one = tiny_client.get("/open311/v2/services/gas.xml")
    assert one.status_code == 200 and ET.fromstring(one.content).find("service_code").text == "gas"
    listing = tiny_client.get("/open311/v2/requests.json")
    assert listing.status_code == 200, listing.text
    assert [r["service_request_id"] for r in listing.json()] == [rid]
    by_id = tiny_client.get(f"/open311/v2/requests/{rid}.xml")
    assert by_id.status_code == 200, by_id.text
    root = ET.fromstring(by_id.content)
    assert root.find("request/service_request_id").text == rid
    assert root.find("request/description").text == "水停了"
    # The filters work without a key too.
    none = tiny_client.get("/open311/v2/requests.json", params={"service_code": "gas"})
    assert none.json() == []
    missing = tiny_client.get("/open311/v2/requests/987654.json")
    assert missing.status_code == 404 and missing.json()[0]["code"] == 404


def test_a_keyless_read_shows_public_fields_only(tiny_client, keys, tiny_db_url):
    rid = _file(tiny_client, keys["hotline"], media_url="https://example.org/p.jpg", **IDENTITY)
    # An import keeps columns it does not know aside (properties): a contact among them.
    csv = pd.DataFrame(
        [
            {
                "category": "road",
                "source": "patrol",
                "description": "坑",
                "lon": IN_EAST[0],
                "lat": IN_EAST[1],
                "reporter_phone": "13700000000",
                "reporter_name": "王五",
            }
        ]
    ).to_csv(index=False)
    imported = tiny_client.post(
        "/incidents/import", files={"file": ("i.csv", csv.encode())}, headers=auth(keys["city"])
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["kept_in_properties"] == ["reporter_phone", "reporter_name"]
    # A sensitive record beside them never shows through Open311.
    care = tiny_client.post(
        "/care-households",
        json={"kind": "hardship", "head_name": "赵六", "lon": IN_NW[0], "lat": IN_NW[1]},
        headers=auth(keys["admin"]),
    )
    assert care.status_code == 201, care.text

    listing = tiny_client.get("/open311/v2/requests.json")
    assert listing.status_code == 200, listing.text
    found = listing.json()
    # Every area's incidents (the public record), each with the public fields, no others.
    assert {r["service_code"] for r in found} == {"water", "road"}
    assert all(list(r) == list(PUBLIC_FIELDS) for r in found)
    mine = next(r for r in found if r["service_request_id"] == rid)
    assert mine["description"] == "水停了" and mine["address"] == "1 Zhonghua Rd"
    assert mine["media_url"] == "https://example.org/p.jpg"
    # Coordinates as stored.
    assert (mine["long"], mine["lat"]) == pytest.approx(IN_NW, abs=1e-9)
    for fmt in ("json", "xml"):
        for path in (f"/open311/v2/requests.{fmt}", f"/open311/v2/requests/{rid}.{fmt}"):
            body = tiny_client.get(path).content.decode()
            secrets = [*IDENTITY.values(), "13700000000", "王五", "赵六", "hotline_12319"]
            assert not [s for s in secrets if s in body], path
            assert "patrol" not in body and "care" not in body and "properties" not in body
    xml = ET.fromstring(tiny_client.get("/open311/v2/requests.xml").content)
    assert [c.tag for c in xml.find("request")] == list(PUBLIC_FIELDS)


def test_a_key_sees_what_its_role_and_area_allow(tiny_client, keys):
    rid = _file(tiny_client, keys["hotline"])
    # The neighbouring grid's officer reads with its key: its area, as before.
    officer = {"api_key": keys["grid_ne"]}
    assert tiny_client.get("/open311/v2/requests.json", params=officer).json() == []
    assert tiny_client.get(f"/open311/v2/requests/{rid}.json", params=officer).status_code == 404
    header = tiny_client.get("/open311/v2/requests.json", headers=auth(keys["grid_ne"]))
    assert header.status_code == 200 and header.json() == []
    city = tiny_client.get("/open311/v2/requests.json", params={"api_key": keys["city"]})
    assert [r["service_request_id"] for r in city.json()] == [rid]
    # A bad key is refused, never read as no key.
    for params, headers in (
        ({"api_key": "wg_x_y"}, {}),
        ({"access_token": "wg_x_y"}, {}),
        ({}, {"Authorization": "Bearer wg_x_y"}),
        ({}, {"X-API-Key": "wg_x_y"}),
    ):
        for path in ("/open311/v2/requests.json", "/open311/v2/services.json"):
            r = tiny_client.get(path, params=params, headers=headers)
            assert r.status_code == 401, (path, params, headers, r.text)
            assert r.json()[0]["code"] == 401
    bad = tiny_client.get("/open311/v2/requests.xml", params={"api_key": "wg_x_y"})
    assert bad.status_code == 401 and ET.fromstring(bad.content).tag == "errors"


def test_filing_still_needs_a_key(tiny_client, keys, tiny_db_url):
    form = {"service_code": "water", "lat": str(IN_NW[1]), "long": str(IN_NW[0])}
    for fmt in ("json", "xml"):
        r = tiny_client.post(f"/open311/v2/requests.{fmt}", data=form)
        assert r.status_code == 401, r.text
    assert ET.fromstring(r.content).find("error/code").text == "401"
    assert _count_incidents(tiny_db_url) == 0


def test_an_empty_list_is_a_list_the_client_parses(tiny_client, keys):
    r = tiny_client.get("/open311/v2/requests.xml")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(r.content)
    assert root.tag == "service_requests" and len(root) == 0
    assert b"<service_requests></service_requests>" in r.content
    assert tiny_client.get("/open311/v2/requests.json").json() == []
    # Empty fields are written as the specification writes them, open and closed.
    _file(tiny_client, keys["hotline"])
    one = tiny_client.get("/open311/v2/requests.xml").content
    assert b"<address_id></address_id>" in one and b"/>" not in one
    definition = tiny_client.get("/open311/v2/services/water.xml").content
    assert b"<attributes></attributes>" in definition


def _client_with(url, public_reads: bool):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import APISettings, DatabaseSettings, Open311Settings, Settings

    settings = Settings(
        db=DatabaseSettings(DATABASE_URL=url),
        api=APISettings(token_cache_seconds=0),
        open311=Open311Settings(public_reads=public_reads),
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_keyless_reads_can_be_turned_off(tiny_db_url, keys, monkeypatch):
    from service.settings import Open311Settings

    assert Open311Settings().public_reads is True
    monkeypatch.setenv("WANGGE_OPEN311_PUBLIC_READS", "false")
    assert Open311Settings().public_reads is False
    with _client_with(tiny_db_url, public_reads=False) as client:
        rid = _file(client, keys["hotline"])
        for path in (
            "/open311/v2/services.json",
            "/open311/v2/services/water.json",
            "/open311/v2/requests.json",
            f"/open311/v2/requests/{rid}.json",
        ):
            r = client.get(path)
            assert r.status_code == 401, (path, r.text)
            assert r.json()[0]["code"] == 401 and "api_key" in r.json()[0]["description"]
        xml = client.get("/open311/v2/requests.xml")
        assert xml.status_code == 401 and ET.fromstring(xml.content).tag == "errors"
        # Keys work as before.
        keyed = client.get("/open311/v2/requests.json", params={"api_key": keys["city"]})
        assert [r["service_request_id"] for r in keyed.json()] == [rid]


def test_the_georeport_client_reads_without_a_key(tiny_server, tiny_client, keys):
    """The ``georeport`` package (a GeoReport v2 client from PyPI), as a resident's app uses it."""
    from georeport import GeoReport

    ids = [_file(tiny_client, keys["hotline"], service_code=c) for c in ("water", "road")]
    root = f"{tiny_server.base_url}/open311/v2"
    as_json = GeoReport(root, output_format="json")
    assert as_json.api_key is None
    assert [s["service_code"] for s in as_json.get_service_list()][:2] == ["water", "gas"]
    assert as_json.get_service_definition("road") == {"service_code": "road", "attributes": []}
    found = as_json.get_service_requests()
    assert sorted(r["service_request_id"] for r in found) == sorted(ids)
    assert as_json.get_service_request(ids[0])["service_code"] == "water"
    assert as_json.get_service_requests(service_code="gas") == []
    assert [r["service_code"] for r in as_json.get_service_requests(status="open")] == [
        "road",
        "water",
    ]
    as_xml = GeoReport(root, output_format="xml")
    assert [s["service_code"] for s in as_xml.get_service_list()][:2] == ["water", "gas"]
    assert as_xml.get_service_definition("road")["service_code"] == "road"
    listed = as_xml.get_service_requests()
    assert sorted(r["service_request_id"] for r in listed) == sorted(ids)
    one = as_xml.get_service_request(ids[1])
    assert one["service_code"] == "road" and float(one["lat"]) == pytest.approx(IN_NW[1])
    assert json.dumps(one, ensure_ascii=False).count("hotline") == 0


def test_the_api_description_says_reads_need_no_key(tiny_client):
    paths = tiny_client.get("/openapi.json").json()["paths"]
    for path in (
        "/open311/v2/services.{fmt}",
        "/open311/v2/services/{service_code}.{fmt}",
        "/open311/v2/requests.{fmt}",
        "/open311/v2/requests/{service_request_id}.{fmt}",
    ):
        assert {} in paths[path]["get"]["security"], path
    assert {} not in paths["/open311/v2/requests.{fmt}"]["post"]["security"]
