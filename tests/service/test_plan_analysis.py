"""Plan analysis over the API: a draft's metrics (also after an edit), an automatic proposal
as a new draft, what-if coverage (nothing written), refusals naming the problem."""

from __future__ import annotations

import math

import pytest
from shapely.geometry import LineString, mapping
from sqlalchemy import text

from service.db import make_engine
from service.planning.metrics import CACHE
from tests.conftest import auth, make_tokens
from tests.maps.data import controls

DISTRICT = "990101"
NORTH, SOUTH = "990101001001", "990101001002"
NW, NE = f"{NORTH}001", f"{NORTH}002"
CUT_NW = LineString([(106.005, 26.0095), (106.005, 26.0205)])


@pytest.fixture
def h(tiny_db_url):
    CACHE.clear()
    tokens = make_tokens(
        tiny_db_url,
        {
            "planner": ("planner", DISTRICT),
            "other_planner": ("planner", "990102"),
            "community": ("community_dispatcher", NORTH),
        },
    )
    return {name: auth(token) for name, token in tokens.items()}


def _sql(url, sql, **params):
    engine = make_engine(url)
    with engine.begin() as conn:
        rows = conn.execute(text(sql), params).all()
    engine.dispose()
    return rows


def _draft(client, h):
    r = client.post("/plans", json={"name": "Redraw", "area_code": DISTRICT}, headers=h["planner"])
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _problem(r, status, field=None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    if field is not None:
        assert field in body["detail"] or body.get("field") == field, body
    return body


def test_metrics_of_a_draft_and_after_an_edit(tiny_client, h):
    plan_id = _draft(tiny_client, h)
    r = tiny_client.get(f"/plans/{plan_id}/metrics", headers=h["planner"])
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"1"'
    body = r.json()
    assert body["plan"]["grids"] == 4
    assert body["plan"]["noncontiguous"] == 0 and body["plan"]["straddling"] == 0
    grids = {g["key"]: g for g in body["grids"]}
    assert set(grids) == {NW, NE, f"{SOUTH}001", f"{SOUTH}002"}
    nw = grids[NW]
    assert nw["community_code"] == NORTH and nw["parts"] == 1 and nw["straddles"] == 0
    # A 0.01° box at 26°N: ~1000 m by ~1112 m, nearly square.
    assert nw["area_m2"] == pytest.approx(1000.9e3 * 1.112, rel=0.01)
    ratio = 0.01 * math.cos(math.radians(26.015)) / 0.01
    assert nw["polsby_popper"] == pytest.approx(math.pi * ratio / (1 + ratio) ** 2, rel=1e-3)
    assert nw["convex_hull_ratio"] == pytest.approx(1.0)
    # The edit's answer carries the plan's metrics, measured from the cached version.
    r = tiny_client.post(
        f"/plans/{plan_id}/edits",
        json={"op": "split_line", "key": NW, "line": mapping(CUT_NW)},
        headers={**h["planner"], "If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    metrics = r.json()["metrics"]
    assert metrics["plan"]["grids"] == 5
    assert {g["key"] for g in metrics["grids"]} == {"n1", "n2"}
    after = tiny_client.get(f"/plans/{plan_id}/metrics", headers=h["planner"]).json()
    assert after["version"] == 2 and after["plan"] == pytest.approx(metrics["plan"])
    # A fresh process (no cache) measures the same.
    CACHE.clear()
    again = tiny_client.get(f"/plans/{plan_id}/metrics", headers=h["planner"]).json()
    assert again["plan"] == pytest.approx(metrics["plan"])


def test_metrics_for_planners_of_the_area_only(tiny_client, h):
    plan_id = _draft(tiny_client, h)
    _problem(tiny_client.get(f"/plans/{plan_id}/metrics", headers=h["community"]), 403)
    _problem(tiny_client.get(f"/plans/{plan_id}/metrics", headers=h["other_planner"]), 404)
    _problem(tiny_client.get("/plans/999999/metrics", headers=h["planner"]), 404)


def test_a_proposal_becomes_a_draft(tiny_client, h):
    r = tiny_client.post(
        "/plans/proposals",
        json={
            "name": "Four by area",
            "area_code": DISTRICT,
            "k": 5,
            "balance": {"population": 0, "area": 1},
            "bursts": 2,
        },
        headers=h["planner"],
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["proposal"]["max_abs_dev_in_community"] <= 0.04 + 1e-9
    assert body["metrics"]["plan"]["grids"] == 5
    assert body["metrics"]["plan"]["noncontiguous"] == 0
    assert body["metrics"]["plan"]["straddling"] == 0
    plan_id = body["plan_id"]
    fc = tiny_client.get(f"/plans/{plan_id}/grids", headers=h["planner"]).json()
    parents = sorted(f["properties"]["parent_code"] for f in fc["features"])
    assert set(parents) == {NORTH, SOUTH} and len(parents) == 5
    assert all(f["properties"]["code"] is None for f in fc["features"])


def test_proposals_refused_with_the_reason(tiny_client, h):
    def propose(**kw):
        body = {"name": "p", "area_code": DISTRICT, "k": 4, **kw}
        return tiny_client.post("/plans/proposals", json=body, headers=h["planner"])

    # The tiny hierarchy has no population estimates.
    _problem(propose(), 422, "population")
    _problem(propose(k=1, balance={"area": 1, "population": 0}), 422, "communities")
    _problem(propose(balance={"population": 0}), 422, "balance")
    _problem(propose(k=0), 422)
    _problem(propose(epsilon=0.5), 422)
    r = tiny_client.post(
        "/plans/proposals",
        json={"name": "p", "area_code": "990102", "k": 4},
        headers=h["planner"],
    )
    _problem(r, 403)
    r = tiny_client.post(
        "/plans/proposals",
        json={"name": "p", "area_code": DISTRICT, "k": 4},
        headers=h["community"],
    )
    _problem(r, 403)


def test_what_if_coverage_compares_and_writes_nothing(tiny_client, tiny_db_url, h):
    plan_id = _draft(tiny_client, h)
    r = tiny_client.post(
        f"/plans/{plan_id}/edits",
        json={"op": "split_line", "key": NW, "line": mapping(CUT_NW)},
        headers={**h["planner"], "If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    generations = _sql(tiny_db_url, "SELECT id, active FROM generation ORDER BY id")
    areas = _sql(tiny_db_url, "SELECT count(*), max(generation_high) FROM area")
    r = tiny_client.get(f"/plans/{plan_id}/coverage", headers=h["planner"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["analyses"]) == {"staffing", "workload", "care", "reach"}
    assert sorted(body["provisional_codes"]) == ["n1", "n2"]
    assert all(c.startswith(NORTH) for c in body["provisional_codes"].values())
    staffing = body["analyses"]["staffing"]
    # No teams anywhere: the draft's five grids each miss their three roles.
    assert staffing["draft"]["grids"] == staffing["today"]["grids"] + 1
    assert staffing["change"]["grids"] == 1
    # Nothing written: the generations and areas are as they were.
    assert _sql(tiny_db_url, "SELECT id, active FROM generation ORDER BY id") == generations
    assert _sql(tiny_db_url, "SELECT count(*), max(generation_high) FROM area") == areas
    only = tiny_client.get(
        f"/plans/{plan_id}/coverage", params={"analyses": "staffing"}, headers=h["planner"]
    ).json()
    assert set(only["analyses"]) == {"staffing"}
    r = tiny_client.get(
        f"/plans/{plan_id}/coverage", params={"analyses": "staffing,votes"}, headers=h["planner"]
    )
    _problem(r, 422, "votes")
    _problem(tiny_client.get(f"/plans/{plan_id}/coverage", headers=h["community"]), 403)


def test_publishing_after_what_ifs(tiny_client, tiny_db_url, h):
    # A what-if uses (and rolls back) a generation id: ids then have a gap, and retiring
    # areas must end them in the newest older generation, not in id - 1.
    plan_id = _draft(tiny_client, h)
    r = tiny_client.post(
        f"/plans/{plan_id}/edits",
        json={"op": "split_line", "key": NW, "line": mapping(CUT_NW)},
        headers={**h["planner"], "If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    for _ in range(2):
        r = tiny_client.get(
            f"/plans/{plan_id}/coverage", params={"analyses": "staffing"}, headers=h["planner"]
        )
        assert r.status_code == 200, r.text
    r = tiny_client.post(f"/plans/{plan_id}/publish", headers={**h["planner"], "If-Match": '"2"'})
    assert r.status_code == 200, r.text
    (old,) = _sql(tiny_db_url, "SELECT generation_high FROM area WHERE code = :c", c=NW)
    active = _sql(tiny_db_url, "SELECT id FROM generation WHERE active ORDER BY id")
    assert old.generation_high == active[0].id and len(active) == 2


def test_planning_page_shows_a_draft_beside_the_current_grids(tiny_client, h):
    plan_id = _draft(tiny_client, h)
    r = tiny_client.post(
        f"/plans/{plan_id}/edits",
        json={"op": "split_line", "key": NW, "line": mapping(CUT_NW)},
        headers={**h["planner"], "If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    page = tiny_client.get(
        "/pages/planning", params={"plan": plan_id, "lang": "en"}, headers=h["planner"]
    )
    assert page.status_code == 200, page.text[:500]
    html = page.text
    assert "Draft: Redraw" in html
    assert '"property":"population_dev"' in html
    # Today's 4 grids beside the draft's 5 in the metrics panel.
    assert "<td>Grids</td><td>4</td><td>5</td>" in controls(html)
    assert '"n1"' in html and '"n2"' in html
    plain = tiny_client.get("/pages/planning", params={"lang": "en"}, headers=h["planner"])
    assert plain.status_code == 200 and "Draft:" not in plain.text
    r = tiny_client.get("/pages/planning", params={"plan": plan_id}, headers=h["community"])
    _problem(r, 403)
    r = tiny_client.get("/pages/planning", params={"plan": plan_id}, headers=h["other_planner"])
    _problem(r, 404)
    r = tiny_client.get("/pages/planning", params={"plan": 999999}, headers=h["planner"])
    _problem(r, 404)


def test_what_if_relocates_what_the_draft_changes_as_relocating_everything_would(
    tiny_client, tiny_db_url, h
):
    from service.analysis import located, relocating_everything, resolve_scope
    from service.auth import Principal
    from service.planning.whatif import _write_hypothetical, run_whatif
    from service.repositories.plans import get_plan

    admin = Principal("test", "test", "admin", None, None)
    engine = make_engine(tiny_db_url)
    # Incidents and units on a lattice over the district and beyond it (outside every grid),
    # on grid edges and the cuts too, reported over the last weeks, some closed.
    lattice = "generate_series(0, 12) i, generate_series(0, 12) j"
    point = "ST_SetSRID(ST_MakePoint(105.998 + i * 0.0025, 25.998 + j * 0.0025), 4326)"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO incident (category, source, geom, status, reported_at, closed_at) "
                f"SELECT 'gas', 'patrol', {point}, (ARRAY['open', 'new', 'closed'])[1 + (i + j) "
                "% 3], now() - make_interval(hours => i * 13 + j), CASE WHEN (i + j) % 3 = 2 "
                "THEN now() - make_interval(hours => i) END FROM " + lattice
            )
        )
        conn.execute(
            text(f"INSERT INTO unit (name, kind, geom) SELECT 'u', 'shop', {point} FROM {lattice}")
        )
    # A plan published before: NE split; its closed incidents keep the cells of the grid
    # they were handled in, which the current generation no longer has.
    published = _draft(tiny_client, h)
    cut_ne = LineString([(106.015, 26.0095), (106.015, 26.0205)])
    r = tiny_client.post(
        f"/plans/{published}/edits",
        json={"op": "split_line", "key": NE, "line": mapping(cut_ne)},
        headers={**h["planner"], "If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    r = tiny_client.post(f"/plans/{published}/publish", headers=h["planner"])
    assert r.status_code == 200, r.text
    kept_old = _sql(tiny_db_url, "SELECT count(*) FROM incident WHERE grid_code = :ne", ne=NE)[0][0]
    assert kept_old > 0
    plan_id = _draft(tiny_client, h)
    edits = [
        {"op": "split_line", "key": NW, "line": mapping(CUT_NW)},
        {"op": "merge", "keys": [f"{SOUTH}001", f"{SOUTH}002"]},
    ]
    for version, edit in enumerate(edits, start=1):
        r = tiny_client.post(
            f"/plans/{plan_id}/edits",
            json=edit,
            headers={**h["planner"], "If-Match": f'"{version}"'},
        )
        assert r.status_code == 200, r.text
    with engine.connect() as conn, conn.begin() as doomed:
        plan = get_plan(conn, plan_id)

        def whatif() -> dict:
            with conn.begin_nested() as hypothetical:  # run_whatif leaves it to roll back
                out = run_whatif(conn, plan_id=plan_id, principal=admin)
                hypothetical.rollback()
            return out

        with conn.begin_nested() as hypothetical:
            generation, _codes = _write_hypothetical(conn, plan)
            scope = resolve_scope(conn, principal=admin, area_code=None, generation=generation)

            def cells(table: str) -> list[tuple]:
                sql = f"SELECT * FROM {located(table, ('id',), scope=scope)} x ORDER BY id"
                return [tuple(r) for r in conn.execute(text(sql), scope.params())]

            for table in ("incident", "unit"):
                changed_only = cells(table)
                with relocating_everything():
                    everything = cells(table)
                assert changed_only == everything and len(everything) == 169, table
                # Rows of the split and the merged grids moved (and the closed incidents
                # of NE, retired before): none is on those grids in the draft.
                grids = {r[2] for r in everything}
                assert not grids & {NW, NE, f"{SOUTH}001", f"{SOUTH}002"}, grids
            hypothetical.rollback()
        proportional = whatif()
        assert proportional["analyses"]["workload"]["draft"]["incidents"] > 0
        with relocating_everything():
            assert whatif() == proportional
        doomed.rollback()
    engine.dispose()
