"""Idempotency-Key beyond the plain replay: keys belong to a token and to one request, a failed
attempt leaves the key free for the retry, malformed keys are refused."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service.db import make_engine
from tests.conftest import auth, make_tokens

IN_NW = (106.005, 26.015)  # grid 990101001001001
IN_OTHER = (106.005, 26.005)  # community 990101001002
WATER = {"category": "water", "source": "patrol", "lon": IN_NW[0], "lat": IN_NW[1]}


@pytest.fixture
def h(tiny_db_url):
    tokens = make_tokens(
        tiny_db_url,
        {
            "admin": ("admin", None),
            "city": ("city_dispatcher", "990100"),
            "city2": ("city_dispatcher", "990100"),
            "other_community": ("community_dispatcher", "990101001002"),
            "community": ("community_dispatcher", "990101001001"),
        },
    )
    return {k: auth(v) for k, v in tokens.items()} | {"raw": tokens}


def _count(url: str, sql: str, **params) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text(sql), params).scalar()
    engine.dispose()
    return n


def test_the_same_key_from_another_token_is_that_tokens_own(tiny_client, h, tiny_db_url):
    key = {"Idempotency-Key": "shared-0001"}
    first = tiny_client.post("/incidents", json=WATER, headers={**h["city"], **key})
    second = tiny_client.post("/incidents", json=WATER, headers={**h["city2"], **key})
    assert (first.status_code, second.status_code) == (201, 201), second.text
    assert first.json()["id"] != second.json()["id"]
    assert "idempotent-replayed" not in second.headers
    # A narrower token never receives another token's stored answer: its own scope decides.
    third = tiny_client.post("/incidents", json=WATER, headers={**h["other_community"], **key})
    assert third.status_code == 403, third.text
    assert "id" not in third.json() and "cells" not in third.json()
    assert _count(tiny_db_url, "SELECT count(*) FROM incident") == 2


def test_the_same_key_on_another_endpoint_is_refused(tiny_client, h, tiny_db_url):
    key = {"Idempotency-Key": "case-7"}
    first = tiny_client.post("/incidents", json=WATER, headers={**h["city"], **key})
    assert first.status_code == 201, first.text
    unit = {"name": "u", "kind": "shop", "lon": IN_NW[0], "lat": IN_NW[1]}
    other = tiny_client.post("/units", json=unit, headers={**h["city"], **key})
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    assert _count(tiny_db_url, "SELECT count(*) FROM unit") == 0
    # Open311 files incidents too, but it is another request: refused in its own format.
    form = {
        "api_key": h["raw"]["city"],
        "service_code": "water",
        "lat": "26.015",
        "long": "106.005",
    }
    r = tiny_client.post("/open311/v2/requests.json", data=form, headers=key)
    assert r.status_code == 400 and "Idempotency-Key" in r.json()[0]["description"]
    assert _count(tiny_db_url, "SELECT count(*) FROM incident") == 1
    # The original request still replays.
    again = tiny_client.post("/incidents", json=WATER, headers={**h["city"], **key})
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"


def test_a_failed_first_attempt_leaves_the_key_free_for_the_retry(tiny_client, h, tiny_db_url):
    # The cadre lives in another community: the community dispatcher may not name them yet.
    cadre = tiny_client.post(
        "/members",
        json={"name": "李", "kind": "party_member", "home_community_code": "990101001002"},
        headers=h["admin"],
    )
    assert cadre.status_code == 201, cadre.text
    body = {
        "kind": "elderly_alone",
        "head_name": "王",
        "lon": IN_NW[0],
        "lat": IN_NW[1],
        "cadre_member_id": cadre.json()["id"],
    }
    key = {"Idempotency-Key": "visit-42"}
    failed = tiny_client.post("/care-households", json=body, headers={**h["community"], **key})
    assert failed.status_code == 422 and failed.json()["field"] == "cadre_member_id"
    # Nothing of the failed attempt is kept: no row, no claimed key, no stored answer.
    assert _count(tiny_db_url, "SELECT count(*) FROM care_household") == 0
    assert _count(tiny_db_url, "SELECT count(*) FROM idempotency_key WHERE key = 'visit-42'") == 0
    moved = tiny_client.patch(
        f"/members/{cadre.json()['id']}",
        json={"home_community_code": "990101001001"},
        headers=h["admin"],
    )
    assert moved.status_code == 200, moved.text
    retry = tiny_client.post("/care-households", json=body, headers={**h["community"], **key})
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    replay = tiny_client.post("/care-households", json=body, headers={**h["community"], **key})
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == retry.json()["id"]
    assert _count(tiny_db_url, "SELECT count(*) FROM care_household") == 1


@pytest.mark.parametrize(
    "key",
    ["", "x" * 201, "tab\there", "bell\x07"],
    ids=["empty", "too-long", "tab", "control"],
)
def test_malformed_keys_are_refused_and_nothing_is_written(tiny_client, h, tiny_db_url, key):
    r = tiny_client.post("/incidents", json=WATER, headers={**h["city"], "Idempotency-Key": key})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "Idempotency-Key" and "printable" in r.json()["detail"]
    form = {
        "api_key": h["raw"]["city"],
        "service_code": "water",
        "lat": "26.015",
        "long": "106.005",
    }
    o = tiny_client.post("/open311/v2/requests.json", data=form, headers={"Idempotency-Key": key})
    assert o.status_code == 400 and "Idempotency-Key" in o.json()[0]["description"]
    assert _count(tiny_db_url, "SELECT count(*) FROM incident") == 0
    assert _count(tiny_db_url, "SELECT count(*) FROM idempotency_key") == 0


def test_the_longest_key_is_accepted(tiny_client, h):
    key = {"Idempotency-Key": "k" * 200}
    first = tiny_client.post("/incidents", json=WATER, headers={**h["city"], **key})
    again = tiny_client.post("/incidents", json=WATER, headers={**h["city"], **key})
    assert (first.status_code, again.status_code) == (201, 201), first.text
    assert again.json()["id"] == first.json()["id"]
