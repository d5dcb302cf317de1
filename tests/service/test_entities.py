"""Units, facilities, members, care households and incidents: mapped to cells on write,
scoped like everything else, sensitive data guarded, history kept across redrawn boundaries."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from shapely.geometry import box, mapping
from sqlalchemy import text

from geo.coords import wgs84_to_bd09, wgs84_to_gcj02
from service.db import make_engine
from tests.conftest import auth, make_tokens

NW_GRID = "990101001001001"  # 106.00-106.01, 26.01-26.02
NE_OF_NW = "990101001001002"  # 106.01-106.02, 26.01-26.02
OTHER_COMMUNITY_GRID = "990101001002001"  # 106.00-106.01, 26.00-26.01
IN_NW = (106.005, 26.015)
IN_NE = (106.015, 26.015)
IN_OTHER = (106.005, 26.005)


@pytest.fixture
def h(tiny_db_url):
    tokens = make_tokens(
        tiny_db_url,
        {
            "admin": ("admin", None),
            "city": ("city_dispatcher", "990100"),
            "district": ("district_dispatcher", "990101"),
            "community": ("community_dispatcher", "990101001001"),
            "grid": ("grid_officer", NW_GRID),
            "grid_ne": ("grid_officer", NE_OF_NW),
            "planner": ("planner", "990100"),
        },
    )
    return {k: auth(v) for k, v in tokens.items()}


def _unit(lon, lat, **kw):
    return {"name": "Guiyang Water Co.", "kind": "enterprise", "lon": lon, "lat": lat, **kw}


def _sql(url, sql, **params):
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text(sql), params).all()
    engine.dispose()
    return rows


# -- create/read/update/delete within and outside scope ---------------------------------------
def test_unit_crud_inside_the_callers_community(tiny_client, h):
    r = tiny_client.post(
        "/units", json=_unit(*IN_NE, party_org="branch", party_members=12), headers=h["community"]
    )
    assert r.status_code == 201, r.text
    unit = r.json()
    assert unit["cells"] == {
        "generation": 1,
        "grid_code": NE_OF_NW,
        "community_code": "990101001001",
        "district_code": "990101",
    }
    assert r.headers["location"] == f"/units/{unit['id']}"
    got = tiny_client.get(f"/units/{unit['id']}", headers=h["community"]).json()
    assert got["party_org"] == "branch" and got["party_members"] == 12

    moved = tiny_client.patch(
        f"/units/{unit['id']}", json={"lon": IN_NW[0], "lat": IN_NW[1]}, headers=h["community"]
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["cells"]["grid_code"] == NW_GRID
    renamed = tiny_client.patch(
        f"/units/{unit['id']}", json={"co_building": True}, headers=h["community"]
    ).json()
    assert renamed["co_building"] is True and renamed["cells"]["grid_code"] == NW_GRID

    listing = tiny_client.get("/units", params={"grid": NW_GRID}, headers=h["community"]).json()
    assert [u["id"] for u in listing["items"]] == [unit["id"]]
    assert tiny_client.delete(f"/units/{unit['id']}", headers=h["community"]).status_code == 204
    assert tiny_client.get(f"/units/{unit['id']}", headers=h["community"]).status_code == 404


def test_writes_outside_the_callers_area_are_refused_and_nothing_is_written(
    tiny_client, h, tiny_db_url
):
    r = tiny_client.post("/units", json=_unit(*IN_OTHER), headers=h["community"])
    assert r.status_code == 403
    assert "outside your area" in r.json()["detail"]
    assert _sql(tiny_db_url, "SELECT count(*) FROM unit")[0][0] == 0
    created = tiny_client.post("/units", json=_unit(*IN_NW), headers=h["community"])
    assert created.status_code == 201, created.text
    unit = created.json()
    moved = tiny_client.patch(
        f"/units/{unit['id']}",
        json={"lon": IN_OTHER[0], "lat": IN_OTHER[1]},
        headers=h["community"],
    )
    assert moved.status_code == 403
    still = tiny_client.get(f"/units/{unit['id']}", headers=h["community"]).json()
    assert still["cells"]["grid_code"] == NW_GRID


def test_grid_officer_sees_only_own_grid_and_planner_cannot_write(tiny_client, h):
    mine = tiny_client.post("/units", json=_unit(*IN_NW), headers=h["district"])
    theirs = tiny_client.post("/units", json=_unit(*IN_NE), headers=h["district"])
    assert (mine.status_code, theirs.status_code) == (201, 201), mine.text + theirs.text
    mine, theirs = mine.json(), theirs.json()
    assert tiny_client.get(f"/units/{theirs['id']}", headers=h["grid"]).status_code == 404
    assert [u["id"] for u in tiny_client.get("/units", headers=h["grid"]).json()["items"]] == [
        mine["id"]
    ]
    # Grid officers report incidents but do not manage units; planners only read.
    assert tiny_client.post("/units", json=_unit(*IN_NW), headers=h["grid"]).status_code == 403
    assert tiny_client.post("/units", json=_unit(*IN_NW), headers=h["planner"]).status_code == 403
    assert tiny_client.delete(f"/units/{mine['id']}", headers=h["grid"]).status_code == 403
    assert tiny_client.get("/units", headers=h["planner"]).json()["total"] == 2


def test_facilities_and_counts(tiny_client, h):
    for kind in ("service_hall", "service_station", "party_member_station"):
        r = tiny_client.post(
            "/facilities",
            json={
                "name": kind,
                "kind": kind,
                "lon": IN_NW[0],
                "lat": IN_NW[1],
                "floor_area_m2": 850,
            },
            headers=h["community"],
        )
        assert r.status_code == 201, r.text
    counts = tiny_client.get(
        "/facilities/counts", params={"by": "grid,kind"}, headers=h["city"]
    ).json()
    assert sorted(c["kind"] for c in counts) == [
        "party_member_station",
        "service_hall",
        "service_station",
    ]
    assert all(c["grid"] == NW_GRID and c["count"] == 1 for c in counts)
    bad = tiny_client.get("/facilities/counts", params={"by": "colour"}, headers=h["city"])
    assert bad.status_code == 422 and bad.json()["field"] == "by"


# -- members ------------------------------------------------------------------------------------
def test_members_registered_in_a_community_serving_a_grid(tiny_client, h):
    body = {
        "name": "王芳",
        "kind": "grid_staff",
        "home_community_code": "990101001002",
        "team_role": "grid_manager",
        "serving_grid_code": NW_GRID,
    }
    r = tiny_client.post("/members", json=body, headers=h["district"])
    assert r.status_code == 201, r.text
    member = r.json()
    # Registered elsewhere, serving in the officer's grid: the grid officer sees the member.
    assert tiny_client.get(f"/members/{member['id']}", headers=h["grid"]).status_code == 200
    assert tiny_client.get(f"/members/{member['id']}", headers=h["grid_ne"]).status_code == 404
    listing = tiny_client.get(
        "/members", params={"team_role": "grid_manager"}, headers=h["community"]
    ).json()
    assert [m["name"] for m in listing["items"]] == ["王芳"]
    for bad, field in [
        ({**body, "home_community_code": NW_GRID}, "home_community_code"),
        ({**body, "serving_grid_code": "990101001001"}, "serving_grid_code"),
        ({**body, "team_role": None}, "team_role"),
        ({**body, "kind": "mayor"}, "kind"),
        ({**body, "age": 40}, "age"),
    ]:
        r = tiny_client.post("/members", json=bad, headers=h["district"])
        assert r.status_code == 422, (field, r.text)
        assert field in r.text


# -- care households: sensitive -------------------------------------------------------------
def test_care_household_details_only_for_entitled_roles_and_every_read_is_logged(
    tiny_client, h, tiny_db_url
):
    body = {
        "kind": "elderly_alone",
        "head_name": "李奶奶",
        "address": "1-2-301",
        "lon": IN_NW[0],
        "lat": IN_NW[1],
        "notes": "lives alone, visit weekly",
    }
    r = tiny_client.post("/care-households", json=body, headers=h["community"])
    assert r.status_code == 201, r.text
    hid = r.json()["id"]
    second = tiny_client.post(
        "/care-households",
        json={**body, "kind": "hardship", "lon": IN_NE[0], "lat": IN_NE[1]},
        headers=h["community"],
    )
    assert second.status_code == 201, second.text

    assert tiny_client.get(f"/care-households/{hid}", headers=h["grid"]).json()["head_name"] == (
        "李奶奶"
    )
    listing = tiny_client.get("/care-households", headers=h["community"]).json()
    assert listing["total"] == 2
    # The neighbouring grid's officer does not even learn it exists.
    assert tiny_client.get(f"/care-households/{hid}", headers=h["grid_ne"]).status_code == 404
    # Planners and the city centre see counts, never names.
    for role in ("planner", "city"):
        r = tiny_client.get("/care-households", headers=h[role])
        assert r.status_code == 403 and "counts" in r.json()["detail"]
        assert tiny_client.get(f"/care-households/{hid}", headers=h[role]).status_code == 403
        counts = tiny_client.get(
            "/care-households/counts", params={"by": "kind"}, headers=h[role]
        ).json()
        assert counts == [{"kind": "elderly_alone", "count": 1}, {"kind": "hardship", "count": 1}]
        assert "李奶奶" not in str(counts)
    log = _sql(tiny_db_url, "SELECT role, action, entity_id FROM access_log ORDER BY id")
    assert ("grid_officer", "read", hid) in [tuple(x) for x in log]
    assert sum(1 for x in log if x.role == "community_dispatcher" and x.action == "list") == 2


def test_cadre_must_be_a_member_in_scope(tiny_client, h):
    body = {
        "kind": "hardship",
        "head_name": "x",
        "lon": IN_NW[0],
        "lat": IN_NW[1],
        "cadre_member_id": 999,
    }
    r = tiny_client.post("/care-households", json=body, headers=h["community"])
    assert r.status_code == 422 and r.json()["field"] == "cadre_member_id"


# -- incidents, coordinates ---------------------------------------------------------------------
@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:4490", "GCJ-02", "BD-09"])
def test_every_input_crs_lands_in_the_same_grid(tiny_client, h, crs):
    lon, lat = 106.0098, 26.0195  # 20 m inside the north-western grid's corner
    if crs == "GCJ-02":
        lon, lat = wgs84_to_gcj02(lon, lat)
    elif crs == "BD-09":
        lon, lat = wgs84_to_bd09(lon, lat)
    body = {
        "category": "street_light",
        "source": "patrol",
        "lon": float(lon),
        "lat": float(lat),
        "crs": crs,
    }
    r = tiny_client.post("/incidents", json=body, headers=h["grid"])
    assert r.status_code == 201, r.text
    inc = r.json()
    assert abs(inc["lon"] - 106.0098) < 1e-7 and abs(inc["lat"] - 26.0195) < 1e-7
    assert inc["cells"]["grid_code"] == NW_GRID
    assert inc["reported"] == {"generation": 1, "grid_code": NW_GRID}


def test_unconverted_gcj02_would_land_in_the_wrong_grid(tiny_client, h):
    lon, lat = wgs84_to_gcj02(106.0098, 26.0195)
    body = {"category": "water", "source": "patrol", "lon": float(lon), "lat": float(lat)}
    r = tiny_client.post("/incidents", json=body, headers=h["city"])
    assert r.json()["cells"]["grid_code"] != NW_GRID


@pytest.mark.parametrize(
    ("point", "field", "words"),
    [
        ({"lon": 26.01, "lat": 106.01}, "lon,lat", "swapped"),
        ({"lon": 2.35, "lat": 48.85}, "lon,lat", "outside China"),
        ({"lon": 106.0, "lat": 26.0, "crs": "EPSG:3857"}, "crs", "crs"),
        ({"lon": 106.0, "lat": 95.0}, "lat", ""),
        ({"lon": "east", "lat": 26.0}, "lon", ""),
    ],
)
def test_bad_coordinates_are_refused_saying_which(tiny_client, h, point, field, words):
    body = {"category": "water", "source": "patrol", **point}
    r = tiny_client.post("/incidents", json=body, headers=h["city"])
    assert r.status_code == 422, r.text
    assert field in (r.json().get("field") or r.json()["title"])
    assert words in r.json()["detail"]


def test_nan_and_infinity_are_refused(tiny_client, h):
    for raw in (
        '{"category":"water","source":"patrol","lon":NaN,"lat":26}',
        '{"category":"water","source":"patrol","lon":106,"lat":Infinity}',
    ):
        r = tiny_client.post(
            "/incidents", content=raw, headers={**h["city"], "content-type": "application/json"}
        )
        assert r.status_code == 422, r.text


def test_incident_outside_every_grid_is_kept_in_the_city_queue(tiny_client, h):
    body = {"category": "road", "source": "resident", "lon": 106.2, "lat": 26.2}
    r = tiny_client.post("/incidents", json=body, headers=h["city"])
    assert r.status_code == 201
    assert r.json()["cells"]["grid_code"] is None
    queue = tiny_client.get("/incidents", params={"unassigned": "true"}, headers=h["city"]).json()
    assert [i["id"] for i in queue["items"]] == [r.json()["id"]]
    # Below the city level nobody is handed a case outside their area.
    assert (
        tiny_client.get("/incidents", params={"unassigned": "true"}, headers=h["district"]).json()[
            "total"
        ]
        == 0
    )
    # A district dispatcher cannot file it at all: it is outside their area.
    assert tiny_client.post("/incidents", json=body, headers=h["district"]).status_code == 403


def test_incident_status_workflow_and_filters(tiny_client, h):
    inc = tiny_client.post(
        "/incidents",
        json={
            "category": "gas",
            "source": "patrol",
            "lon": IN_NW[0],
            "lat": IN_NW[1],
            "attachments": ["https://example.org/a.jpg"],
        },
        headers=h["grid"],
    ).json()
    assert inc["status"] == "new" and inc["attachments"] == ["https://example.org/a.jpg"]
    # The status follows the case's lifecycle (tests/service/test_cases.py): accepted is open,
    # cancelled is closed.
    cases = f"/cases/{inc['id']}/actions"
    assert tiny_client.post(f"{cases}/accept", headers=h["community"]).status_code == 200
    opened = tiny_client.get(f"/incidents/{inc['id']}", headers=h["grid"]).json()
    assert opened["status"] == "open" and opened["closed_at"] is None
    r = tiny_client.post(f"{cases}/reject", json={"reason": "not_a_case"}, headers=h["community"])
    assert r.status_code == 200, r.text
    closed = tiny_client.get(f"/incidents/{inc['id']}", headers=h["grid"]).json()
    assert closed["status"] == "closed" and closed["closed_at"] is not None
    assert (
        tiny_client.get("/incidents", params={"status": "closed"}, headers=h["grid"]).json()[
            "total"
        ]
        == 1
    )
    # A PATCH cannot set the status at all.
    bad = tiny_client.patch(f"/incidents/{inc['id']}", json={"status": "open"}, headers=h["grid"])
    assert bad.status_code == 422
    bad = tiny_client.get("/incidents", params={"colour": "red"}, headers=h["grid"])
    assert bad.status_code == 422 and "colour" in bad.text


# -- boundaries redrawn ----------------------------------------------------------------------
def test_new_generation_remaps_entities_and_keeps_where_incidents_were_reported(tiny_client, h):
    unit = tiny_client.post("/units", json=_unit(*IN_NW), headers=h["admin"])
    inc = tiny_client.post(
        "/incidents",
        json={"category": "water", "source": "patrol", "lon": IN_NW[0], "lat": IN_NW[1]},
        headers=h["admin"],
    )
    assert (unit.status_code, inc.status_code) == (201, 201), unit.text + inc.text
    unit, inc = unit.json(), inc.json()
    gen = tiny_client.post("/generations", json={"description": "merge"}, headers=h["admin"])
    assert gen.status_code == 201, gen.text
    gen = gen.json()["id"]
    retired = tiny_client.post(
        f"/generations/{gen}/retire", json={"codes": [NW_GRID, NE_OF_NW]}, headers=h["admin"]
    )
    assert retired.json() == {"retired": 2}
    merged = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": mapping(box(106.0, 26.01, 106.02, 26.02)),
                "properties": {
                    "code": "990101001001003",
                    "name": "merged",
                    "level": "grid",
                    "parent_code": "990101001001",
                },
            }
        ],
    }
    assert (
        tiny_client.post(f"/generations/{gen}/areas", json=merged, headers=h["admin"]).status_code
        == 200
    )
    assert tiny_client.post(f"/generations/{gen}/activate", headers=h["admin"]).status_code == 200

    now = tiny_client.get(f"/units/{unit['id']}", headers=h["admin"]).json()
    assert now["cells"] == {
        "generation": gen,
        "grid_code": "990101001001003",
        "community_code": "990101001001",
        "district_code": "990101",
    }
    inc_now = tiny_client.get(f"/incidents/{inc['id']}", headers=h["admin"]).json()
    assert inc_now["cells"]["grid_code"] == "990101001001003"
    assert inc_now["reported"] == {"generation": 1, "grid_code": NW_GRID}
    by_reported = tiny_client.get(
        "/incidents", params={"reported_grid_code": NW_GRID}, headers=h["admin"]
    ).json()
    assert [i["id"] for i in by_reported["items"]] == [inc["id"]]


# -- idempotency ---------------------------------------------------------------------------------
def test_idempotency_key_replays_and_refuses_a_different_body(tiny_client, h):
    body = {"category": "water", "source": "hotline_12319", "lon": IN_NW[0], "lat": IN_NW[1]}
    key = {"Idempotency-Key": "case-2026-0001"}
    first = tiny_client.post("/incidents", json=body, headers={**h["city"], **key})
    again = tiny_client.post("/incidents", json=body, headers={**h["city"], **key})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = tiny_client.post(
        "/incidents", json={**body, "category": "gas"}, headers={**h["city"], **key}
    )
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"


def test_twenty_concurrent_identical_requests_make_exactly_one_incident(
    tiny_server, h, tiny_db_url
):
    body = {
        "category": "water",
        "source": "hotline_12319",
        "lon": IN_NW[0],
        "lat": IN_NW[1],
        "description": "水管爆裂",
    }
    headers = {**h["city"], "Idempotency-Key": "hotline-20261127-0042"}

    async def fire():
        async with httpx.AsyncClient(base_url=tiny_server.base_url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/incidents", json=body, headers=headers) for _ in range(20))
            )

    responses = asyncio.run(fire())
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert _sql(tiny_db_url, "SELECT count(*) FROM incident")[0][0] == 1


POINT_BODIES = {
    "units": {"name": "u", "kind": "shop"},
    "facilities": {"name": "f", "kind": "service_station"},
    "care-households": {"kind": "dispute", "head_name": "赵"},
    "incidents": {"category": "road", "source": "patrol"},
}


@pytest.mark.parametrize("entity", sorted(POINT_BODIES))
def test_every_point_entity_is_scoped_on_create_read_update_delete(tiny_client, h, entity):
    body = POINT_BODIES[entity]
    inside = tiny_client.post(
        f"/{entity}", json={**body, "lon": IN_NW[0], "lat": IN_NW[1]}, headers=h["community"]
    )
    assert inside.status_code == 201, inside.text
    assert inside.json()["cells"]["grid_code"] == NW_GRID
    outside = tiny_client.post(
        f"/{entity}", json={**body, "lon": IN_OTHER[0], "lat": IN_OTHER[1]}, headers=h["community"]
    )
    assert outside.status_code == 403
    other = tiny_client.post(
        f"/{entity}", json={**body, "lon": IN_OTHER[0], "lat": IN_OTHER[1]}, headers=h["district"]
    )
    assert other.status_code == 201, other.text
    other = other.json()
    # The community dispatcher can neither read, change nor delete the other community's.
    assert tiny_client.get(f"/{entity}/{other['id']}", headers=h["community"]).status_code == 404
    assert (
        tiny_client.patch(
            f"/{entity}/{other['id']}",
            json={"lon": IN_NW[0], "lat": IN_NW[1]},
            headers=h["community"],
        ).status_code
        == 404
    )
    assert tiny_client.delete(f"/{entity}/{other['id']}", headers=h["community"]).status_code == 404
    listed = tiny_client.get(f"/{entity}", headers=h["community"]).json()
    assert [i["id"] for i in listed["items"]] == [inside.json()["id"]]
    assert (
        tiny_client.delete(f"/{entity}/{inside.json()['id']}", headers=h["community"]).status_code
        == 204
    )


# -- members: writes outside the caller's area ----------------------------------------------
OTHER_COMMUNITY = "990101001002"
MEMBER = {"name": "周", "kind": "grid_staff", "team_role": "grid_manager"}


def test_member_patch_and_delete_outside_the_callers_area_are_refused(tiny_client, h, tiny_db_url):
    theirs = tiny_client.post(
        "/members",
        json={
            **MEMBER,
            "home_community_code": OTHER_COMMUNITY,
            "serving_grid_code": OTHER_COMMUNITY_GRID,
        },
        headers=h["district"],
    )
    assert theirs.status_code == 201, theirs.text
    mid = theirs.json()["id"]
    patched = tiny_client.patch(f"/members/{mid}", json={"name": "x"}, headers=h["community"])
    assert patched.status_code == 404
    assert tiny_client.delete(f"/members/{mid}", headers=h["community"]).status_code == 404
    assert tiny_client.get(f"/members/{mid}", headers=h["district"]).json()["name"] == "周"
    # Creating one wholly in another community is refused, and nothing is written.
    r = tiny_client.post(
        "/members",
        json={
            **MEMBER,
            "home_community_code": OTHER_COMMUNITY,
            "serving_grid_code": OTHER_COMMUNITY_GRID,
        },
        headers=h["community"],
    )
    assert r.status_code == 403 and "outside your area" in r.json()["detail"]
    # Moving one's own member wholly out of the area is refused and changes nothing.
    mine = tiny_client.post(
        "/members",
        json={**MEMBER, "home_community_code": "990101001001", "serving_grid_code": NW_GRID},
        headers=h["community"],
    )
    assert mine.status_code == 201, mine.text
    moved = tiny_client.patch(
        f"/members/{mine.json()['id']}",
        json={"home_community_code": OTHER_COMMUNITY, "serving_grid_code": OTHER_COMMUNITY_GRID},
        headers=h["community"],
    )
    assert moved.status_code == 403, moved.text
    still = tiny_client.get(f"/members/{mine.json()['id']}", headers=h["community"]).json()
    assert (still["home_community_code"], still["serving_grid_code"]) == ("990101001001", NW_GRID)
    rows = _sql(tiny_db_url, "SELECT home_community_code FROM member ORDER BY id")
    assert [r[0] for r in rows] == [OTHER_COMMUNITY, "990101001001"]
    # A grid officer manages no members at all.
    r = tiny_client.delete(f"/members/{mine.json()['id']}", headers=h["grid"])
    assert r.status_code == 403


REFERENCE_OUTSIDE = {
    "serving_grid_code": {
        "home_community_code": "990101001001",
        "serving_grid_code": OTHER_COMMUNITY_GRID,
    },
    "home_community_code": {"home_community_code": OTHER_COMMUNITY, "serving_grid_code": NW_GRID},
}


@pytest.mark.parametrize("field", sorted(REFERENCE_OUTSIDE))
def test_a_member_referring_to_an_area_outside_the_callers_is_refused(
    tiny_client, h, tiny_db_url, field
):
    r = tiny_client.post(
        "/members", json={**MEMBER, **REFERENCE_OUTSIDE[field]}, headers=h["community"]
    )
    assert r.status_code in (403, 422), r.text
    assert r.json()["field"] == field
    assert _sql(tiny_db_url, "SELECT count(*) FROM member")[0][0] == 0


def test_a_member_cannot_be_sent_to_serve_a_grid_outside_the_callers_area(tiny_client, h):
    mine = tiny_client.post(
        "/members",
        json={**MEMBER, "home_community_code": "990101001001", "serving_grid_code": NW_GRID},
        headers=h["community"],
    )
    assert mine.status_code == 201, mine.text
    moved = tiny_client.patch(
        f"/members/{mine.json()['id']}",
        json={"serving_grid_code": OTHER_COMMUNITY_GRID},
        headers=h["community"],
    )
    assert moved.status_code in (403, 422), moved.text
    still = tiny_client.get(f"/members/{mine.json()['id']}", headers=h["community"]).json()
    assert still["serving_grid_code"] == NW_GRID


# -- re-mapping on activation -------------------------------------------------------------------
def test_activation_remaps_every_point_kind_and_leaves_uncovered_ones_outside_every_grid(
    tiny_client, h
):
    admin = h["admin"]

    def create(path, body):
        r = tiny_client.post(path, json=body, headers=admin)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    sw = (106.005, 26.005)  # grid 990101001002001, retired below without a successor
    east = (106.035, 26.015)  # district 990102, retired below with everything in it
    ids = {
        "facility_nw": create(
            "/facilities",
            {"name": "hall", "kind": "service_hall", "lon": IN_NW[0], "lat": IN_NW[1]},
        ),
        "facility_sw": create(
            "/facilities",
            {"name": "station", "kind": "service_station", "lon": sw[0], "lat": sw[1]},
        ),
        "care_nw": create(
            "/care-households",
            {"kind": "hardship", "head_name": "甲", "lon": IN_NW[0], "lat": IN_NW[1]},
        ),
        "care_ne": create(
            "/care-households",
            {"kind": "dispute", "head_name": "乙", "lon": IN_NE[0], "lat": IN_NE[1]},
        ),
        "unit_ne": create("/units", _unit(*IN_NE)),
        "incident_east": create(
            "/incidents", {"category": "road", "source": "patrol", "lon": east[0], "lat": east[1]}
        ),
    }
    gen = tiny_client.post("/generations", json={"description": "redraw"}, headers=admin)
    assert gen.status_code == 201, gen.text
    gen = gen.json()["id"]
    retired = tiny_client.post(
        f"/generations/{gen}/retire",
        json={"codes": [NW_GRID, NE_OF_NW, OTHER_COMMUNITY_GRID, "990102"]},
        headers=admin,
    )
    assert retired.json() == {"retired": 2 + 1 + 7}  # three grids; a district, 2 + 4 below
    merged = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": mapping(box(106.0, 26.01, 106.02, 26.02)),
                "properties": {
                    "code": "990101001001003",
                    "name": "merged",
                    "level": "grid",
                    "parent_code": "990101001001",
                },
            }
        ],
    }
    loaded = tiny_client.post(f"/generations/{gen}/areas", json=merged, headers=admin)
    assert loaded.status_code == 200, loaded.text
    r = tiny_client.post(f"/generations/{gen}/activate", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["remapped"] == {"unit": 1, "facility": 2, "care_household": 2, "incident": 1}

    def cells(path, key):
        got = tiny_client.get(f"{path}/{ids[key]}", headers=admin)
        assert got.status_code == 200, got.text
        return got.json()["cells"]

    merged_cells = {
        "generation": gen,
        "grid_code": "990101001001003",
        "community_code": "990101001001",
        "district_code": "990101",
    }
    assert cells("/facilities", "facility_nw") == merged_cells
    assert cells("/care-households", "care_nw") == merged_cells
    assert cells("/care-households", "care_ne") == merged_cells
    assert cells("/units", "unit_ne") == merged_cells
    # Left in a community without a grid, or in the city alone: kept, outside every grid.
    assert cells("/facilities", "facility_sw") == {
        "generation": gen,
        "grid_code": None,
        "community_code": OTHER_COMMUNITY,
        "district_code": "990101",
    }
    assert cells("/incidents", "incident_east") == {
        "generation": gen,
        "grid_code": None,
        "community_code": None,
        "district_code": None,
    }
    unassigned = tiny_client.get("/facilities", params={"unassigned": "true"}, headers=admin)
    assert [f["id"] for f in unassigned.json()["items"]] == [ids["facility_sw"]]
    queue = tiny_client.get("/incidents", params={"unassigned": "true"}, headers=h["city"])
    assert [i["id"] for i in queue.json()["items"]] == [ids["incident_east"]]
    # The district that lost its grid still sees its facility; the new grid's community sees
    # its two households.
    district = tiny_client.get("/facilities", headers=h["district"]).json()
    assert sorted(f["id"] for f in district["items"]) == sorted(
        [ids["facility_nw"], ids["facility_sw"]]
    )
    care = tiny_client.get("/care-households", headers=h["community"]).json()
    assert sorted(c["id"] for c in care["items"]) == sorted([ids["care_nw"], ids["care_ne"]])


@pytest.mark.parametrize("field", sorted(REFERENCE_OUTSIDE))
def test_a_member_import_referring_to_an_area_outside_the_callers_is_refused(
    tiny_client, h, tiny_db_url, field
):
    import pandas as pd

    row = {"name": "周", "kind": "grid_staff", "team_role": "grid_manager", "phone": ""}
    data = pd.DataFrame([{**row, **REFERENCE_OUTSIDE[field]}]).to_csv(index=False).encode()
    r = tiny_client.post("/members/import", files={"file": ("m.csv", data)}, headers=h["community"])
    assert r.status_code == 422, r.text
    assert [p["field"] for p in r.json()["report"]["problems"]] == [field]
    assert _sql(tiny_db_url, "SELECT count(*) FROM member")[0][0] == 0
