"""Boundary generations: load inactive, activate in one step, history stays queryable."""

from __future__ import annotations

from shapely.geometry import box, mapping

from tests.conftest import auth, make_tokens


def _grid_feature(code, parent, geom, name="Redrawn grid"):
    return {
        "type": "Feature",
        "properties": {"code": code, "name": name, "level": "grid", "parent_code": parent},
        "geometry": mapping(geom),
    }


def test_redrawn_grid_in_new_generation_leaves_history_queryable(tiny_client, tiny_db_url):
    tokens = make_tokens(
        tiny_db_url, {"admin": ("admin", None), "city": ("city_dispatcher", "990100")}
    )
    admin, city = auth(tokens["admin"]), auth(tokens["city"])
    point = {"lon": 106.005, "lat": 26.015}  # in grid 990101001001001 (north-west)
    before = tiny_client.get("/lookup", params=point, headers=city).json()
    assert before["grid"]["code"] == "990101001001001"
    assert before["generation"] == 1

    gen = tiny_client.post("/generations", json={"description": "merge NW grids"}, headers=admin)
    assert gen.status_code == 201, gen.text
    gen_id = gen.json()["id"]
    # Merge the two north-western grids into one with a new sequence number (003).
    merged = box(106.00, 26.01, 106.02, 26.02)
    r = tiny_client.post(
        f"/generations/{gen_id}/retire",
        json={"codes": ["990101001001001", "990101001001002"]},
        headers=admin,
    )
    assert r.json() == {"retired": 2}
    fc = {
        "type": "FeatureCollection",
        "features": [_grid_feature("990101001001003", "990101001001", merged)],
    }
    r = tiny_client.post(f"/generations/{gen_id}/areas", json=fc, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 1

    # Pending: nothing changes for current lookups; planners/admins may preview it.
    assert tiny_client.get("/lookup", params=point, headers=city).json()["grid"]["code"] == (
        "990101001001001"
    )
    preview = tiny_client.get("/lookup", params={**point, "generation": gen_id}, headers=admin)
    assert preview.json()["grid"]["code"] == "990101001001003"
    refused = tiny_client.get("/lookup", params={**point, "generation": gen_id}, headers=city)
    assert refused.status_code == 403

    r = tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    assert r.status_code == 200, r.text
    after = tiny_client.get("/lookup", params=point, headers=city).json()
    assert after["generation"] == gen_id
    assert after["grid"]["code"] == "990101001001003"

    # History: generation 1 still answers with the old grid; the old code has one version.
    old = tiny_client.get("/lookup", params={**point, "generation": 1}, headers=city).json()
    assert old["grid"]["code"] == "990101001001001"
    hist = tiny_client.get("/areas/990101001001001/history", headers=city).json()
    assert [(h["generation_low"], h["generation_high"]) for h in hist] == [(1, 1)]
    # Unchanged areas were carried over: one row spanning both generations.
    hist = tiny_client.get("/areas/990102001001001/history", headers=city).json()
    assert [(h["generation_low"], h["generation_high"]) for h in hist] == [(1, gen_id)]
    assert tiny_client.get("/areas/990101001001001", headers=city).status_code == 404
    gens = tiny_client.get("/generations", headers=city).json()
    assert [(g["id"], g["current"]) for g in gens] == [(gen_id, True), (1, False)]


def test_changed_geometry_of_a_kept_code_makes_a_new_version(tiny_client, tiny_db_url):
    tokens = make_tokens(tiny_db_url, {"admin": ("admin", None)})
    admin = auth(tokens["admin"])
    gen_id = tiny_client.post("/generations", json={"description": "survey"}, headers=admin).json()[
        "id"
    ]
    # The city boundary from a new survey: same code, slightly different polygon.
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"code": "990100", "name": "Tiny City", "level": "city"},
                "geometry": mapping(box(106.0, 26.0, 106.04, 26.0201)),
            }
        ],
    }
    r = tiny_client.post(f"/generations/{gen_id}/areas", json=fc, headers=admin)
    assert r.json()["replaced"] == 1
    # A strip along the new northern edge: in the new city, in none of its districts.
    strip = {"lon": 106.039, "lat": 26.02005}
    assert tiny_client.get("/lookup", params=strip, headers=admin).json()["matched"] == []
    r = tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": gen_id,
        "active": True,
        "current": True,
        "remapped": {"unit": 0, "facility": 0, "care_household": 0, "incident": 0},
    }
    after = tiny_client.get("/lookup", params=strip, headers=admin).json()
    assert after["generation"] == gen_id and after["matched"] == ["city"]
    gens = tiny_client.get("/generations", headers=admin).json()
    assert [(g["id"], g["current"]) for g in gens] == [(gen_id, True), (1, False)]
    hist = tiny_client.get("/areas/990100/history", headers=admin).json()
    assert [(h["generation_low"], h["generation_high"]) for h in hist] == [(1, 1), (2, 2)]


