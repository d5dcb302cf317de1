"""Boundary plans over the API: drafts, every edit (valid and refused), If-Match, diff,
publish (old incidents stay on their old grids; a refused publish changes nothing)."""

from __future__ import annotations

import threading

import httpx
import pytest
from shapely.geometry import LineString, MultiPolygon, Polygon, box, mapping
from sqlalchemy import text

from fixtures.tiny import grid_box
from service.db import make_engine
from tests.conftest import auth, make_tokens

DISTRICT = "990101"
NORTH, SOUTH = "990101001001", "990101001002"
NW, NE = f"{NORTH}001", f"{NORTH}002"  # x 106.00–106.01 and 106.01–106.02, y 26.01–26.02
SW, SE = f"{SOUTH}001", f"{SOUTH}002"  # the same columns, y 26.00–26.01
IN_NW = (106.0025, 26.015)  # west half of NW
IN_NW_EAST = (106.0075, 26.015)  # east half of NW
CUT_NW = LineString([(106.005, 26.0095), (106.005, 26.0205)])  # north–south through NW


@pytest.fixture
def h(tiny_db_url):
    tokens = make_tokens(
        tiny_db_url,
        {
            "planner": ("planner", DISTRICT),
            "planner2": ("planner", DISTRICT),
            "other_planner": ("planner", "990102"),
            "admin": ("admin", None),
            "community": ("community_dispatcher", NORTH),
            "grid": ("grid_officer", NW),
            "city": ("city_dispatcher", "990100"),
        },
    )
    return {name: auth(token) for name, token in tokens.items()}


def _sql(url, sql, **params):
    engine = make_engine(url)
    with engine.begin() as conn:
        result = conn.execute(text(sql), params)
        rows = result.all() if result.returns_rows else []
    engine.dispose()
    return rows


def _draft(client, h, area=DISTRICT, who="planner", name="Redraw north"):
    r = client.post("/plans", json={"name": name, "area_code": area}, headers=h[who])
    assert r.status_code == 201, r.text
    assert r.headers["ETag"] == '"1"'
    return r.json()["id"]


def _edit(client, h, plan_id, body, version, who="planner"):
    return client.post(
        f"/plans/{plan_id}/edits",
        json=body,
        headers={**h[who], "If-Match": f'"{version}"'},
    )


