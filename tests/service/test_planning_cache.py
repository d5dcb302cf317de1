"""The planning page's coverage analyses are kept per scope until what they read changes
(service.gap_cache): a repeated page reuses them, a facility added in scope (through the
API, so its change is announced) drops the reach, and no scope sees another's results.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import auth, make_tokens
from tests.service.test_pages import TOKEN_SPECS, seed

D1 = "990101"
IN_NW = (106.003, 26.013)


@pytest.fixture
def tokens(tiny_db_url):
    return make_tokens(tiny_db_url, {**TOKEN_SPECS, "d1_planner": ("planner", D1)})


@pytest.fixture
def client(tiny_client, tokens):
    def post(path, body):
        r = tiny_client.post(path, json=body, headers=auth(tokens["admin"]))
        assert r.status_code in (200, 201), r.text
        return r.json()

    seed(post)
    client = tiny_client
    client.post_as_admin = post
    return client


def _page(client, token) -> str:
    r = client.get("/pages/planning", headers=auth(token))
    assert r.status_code == 200, r.text
    return re.sub(r"_[0-9a-f]{32}", "", r.text)  # folium's element ids differ per page


def _cache(client):
    return client.app.state.gap_cache


def _wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_repeated_planning_page_reuses_its_analyses(client, tokens):
    first = _page(client, tokens["planner"])
    runs = _cache(client).runs
    assert runs == 4  # reach, staffing, workload, topology
    assert _page(client, tokens["planner"]) == first
    assert _cache(client).runs == runs


def test_a_facility_added_in_scope_reruns_the_reach(client, tokens):
    _page(client, tokens["planner"])
    runs = _cache(client).runs
    before = _page(client, tokens["planner"])
    assert _cache(client).runs == runs
    client.post_as_admin(
        "/facilities", {"name": "hall", "kind": "service_hall", "lon": IN_NW[0], "lat": IN_NW[1]}
    )
    # The change arrives through the database's notification (LISTEN, another connection).
    assert _wait_for(lambda: len(_cache(client)) < 4)
    after = _page(client, tokens["planner"])
    assert _cache(client).runs == runs + 1  # the reach only
    assert after != before  # the new hall covers part of the city: the gaps moved
    _page(client, tokens["planner"])
    assert _cache(client).runs == runs + 1


def test_a_new_team_member_reruns_the_staffing(client, tokens):
    _page(client, tokens["planner"])
    runs = _cache(client).runs
    client.post_as_admin(
        "/members",
        {
            "name": "Zhao Lei",
            "kind": "grid_staff",
            "home_community_code": "990102001002",
            "team_role": "grid_manager",
            "serving_grid_code": "990102001002002",
            "phone": "138 0000 0002",
        },
    )
    _page(client, tokens["planner"])
    assert _cache(client).runs == runs + 1  # members announce nothing: the fingerprint


def test_results_are_not_shared_across_scopes(client, tokens):
    city = _page(client, tokens["planner"])
    runs = _cache(client).runs
    district = _page(client, tokens["d1_planner"])
    assert _cache(client).runs == runs + 4
    assert district != city
    assert "990102001002002" in city and "990102001002002" not in district


def test_nothing_is_kept_while_changes_are_not_heard(client, tokens):
    tiles = client.app.state.tile_cache
    _page(client, tokens["planner"])
    tiles.listening = False
    try:
        runs = _cache(client).runs
        _page(client, tokens["planner"])
        _page(client, tokens["planner"])
        assert _cache(client).runs == runs + 8
    finally:
        tiles.listening = True