def test_only_one_pending_generation_and_active_ones_are_frozen(tiny_client, tiny_db_url):
    tokens = make_tokens(tiny_db_url, {"admin": ("admin", None), "planner": ("planner", "990100")})
    admin = auth(tokens["admin"])
    assert (
        tiny_client.post("/generations", json={"description": "a"}, headers=admin).status_code
        == 201
    )
    second = tiny_client.post("/generations", json={"description": "b"}, headers=admin)
    assert second.status_code == 409
    fc = {
        "type": "FeatureCollection",
        "features": [
            _grid_feature("990101001001009", "990101001001", box(106, 26.01, 106.001, 26.011))
        ],
    }
    frozen = tiny_client.post("/generations/1/areas", json=fc, headers=admin)
    assert frozen.status_code == 409
    assert "active" in frozen.json()["detail"]
    not_admin = tiny_client.post(
        "/generations", json={"description": "c"}, headers=auth(tokens["planner"])
    )
    assert not_admin.status_code == 403


def test_activation_refuses_an_empty_generation(tiny_client, tiny_db_url):
    tokens = make_tokens(tiny_db_url, {"admin": ("admin", None)})
    admin = auth(tokens["admin"])
    gen_id = tiny_client.post(
        "/generations", json={"description": "empty", "carry_over": False}, headers=admin
    ).json()["id"]
    r = tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    assert r.status_code == 422
    assert "no areas" in r.json()["detail"]


def test_activation_refuses_a_generation_with_an_orphan_and_stays_pending(tiny_client, tiny_db_url):
    from sqlalchemy import text

    from service.db import make_engine

    tokens = make_tokens(
        tiny_db_url, {"admin": ("admin", None), "city": ("city_dispatcher", "990100")}
    )
    admin, city = auth(tokens["admin"]), auth(tokens["city"])
    gen_id = tiny_client.post("/generations", json={"description": "x"}, headers=admin).json()["id"]
    # The API cannot leave a child without its parent (loads check parents, retiring takes the
    # children along), so the orphan is made at the database, as a hand repair could.
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE area SET generation_high = :g - 1 WHERE code = '990101001001'"),
            {"g": gen_id},
        )
    engine.dispose()
    r = tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    assert r.status_code == 422, r.text
    # Either grid of the dropped community may be named first.
    assert r.json()["detail"] in {
        f"area 99010100100100{g} has no parent 990101001001 in generation {gen_id}" for g in (1, 2)
    }
    gens = tiny_client.get("/generations", headers=admin).json()
    assert [(g["id"], g["active"], g["current"]) for g in gens] == [
        (gen_id, False, False),
        (1, True, True),
    ]
    point = {"lon": 106.005, "lat": 26.015}
    assert tiny_client.get("/lookup", params=point, headers=city).json()["generation"] == 1


