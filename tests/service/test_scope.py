"""Area-scoped access: every role sees its own area (and its ancestors), never a neighbour's."""

from __future__ import annotations

import pytest

from tests.conftest import auth, make_tokens

OWN_GRID = "990101001001001"
SIBLING_GRID = "990101001001002"  # same community
COUSIN_GRID = "990102001001001"  # other district
OWN_COMMUNITY = "990101001001"
OTHER_COMMUNITY = "990101001002"  # same district
# Points well inside each grid.
POINT = {
    OWN_GRID: (106.005, 26.015),
    SIBLING_GRID: (106.015, 26.015),
    COUSIN_GRID: (106.025, 26.015),
    "990101001002001": (106.005, 26.005),
}


@pytest.fixture
def h(tiny_db_url):
    tokens = make_tokens(
        tiny_db_url,
        {
            "grid": ("grid_officer", OWN_GRID),
            "community": ("community_dispatcher", OWN_COMMUNITY),
            "district": ("district_dispatcher", "990101"),
            "city": ("city_dispatcher", "990100"),
            "planner": ("planner", "990101"),
            "admin": ("admin", None),
        },
    )
    return {name: auth(tok) for name, tok in tokens.items()}


def _codes(client, headers, **params):
    r = client.get("/areas", params={"limit": 1000, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return {a["code"] for a in r.json()["items"]}


@pytest.mark.parametrize("other", [SIBLING_GRID, COUSIN_GRID, "990101001002001"])
def test_grid_officer_cannot_read_another_grid(tiny_client, h, other):
    # by code
    r = tiny_client.get(f"/areas/{other}", headers=h["grid"])
    assert r.status_code == 404
    assert tiny_client.get(f"/areas/{other}/history", headers=h["grid"]).status_code == 404
    assert tiny_client.get(f"/areas/{other}/ancestors", headers=h["grid"]).status_code == 404
    # by lookup
    lon, lat = POINT[other]
    r = tiny_client.get("/lookup", params={"lon": lon, "lat": lat}, headers=h["grid"])
    assert r.status_code == 403
    assert other not in r.text
    # by listing
    assert other not in _codes(tiny_client, h["grid"], level="grid")
    assert other not in _codes(tiny_client, h["grid"], parent=OWN_COMMUNITY)


def test_grid_officer_sees_own_grid_and_its_ancestors_only(tiny_client, h):
    assert _codes(tiny_client, h["grid"]) == {"990100", "990101", OWN_COMMUNITY, OWN_GRID}
    lon, lat = POINT[OWN_GRID]
    r = tiny_client.get("/lookup", params={"lon": lon, "lat": lat}, headers=h["grid"])
    assert r.status_code == 200 and r.json()["grid"]["code"] == OWN_GRID
    children = tiny_client.get(f"/areas/{OWN_COMMUNITY}/children", headers=h["grid"]).json()
    assert [c["code"] for c in children] == [OWN_GRID]
    assert tiny_client.get("/me", headers=h["grid"]).json()["role"] == "grid_officer"


def test_community_dispatcher_cannot_see_another_community(tiny_client, h):
    assert tiny_client.get(f"/areas/{OTHER_COMMUNITY}", headers=h["community"]).status_code == 404
    lon, lat = POINT["990101001002001"]
    r = tiny_client.get("/lookup", params={"lon": lon, "lat": lat}, headers=h["community"])
    assert r.status_code == 403
    children = tiny_client.get("/areas/990101/children", headers=h["community"]).json()
    assert [c["code"] for c in children] == [OWN_COMMUNITY]
    assert _codes(tiny_client, h["community"], level="grid") == {OWN_GRID, SIBLING_GRID}


def test_each_role_sees_exactly_its_subtree(tiny_client, h):
    grids_of = {
        "district": {g for g in POINT if g.startswith("990101")} | {"990101001002002"},
        "city": None,
        "admin": None,
        "planner": {g for g in POINT if g.startswith("990101")} | {"990101001002002"},
    }
    all_grids = _codes(tiny_client, h["admin"], level="grid")
    assert len(all_grids) == 8
    for role, expected in grids_of.items():
        assert _codes(tiny_client, h[role], level="grid") == (expected or all_grids), role
    # The district dispatcher's lookup of the other district is refused.
    lon, lat = POINT[COUSIN_GRID]
    assert (
        tiny_client.get(
            "/lookup", params={"lon": lon, "lat": lat}, headers=h["district"]
        ).status_code
        == 403
    )


def test_only_admins_manage_tokens_and_boundaries(tiny_client, h):
    body = {"name": "x", "role": "grid_officer", "area_code": OWN_GRID}
    for role in ("grid", "community", "district", "city", "planner"):
        assert tiny_client.post("/tokens", json=body, headers=h[role]).status_code == 403
    r = tiny_client.post("/tokens", json=body, headers=h["admin"])
    assert r.status_code == 201
    new = {"Authorization": f"Bearer {r.json()['token']}"}
    assert tiny_client.get("/me", headers=new).status_code == 200
    token_id = r.json()["token"].split("_")[1]
    assert tiny_client.delete(f"/tokens/{token_id}", headers=h["admin"]).status_code == 204
    assert tiny_client.get("/me", headers=new).status_code == 401


@pytest.mark.parametrize(
    ("role", "area", "field"),
    [
        ("grid_officer", OWN_COMMUNITY, "area_code"),  # wrong level for the role
        ("community_dispatcher", None, "area_code"),
        ("district_dispatcher", "990199", "area_code"),  # no such area
        ("mayor", "990100", "role"),
    ],
)
def test_token_creation_checks_role_and_area(tiny_client, h, role, area, field):
    r = tiny_client.post(
        "/tokens", json={"name": "x", "role": role, "area_code": area}, headers=h["admin"]
    )
    assert r.status_code in (404, 422)
    assert field in r.text
