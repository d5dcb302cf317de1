"""Open311 GeoReport v2 round trips: services, POST, GET with filters, GET by id, JSON and XML."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from tests.conftest import auth, make_tokens

IN_NW = (106.005, 26.015)


@pytest.fixture
def keys(tiny_db_url):
    from service.auth import create_token
    from service.db import make_engine

    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        hotline = create_token(
            conn, name="12319", role="intake", area_code="990100", source="hotline_12319"
        )
    engine.dispose()
    tokens = make_tokens(
        tiny_db_url,
        {
            "city": ("city_dispatcher", "990100"),
            "grid_ne": ("grid_officer", "990101001001002"),
            "planner": ("planner", "990100"),
        },
    )
    return {"hotline": hotline, **tokens}


def _post(client, key, **fields):
    form = {
        "api_key": key,
        "service_code": "water",
        "lat": str(IN_NW[1]),
        "long": str(IN_NW[0]),
        "description": "水停了",
        "address_string": "1 Zhonghua Rd",
        **fields,
    }
    return client.post("/open311/v2/requests.json", data=form)


def test_services_list_in_json_and_xml(tiny_client, keys):
    r = tiny_client.get("/open311/v2/services.json", params={"api_key": keys["hotline"]})
    assert r.status_code == 200
    codes = [s["service_code"] for s in r.json()]
    assert codes[:3] == ["water", "gas", "street_light"] and "public_order" in codes
    assert all(s["type"] == "realtime" and s["metadata"] is False for s in r.json())
    x = tiny_client.get("/open311/v2/services.xml", params={"api_key": keys["hotline"]})
    root = ET.fromstring(x.content)
    assert root.tag == "services" and root.find("service/service_code").text == "water"
    d = tiny_client.get("/open311/v2/services/gas.json", params={"api_key": keys["hotline"]})
    assert d.json() == {"service_code": "gas", "attributes": []}


def test_post_then_get_round_trip(tiny_client, keys):
    r = _post(tiny_client, keys["hotline"], media_url="https://example.org/p.jpg")
    assert r.status_code == 201, r.text
    rid = r.json()[0]["service_request_id"]
    one = tiny_client.get(f"/open311/v2/requests/{rid}.json", params={"api_key": keys["hotline"]})
    req = one.json()[0]
    assert req["status"] == "open" and req["service_code"] == "water"
    assert req["description"] == "水停了" and req["media_url"] == "https://example.org/p.jpg"
    assert req["agency_responsible"]  # the owning centre (tests/service/test_open311_lifecycle.py)
    assert abs(req["lat"] - IN_NW[1]) < 1e-9 and abs(req["long"] - IN_NW[0]) < 1e-9
    # The native API sees the same case, stamped with the hotline as its source.
    native = tiny_client.get(f"/incidents/{rid}", headers=auth(keys["city"])).json()
    assert native["source"] == "hotline_12319"
    assert native["cells"]["grid_code"] == "990101001001001"
    xml = tiny_client.get(f"/open311/v2/requests/{rid}.xml", params={"api_key": keys["hotline"]})
    root = ET.fromstring(xml.content)
    assert root.find("request/service_request_id").text == rid
    assert root.find("request/status").text == "open"


def test_get_requests_filters(tiny_client, keys):
    ids = {}
    for code in ("water", "gas", "road"):
        ids[code] = _post(tiny_client, keys["hotline"], service_code=code).json()[0][
            "service_request_id"
        ]
    # The city takes the case over from its community and cancels it: closed.
    actions = f"/cases/{ids['gas']}/actions"
    city = auth(keys["city"])
    taken = tiny_client.post(f"{actions}/take_over", json={"note": "ours"}, headers=city)
    assert taken.status_code == 200, taken.text
    closed = tiny_client.post(f"{actions}/reject", json={"reason": "out_of_scope"}, headers=city)
    assert closed.status_code == 200, closed.text

    def get(**p):
        return tiny_client.get(
            "/open311/v2/requests.json", params={"api_key": keys["hotline"], **p}
        )

    assert {r["service_request_id"] for r in get().json()} == set(ids.values())
    assert [r["service_code"] for r in get(status="closed").json()] == ["gas"]
    assert {r["service_code"] for r in get(status="open").json()} == {"water", "road"}
    assert [r["service_code"] for r in get(service_code="road").json()] == ["road"]
    both = get(service_request_id=f"{ids['water']},{ids['gas']}").json()
    assert {r["service_request_id"] for r in both} == {ids["water"], ids["gas"]}
    assert get(end_date="2000-01-01T00:00:00Z").json() == []
    # A case reported in 2020 is outside the default window (the last 90 days); a start date
    # before it brings it back, one after it leaves it out.
    old = tiny_client.post(
        "/incidents",
        json={
            "category": "water",
            "source": "hotline_12319",
            "lon": IN_NW[0],
            "lat": IN_NW[1],
            "reported_at": "2020-06-01T08:00:00Z",
        },
        headers=auth(keys["city"]),
    )
    assert old.status_code == 201, old.text
    old_id = str(old.json()["id"])
    assert {r["service_request_id"] for r in get().json()} == set(ids.values())
    since_2000 = get(start_date="2000-01-01T00:00:00Z")
    assert since_2000.status_code == 200
    assert {r["service_request_id"] for r in since_2000.json()} == {*ids.values(), old_id}
    since_2021 = get(start_date="2021-01-01T00:00:00Z").json()
    assert {r["service_request_id"] for r in since_2021} == set(ids.values())
    only_2020 = get(start_date="2020-01-01T00:00:00Z", end_date="2020-12-31T00:00:00Z").json()
    assert [r["service_request_id"] for r in only_2020] == [old_id]
    assert only_2020[0]["requested_datetime"].startswith("2020-06-01T08:00:00")
    # Scope applies: a grid officer of the neighbouring grid sees none of them.
    assert tiny_client.get("/open311/v2/requests.json", headers=auth(keys["grid_ne"])).json() == []


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"service_code": "unicorns"}, 404, "service_code"),
        ({"lat": ""}, 400, "lat, long"),
        ({"lat": "north"}, 400, "lat"),
        ({"lat": "106.005", "long": "26.015"}, 400, "swapped"),
        ({"media_url": "not a url"}, 400, "media_url"),
    ],
)
def test_post_errors_in_open311_format(tiny_client, keys, fields, status, words):
    r = _post(tiny_client, keys["hotline"], **fields)
    assert r.status_code == status, r.text
    err = r.json()[0]
    assert err["code"] == status and words in err["description"]


def test_bad_key_and_xml_errors(tiny_client):
    r = tiny_client.post(
        "/open311/v2/requests.xml",
        data={"api_key": "wg_x_y", "service_code": "water", "lat": "26", "long": "106"},
    )
    assert r.status_code == 401
    root = ET.fromstring(r.content)
    assert root.tag == "errors" and root.find("error/code").text == "401"
    assert "api_key" in root.find("error/description").text
    assert tiny_client.get("/open311/v2/services.csv").status_code == 404


def test_open311_post_is_idempotent(tiny_client, keys):
    headers = {"Idempotency-Key": "12319-0001"}
    form = {"api_key": keys["hotline"], "service_code": "water", "lat": "26.015", "long": "106.005"}
    a = tiny_client.post("/open311/v2/requests.json", data=form, headers=headers)
    b = tiny_client.post("/open311/v2/requests.json", data=form, headers=headers)
    assert a.json() == b.json()
    c = tiny_client.post(
        "/open311/v2/requests.json", data={**form, "service_code": "gas"}, headers=headers
    )
    assert c.status_code == 400 and "Idempotency-Key" in c.json()[0]["description"]


def test_open311_post_by_a_read_only_role_is_refused_and_files_nothing(
    tiny_client, keys, tiny_db_url
):
    from sqlalchemy import text

    from service.db import make_engine

    r = _post(tiny_client, keys["planner"])
    assert r.status_code == 403, r.text
    err = r.json()[0]
    assert err["code"] == 403 and "planner may not create" in err["description"]
    xml = tiny_client.post(
        "/open311/v2/requests.xml",
        data={
            "api_key": keys["planner"],
            "service_code": "water",
            "lat": "26.015",
            "long": "106.005",
        },
    )
    assert xml.status_code == 403
    assert ET.fromstring(xml.content).find("error/code").text == "403"
    engine = make_engine(tiny_db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incident")).scalar() == 0
    engine.dispose()
    # The planner still reads through Open311.
    assert (
        tiny_client.get("/open311/v2/requests.json", params={"api_key": keys["planner"]}).json()
        == []
    )
