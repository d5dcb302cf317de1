"""Deadlines on real PostGIS: time limits an admin changes; the sweep with a controllable
clock (each deadline fires once, however many sweep at once); its SQL writes exactly what
the pure lifecycle decides; two live servers sweeping one database; the CLI."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from service.db import make_async_engine, make_engine
from service.dispatch.deadlines import sweep_deadlines
from service.dispatch.lifecycle import (
    LIFECYCLE_COLUMNS,
    Actor,
    CaseState,
    Event,
    apply,
    decide,
    replay,
)
from service.settings import DispatchSettings
from tests.conftest import LiveServer, _client, _drop_database, auth, tiny_database

CITY, DISTRICT = "990100", "990101"
COMMUNITY, COMMUNITY_S = "990101001001", "990101001002"
NW_GRID, NE_GRID = "990101001001001", "990101001001002"
IN_NW = (106.005, 26.015)
IN_NE = (106.015, 26.015)
SYSTEM = Actor("system")
HOUR = timedelta(hours=1)

ROLES = {
    "admin": ("admin", None),
    "planner": ("planner", CITY),
    "city": ("city_dispatcher", CITY),
    "district": ("district_dispatcher", DISTRICT),
    "community": ("community_dispatcher", COMMUNITY),
    "grid": ("grid_officer", NW_GRID),
}


@pytest.fixture(scope="module")
def db_url():
    """A tiny hierarchy of the module's own (sweeps here judge every case in it)."""
    url = tiny_database("wangge_test_deadlines")
    yield url
    _drop_database(url)


@pytest.fixture(scope="module")
def tokens(db_url):
    from service.auth import create_token

    engine = make_engine(db_url)
    with engine.begin() as conn:
        out = {
            name: create_token(conn, name=name, role=role, area_code=area)
            for name, (role, area) in ROLES.items()
        }
        out["intake"] = create_token(
            conn, name="12319", role="intake", area_code=CITY, source="hotline_12319"
        )
    engine.dispose()
    return out


@pytest.fixture(scope="module")
def h(tokens):
    return {k: auth(v) for k, v in tokens.items()}


@pytest.fixture(scope="module")
def client(db_url):
    with _client(db_url) as c:
        yield c


def _sql(url, sql, **params):
    engine = make_engine(url)
    with engine.begin() as conn:
        rows = conn.execute(text(sql), params).all()
    engine.dispose()
    return rows


def _sweep(url, **kwargs):
    async def run():
        engine = make_async_engine(url, pool_size=2)
        try:
            return await sweep_deadlines(engine, **kwargs)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _act(client, h, who, case_id, action, body=None):
    return _ok(client.post(f"/cases/{case_id}/actions/{action}", json=body, headers=h[who]))


def _report(client, h, category="gas", where=IN_NW) -> int:
    body = {"category": category, "source": "patrol", "lon": where[0], "lat": where[1]}
    r = client.post("/incidents", json=body, headers=h["grid"])
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _dispatched(client, h, category="gas", **dispatch) -> dict:
    case_id = _report(client, h, category)
    _act(client, h, "community", case_id, "accept")
    body = {"assignee": {"kind": "grid", "code": NW_GRID}, **dispatch}
    return _act(client, h, "community", case_id, "dispatch", body)


def _events(url, case_id) -> list[str]:
    rows = _sql(url, "SELECT action FROM case_event WHERE incident_id = :i ORDER BY seq", i=case_id)
    return [r.action for r in rows]


def _states(url, ids) -> dict[int, CaseState]:
    cols = ", ".join(["id", "category", *LIFECYCLE_COLUMNS])
    rows = _sql(url, f"SELECT {cols} FROM incident WHERE id = ANY(:ids)", ids=list(ids))
    return {r.id: CaseState.from_row(r._mapping) for r in rows}


def _limits(url) -> dict[tuple[str, str, str], int]:
    rows = _sql(url, "SELECT category, priority, step, minutes FROM case_time_limit")
    return {(r.category, r.priority, r.step): r.minutes for r in rows}


def _replay_all(url: str) -> int:
    """Assert every case's row equals the replay of its events; return how many."""
    cols = ", ".join(["id", "category", *LIFECYCLE_COLUMNS])
    rows = {r.id: r._mapping for r in _sql(url, f"SELECT {cols} FROM incident")}
    events: dict[int, list[Event]] = {}
    for e in _sql(url, "SELECT * FROM case_event ORDER BY incident_id, seq"):
        events.setdefault(e.incident_id, []).append(Event.from_row(e._mapping))
    assert set(events) == set(rows)
    for case_id, row in rows.items():
        replayed = replay(events[case_id])
        expected = {k: row[k] for k in ("category", *LIFECYCLE_COLUMNS)}
        got = {k: getattr(replayed, k) for k in expected}
        assert got == expected, (case_id, {k for k in expected if got[k] != expected[k]})
    return len(rows)