def test_only_admins_create_load_retire_and_activate_generations(tiny_client, tiny_db_url):
    from service.auth import create_token
    from service.db import make_engine

    tokens = make_tokens(
        tiny_db_url,
        {
            "admin": ("admin", None),
            "planner": ("planner", "990100"),
            "city": ("city_dispatcher", "990100"),
            "district": ("district_dispatcher", "990101"),
            "community": ("community_dispatcher", "990101001001"),
            "grid": ("grid_officer", "990101001001001"),
        },
    )
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        tokens["intake"] = create_token(
            conn, name="12319", role="intake", area_code="990100", source="hotline_12319"
        )
    engine.dispose()
    admin = auth(tokens.pop("admin"))
    gen_id = tiny_client.post("/generations", json={"description": "p"}, headers=admin).json()["id"]
    fc = {
        "type": "FeatureCollection",
        "features": [
            _grid_feature("990101001001003", "990101001001", box(106.0, 26.01, 106.02, 26.02))
        ],
    }
    for role, token in tokens.items():
        h = auth(token)
        writes = {
            "create": tiny_client.post("/generations", json={"description": "x"}, headers=h),
            "load": tiny_client.post(f"/generations/{gen_id}/areas", json=fc, headers=h),
            "retire": tiny_client.post(
                f"/generations/{gen_id}/retire", json={"codes": ["990101001001001"]}, headers=h
            ),
            "activate": tiny_client.post(f"/generations/{gen_id}/activate", headers=h),
        }
        for action, r in writes.items():
            assert r.status_code == 403, (role, action, r.text)
            assert "admin" in r.json()["detail"], (role, action)
    # Nothing happened: one pending generation, still holding the old grid and not the new.
    gens = tiny_client.get("/generations", headers=admin).json()
    assert [(g["id"], g["active"]) for g in gens] == [(gen_id, False), (1, True)]
    preview = tiny_client.get(
        "/lookup", params={"lon": 106.005, "lat": 26.015, "generation": gen_id}, headers=admin
    ).json()
    assert preview["grid"]["code"] == "990101001001001"


# -- open cases follow a redraw ------------------------------------------------------------


def _case_rows(url, ids):
    from sqlalchemy import text

    from service.db import make_engine
    from service.dispatch.lifecycle import LIFECYCLE_COLUMNS, CaseState, Event

    cols = ", ".join(["id", "category", "generation", "grid_code", "area_path", *LIFECYCLE_COLUMNS])
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = {
            r.id: r._mapping
            for r in conn.execute(
                text(f"SELECT {cols} FROM incident WHERE id = ANY(:i)"), {"i": ids}
            )
        }
        events: dict[int, list] = {i: [] for i in ids}
        for e in conn.execute(
            text("SELECT * FROM case_event WHERE incident_id = ANY(:i) ORDER BY seq"), {"i": ids}
        ):
            events[e.incident_id].append(Event.from_row(e._mapping))
    engine.dispose()
    return {i: (CaseState.from_row(r), r) for i, r in rows.items()}, events