def _problem(r, status, reason=None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    if reason is not None:
        assert body["reason"] == reason, body
    return body


def _keys(client, h, plan_id, who="planner"):
    fc = client.get(f"/plans/{plan_id}/grids", headers=h[who]).json()
    return {f["properties"]["key"]: f["properties"]["code"] for f in fc["features"]}


def test_a_draft_copies_the_areas_grids_and_leaves_dispatch_alone(tiny_client, h):
    plan_id = _draft(tiny_client, h)
    plan = tiny_client.get(f"/plans/{plan_id}", headers=h["planner"]).json()
    assert plan["grids"] == 4 and plan["status"] == "draft" and plan["base_is_current"]
    assert _keys(tiny_client, h, plan_id) == {c: c for c in (NW, NE, SW, SE)}
    r = _edit(tiny_client, h, plan_id, {"op": "split_line", "key": NW, "line": mapping(CUT_NW)}, 1)
    assert r.status_code == 200, r.text
    # Dispatch still sees the current grids.
    look = tiny_client.get(
        "/lookup", params={"lon": IN_NW[0], "lat": IN_NW[1]}, headers=h["city"]
    ).json()
    assert look["grid"]["code"] == NW
    # Several drafts may exist; a community is a plan's area too.
    second = _draft(tiny_client, h, area=NORTH, name="North only")
    assert _keys(tiny_client, h, second) == {NW: NW, NE: NE}
    listed = tiny_client.get("/plans", headers=h["planner"]).json()
    assert [p["id"] for p in listed] == [second, plan_id]
    # A retried creation with its Idempotency-Key makes one draft.
    body = {"name": "Retried", "area_code": NORTH}
    key = {**h["planner"], "Idempotency-Key": "draft-1"}
    first, again = (tiny_client.post("/plans", json=body, headers=key) for _ in range(2))
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"]
    other = tiny_client.post("/plans", json={**body, "name": "Other"}, headers=key)
    assert _problem(other, 422)["field"] == "Idempotency-Key"


def test_only_planners_and_admins_in_their_area(tiny_client, h):
    for who in ("community", "grid", "city"):
        r = tiny_client.post("/plans", json={"name": "x", "area_code": DISTRICT}, headers=h[who])
        _problem(r, 403)
    r = tiny_client.post(
        "/plans", json={"name": "x", "area_code": DISTRICT}, headers=h["other_planner"]
    )
    _problem(r, 403)
    plan_id = _draft(tiny_client, h)
    # A plan outside one's area is not found, as if it did not exist (as entities are);
    # a role that may not plan at all is forbidden.
    for r in (
        tiny_client.get(f"/plans/{plan_id}", headers=h["other_planner"]),
        tiny_client.get(f"/plans/{plan_id}/grids", headers=h["other_planner"]),
        _edit(tiny_client, h, plan_id, {"op": "merge", "keys": [NW, NE]}, 1, who="other_planner"),
    ):
        assert _problem(r, 404)["detail"] == f"no plan {plan_id} that you may see"
    assert _problem(tiny_client.get("/plans/999999", headers=h["planner"]), 404)["detail"] == (
        "no plan 999999 that you may see"
    )
    _problem(tiny_client.post(f"/plans/{plan_id}/publish", headers=h["community"]), 403)
    assert tiny_client.get("/plans", headers=h["other_planner"]).json() == []
    assert tiny_client.get(f"/plans/{plan_id}", headers=h["admin"]).status_code == 200
    r = tiny_client.post("/plans", json={"name": "x", "area_code": NW}, headers=h["admin"])
    _problem(r, 422)  # a grid is no plan area
    r = tiny_client.post("/plans", json={"name": "x", "area_code": "990100"}, headers=h["admin"])
    _problem(r, 422)  # nor is the city


def test_every_edit_valid_with_measures_and_history(tiny_client, h):
    plan_id = _draft(tiny_client, h)
    v = 1
    # Split by a line: NW → two new grids without codes.
    r = _edit(tiny_client, h, plan_id, {"op": "split_line", "key": NW, "line": mapping(CUT_NW)}, v)
    assert r.status_code == 200, r.text
    body = r.json()
    v += 1
    assert r.headers["ETag"] == f'"{v}"' and body["version"] == v
    assert body["removed"] == [NW]
    added = [f["properties"] for f in body["added"]["features"]]
    assert [(a["key"], a["code"], a["parent_code"]) for a in added] == [
        ("n1", None, NORTH),
        ("n2", None, NORTH),
    ]
    measured = {m["key"]: m for m in body["metrics"]["grids"]}
    assert set(measured) == {"n1", "n2"}
    assert measured["n1"]["area_m2"] == pytest.approx(measured["n2"]["area_m2"], rel=1e-6)
    # Merge the two halves back into one grid.
    r = _edit(tiny_client, h, plan_id, {"op": "merge", "keys": ["n1", "n2"], "name": "NW"}, v)
    assert r.status_code == 200, r.text
    v += 1
    assert r.json()["removed"] == ["n1", "n2"]
    # Split into 3 balanced parts.
    r = _edit(tiny_client, h, plan_id, {"op": "split_parts", "key": "n3", "parts": 3}, v)
    assert r.status_code == 200, r.text
    v += 1
    assert len(r.json()["added"]["features"]) == 3
    keys = _keys(tiny_client, h, plan_id)
    assert set(keys) == {"n4", "n5", "n6", NE, SW, SE}
    # Reassign the west strip of NE to its western neighbour (one of the pieces).
    strip = box(106.0095, 26.0095, 106.0125, 26.0205)
    neighbour = next(
        f["properties"]["key"]
        for f in tiny_client.get(f"/plans/{plan_id}/grids", headers=h["planner"]).json()["features"]
        if f["properties"]["key"].startswith("n")
        and Polygon(f["geometry"]["coordinates"][0][0]).intersects(
            box(106.0099, 26.0150, 106.01, 26.0151)
        )
    )
    body = {"op": "reassign", "from_key": NE, "to_key": neighbour, "region": mapping(strip)}
    r = _edit(tiny_client, h, plan_id, body, v)
    assert r.status_code == 200, r.text
    v += 1
    assert sorted(r.json()["removed"]) == sorted([NE, neighbour])
    assert _keys(tiny_client, h, plan_id)[NE] is None  # redrawn: its code goes on publish
    # Move the shared edge of SW and SE 200 m east.
    line = LineString([(106.012, 25.9995), (106.012, 26.0105)])
    r = _edit(
        tiny_client, h, plan_id, {"op": "move_edge", "keys": [SW, SE], "line": mapping(line)}, v
    )
    assert r.status_code == 200, r.text
    v += 1
    # Replace all from a GeoJSON set: back to the four current grids, codes kept.
    features = [
        {
            "type": "Feature",
            "properties": {"code": c, "name": c},
            "geometry": mapping(grid_box(1, n, g)),
        }
        for c, n, g in ((NW, 1, 1), (NE, 1, 2), (SW, 2, 1), (SE, 2, 2))
    ]
    r = _edit(tiny_client, h, plan_id, {"op": "replace_all", "features": features}, v)
    assert r.status_code == 200, r.text
    v += 1
    keys = _keys(tiny_client, h, plan_id)
    assert keys[NW] == NW and keys[SW] == SW  # kept (they were unchanged in the plan)
    # Each edit recorded: who, what.
    edits = tiny_client.get(f"/plans/{plan_id}/edits", headers=h["planner"]).json()
    assert [e["op"] for e in edits] == [
        "split_line",
        "merge",
        "split_parts",
        "reassign",
        "move_edge",
        "replace_all",
    ]
    assert {e["actor_name"] for e in edits} == {"planner"}
    assert edits[0]["payload"]["key"] == NW and edits[0]["added"] == ["n1", "n2"]
    assert edits[-1]["payload"] == {"op": "replace_all", "features": 4}


def test_refused_edits_name_the_problem_and_change_nothing(tiny_client, h):
    plan_id = _draft(tiny_client, h)
    cases = [
        (
            {
                "op": "split_line",
                "key": NW,
                "line": {
                    "type": "LineString",
                    "coordinates": [
                        [106.0, 26.01],
                        [106.01, 26.02],
                        [106.01, 26.01],
                        [106.0, 26.02],
                    ],
                },
            },
            "self_intersecting",
        ),
        (
            {
                "op": "split_line",
                "key": NW,
                "line": {
                    "type": "MultiLineString",
                    "coordinates": [[[106.005, 26.0], [106.005, 26.03]]],
                },
            },
            "multipart",
        ),
        (
            {
                "op": "split_line",
                "key": NW,
                "line": mapping(LineString([(106.003, 26.013), (106.006, 26.016)])),
            },
            "line_misses",
        ),
        (
            {
                "op": "reassign",
                "from_key": NW,
                "to_key": NE,
                "region": mapping(
                    MultiPolygon(
                        [box(106.008, 26.011, 106.01, 26.012), box(106.008, 26.015, 106.01, 26.016)]
                    )
                ),
            },
            "multipart",
        ),
        (
            {
                "op": "reassign",
                "from_key": NW,
                "to_key": NE,
                "region": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [106.0, 26.01],
                            [106.01, 26.02],
                            [106.01, 26.01],
                            [106.0, 26.02],
                            [106.0, 26.01],
                        ]
                    ],
                },
            },
            "self_intersecting",
        ),
        ({"op": "merge", "keys": [NE, f"{'990102001001'}001"]}, "unknown_grid"),
        ({"op": "merge", "keys": [NW, SW]}, "crosses_community"),
        ({"op": "merge", "keys": [NW, SE]}, "crosses_community"),
        (
            {
                "op": "replace_all",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": c},
                        "geometry": mapping(grid_box(1, n, g)),
                    }
                    for c, n, g in ((NW, 1, 1), (NE, 1, 2), (SW, 2, 1))
                ],
            },
            "gap",
        ),
        (
            {
                "op": "replace_all",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": "across"},
                        "geometry": mapping(box(106.0, 26.005, 106.02, 26.02)),
                    },
                    {
                        "type": "Feature",
                        "properties": {"name": "rest"},
                        "geometry": mapping(box(106.0, 26.0, 106.02, 26.005)),
                    },
                ],
            },
            "crosses_community",
        ),
        (
            {
                "op": "split_line",
                "key": NW,
                "line": mapping(LineString([(106.00001, 26.0095), (106.00001, 26.0205)])),
            },
            "sliver",
        ),
    ]
    for body, reason in cases:
        problem = _problem(_edit(tiny_client, h, plan_id, body, 1), 422, reason)
        assert problem["detail"], body
        # The field at fault is an input of the request, never `op`.
        assert problem["field"].split("[")[0].split(".")[0] in set(body) - {"op"}, problem
    # Nothing changed: still version 1 with the four current grids.
    plan = tiny_client.get(f"/plans/{plan_id}", headers=h["planner"])
    assert plan.headers["ETag"] == '"1"'
    assert _keys(tiny_client, h, plan_id) == {c: c for c in (NW, NE, SW, SE)}
    # Schema-level refusals are problems too.
    _problem(_edit(tiny_client, h, plan_id, {"op": "split_parts", "key": NW, "parts": 1}, 1), 422)
    _problem(_edit(tiny_client, h, plan_id, {"op": "teleport", "key": NW}, 1), 422)