# -- time limits ----------------------------------------------------------------------------


def test_everyone_who_dispatches_reads_the_limits(client, h):
    for who in ("admin", "planner", "city", "district", "community"):
        limits = _ok(client.get("/time-limits", headers=h[who]))
        assert len(limits) == 7 * 3 * 4
    first = limits[0]
    assert (first["category"], first["priority"], first["step"]) == ("water", "urgent", "accept")
    assert [r["step"] for r in limits[:4]] == ["accept", "sign", "handle", "verify"]
    gas = {(r["priority"], r["step"]): r["minutes"] for r in limits if r["category"] == "gas"}
    assert gas[("urgent", "sign")] == 30 and gas[("urgent", "handle")] == 240
    for who in ("grid", "intake"):
        r = client.get("/time-limits", headers=h[who])
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert client.get("/time-limits").status_code == 401


def test_an_admin_changes_a_limit(client, h, tokens):
    url = "/time-limits/other/high/handle"
    r = client.put(url, json={"minutes": 90}, headers=h["community"])
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    row = _ok(client.put(url, json={"minutes": 90}, headers=h["admin"]))
    assert (row["category"], row["priority"], row["step"], row["minutes"]) == (
        "other",
        "high",
        "handle",
        90,
    )
    assert row["updated_by"] == tokens["admin"].split("_")[1]
    limits = client.get("/time-limits", headers=h["planner"]).json()
    other = {(r["priority"], r["step"]): r["minutes"] for r in limits if r["category"] == "other"}
    assert other[("high", "handle")] == 90
    # It takes effect on the next clock: a case of that category dispatched now.
    assert _ok(client.put(url, json={"minutes": 2880}, headers=h["admin"]))["minutes"] == 2880


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("fire/normal/sign", "category"),
        ("gas/low/sign", "priority"),
        ("gas/normal/close", "step"),
    ],
)
def test_an_unknown_limit_is_404_naming_the_part(client, h, path, field):
    # 404 even with a bad body: the address is judged first.
    for body in ({"minutes": 5}, {"minutes": 0}):
        r = client.put(f"/time-limits/{path}", json=body, headers=h["admin"])
        assert r.status_code == 404, r.text
        assert r.json()["field"] == field and "one of" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"minutes": 0},
        {"minutes": -5},
        {"minutes": "soon"},
        {"minutes": 10**9},
        {},
        {"minutes": 5, "hours": 1},
        {"minutes": 1.5},
    ],
)
def test_bad_minutes_are_422(client, h, db_url, body):
    before = _limits(db_url)[("gas", "normal", "sign")]
    r = client.put("/time-limits/gas/normal/sign", json=body, headers=h["admin"])
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert _limits(db_url)[("gas", "normal", "sign")] == before


# -- the sweep with a controllable clock ----------------------------------------------------