def test_open_cases_follow_a_redraw_and_closed_ones_keep_their_grid(tiny_client, tiny_db_url):
    from service.dispatch.lifecycle import Actor, apply, decide, replay

    old_community, old_grid = "990101001001", "990101001001002"
    tokens = make_tokens(
        tiny_db_url,
        {
            "admin": ("admin", None),
            "community": ("community_dispatcher", old_community),
            "grid": ("grid_officer", old_grid),
        },
    )
    admin, community, grid = (auth(tokens[k]) for k in ("admin", "community", "grid"))

    def act(case_id, action, body=None, who=community):
        r = tiny_client.post(f"/cases/{case_id}/actions/{action}", json=body, headers=who)
        assert r.status_code == 200, r.text
        return r.json()

    def report(lon, lat, who=grid):
        body = {"category": "road", "source": "patrol", "lon": lon, "lat": lat}
        r = tiny_client.post("/incidents", json=body, headers=who)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    to_grid = {"assignee": {"kind": "grid", "code": old_grid}}
    dispatched = report(106.017, 26.015)  # east half of the grid that is split
    act(dispatched, "accept")
    act(dispatched, "dispatch", to_grid)
    waiting = report(106.013, 26.015)  # west half: still reported
    closed = report(106.018, 26.016)
    act(closed, "accept")
    act(closed, "dispatch", to_grid)
    act(closed, "sign", who=grid)
    act(closed, "feedback", {"note": "fixed"}, who=grid)
    act(closed, "verify")
    untouched = report(106.005, 26.015, community)  # the community's other grid, kept
    act(untouched, "accept")
    act(untouched, "dispatch", {"assignee": {"kind": "grid", "code": "990101001001001"}})
    ids = [dispatched, waiting, closed, untouched]
    before, before_events = _case_rows(tiny_db_url, ids)

    # The community is split: its east grid becomes a community of its own, with two grids.
    gen_id = tiny_client.post("/generations", json={"description": "split"}, headers=admin).json()[
        "id"
    ]
    r = tiny_client.post(f"/generations/{gen_id}/retire", json={"codes": [old_grid]}, headers=admin)
    assert r.json() == {"retired": 1}

    def feature(code, name, level, parent, geom):
        props = {"code": code, "name": name, "level": level, "parent_code": parent}
        return {"type": "Feature", "properties": props, "geometry": mapping(geom)}

    new_community = "990101001003"
    fc = {
        "type": "FeatureCollection",
        "features": [
            feature(
                old_community,
                "Community 1-1",
                "community",
                "990101",
                box(106.0, 26.01, 106.01, 26.02),
            ),
            feature(
                new_community,
                "Community 1-3",
                "community",
                "990101",
                box(106.01, 26.01, 106.02, 26.02),
            ),
            feature(
                new_community + "001",
                "Grid 1-3-1",
                "grid",
                new_community,
                box(106.01, 26.01, 106.015, 26.02),
            ),
            feature(
                new_community + "002",
                "Grid 1-3-2",
                "grid",
                new_community,
                box(106.015, 26.01, 106.02, 26.02),
            ),
        ],
    }
    r = tiny_client.post(f"/generations/{gen_id}/areas", json=fc, headers=admin)
    assert r.status_code == 200, r.text
    r = tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["remapped"]["incident"] == 3  # the open ones

    after, events = _case_rows(tiny_db_url, ids)
    new_path = f"990100/990101/{new_community}"
    # The dispatched case: in the new community's queue, handled by the grid it lies in now.
    case, row = after[dispatched]
    assert (case.state, case.owner_level, case.owner_area_code, case.owner_area_path) == (
        "dispatched",
        "community",
        new_community,
        new_path,
    )
    assert (case.assignee_kind, case.assignee_code, case.assignee_path) == (
        "grid",
        new_community + "002",
        f"{new_path}/{new_community}002",
    )
    assert row["grid_code"] == new_community + "002" and row["generation"] == gen_id
    assert case.step_due_at == before[dispatched][0].step_due_at
    assert [e.action for e in events[dispatched]][-1] == "redraw"
    # The reported case waits in the new community's queue.
    assert (after[waiting][0].owner_area_code, after[waiting][0].assignee_code) == (
        new_community,
        None,
    )
    # Closed: the grid it was handled in, its generation and its history unchanged.
    case, row = after[closed]
    assert (row["grid_code"], row["generation"], case.owner_area_code) == (
        old_grid,
        1,
        old_community,
    )
    assert events[closed] == before_events[closed]
    # A case whose owner and grid team did not move gets no event.
    assert events[untouched] == before_events[untouched]
    assert after[untouched][0] == before[untouched][0]

    # The SQL wrote what the lifecycle decides, and every row is the replay of its events.
    for case_id in (dispatched, waiting):
        now_case, last = after[case_id][0], events[case_id][-1]
        params = {"area": {"code": now_case.owner_area_code, "path": now_case.owner_area_path}}
        if now_case.assignee_code is not None:
            params["assignee"] = {
                "kind": now_case.assignee_kind,
                "code": now_case.assignee_code,
                "path": now_case.assignee_path,
            }
        event = decide(
            before[case_id][0], "redraw", Actor("system"), params, now=last.at, limits={}
        )
        assert event == last, case_id
        assert apply(before[case_id][0], event) == now_case
    for case_id in ids:
        assert replay(events[case_id]) == after[case_id][0], case_id

    # Who acts now: the new grid's officer signs for it, the old community no longer owns it.
    later = make_tokens(
        tiny_db_url,
        {
            "team": ("grid_officer", new_community + "002"),
            "centre": ("community_dispatcher", new_community),
        },
    )
    detail = tiny_client.get(f"/cases/{dispatched}", headers=auth(later["team"])).json()
    assert "sign" in detail["allowed_actions"]
    queue = tiny_client.get("/cases", params={"state": "reported"}, headers=auth(later["centre"]))
    assert waiting in [c["id"] for c in queue.json()["items"]]
    assert tiny_client.get(f"/cases/{waiting}", headers=community).status_code in (403, 404)