def test_stale_or_missing_if_match_is_refused(tiny_client, h):
    plan_id = _draft(tiny_client, h)
    split = {"op": "split_line", "key": NW, "line": mapping(CUT_NW)}
    # Two planners read version 1; the first edit wins, the second is stale.
    assert _edit(tiny_client, h, plan_id, split, 1, who="planner").status_code == 200
    merge = {"op": "merge", "keys": [NE, SE]}
    stale = _problem(_edit(tiny_client, h, plan_id, merge, 1, who="planner2"), 412)
    assert stale["field"] == "If-Match" and stale["version"] == 2
    r = tiny_client.post(f"/plans/{plan_id}/edits", json=split, headers=h["planner2"])
    _problem(r, 428)
    r = tiny_client.post(
        f"/plans/{plan_id}/edits", json=split, headers={**h["planner2"], "If-Match": "junk"}
    )
    _problem(r, 412)
    assert tiny_client.get(f"/plans/{plan_id}", headers=h["planner"]).json()["version"] == 2
    # Publishing with a stale If-Match is refused too.
    _problem(
        tiny_client.post(f"/plans/{plan_id}/publish", headers={**h["planner"], "If-Match": '"1"'}),
        412,
    )


def test_if_match_star_and_lists_follow_rfc_9110(tiny_client, h):
    plan_id = _draft(tiny_client, h)

    def edit(body, if_match):
        return tiny_client.post(
            f"/plans/{plan_id}/edits", json=body, headers={**h["planner"], "If-Match": if_match}
        )

    # `*` matches any current version; a list matches when any of its tags does.
    r = edit({"op": "split_line", "key": NW, "line": mapping(CUT_NW)}, "*")
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    cut_ne = LineString([(106.015, 26.0095), (106.015, 26.0205)])
    r = edit({"op": "split_line", "key": NE, "line": mapping(cut_ne)}, '"1", "2", "9"')
    assert r.status_code == 200, r.text
    # A weak tag never matches (If-Match compares strongly), nor a list of stale ones.
    assert _problem(edit({"op": "merge", "keys": [SW, SE]}, 'W/"3"'), 412)["version"] == 3
    _problem(edit({"op": "merge", "keys": [SW, SE]}, '"1", "2"'), 412)
    assert edit({"op": "merge", "keys": [SW, SE]}, '"3"').status_code == 200