def test_a_missed_deadline_is_flagged_once_then_escalated_once(client, h, db_url):
    _ok(
        client.put(
            "/time-limits/street_light/normal/sign", json={"minutes": 30}, headers=h["admin"]
        )
    )
    case = _dispatched(client, h, "street_light")
    case_id, case_dispatched_at = case["id"], case["dispatched_at"]
    t0 = datetime.fromisoformat(case["dispatched_at"])
    assert datetime.fromisoformat(case["step_due_at"]) - t0 == timedelta(minutes=30)
    grace = HOUR

    swept = _sweep(db_url, now=t0 + timedelta(minutes=29), escalate_after=grace)
    assert case_id not in swept.overdue and case_id not in swept.escalated
    assert _events(db_url, case_id) == ["report", "accept", "dispatch"]

    at = t0 + timedelta(minutes=31)
    swept = _sweep(db_url, now=at, escalate_after=grace)
    assert swept.overdue.count(case_id) == 1 and case_id not in swept.escalated
    assert _events(db_url, case_id) == ["report", "accept", "dispatch", "overdue"]
    event = _sql(db_url, "SELECT * FROM case_event WHERE incident_id = :i AND seq = 4", i=case_id)[
        0
    ]
    assert (event.actor_role, event.from_state, event.to_state, event.at) == (
        "system",
        "dispatched",
        "dispatched",
        at,
    )
    assert (event.assignee_kind, event.assignee_code) == ("grid", NW_GRID)
    now = _ok(client.get(f"/cases/{case_id}", headers=h["district"]))
    assert now["step_overdue"] and now["supervised"] and now["clock"] == "red"
    assert now["state"] == "dispatched" and now["version"] == 4

    # The same time again: nothing at all is left to do, for any case.
    again = _sweep(db_url, now=at, escalate_after=grace)
    assert (again.overdue, again.escalated) == ([], [])
    assert _events(db_url, case_id) == ["report", "accept", "dispatch", "overdue"]

    due = t0 + timedelta(minutes=30)
    swept = _sweep(db_url, now=due + grace - timedelta(minutes=1), escalate_after=grace)
    assert case_id not in swept.escalated
    at = due + grace + timedelta(minutes=1)
    swept = _sweep(db_url, now=at, escalate_after=grace)
    assert swept.escalated.count(case_id) == 1
    assert _sweep(db_url, now=at, escalate_after=grace).escalated == []
    assert _events(db_url, case_id)[-2:] == ["overdue", "auto_escalate"]
    # Supervision moved up: the district owns it; the grid team still has it to sign for, on
    # a new clock.
    case = _ok(client.get(f"/cases/{case_id}", headers=h["district"]))
    assert (case["state"], case["owner_level"], case["owner_area_code"]) == (
        "dispatched",
        "district",
        DISTRICT,
    )
    assert (case["assignee_kind"], case["assignee_code"]) == ("grid", NW_GRID)
    assert case["escalations"] == 1 and case["dispatched_at"] == case_dispatched_at
    assert not case["step_overdue"] and not case["supervised"]
    assert case["step"] == "sign"
    assert datetime.fromisoformat(case["step_due_at"]) == at + timedelta(minutes=30)
    assert {"escalate", "comment"} <= set(case["allowed_actions"])
    assert "take_over" not in case["allowed_actions"]
    assert "sign" in _ok(client.get(f"/cases/{case_id}", headers=h["grid"]))["allowed_actions"]
    community = _ok(client.get(f"/cases/{case_id}", headers=h["community"]))
    assert "escalate" not in community["allowed_actions"]
    _act(client, h, "grid", case_id, "sign")
    _act(client, h, "grid", case_id, "feedback", {"note": "fixed"})
    # The district, not the community, verifies it now.
    refused = client.post(f"/cases/{case_id}/actions/verify", headers=h["community"])
    assert refused.status_code == 403, refused.text
    assert _act(client, h, "district", case_id, "verify")["state"] == "closed"


def test_a_sweep_without_escalation_and_at_the_top(client, h, db_url):
    case = _dispatched(client, h, "water")
    case_id = case["id"]
    # Escalated twice by people: owned by the city, which has no level above.
    _act(client, h, "community", case_id, "escalate", {"reason": "big"})
    _act(client, h, "district", case_id, "escalate", {"reason": "bigger"})
    case = _ok(client.get(f"/cases/{case_id}", headers=h["city"]))
    assert case["owner_level"] == "city"
    at = datetime.fromisoformat(case["step_due_at"]) + timedelta(days=1)
    swept = _sweep(db_url, now=at, escalate_after=None)
    assert case_id in swept.overdue and swept.escalated == []
    swept = _sweep(db_url, now=at, escalate_after=timedelta(0))
    assert case_id not in swept.escalated
    assert _events(db_url, case_id)[-1] == "overdue"
    assert _ok(client.get(f"/cases/{case_id}", headers=h["city"]))["step_overdue"]


# -- the SQL equals the lifecycle -----------------------------------------------------------


