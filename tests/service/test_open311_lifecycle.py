"""Open311 requests read their status, notes, agency, deadline and last update from the case
lifecycle; the service request updates list (what FixMyStreet-style clients poll) shows the
public events of a case, never internal comments, supervision or deadline events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy import text

from service.db import make_engine
from tests.conftest import _client, _drop_database, auth, tiny_database

CITY, COMMUNITY, NW_GRID = "990100", "990101001001", "990101001001001"
IN_NW = (106.005, 26.015)
ROLES = {
    "city": ("city_dispatcher", CITY),
    "community": ("community_dispatcher", COMMUNITY),
    "grid": ("grid_officer", NW_GRID),
}
GRID = {"assignee": {"kind": "grid", "code": NW_GRID}}


@pytest.fixture(scope="module")
def db_url():
    url = tiny_database("wangge_test_open311_lifecycle")
    yield url
    _drop_database(url)


@pytest.fixture(scope="module")
def h(db_url):
    from service.auth import create_token

    engine = make_engine(db_url)
    with engine.begin() as conn:
        out = {
            name: auth(create_token(conn, name=name, role=role, area_code=area))
            for name, (role, area) in ROLES.items()
        }
    engine.dispose()
    return out


@pytest.fixture(scope="module")
def client(db_url):
    with _client(db_url) as c:
        yield c


def _scalar(url, sql, **params):
    engine = make_engine(url)
    with engine.connect() as conn:
        value = conn.execute(text(sql), params).scalar()
    engine.dispose()
    return value


def _report(client, h) -> int:
    body = {"category": "gas", "source": "patrol", "lon": IN_NW[0], "lat": IN_NW[1]}
    r = client.post("/incidents", json=body, headers=h["grid"])
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _act(client, h, who, case_id, action, body=None) -> dict:
    r = client.post(f"/cases/{case_id}/actions/{action}", json=body, headers=h[who])
    assert r.status_code == 200, r.text
    return r.json()


def _request(client, case_id, **params) -> dict:
    r = client.get(f"/open311/v2/requests/{case_id}.json", params=params)
    assert r.status_code == 200, r.text
    return r.json()[0]


def _updates(client, **params) -> list[dict]:
    r = client.get("/open311/v2/servicerequestupdates.json", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_request_follows_its_case(client, h, db_url):
    case_id = _report(client, h)
    community = _scalar(db_url, "SELECT name FROM area WHERE code = :c LIMIT 1", c=COMMUNITY)
    req = _request(client, case_id)
    assert req["status"] == "open" and req["status_notes"] == "received, awaiting dispatch"
    assert req["agency_responsible"] == community
    case = client.get(f"/cases/{case_id}", headers=h["community"]).json()
    assert datetime.fromisoformat(req["expected_datetime"]) == datetime.fromisoformat(
        case["step_due_at"]
    ).replace(microsecond=0)

    _act(client, h, "community", case_id, "accept")
    case = _act(client, h, "community", case_id, "dispatch", GRID)
    _act(client, h, "community", case_id, "comment", {"note": "INTERNAL: caller is rude"})
    _act(client, h, "city", case_id, "supervise", {"note": "INTERNAL: hurry"})
    req = _request(client, case_id)
    assert req["status_notes"] == "dispatched to the team responsible"
    assert datetime.fromisoformat(req["expected_datetime"]) == datetime.fromisoformat(
        case["step_due_at"]
    ).replace(microsecond=0)
    last = _scalar(db_url, "SELECT max(at) FROM case_event WHERE incident_id = :i", i=case_id)
    assert datetime.fromisoformat(req["updated_datetime"]) == last.replace(microsecond=0)

    _act(client, h, "grid", case_id, "sign")
    _act(client, h, "grid", case_id, "feedback", {"note": "INTERNAL: valve 7 shut"})
    _act(client, h, "community", case_id, "verify", {"note": "Leak repaired, supply restored"})
    req = _request(client, case_id)
    assert req["status"] == "closed" and req["expected_datetime"] is None
    assert req["status_notes"] == "Leak repaired, supply restored"
    xml = client.get(f"/open311/v2/requests/{case_id}.xml")
    root = ET.fromstring(xml.content)
    assert root.find("request/status_notes").text == "Leak repaired, supply restored"

    updates = _updates(client, service_request_id=str(case_id))
    assert [u["description"] for u in updates] == [
        "received",
        "accepted",
        "dispatched to the team responsible",
        "the team responsible has taken it on",
        "work reported done, awaiting verification",
        "verified and closed: Leak repaired, supply restored",
    ]
    assert [u["status"] for u in updates] == ["open"] * 5 + ["closed"]
    assert set(updates[0]) == {
        "update_id",
        "service_request_id",
        "status",
        "updated_datetime",
        "description",
        "media_url",
    }
    assert all(u["service_request_id"] == str(case_id) for u in updates)
    assert "INTERNAL" not in str(updates) and "INTERNAL" not in str(req)


def test_a_rejection_reason_is_the_status_note(client, h):
    case_id = _report(client, h)
    _act(client, h, "community", case_id, "reject", {"reason": "out_of_scope"})
    req = _request(client, case_id)
    assert req["status"] == "closed" and req["status_notes"] == "not accepted: out_of_scope"
    updates = _updates(client, service_request_id=str(case_id))
    assert updates[-1]["description"] == "not accepted: out_of_scope"
    assert updates[-1]["status"] == "closed"


def test_updates_by_period_in_json_and_xml(client, h):
    before = datetime.now(UTC) - timedelta(seconds=1)
    case_id = _report(client, h)
    _act(client, h, "community", case_id, "accept")
    start = before.isoformat()
    got = _updates(client, start_date=start)
    assert [u["description"] for u in got if u["service_request_id"] == str(case_id)] == [
        "received",
        "accepted",
    ]
    assert got == sorted(got, key=lambda u: (u["updated_datetime"], int(u["update_id"])))
    assert _updates(client, start_date=start, end_date=before.isoformat()) == []
    x = client.get("/open311/v2/servicerequestupdates.xml", params={"start_date": start})
    root = ET.fromstring(x.content)
    assert root.tag == "service_request_updates"
    assert root.find("request_update/update_id") is not None


@pytest.mark.parametrize(
    "params, words",
    [
        ({"start_date": "yesterday"}, "start_date"),
        ({"service_request_id": "x"}, "service_request_id"),
        ({"colour": "red"}, "colour: unknown parameter"),
    ],
)
def test_update_errors_in_open311_format(client, params, words):
    r = client.get("/open311/v2/servicerequestupdates.json", params=params)
    assert r.status_code == 400
    assert words in r.json()[0]["description"]