def test_concurrent_edits_one_wins_the_other_gets_412(tiny_server, tiny_db_url, h):
    with httpx.Client(base_url=tiny_server.base_url, timeout=30) as client:
        plan_id = _draft(client, h)
        bodies = [
            {"op": "split_line", "key": NW, "line": mapping(CUT_NW)},
            {"op": "split_parts", "key": SE, "parts": 2},
        ]
        statuses: list[int] = []
        barrier = threading.Barrier(2)

        def run(body, who):
            barrier.wait()
            statuses.append(_edit(client, h, plan_id, body, 1, who=who).status_code)

        threads = [
            threading.Thread(target=run, args=(b, w))
            for b, w in zip(bodies, ("planner", "planner2"), strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200, 412]
        assert client.get(f"/plans/{plan_id}", headers=h["planner"]).json()["version"] == 2
    edits = _sql(
        tiny_db_url, "SELECT count(*) FROM boundary_plan_edit WHERE plan_id = :p", p=plan_id
    )
    assert edits[0][0] == 1


def _report_incident(client, h, where):
    body = {"category": "gas", "source": "patrol", "lon": where[0], "lat": where[1]}
    r = client.post("/incidents", json=body, headers=h["grid"])
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_diff_then_publish_keeps_history_and_old_incidents_on_old_grids(
    tiny_client, tiny_db_url, h
):
    incident = _report_incident(tiny_client, h, IN_NW)
    unit = tiny_client.post(
        "/units",
        json={
            "name": "Water Co.",
            "kind": "enterprise",
            "lon": IN_NW_EAST[0],
            "lat": IN_NW_EAST[1],
        },
        headers=h["community"],
    )
    assert unit.status_code == 201, unit.text
    _sql(
        tiny_db_url,
        "INSERT INTO member (name, kind, home_community_code, team_role, serving_grid_code, "
        "phone) VALUES ('Officer Li', 'grid_staff', :c, 'grid_police', :g, '13500000000')",
        c=NORTH,
        g=NW,
    )
    plan_id = _draft(tiny_client, h)
    r = _edit(tiny_client, h, plan_id, {"op": "split_line", "key": NW, "line": mapping(CUT_NW)}, 1)
    assert r.status_code == 200, r.text

    diff = tiny_client.get(f"/plans/{plan_id}/diff", headers=h["planner"])
    assert diff.status_code == 200, diff.text
    d = diff.json()
    assert d["retired"] == [NW] and d["added"] == ["n1", "n2"]
    assert d["unchanged"] == sorted([NE, SW, SE])
    assert {t["to_key"] for t in d["transfers"]} == {"n1", "n2"}
    area_nw = _sql(tiny_db_url, "SELECT area_m2 FROM area WHERE code = :c", c=NW)[0][0]
    assert d["moved_m2"] == pytest.approx(area_nw, rel=1e-3)
    assert d["entities"]["unit"]["moves"] == [
        {"from_code": NW, "to_key": "n2", "n": 1, "ids": [unit.json()["id"]], "same_grid": False}
    ]
    assert d["entities"]["incident"]["total"] == 1
    assert [m["name"] for m in d["staff"]["members"]] == ["Officer Li"]
    assert [t["name"] for t in d["staff"]["grid_officers"]] == ["grid"]

    r = tiny_client.post(f"/plans/{plan_id}/publish", headers={**h["planner"], "If-Match": '"2"'})
    assert r.status_code == 200, r.text
    pub = r.json()
    gen = pub["generation"]
    # New grids get the community's next sequence numbers, west to east; others keep theirs.
    assert pub["codes"] == {"n1": f"{NORTH}003", "n2": f"{NORTH}004"}
    assert pub["retired"] == [NW] and pub["kept"] == sorted([NE, SW, SE])
    assert (
        tiny_client.get(f"/plans/{plan_id}", headers=h["planner"]).json()["status"] == "published"
    )
    # Lookups now answer the new grid; generation 1 still answers the old one.
    look = tiny_client.get("/lookup", params={"lon": IN_NW[0], "lat": IN_NW[1]}, headers=h["city"])
    assert look.json()["grid"]["code"] == f"{NORTH}003" and look.json()["generation"] == gen
    old = tiny_client.get(
        "/lookup", params={"lon": IN_NW[0], "lat": IN_NW[1], "generation": 1}, headers=h["city"]
    )
    assert old.json()["grid"]["code"] == NW
    hist = tiny_client.get(f"/areas/{NE}/history", headers=h["city"]).json()
    assert [(x["generation_low"], x["generation_high"]) for x in hist] == [(1, gen)]
    # The incident keeps the grid it was reported in; the unit follows the boundaries.
    row = _sql(
        tiny_db_url,
        "SELECT reported_grid_code, reported_generation FROM incident WHERE id = :i",
        i=incident,
    )[0]
    assert tuple(row) == (NW, 1)
    moved = _sql(tiny_db_url, "SELECT grid_code FROM unit WHERE id = :i", i=unit.json()["id"])
    assert moved[0][0] == f"{NORTH}004"
    # A published plan is no longer a draft.
    _problem(tiny_client.post(f"/plans/{plan_id}/publish", headers=h["planner"]), 409)
    _problem(_edit(tiny_client, h, plan_id, {"op": "merge", "keys": [NE, SE]}, pub["version"]), 409)


def _generations(tiny_db_url):
    return [tuple(r) for r in _sql(tiny_db_url, "SELECT id, active FROM generation ORDER BY id")]


def test_a_refused_publish_leaves_the_current_generation_untouched(tiny_client, tiny_db_url, h):
    first = _draft(tiny_client, h, name="first")
    second = _draft(tiny_client, h, name="second")
    later = _draft(tiny_client, h, name="drawn on the same generation")
    # A draft whose grids no longer tile its area (a grid lost behind the API's back).
    _sql(
        tiny_db_url,
        "DELETE FROM boundary_plan_grid WHERE plan_id = :p AND key = :k",
        p=second,
        k=SE,
    )
    before = _generations(tiny_db_url)
    bad = _problem(tiny_client.post(f"/plans/{second}/publish", headers=h["planner"]), 422, "gap")
    assert str(second) in bad["detail"]
    assert _generations(tiny_db_url) == before
    # Another plan is published first: the later draft's base generation is no longer current.
    r = _edit(tiny_client, h, first, {"op": "merge", "keys": [NE, NW]}, 1)
    assert r.status_code == 200, r.text
    assert tiny_client.post(f"/plans/{first}/publish", headers=h["planner"]).status_code == 200
    after_first = _generations(tiny_db_url)
    assert len(after_first) == len(before) + 1
    assert (
        tiny_client.get(f"/plans/{later}", headers=h["planner"]).json()["base_is_current"] is False
    )
    stale = _problem(tiny_client.post(f"/plans/{later}/publish", headers=h["planner"]), 409)
    assert stale["field"] == "base_generation" and "is current now" in stale["detail"]
    assert _generations(tiny_db_url) == after_first
    # The lookup still answers the first plan's grids.
    look = tiny_client.get("/lookup", params={"lon": IN_NW[0], "lat": IN_NW[1]}, headers=h["city"])
    assert look.json()["generation"] == after_first[-1][0]
    assert look.json()["grid"]["code"] == f"{NORTH}003"


def test_replace_from_an_uploaded_file(tiny_client, h, tmp_path):
    import geopandas as gpd

    plan_id = _draft(tiny_client, h)
    # North community redrawn as three columns (QGIS-style GeoPackage, CGCS2000), south kept.
    thirds = [box(106.0 + i * 0.02 / 3, 26.01, 106.0 + (i + 1) * 0.02 / 3, 26.02) for i in range(3)]
    frame = gpd.GeoDataFrame(
        {
            "name": ["West", "Middle", "East", "Grid 1-2-1", "Grid 1-2-2"],
            "code": [None, None, None, SW, SE],
        },
        geometry=[*thirds, grid_box(1, 2, 1), grid_box(1, 2, 2)],
        crs="EPSG:4490",
    )
    path = tmp_path / "redrawn.gpkg"
    frame.to_file(path)
    files = {"file": ("redrawn.gpkg", path.read_bytes(), "application/geopackage+sqlite3")}
    r = tiny_client.post(
        f"/plans/{plan_id}/edits/file", files=files, headers={**h["planner"], "If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    assert sorted(r.json()["removed"]) == [NW, NE]
    added = [f["properties"] for f in r.json()["added"]["features"]]
    assert [(a["name"], a["parent_code"]) for a in added] == [
        ("West", NORTH),
        ("Middle", NORTH),
        ("East", NORTH),
    ]
    assert _keys(tiny_client, h, plan_id)[SW] == SW
    edits = tiny_client.get(f"/plans/{plan_id}/edits", headers=h["planner"]).json()
    assert edits[-1]["payload"] == {"op": "replace_all", "file": "redrawn.gpkg", "features": 5}
    # Saving the same file again changes nothing: 200 at the same version, nothing logged,
    # so nobody else's If-Match goes stale.
    r = tiny_client.post(
        f"/plans/{plan_id}/edits/file", files=files, headers={**h["planner"], "If-Match": '"2"'}
    )
    assert r.status_code == 200, r.text
    assert r.json()["removed"] == [], r.json()
    assert r.json()["version"] == 2 and r.headers["ETag"] == '"2"'
    assert tiny_client.get(f"/plans/{plan_id}", headers=h["planner"]).json()["version"] == 2
    assert len(tiny_client.get(f"/plans/{plan_id}/edits", headers=h["planner"]).json()) == len(
        edits
    )
    # Not a file GDAL reads: refused naming the file.
    bad = {"file": ("x.gpkg", b"not a geopackage", "application/octet-stream")}
    r = tiny_client.post(
        f"/plans/{plan_id}/edits/file", files=bad, headers={**h["planner"], "If-Match": '"2"'}
    )
    assert _problem(r, 422)["field"] == "file"
    # A set refused for its geometry names the file too (not `op`).
    gappy = tmp_path / "gappy.gpkg"
    frame.iloc[:-1].to_file(gappy)
    files = {"file": ("gappy.gpkg", gappy.read_bytes(), "application/geopackage+sqlite3")}
    r = tiny_client.post(
        f"/plans/{plan_id}/edits/file", files=files, headers={**h["planner"], "If-Match": '"2"'}
    )
    assert _problem(r, 422, "gap")["field"] == "file"


def test_a_discarded_draft_stays_readable_and_takes_no_edits(tiny_client, h):
    plan_id = _draft(tiny_client, h)
    r = tiny_client.post(f"/plans/{plan_id}/discard", headers={**h["planner"], "If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "discarded" and r.headers["ETag"] == '"2"'
    assert len(_keys(tiny_client, h, plan_id)) == 4
    _problem(_edit(tiny_client, h, plan_id, {"op": "merge", "keys": [NW, NE]}, 2), 409)
    _problem(tiny_client.post(f"/plans/{plan_id}/publish", headers=h["planner"]), 409)
    assert [
        e["op"] for e in tiny_client.get(f"/plans/{plan_id}/edits", headers=h["planner"]).json()
    ] == ["discard"]
    _problem(tiny_client.get("/plans/999999", headers=h["planner"]), 404)


def test_a_code_is_kept_only_by_its_own_unchanged_grid(tiny_client, tiny_db_url, h):
    import geopandas as gpd

    from service.repositories import plans as repo

    # A draft made from given grids (as a proposal is): NW's and NE's codes swapped, SW renamed.
    grids = gpd.GeoDataFrame(
        {
            "code": [NE, NW, SW, SE],
            "parent_code": [NORTH, NORTH, SOUTH, SOUTH],
            "name": ["a", "b", "South-west", "Grid 1-2-2"],
        },
        geometry=[grid_box(1, 1, 1), grid_box(1, 1, 2), grid_box(1, 2, 1), grid_box(1, 2, 2)],
        crs="EPSG:4326",
    )
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        plan_id = repo.create_plan_from_grids(
            conn, name="given", area_code=DISTRICT, created_by="test", grids=grids
        )
    engine.dispose()
    d = tiny_client.get(f"/plans/{plan_id}/diff", headers=h["planner"]).json()
    assert d["retired"] == [NW, NE] and d["unchanged"] == [SW, SE]
    r = tiny_client.post(f"/plans/{plan_id}/publish", headers=h["planner"])
    assert r.status_code == 200, r.text
    assert sorted(r.json()["codes"].values()) == [f"{NORTH}003", f"{NORTH}004"]
    assert r.json()["kept"] == [SW, SE]
    # The renamed grid keeps its code under its new name.
    sw = tiny_client.get(f"/areas/{SW}", headers=h["city"]).json()
    assert sw["name"] == "South-west" and sw["generation_low"] == r.json()["generation"]
    hist = tiny_client.get(f"/areas/{SW}/history", headers=h["city"]).json()
    assert sorted(x["name"] for x in hist) == ["Grid 1-2-1", "South-west"]


def test_publish_judges_what_the_plan_changes(tiny_client, tiny_db_url, h):
    # Today's data has a defect the plan will not touch: SE overlaps SW by 100 m × 1 km.
    _sql(
        tiny_db_url,
        "UPDATE area SET geom = ST_Multi(ST_MakeEnvelope(106.009, 26.0, 106.02, 26.01, 4326)) "
        "WHERE code = :c",
        c=SE,
    )
    plan_id = _draft(tiny_client, h)
    # A plan that changes nothing has nothing to publish.
    r = tiny_client.post(f"/plans/{plan_id}/publish", headers=h["planner"])
    assert "changes nothing" in _problem(r, 422)["detail"]
    r = _edit(tiny_client, h, plan_id, {"op": "split_line", "key": NW, "line": mapping(CUT_NW)}, 1)
    assert r.status_code == 200, r.text
    r = tiny_client.post(f"/plans/{plan_id}/publish", headers=h["planner"])
    assert r.status_code == 200, r.text
    assert r.json()["retired"] == [NW] and SE in r.json()["kept"]


def test_a_publish_waiting_on_another_publish_is_refused_when_that_one_lands(
    tiny_server, tiny_db_url, h
):
    # Two drafts drawn on generation 1. The first is being published (its transaction is
    # open) when the second's publish arrives: once the first commits, generation 1 is no
    # longer current, so the second must be refused (409), not published on top of it.
    from service.repositories import plans as repo

    with httpx.Client(base_url=tiny_server.base_url, timeout=60) as client:
        first = _draft(client, h, name="first")
        second = _draft(client, h, name="second")
        r = _edit(client, h, first, {"op": "merge", "keys": [NW, NE]}, 1)
        assert r.status_code == 200, r.text
        r = _edit(client, h, second, {"op": "merge", "keys": [SW, SE]}, 1)
        assert r.status_code == 200, r.text
        engine = make_engine(tiny_db_url)
        answer: list[httpx.Response] = []
        try:
            with engine.begin() as conn:
                repo.publish_plan(conn, plan_id=first, if_match=None, actor="test")
                thread = threading.Thread(
                    target=lambda: answer.append(
                        client.post(f"/plans/{second}/publish", headers=h["planner"])
                    )
                )
                thread.start()
                # Commit only once the second publish waits on a lock of the first.
                waiting = text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
                for _ in range(400):
                    with engine.connect() as probe:
                        if probe.execute(waiting).scalar():
                            break
                    assert thread.is_alive(), answer[0].text
                    threading.Event().wait(0.05)
                else:
                    raise AssertionError("the second publish never waited on the first")
            thread.join(60)
        finally:
            engine.dispose()
        stale = _problem(answer[0], 409)
        assert stale["field"] == "base_generation"
    assert len(_generations(tiny_db_url)) == 2
    rows = _sql(tiny_db_url, "SELECT status FROM boundary_plan WHERE id = :p", p=second)
    assert rows[0][0] == "draft"


def test_a_redrawn_set_larger_than_a_json_body_is_uploaded(tiny_client, h):
    # A county's grids from QGIS easily exceed the 1 MiB a JSON body may have: the file
    # route takes files up to WANGGE_API_MAX_UPLOAD_BYTES, as the entity imports do.
    import json

    import shapely

    fc = tiny_client.get(f"/plans/{_draft(tiny_client, h)}/grids", headers=h["planner"]).json()
    plan_id = _draft(tiny_client, h, name="dense")
    for f in fc["features"]:  # the same grids, a vertex every ~30 cm along their edges
        dense = shapely.segmentize(shapely.geometry.shape(f["geometry"]), 0.000003)
        f["geometry"] = mapping(dense)
        f["properties"] = {"code": f["properties"]["code"], "name": "renamed"}
    data = json.dumps(fc).encode()
    assert len(data) > 1_048_576
    files = {"file": ("dense.geojson", data, "application/geo+json")}
    r = tiny_client.post(
        f"/plans/{plan_id}/edits/file", files=files, headers={**h["planner"], "If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    assert {f["properties"]["name"] for f in r.json()["added"]["features"]} == {"renamed"}


def test_the_diff_of_a_reassign_counts_the_territory_that_changes_grid(tiny_client, tiny_db_url, h):
    # NW's east half goes to NE: half of NW changes grid, though both grids are redrawn
    # (and so both get new codes when published).
    plan_id = _draft(tiny_client, h)
    east_half = box(106.005, 26.0095, 106.0105, 26.0205)
    body = {"op": "reassign", "from_key": NW, "to_key": NE, "region": mapping(east_half)}
    r = _edit(tiny_client, h, plan_id, body, 1)
    assert r.status_code == 200, r.text
    d = tiny_client.get(f"/plans/{plan_id}/diff", headers=h["planner"]).json()
    assert d["retired"] == [NW, NE] and d["added"] == [NW, NE]
    area = dict(
        _sql(tiny_db_url, "SELECT code, area_m2 FROM area WHERE code IN (:a, :b)", a=NW, b=NE)
    )
    assert d["moved_m2"] == pytest.approx(area[NW] / 2, rel=1e-3)
    assert d["redrawn_m2"] == pytest.approx(area[NW] + area[NE], rel=1e-3)
    moved = [t for t in d["transfers"] if not t["same_grid"]]
    assert [(t["from_code"], t["to_key"]) for t in moved] == [(NW, NE)]


def _post(client, h, path, key, version=None, who="planner", **kw):
    headers = {**h[who], "Idempotency-Key": key}
    if version is not None:
        headers["If-Match"] = f'"{version}"'
    return client.post(path, headers=headers, **kw)


def test_a_retried_edit_with_its_idempotency_key_acts_once(tiny_client, tiny_db_url, h, tmp_path):
    import geopandas as gpd

    plan_id = _draft(tiny_client, h)
    edits = f"/plans/{plan_id}/edits"
    split = {"op": "split_line", "key": NW, "line": mapping(CUT_NW)}
    first = _post(tiny_client, h, edits, "split-1", 1, json=split)
    assert first.status_code == 200, first.text
    # The answer was lost on a flaky network: the retry, still at If-Match "1", is the first
    # answer again (not a 412 for the version its own first attempt made), and splits nothing.
    again = _post(tiny_client, h, edits, "split-1", 1, json=split)
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["ETag"] == '"2"'
    assert again.json() == first.json()
    assert len(_keys(tiny_client, h, plan_id)) == 5
    # The same key with another request is refused; another key at a stale version is a 412.
    merge = {"op": "merge", "keys": [SW, SE]}
    assert _problem(_post(tiny_client, h, edits, "split-1", 2, json=merge), 422)["field"] == (
        "Idempotency-Key"
    )
    _problem(_post(tiny_client, h, edits, "merge-1", 1, json=merge), 412)
    # A refused attempt stores nothing: the same key, now at the right version, acts.
    r = _post(tiny_client, h, edits, "merge-1", 2, json=merge)
    assert r.status_code == 200 and "Idempotent-Replayed" not in r.headers, r.text
    assert r.json()["version"] == 3
    # Keys are the caller's: another planner's same key is another request.
    cut_ne = {
        "op": "split_line",
        "key": NE,
        "line": mapping(LineString([(106.015, 26.0095), (106.015, 26.0205)])),
    }
    assert (
        _post(tiny_client, h, edits, "split-1", 3, who="planner2", json=cut_ne).status_code == 200
    )
    # A file uploaded twice with its key replaces once.
    frame = gpd.GeoDataFrame(
        {"name": ["North", "Grid 1-2-1", "Grid 1-2-2"], "code": [None, SW, SE]},
        geometry=[box(106.0, 26.01, 106.02, 26.02), grid_box(1, 2, 1), grid_box(1, 2, 2)],
        crs="EPSG:4326",
    )
    path = tmp_path / "north.gpkg"
    frame.to_file(path)
    # (SW and SE were merged at version 3: the file restores them, and joins the north.)
    files = {"file": ("north.gpkg", path.read_bytes(), "application/geopackage+sqlite3")}
    upload = [_post(tiny_client, h, f"{edits}/file", "file-1", 4, files=files) for _ in range(2)]
    assert [u.status_code for u in upload] == [200, 200], upload[0].text
    assert upload[1].headers["Idempotent-Replayed"] == "true"
    assert upload[1].json() == upload[0].json() and upload[0].json()["version"] == 5
    other = {"file": ("north.gpkg", path.read_bytes() + b"\0", "application/geopackage+sqlite3")}
    _problem(_post(tiny_client, h, f"{edits}/file", "file-1", 5, files=other), 422)
    # Publishing retried: one generation, the second answer the first's.
    published = [
        _post(tiny_client, h, f"/plans/{plan_id}/publish", "publish-1", 5) for _ in range(2)
    ]
    assert [p.status_code for p in published] == [200, 200], published[0].text
    assert published[1].json() == published[0].json()
    assert published[1].headers["Idempotent-Replayed"] == "true"
    assert (
        _sql(
            tiny_db_url,
            "SELECT count(*) FROM generation WHERE description LIKE :d",
            d=f"plan {plan_id}:%",
        )[0][0]
        == 1
    )
    log = tiny_client.get(f"/plans/{plan_id}/edits", headers=h["planner"]).json()
    assert [e["op"] for e in log] == ["split_line", "merge", "split_line", "replace_all", "publish"]
    # A discard retried after the plan moved on is the first answer too.
    second = _draft(tiny_client, h, name="To drop")
    dropped = [_post(tiny_client, h, f"/plans/{second}/discard", "drop-1", 1) for _ in range(2)]
    assert [d.status_code for d in dropped] == [200, 200]
    assert dropped[1].json() == dropped[0].json() and dropped[1].headers["ETag"] == '"2"'


def test_one_key_sent_twice_at_once_edits_once(tiny_server, tiny_db_url, h):
    with httpx.Client(base_url=tiny_server.base_url, timeout=60) as client:
        plan_id = _draft(client, h)
        split = {"op": "split_line", "key": NW, "line": mapping(CUT_NW)}
        answers: list[httpx.Response] = []
        barrier = threading.Barrier(2)

        def run():
            barrier.wait()
            answers.append(_post(client, h, f"/plans/{plan_id}/edits", "twice", 1, json=split))

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        assert answers[0].json() == answers[1].json()
        assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 1
    edits = _sql(
        tiny_db_url, "SELECT count(*) FROM boundary_plan_edit WHERE plan_id = :p", p=plan_id
    )
    assert edits[0][0] == 1


def _zip(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _qgis_files(tmp_path) -> dict[str, tuple[str, bytes]]:
    """The north community redrawn as a ring around a core (a grid with a hole and the grid
    filling it), the south kept, as QGIS users save it: odd but valid."""
    import warnings

    import geopandas as gpd
    from shapely import force_3d

    north = box(106.0, 26.01, 106.02, 26.02)
    core = box(106.006, 26.013, 106.014, 26.017)
    geoms = [
        MultiPolygon([north.difference(core)]),  # a MultiPolygon of one part, with a hole
        MultiPolygon([core]),
        MultiPolygon([grid_box(1, 2, 1)]),
        MultiPolygon([grid_box(1, 2, 2)]),
    ]
    frame = gpd.GeoDataFrame(
        {
            "Name": ["Ring", "Core", "Grid 1-2-1", "Grid 1-2-2"],
            "PARENT_CODE": [NORTH, NORTH, SOUTH, SOUTH],
            "Code": [None, None, SW, SE],
        },
        geometry=[force_3d(g, 1250.0) for g in geoms],  # heights from a 3D survey
        crs="EPSG:4326",
    )
    out = {}
    # CGCS2000 / 3-degree Gauss-Kruger, central meridian 105E (the zone of 106E) and 114E.
    gk = tmp_path / "gk.gpkg"
    frame.to_crs("EPSG:4544").to_file(gk, layer="grids")
    out["gpkg"] = ("redrawn.gpkg", gk.read_bytes())
    shp = tmp_path / "shp"
    shp.mkdir()
    with warnings.catch_warnings():  # the format keeps 10 characters: PARENT_COD
        warnings.simplefilter("ignore")
        frame.to_crs("EPSG:4547").to_file(shp / "grids.shp")
    members = {p.name: p.read_bytes() for p in sorted(shp.iterdir())}
    out["shp"] = ("grids.zip", _zip({f"QGIS export/{n}": d for n, d in members.items()}))
    kml = tmp_path / "grids.kml"
    frame.to_file(kml, driver="KML")
    out["kml"] = ("grids.kml", kml.read_bytes())
    out["_shp_members"] = ("", _zip({n: d for n, d in members.items() if not n.endswith(".shp")}))
    points = tmp_path / "points.gpkg"
    gpd.GeoDataFrame(
        {"name": ["a", "b"]},
        geometry=gpd.points_from_xy([106.005, 106.015], [26.015, 26.015]),
        crs="EPSG:4326",
    ).to_file(points)
    out["points"] = ("points.gpkg", points.read_bytes())
    nothing = tmp_path / "nothing.gpkg"
    frame.iloc[:0].to_file(nothing)
    out["nothing"] = ("nothing.gpkg", nothing.read_bytes())
    return out


def test_redrawn_sets_as_qgis_saves_them(tiny_client, h, tmp_path):
    files = _qgis_files(tmp_path)
    plan_id = _draft(tiny_client, h)
    version = 1

    def upload(name, data):
        return tiny_client.post(
            f"/plans/{plan_id}/edits/file",
            files={"file": (name, data, "application/octet-stream")},
            headers={**h["planner"], "If-Match": f'"{version}"'},
        )

    def state():
        return (
            tiny_client.get(f"/plans/{plan_id}", headers=h["planner"]).json()["version"],
            tiny_client.get(f"/plans/{plan_id}/grids", headers=h["planner"]).json(),
        )

    # Wrong content: refused naming the file and what is wrong with it, nothing written.
    before = state()
    refusals = {
        "points": ("points.gpkg", files["points"][1], "Point"),
        "empty": ("empty.gpkg", b"", "empty"),
        "no shp": ("grids.zip", files["_shp_members"][1], ".shp"),
        "no rows": ("nothing.gpkg", files["nothing"][1], "no grids"),
        "50 MB": ("big.gpkg", b"\0" * 50_000_000, "GeoPackage"),
    }
    for case, (name, data, says) in refusals.items():
        r = upload(name, data)
        assert 400 <= r.status_code < 500, (case, r.status_code, r.text[:300])
        body = _problem(r, r.status_code)
        assert body["field"] == "file" and name in body["detail"], (case, body)
        assert says in body["detail"], (case, body)
        assert state() == before, case
    # Odd but valid: accepted, and the grids are what the file drew.
    for fmt in ("gpkg", "shp", "kml"):
        name, data = files[fmt]
        r = upload(name, data)
        assert r.status_code == 200, (fmt, r.text[:500])
        version = r.json()["version"]
        grids = {f["properties"]["name"]: f for f in state()[1]["features"]}
        assert sorted(grids) == ["Core", "Grid 1-2-1", "Grid 1-2-2", "Ring"], fmt
        ring = grids["Ring"]
        assert ring["properties"]["parent_code"] == NORTH, fmt
        assert grids["Grid 1-2-1"]["properties"]["code"] == SW, fmt
        assert len(ring["geometry"]["coordinates"][0]) == 2, fmt  # the ring keeps its hole