def _variety(client, h) -> list[int]:
    """Return open cases in every open state, owner level and kind of assignee."""
    ids = []
    ids.append(_report(client, h))  # reported, community
    registered = _report(client, h, "road")
    _act(client, h, "community", registered, "accept", {"priority": "urgent"})
    ids.append(registered)
    ids.append(_dispatched(client, h, "sanitation")["id"])  # dispatched to a grid
    unit = client.post(
        "/units",
        json={"name": "Water Co.", "kind": "enterprise", "lon": IN_NE[0], "lat": IN_NE[1]},
        headers=h["community"],
    ).json()
    by_unit = _report(client, h, "water")
    _act(client, h, "community", by_unit, "accept")
    _act(
        client,
        h,
        "community",
        by_unit,
        "dispatch",
        {"assignee": {"kind": "unit", "code": str(unit["id"])}},
    )
    ids.append(by_unit)
    signed = _dispatched(client, h, "public_order", priority="high")["id"]
    _act(client, h, "grid", signed, "sign")
    ids.append(signed)
    handled = _dispatched(client, h, "other")["id"]
    _act(client, h, "grid", handled, "sign")
    _act(client, h, "grid", handled, "feedback", {"note": "done"})
    ids.append(handled)
    # Owned by the district, dispatched by it to a grid (escalation clears nothing it keeps).
    district = _report(client, h, "gas")
    _act(client, h, "community", district, "escalate", {"reason": "needs the district"})
    _act(
        client, h, "district", district, "dispatch", {"assignee": {"kind": "grid", "code": NE_GRID}}
    )
    ids.append(district)
    # Supervised from above already, reported in the sibling community.
    supervised = _report(client, h, "street_light")
    _act(client, h, "district", supervised, "supervise", {"note": "why so slow?"})
    ids.append(supervised)
    # Owned by the city.
    city = _report(client, h, "road")
    _act(client, h, "community", city, "escalate", {"reason": "a"})
    _act(client, h, "district", city, "escalate", {"reason": "b"})
    ids.append(city)
    # Dispatched, then the grid returned it: registered again with no assignee.
    returned = _dispatched(client, h)["id"]
    _act(client, h, "grid", returned, "return", {"reason": "not ours"})
    ids.append(returned)
    return ids


def _assert_sql_equals_lifecycle(url, before, action, now, limits, swept_ids):
    after = _states(url, swept_ids)
    events = {
        e.incident_id: e._mapping
        for e in _sql(
            url,
            "SELECT DISTINCT ON (incident_id) * FROM case_event WHERE incident_id = ANY(:ids) "
            "ORDER BY incident_id, seq DESC",
            ids=list(swept_ids),
        )
    }
    for case_id in swept_ids:
        expected = decide(before[case_id], action, SYSTEM, {}, now=now, limits=limits)
        assert after[case_id] == apply(before[case_id], expected), case_id
        got = Event.from_row(events[case_id])
        want = expected.row()
        have = got.row()
        # The same instant, whatever the text of its zone.
        for d in (want["data"], have["data"]):
            if d.get("due_at") is not None:
                d["due_at"] = datetime.fromisoformat(d["due_at"])
        assert have == want, (case_id, {k for k in want if have[k] != want[k]})


def test_the_sweep_writes_what_the_lifecycle_decides(client, h, db_url):
    ids = _variety(client, h)
    limits = _limits(db_url)
    before = _states(db_url, ids)
    assert {c.state for c in before.values()} == {
        "reported",
        "registered",
        "dispatched",
        "signed",
        "handled",
    }
    now = datetime.now(UTC) + timedelta(days=10)  # past every limit
    swept = _sweep(db_url, now=now, escalate_after=None)
    assert set(ids) <= set(swept.overdue) and len(swept.overdue) == len(set(swept.overdue))
    _assert_sql_equals_lifecycle(db_url, before, "overdue", now, limits, ids)

    before = _states(db_url, ids)
    later = now + 2 * HOUR
    swept = _sweep(db_url, now=later, escalate_after=HOUR)
    city_owned = {i for i, c in before.items() if c.owner_level == "city"}
    assert city_owned and set(ids) - city_owned <= set(swept.escalated)
    assert not city_owned & set(swept.escalated)
    _assert_sql_equals_lifecycle(
        db_url, before, "auto_escalate", later, limits, set(ids) - city_owned
    )
    _replay_all(db_url)


# -- many sweepers at once ------------------------------------------------------------------


def _insert_cases(url, n: int) -> list[int]:
    """Return the ids of ``n`` new reported cases spread over the tiny city (set-based)."""
    rows = _sql(
        url,
        "INSERT INTO incident (category, source, geom) "
        "SELECT (ARRAY['water','gas','street_light','road','sanitation','public_order','other'])"
        "[1 + g % 7], 'patrol', "
        "ST_SetSRID(ST_MakePoint(106.001 + (g % 39) * 0.001, 26.001 + (g % 19) * 0.001), 4326) "
        "FROM generate_series(1, :n) g RETURNING id",
        n=n,
    )
    return [r.id for r in rows]


