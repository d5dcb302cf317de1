"""Evaluation (综合评价) from hand-made case histories with known rates, medians and scope;
JSON and CSV; and the workload analysis counting the cases whose step is overdue."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.db import make_engine
from tests.conftest import _client, _drop_database, auth, tiny_database

NW_GRID, NE_GRID = "990101001001001", "990101001001002"
IN_NW, IN_NE = (106.005, 26.015), (106.015, 26.015)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD = {"from": "2025-12-31T00:00:00+00:00", "to": "2026-01-31T00:00:00+00:00"}
H = timedelta(hours=1)

# (action, from_state, to_state, at, due_at set by the event)
A = [  # signed and handled on time, closed, satisfied
    ("report", None, "reported", T0, None),
    ("accept", "reported", "registered", T0 + 0.5 * H, None),
    ("dispatch", "registered", "dispatched", T0 + H, T0 + 2 * H),
    ("sign", "dispatched", "signed", T0 + 1.5 * H, T0 + 25.5 * H),
    ("feedback", "signed", "handled", T0 + 10 * H, T0 + 34 * H),
    ("verify", "handled", "closed", T0 + 12 * H, None),
]
B = [  # escalated, signed and handled late, closed, reopened by a callback, closed again
    ("report", None, "reported", T0, None),
    ("escalate", "reported", "registered", T0 + 0.2 * H, None),
    ("dispatch", "registered", "dispatched", T0 + H, T0 + 2 * H),
    ("overdue", "dispatched", "dispatched", T0 + 2 * H, None),
    ("sign", "dispatched", "signed", T0 + 3 * H, T0 + 4 * H),
    ("feedback", "signed", "handled", T0 + 5 * H, T0 + 6 * H),
    ("verify", "handled", "closed", T0 + 6 * H, None),
    ("callback", "closed", "dispatched", T0 + 30 * H, T0 + 31 * H),
    ("sign", "dispatched", "signed", T0 + 30.5 * H, T0 + 40 * H),
    ("feedback", "signed", "handled", T0 + 35 * H, T0 + 50 * H),
    ("verify", "handled", "closed", T0 + 36 * H, None),
]
C = [  # rejected
    ("report", None, "reported", T0, None),
    ("reject", "reported", "cancelled", T0 + H, None),
]
D = [  # dispatched, never signed for, overdue now
    ("report", None, "reported", T0, None),
    ("dispatch", "reported", "dispatched", T0 + H, T0 + 2 * H),
    ("overdue", "dispatched", "dispatched", T0 + 2 * H, None),
]
E = [("report", None, "reported", T0, None)]  # in the NE grid, waiting


@pytest.fixture(scope="module")
def db_url():
    url = tiny_database("wangge_test_evaluation")
    yield url
    _drop_database(url)


@pytest.fixture(scope="module")
def h(db_url):
    from service.auth import create_token

    roles = {
        "city": ("city_dispatcher", "990100"),
        "community_s": ("community_dispatcher", "990101001002"),
        "grid": ("grid_officer", NW_GRID),
        "admin": ("admin", None),
    }
    engine = make_engine(db_url)
    with engine.begin() as conn:
        out = {
            n: auth(create_token(conn, name=n, role=r, area_code=a)) for n, (r, a) in roles.items()
        }
    engine.dispose()
    return out


@pytest.fixture(scope="module")
def client(db_url, h):
    with _client(db_url) as c:
        yield c


def _case(client, h, db_url, history, where=IN_NW, *, reported=T0, **row) -> int:
    """Return a case filed through the API whose history is replaced by ``history``."""
    body = {"category": "road", "source": "patrol", "lon": where[0], "lat": where[1]}
    r = client.post("/incidents", json=body, headers=h["city"])
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    state = history[-1][2]
    status = {"reported": "new", "closed": "closed", "cancelled": "closed"}.get(state, "open")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM case_event WHERE incident_id = :i"), {"i": case_id})
        for seq, (action, before, after, at, due) in enumerate(history, 1):
            shift = reported - T0
            data = {"due_at": (due + shift).isoformat()} if due else {}
            conn.execute(
                text(
                    "INSERT INTO case_event (incident_id, seq, at, action, actor_role, "
                    "from_state, to_state, data) VALUES (:i, :s, :at, :a, 'system', :f, :t, "
                    "CAST(:d AS jsonb))"
                ),
                {
                    "i": case_id,
                    "s": seq,
                    "at": at + shift,
                    "a": action,
                    "f": before,
                    "t": after,
                    "d": json.dumps(data),
                },
            )
        sets = {"state": state, "status": status, "reported_at": reported, **row}
        sets["closed_at"] = history[-1][3] + (reported - T0) if status == "closed" else None
        assignments = ", ".join(f"{k} = :{k}" for k in sets)
        conn.execute(
            text(f"UPDATE incident SET {assignments} WHERE id = :id"), {**sets, "id": case_id}
        )
    engine.dispose()
    return case_id


@pytest.fixture(scope="module")
def cases(client, h, db_url):
    _case(client, h, db_url, A, satisfaction=5)
    _case(client, h, db_url, B, satisfaction=1, reopens=1, escalations=1)
    _case(client, h, db_url, C)
    _case(client, h, db_url, D, step_overdue=True)
    _case(client, h, db_url, E, where=IN_NE)
    # Outside the period: not counted.
    _case(client, h, db_url, A, reported=T0 - timedelta(days=60), satisfaction=1)


def _evaluate(client, who, **params):
    r = client.get("/evaluation", params={**PERIOD, **params}, headers=client_h[who])
    assert r.status_code == 200, r.text
    return r


client_h: dict = {}


def test_known_rates_per_grid(client, h, cases):
    client_h.update(h)
    items = {i["code"]: i for i in _evaluate(client, "city").json()["items"]}
    nw = items[NW_GRID]
    assert nw["cases"] == 4
    assert nw["on_time_sign_rate"] == pytest.approx(1 / 3, abs=1e-4)  # A of A, B, D
    assert nw["on_time_handle_rate"] == 0.5  # A of A, B
    assert nw["closure_rate"] == pytest.approx(2 / 3, abs=1e-4)  # A, B of all but C
    assert nw["escalation_rate"] == 0.25
    assert nw["reopen_rate"] == 0.5  # B of A, B
    assert nw["overdue"] == 1
    assert nw["median_sign_minutes"] == 75.0  # 30 and 120
    assert nw["median_handle_minutes"] == 315.0  # 510 and 120
    assert nw["median_close_minutes"] == 540.0  # 720 and 360
    assert nw["mean_satisfaction"] == 3.0
    ne = items[NE_GRID]
    assert ne["cases"] == 1 and ne["closure_rate"] == 0.0 and ne["escalation_rate"] == 0.0
    assert ne["on_time_sign_rate"] is None and ne["reopen_rate"] is None
    assert all(i["cases"] == 0 for c, i in items.items() if c not in (NW_GRID, NE_GRID))


def test_levels_scope_and_csv(client, h, cases):
    client_h.update(h)
    community = _evaluate(client, "city", level="community").json()["items"]
    by_code = {i["code"]: i for i in community}
    assert by_code["990101001001"]["cases"] == 5
    district = {i["code"]: i for i in _evaluate(client, "city", level="district").json()["items"]}
    assert district["990101"]["cases"] == 5
    # A sibling community's dispatcher sees its own grids only.
    mine = _evaluate(client, "community_s").json()["items"]
    assert mine and all(i["parent_code"] == "990101001002" for i in mine)
    assert NW_GRID not in {i["code"] for i in mine}
    r = _evaluate(client, "city", format="csv")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    nw = next(row for row in rows if row["code"] == NW_GRID)
    assert nw["cases"] == "4" and nw["escalation_rate"] == "0.25"


def test_bad_parameters(client, h):
    r = client.get("/evaluation", params={"level": "street"}, headers=h["city"])
    assert r.status_code == 422
    r = client.get(
        "/evaluation",
        params={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        headers=h["city"],
    )
    assert r.status_code == 422 and "since" in r.text


def test_the_evaluation_as_an_analysis_with_geometry(client, h, cases):
    params = {"since": PERIOD["from"], "until": PERIOD["to"]}
    r = client.get("/analysis/evaluation", params=params, headers=h["city"])
    assert r.status_code == 200, r.text
    items = {i["code"]: i for i in r.json()["items"]}
    assert items[NW_GRID]["on_time_handle_rate"] == 0.5
    assert items[NW_GRID]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    r = client.get("/analysis/evaluation", params={**params, "level": "x"}, headers=h["city"])
    assert r.status_code == 422


def test_imported_history_keeps_its_states_as_events(client, h, db_url):
    rows = (
        "category,source,status,reported_at,closed_at,lon,lat\n"
        f"road,patrol,closed,2024-03-01T08:00+08:00,2024-03-04T10:00+08:00,{IN_NE[0]},{IN_NE[1]}\n"
        f"water,resident,open,2024-03-02T08:00:00+08:00,,{IN_NE[0]},{IN_NE[1]}\n"
    )
    r = client.post(
        "/incidents/import", files={"file": ("h.csv", rows.encode())}, headers=h["admin"]
    )
    assert r.status_code == 200, r.text
    engine = make_engine(db_url)
    with engine.connect() as conn:
        events = conn.execute(
            text(
                "SELECT i.state, e.action, e.to_state, e.seq FROM incident i "
                "JOIN case_event e ON e.incident_id = i.id "
                "WHERE i.reported_at < '2025-01-01' ORDER BY i.reported_at, e.seq"
            )
        ).all()
    engine.dispose()
    assert [tuple(e) for e in events] == [
        ("closed", "import", "closed", 1),
        ("registered", "import", "registered", 1),
    ]
    period = {"from": "2024-01-01T00:00:00Z", "to": "2024-12-31T00:00:00Z"}
    got = client.get("/evaluation", params=period, headers=h["city"]).json()["items"]
    ne = next(i for i in got if i["code"] == NE_GRID)
    assert ne["cases"] == 2 and ne["closure_rate"] == 0.5


def test_the_demo_has_lifecycles_with_spread(demo_db_url):
    from service.auth import Principal
    from service.dispatch.evaluation import run_evaluation
    from tests.service.test_cases import _replay_all

    engine = make_engine(demo_db_url)
    with engine.connect() as conn:
        states = dict(conn.execute(text("SELECT state, count(*) FROM incident GROUP BY 1")).all())
        actions = dict(
            conn.execute(text("SELECT action, count(*) FROM case_event GROUP BY 1")).all()
        )
        reopened = conn.execute(text("SELECT count(*) FROM incident WHERE reopens > 0")).scalar()
        dupes = conn.execute(
            text("SELECT count(*) FROM incident WHERE duplicate_of IS NOT NULL")
        ).scalar()
        result = run_evaluation(
            conn,
            principal=Principal("t", "t", "admin", None, None),
            level="community",
            since=datetime(2025, 11, 27, tzinfo=UTC),
            until=datetime(2026, 11, 27, 8, tzinfo=UTC),
        )
    engine.dispose()
    total = sum(states.values())
    assert states["closed"] > 0.7 * total and states["cancelled"] > 0
    assert all(states.get(s, 0) > 0 for s in ("reported", "dispatched", "signed", "handled"))
    for action in ("accept", "dispatch", "sign", "feedback", "verify", "overdue", "escalate"):
        assert actions.get(action, 0) > 0, action
    assert actions["callback"] > 0 and reopened > 0 and dupes > 0
    rates = [i["on_time_handle_rate"] for i in result["items"] if i["cases"] >= 20]
    assert len(rates) > 10 and max(rates) - min(rates) > 0.15  # teams differ
    assert 0.6 < sorted(rates)[len(rates) // 2] < 0.98  # most on time
    assert _replay_all(demo_db_url) == total


def test_grids_layer_offers_the_on_time_handling_rate(client, h):
    body = {"category": "road", "source": "patrol", "lon": IN_NW[0], "lat": IN_NW[1]}
    case_id = client.post("/incidents", json=body, headers=h["admin"]).json()["id"]
    grid = {"assignee": {"kind": "grid", "code": NW_GRID}}
    for action, payload in (
        ("accept", None),
        ("dispatch", grid),
        ("sign", None),
        ("feedback", {"note": "filled"}),
    ):
        r = client.post(f"/cases/{case_id}/actions/{action}", json=payload, headers=h["admin"])
        assert r.status_code == 200, r.text
    url = f"/ogc/collections/grids/items/{NW_GRID}"
    one = client.get(url, params={"properties": "code,on_time_handling_90d"}, headers=h["city"])
    assert one.status_code == 200, one.text
    assert one.json()["properties"]["on_time_handling_90d"] == 1.0
    # Not sent by default in lists (tiles, pages): it reads every drawn area's events.
    items = client.get("/ogc/collections/grids/items", headers=h["city"]).json()
    assert "on_time_handling_90d" not in items["features"][0]["properties"]