def test_concurrent_sweeps_fire_each_deadline_once(db_url):
    ids = _insert_cases(db_url, 400)
    now = datetime.now(UTC) + timedelta(days=30)
    start = threading.Barrier(4)
    results, errors = [], []

    def sweeper():
        try:
            start.wait()
            results.append(_sweep(db_url, now=now, escalate_after=timedelta(0), batch_size=25))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweeper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    flagged = [i for r in results for i in r.overdue]
    escalated = [i for r in results for i in r.escalated]
    assert len(flagged) == len(set(flagged)) and len(escalated) == len(set(escalated))
    assert set(ids) <= set(flagged) and set(ids) <= set(escalated)
    counts = _sql(
        db_url,
        "SELECT incident_id, count(*) FILTER (WHERE action = 'overdue') AS overdue, "
        "count(*) FILTER (WHERE action = 'auto_escalate') AS escalated "
        "FROM case_event WHERE incident_id = ANY(:ids) GROUP BY incident_id",
        ids=ids,
    )
    assert {(r.overdue, r.escalated) for r in counts} == {(1, 1)} and len(counts) == len(ids)
    # Escalated from their community to its district, with a fresh accept clock.
    owners = _sql(
        db_url,
        "SELECT DISTINCT owner_level, step_overdue, step_due_at > :now AS later "
        "FROM incident WHERE id = ANY(:ids)",
        ids=ids,
        now=now,
    )
    assert [tuple(r) for r in owners] == [("district", False, True)]
    assert _sweep(db_url, now=now, escalate_after=timedelta(0)).overdue == []
    _replay_all(db_url)


def test_two_live_servers_sweeping_fire_each_deadline_once(client, h, db_url):
    ids = []
    for _ in range(12):
        case_id = _report(client, h, "gas")
        _act(client, h, "community", case_id, "accept")
        # Taken just before its dispatch: a deadline must lie in the future.
        soon = datetime.now(UTC) + timedelta(seconds=3)
        body = {"assignee": {"kind": "grid", "code": NW_GRID}, "due_at": soon.isoformat()}
        ids.append(_act(client, h, "community", case_id, "dispatch", body)["id"])
    sweeping = DispatchSettings(sweep_seconds=0.2, escalate_after_minutes=0)
    with LiveServer(db_url, dispatch=sweeping), LiveServer(db_url, dispatch=sweeping):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = _sql(
                db_url,
                "SELECT count(*) FROM case_event WHERE action = 'auto_escalate' "
                "AND incident_id = ANY(:ids)",
                ids=ids,
            )[0][0]
            if done == len(ids):
                break
            time.sleep(0.2)
        time.sleep(1.0)  # a few more rounds of both: nothing more may happen
    history = {i: _events(db_url, i) for i in ids}
    for case_id, actions in history.items():
        assert actions == ["report", "accept", "dispatch", "overdue", "auto_escalate"], case_id
    _replay_all(db_url)


def test_the_cli_sweeps_with_its_clock(db_url, monkeypatch):
    from service.cli import app

    monkeypatch.setenv("DATABASE_URL", db_url)
    (case_id,) = _insert_cases(db_url, 1)
    runner = CliRunner()
    due = _states(db_url, [case_id])[case_id].step_due_at
    at = (due + timedelta(minutes=1)).isoformat()
    r = runner.invoke(app, ["dispatch", "sweep", "--at", at])
    assert r.exit_code == 0, r.output
    out = orjson.loads(r.output)
    assert out["overdue"] >= 1 and datetime.fromisoformat(out["at"]) == due + timedelta(minutes=1)
    assert _events(db_url, case_id) == ["report", "overdue"]
    r = runner.invoke(app, ["dispatch", "sweep", "--at", at])
    assert orjson.loads(r.output)["overdue"] == 0
    for bad in ("tomorrow", "2025-05-01T09:30:00"):
        r = runner.invoke(app, ["dispatch", "sweep", "--at", bad])
        assert r.exit_code == 1 and "--at" in r.output


# -- flagging stays cheap at volume ---------------------------------------------------------


def test_flagging_can_stay_a_heap_only_update(db_url):
    """The sweep's flag writes no index entry (HOT) when no index holds a column it sets and
    pages keep room: every partition of incident, also one created later, has fillfactor 90,
    and no index (key, expression or predicate) names a flag column. (bench.dispatch's sweep
    section counts the HOT updates at 1 M cases.)"""
    months = _sql(db_url, "SELECT count(*) FROM incident_ensure_partitions(40)")[0][0]
    assert months > 0  # months beyond those the migration made
    leaves = _sql(
        db_url,
        "SELECT c.relname, c.reloptions FROM pg_partition_tree('incident') t "
        "JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf",
    )
    assert leaves and all("fillfactor=90" in (r.reloptions or []) for r in leaves), leaves
    flag_columns = {"step_overdue", "supervised", "version", "updated_at"}
    indexes = _sql(
        db_url,
        "SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS definition "
        "FROM pg_index WHERE indrelid = 'incident'::regclass",
    )
    assert indexes
    for index in indexes:
        named = {c for c in flag_columns if c in index.definition}
        assert not named, (index.name, named)
