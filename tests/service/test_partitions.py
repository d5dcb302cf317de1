"""Incidents partitioned by month (migration 0013): the API's time-bounded reads touch only
the months they ask for, cases are found by id in any month, imports land in their months,
and old months leave for the archive and come back whole (``wangge incidents ...``)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from service.db import make_engine
from service.dispatch.stream import _AFTER_SQL, _REPLAY_SQL
from tests.conftest import _client, _drop_database, auth, make_tokens, tiny_database

CST = timezone(timedelta(hours=8))
IN_NW = (106.005, 26.015)
#: One case in each of three months (Guiyang time), one at a Jan/Feb boundary instant on the
#: February side, and one far off (no partition of its own: the default one holds it).
REPORTED = {
    "jan": datetime(2025, 1, 15, 9, 0, tzinfo=CST),
    "feb": datetime(2025, 2, 10, 9, 0, tzinfo=CST),
    "feb_first": datetime(2025, 2, 1, 0, 0, tzinfo=CST),
    "mar": datetime(2025, 3, 20, 9, 0, tzinfo=CST),
    "far": datetime(2090, 7, 1, 12, 0, tzinfo=CST),
}
GRID = "990101001001001"
JPEG_TYPE = {"Content-Type": "image/jpeg"}
FEB = {"since": "2025-02-01T00:00:00+08:00", "until": "2025-03-01T00:00:00+08:00"}


@pytest.fixture(scope="module")
def db_url():
    url = tiny_database("wangge_test_partitions")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("SELECT incident_ensure_partitions(0, DATE '2025-01-01')"))
    engine.dispose()
    yield url
    _drop_database(url)


@pytest.fixture(scope="module")
def client(db_url):
    with _client(db_url) as c:
        yield c


@pytest.fixture(scope="module")
def h(db_url):
    tokens = make_tokens(
        db_url,
        {
            "city": ("city_dispatcher", "990100"),
            "admin": ("admin", None),
            "community": ("community_dispatcher", "990101001001"),
            "grid": ("grid_officer", "990101001001001"),
            "district": ("district_dispatcher", "990101"),
        },
    )
    return {k: auth(v) for k, v in tokens.items()}


@pytest.fixture(scope="module")
def cases(client, h):
    ids = {}
    for name, at in REPORTED.items():
        body = {"category": "water", "source": "patrol", "lon": IN_NW[0], "lat": IN_NW[1]}
        r = client.post(
            "/incidents", json={**body, "reported_at": at.isoformat()}, headers=h["city"]
        )
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    return ids


def _partition_of(db_url, ids: list[int]) -> dict[int, str]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, tableoid::regclass::text FROM incident WHERE id = ANY(:ids)"),
            {"ids": ids},
        ).all()
    engine.dispose()
    return dict(rows)


def test_each_case_is_stored_in_the_partition_of_its_month(db_url, cases):
    assert _partition_of(db_url, list(cases.values())) == {
        cases["jan"]: "incident_2025_01",
        cases["feb"]: "incident_2025_02",
        cases["feb_first"]: "incident_2025_02",  # 00:00 in Guiyang is still January in UTC
        cases["mar"]: "incident_2025_03",
        cases["far"]: "incident_default",
    }


def test_cases_are_found_by_id_in_every_partition(client, h, cases):
    for name, case_id in cases.items():
        for path in (f"/incidents/{case_id}", f"/cases/{case_id}"):
            r = client.get(path, headers=h["city"])
            assert r.status_code == 200, (path, r.text)
            assert datetime.fromisoformat(r.json()["reported_at"]) == REPORTED[name]
        events = client.get(f"/cases/{case_id}/events", headers=h["city"])
        assert [e["action"] for e in events.json()] == ["report"]


# -- pruning: the statements the API runs for time-bounded reads, explained -------------------


class Recorder:
    """Record the statements SQLAlchemy sends to the database, with their driver (asyncpg's
    $n placeholders, psycopg's %(name)s) and parameters."""

    def __init__(self):
        self.statements: list[tuple[str, str, object]] = []

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        if "incident" in statement:
            self.statements.append((conn.dialect.driver, statement, parameters))

    def __enter__(self):
        event.listen(Engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc):
        event.remove(Engine, "before_cursor_execute", self)


class RawRecorder:
    """Record the statements run on raw asyncpg connections (the hot pool's: case actions),
    with their parameters; SQLAlchemy's asyncpg statements are :class:`Recorder`'s."""

    def __init__(self, monkeypatch):
        import asyncpg

        self.statements: list[tuple[str, str, object]] = []
        for name in ("fetch", "fetchrow", "fetchval"):
            original = getattr(asyncpg.Connection, name)

            def recorded(conn, query, *args, _original=original, **kwargs):
                if "incident" in query:
                    self.statements.append(("asyncpg", query, args))
                return _original(conn, query, *args, **kwargs)

            monkeypatch.setattr(asyncpg.Connection, name, recorded)


#: A partition of incident: a month's, or the default one.
PARTITION = re.compile(r"incident_(\d{4}_\d{2}|default)")


def _relations(plan: dict, executed: bool = False) -> set[str]:
    """Return the relations ``plan`` reads (``executed``: those its run read at least once)."""
    found = set()
    if "Relation Name" in plan and (not executed or plan.get("Actual Loops", 0) > 0):
        found.add(plan["Relation Name"])
    for sub in plan.get("Plans", ()):
        found |= _relations(sub, executed)
    return found


def _explain(
    db_url: str,
    statements: list[tuple[str, str, object]],
    generic: bool,
    *,
    analyze: bool = False,
    settings: tuple[str, ...] = (),
) -> list[set[str]]:
    """Return the incident partitions each statement's plan reads, under a generic plan or a
    custom one: prepared (``PREPARE``, parameter types inferred as the driver's were) and
    explained with ``EXPLAIN EXECUTE`` on the same parameters (as literals the server wrote),
    so a generic plan is one (an ``EXPLAIN`` sent with parameters is planned with their
    values, a custom plan whatever the mode). ``analyze``: the partitions the statement's run
    read (pruning as a join runs shows only there); only for statements that write nothing."""
    import asyncpg

    mode = "force_generic_plan" if generic else "force_custom_plan"
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"

    async def explain(driver, sql, params):
        if driver != "asyncpg":  # psycopg's %(name)s: as asyncpg's $n
            names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
            sql = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", sql)
            params = [params[n] for n in names]
        conn = await asyncpg.connect(dsn)
        try:
            for setting in (f"plan_cache_mode = {mode}", *settings):
                await conn.execute(f"SET {setting}")
            types = (await conn.prepare(sql)).get_parameters()
            literals = []
            for value, t in zip(params or (), types, strict=True):
                name = await conn.fetchval("SELECT format_type($1, NULL)", t.oid)
                literals.append(
                    await conn.fetchval(f"SELECT quote_nullable(CAST($1 AS {name}))", value)
                )
            await conn.execute(f"PREPARE explained AS {sql}")
            args = f"({', '.join(literals)})" if literals else ""
            return await conn.fetchval(f"EXPLAIN ({options}) EXECUTE explained{args}")
        finally:
            await conn.close()

    out = []
    for driver, sql, params in statements:
        raw = asyncio.run(explain(driver, sql, params))
        plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        out.append({r for r in _relations(plan, analyze) if PARTITION.fullmatch(r)})
    return out


TIME_BOUNDED = {
    "incidents list": ("/incidents", FEB),
    "cases list": ("/cases", FEB),
    "evaluation": ("/evaluation", {"from": FEB["since"], "to": FEB["until"]}),
    "open311 requests": (
        "/open311/v2/requests.json",
        {"start_date": FEB["since"], "end_date": "2025-02-28T23:59:59+08:00"},
    ),
}


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize("name", list(TIME_BOUNDED))
def test_time_bounded_reads_of_the_api_read_only_their_month(
    client, h, db_url, cases, name, generic
):
    path, params = TIME_BOUNDED[name]
    with Recorder() as recorded:
        r = client.get(path, params=params, headers=h["city"])
    assert r.status_code == 200, r.text
    if name in ("incidents list", "cases list"):  # what they answer: February's cases
        got = {item["id"] for item in r.json()["items"]}
        assert got == {cases["feb"], cases["feb_first"]}
    bounded = [s for s in recorded.statements if "reported_at >" in s[1]]
    assert bounded, f"{name}: no statement bounded by reported_at was run"
    for (_, sql, _), partitions in zip(bounded, _explain(db_url, bounded, generic), strict=True):
        assert partitions == {"incident_2025_02"}, (sql, partitions)


def test_a_query_without_a_time_bound_reads_every_month(db_url, cases):
    by_id = ("asyncpg", "SELECT * FROM incident WHERE id = $1", (cases["feb"],))
    plan = _explain(db_url, [by_id], False)
    assert {"incident_2025_01", "incident_2025_03", "incident_default"} <= plan[0]


BY_ID = re.compile(r"FROM incident t WHERE t\.id =|UPDATE incident SET|DELETE FROM incident WHERE")


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
def test_reads_and_writes_of_one_incident_by_id_read_only_its_month(client, h, db_url, generic):
    # The id's month comes from incident_month (migration 0020): every by-id statement of
    # /incidents/{id} names it, so it prunes to one partition instead of probing them all.
    body = {"category": "water", "source": "patrol", "lon": IN_NW[0], "lat": IN_NW[1]}
    at = datetime(2025, 1, 20, 9, 0, tzinfo=CST).isoformat()
    with Recorder() as recorded:
        r = client.post("/incidents", json={**body, "reported_at": at}, headers=h["city"])
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        assert client.get(f"/incidents/{case_id}", headers=h["city"]).status_code == 200
        r = client.patch(f"/incidents/{case_id}", json={"description": "x"}, headers=h["city"])
        assert r.status_code == 200 and r.json()["description"] == "x", r.text
        assert client.delete(f"/incidents/{case_id}", headers=h["city"]).status_code == 204
    assert client.get(f"/incidents/{case_id}", headers=h["city"]).status_code == 404
    by_id = [s for s in recorded.statements if BY_ID.search(s[1])]
    # read back after create; get; read, update, read back; read, delete
    assert len(by_id) == 7, [s[1][:80] for s in by_id]
    for (_, sql, _), partitions in zip(by_id, _explain(db_url, by_id, generic), strict=True):
        assert partitions == {"incident_2025_01"}, (sql, partitions)


#: Statements reading or writing the incident table itself (not incident_month, case_event).
READS_INCIDENT = re.compile(r"\bincident t\b|UPDATE incident\b|FROM incident WHERE")
JPEG = b"\xff\xd8\xff" + b"jpeg" * 10


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
def test_every_statement_of_one_case_reads_only_its_month(client, h, db_url, monkeypatch, generic):
    # /cases/{id}, its events, duplicates and photos, and actions (alone, with If-Match, with
    # an Idempotency-Key, naming an assignee or a duplicate, escalating), on SQLAlchemy and
    # on the hot pool's raw asyncpg: every statement names the case's month (incident_month
    # via service.repositories.byid), so each reads that partition only.
    body = {"category": "water", "source": "patrol", "lon": IN_NW[0], "lat": IN_NW[1]}
    at = datetime(2025, 4, 22, 9, 0, tzinfo=CST).isoformat()  # a month no other test uses
    ids = []
    for _ in range(2):
        r = client.post("/incidents", json={**body, "reported_at": at}, headers=h["grid"])
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    case, other = ids

    def act(who, case_id, action, json=None, **headers):
        r = client.post(
            f"/cases/{case_id}/actions/{action}", json=json, headers={**h[who], **headers}
        )
        assert r.status_code == 200, (action, r.text)
        return r

    raw = RawRecorder(monkeypatch)
    with Recorder() as recorded:
        r = client.get(f"/cases/{case}", headers=h["community"])
        assert r.status_code == 200, r.text
        assert client.get(f"/cases/{case}/events", headers=h["community"]).status_code == 200
        found = client.get(f"/cases/{case}/duplicates", headers=h["community"]).json()
        assert other in [c["id"] for c in found]
        act("community", case, "comment", {"note": "n"}, **{"If-Match": r.headers["etag"]})
        act("community", case, "accept", **{"Idempotency-Key": f"accept-{case}-{generic}"})
        act("community", case, "dispatch", {"assignee": {"kind": "grid", "code": GRID}})
        act("grid", case, "sign")
        photo = client.post(
            f"/cases/{case}/attachments", content=JPEG, headers={**h["grid"], **JPEG_TYPE}
        )
        assert photo.status_code in (200, 201), photo.text
        assert client.get(photo.json()["url"], headers=h["grid"]).status_code == 200
        act("grid", case, "feedback", {"note": "done", "attachments": [photo.json()["url"]]})
        act("community", other, "escalate", {"reason": "r"})
        act("district", other, "reject", {"reason": "duplicate", "duplicate_of": case})
    # (the case stream's reads of the events, many cases each, are judged below)
    statements = [
        s
        for s in recorded.statements + raw.statements
        if READS_INCIDENT.search(s[1]) and s[1] not in (_AFTER_SQL, _REPLAY_SQL)
    ]
    # the case, its events, its duplicates (the case, then them), the photo's case (upload,
    # read); 7 actions: the case (read, write each), the original named by the rejection
    assert len(statements) == 6 + 7 * 2 + 1, [s[1][:80] for s in statements]
    # The hot pool's reads name the month by a sub-select of incident_month: pruned as they
    # run (EXPLAIN ANALYZE shows it; reads only), the others when they start or are planned.
    inline = [s for s in statements if "FROM incident_month m WHERE m.id" in s[1]]
    # GET /cases/{id}, 7 actions' reads, the original named by the rejection
    assert len(inline) == 1 + 7 + 1, [s[1][:80] for s in inline]
    for (_, sql, _), partitions in zip(
        statements,
        [_explain(db_url, [s], generic, analyze=s in inline)[0] for s in statements],
        strict=True,
    ):
        assert partitions == {"incident_2025_04"}, (sql, partitions)

    # The case stream reads each event's case in the case's month (pruned per event, as
    # the read runs): the partitions read are the months of the events' cases.
    engine = make_engine(db_url)
    with engine.connect() as conn:
        after = conn.execute(
            text("SELECT min(id) - 1 FROM case_event WHERE incident_id = :i"), {"i": case}
        ).scalar()
        months = set(
            conn.execute(
                text(
                    "SELECT DISTINCT tableoid::regclass::text FROM incident WHERE id IN "
                    "(SELECT incident_id FROM case_event WHERE id > :a ORDER BY id LIMIT 500)"
                ),
                {"a": after},
            ).scalars()
        )
    engine.dispose()
    assert "incident_2025_04" in months
    read = _explain(db_url, [("asyncpg", _AFTER_SQL, (after,))], generic, analyze=True)
    assert read == [months]


def test_actions_read_together_read_only_their_cases_months(db_url, cases):
    # Concurrent actions read their cases in one statement (ActionBatches, on the hot pool:
    # generic plans), each case joined on its month (incident_month): as the join runs, each
    # case reads its month only. The plan of a large table is asked for (at 1 M: a nested
    # loop over the cases, bench.cases): on these near-empty partitions hashing is cheaper.
    from service.db import positional
    from service.dispatch.cases import _ACT_READ_MANY

    sql, names = positional(_ACT_READ_MANY)
    params = {"ids": [cases["jan"], cases["mar"]], "scopes": [None, None], "cities": [False, False]}
    statement = ("asyncpg", sql, tuple(params[n] for n in names))
    large = ("enable_hashjoin = off", "enable_mergejoin = off", "enable_seqscan = off")
    read = _explain(db_url, [statement], True, analyze=True, settings=large)
    assert read == [{"incident_2025_01", "incident_2025_03"}]


def test_the_month_of_every_id_is_kept_on_write(db_url, cases):
    engine = make_engine(db_url)
    with engine.connect() as conn:  # rolled back: the module's cases stay
        differ = """
            SELECT count(*) FROM incident i FULL JOIN incident_month m USING (id)
            WHERE i.reported_at IS DISTINCT FROM m.reported_at"""
        assert conn.execute(text(differ)).scalar() == 0
        conn.execute(text("DELETE FROM incident WHERE id = :id"), {"id": cases["mar"]})
        assert conn.execute(text(differ)).scalar() == 0
        conn.execute(text("TRUNCATE incident CASCADE"))
        assert conn.execute(text("SELECT count(*) FROM incident_month")).scalar() == 0
        conn.rollback()
    engine.dispose()


# -- imports ---------------------------------------------------------------------------------


def test_a_bulk_import_lands_each_row_in_its_month(client, h, db_url):
    rows = [
        {
            "category": "road",
            "source": "patrol",
            "lon": IN_NW[0],
            "lat": IN_NW[1],
            "reported_at": at,
        }
        for at in (
            "2025-01-31T23:30:00+08:00",
            "2025-03-01T00:00:00+08:00",
            "1999-05-04T18:00:00+08:00",
        )
    ]
    data = pd.DataFrame(rows).to_csv(index=False).encode()
    r = client.post(
        "/incidents/import", files={"file": ("cases.csv", io.BytesIO(data))}, headers=h["admin"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3
    engine = make_engine(db_url)
    with engine.connect() as conn:
        got = conn.execute(
            text(
                "SELECT tableoid::regclass::text, (SELECT count(*) FROM case_event e "
                "WHERE e.incident_id = i.id) FROM incident i WHERE category = 'road' "
                "ORDER BY reported_at"
            )
        ).all()
    engine.dispose()
    # Every row has its first event (the statement trigger on the partitioned table).
    assert [tuple(g) for g in got] == [
        ("incident_default", 1),
        ("incident_2025_01", 1),
        ("incident_2025_03", 1),
    ]


# -- the archive -----------------------------------------------------------------------------


def _cli(db_url, monkeypatch, *args):
    from service.cli import app

    monkeypatch.setenv("DATABASE_URL", db_url)
    return CliRunner().invoke(app, ["incidents", *args])


def test_old_months_leave_for_the_archive_whole_and_come_back(
    client, h, db_url, cases, monkeypatch
):
    jan = cases["jan"]
    photo = b"\xff\xd8\xff" + b"jpeg" * 10
    sha = hashlib.sha256(photo).hexdigest()
    engine = make_engine(db_url)
    with engine.begin() as conn:
        # The writer names the case only; its month is filled in (the foreign key needs it).
        conn.execute(
            text(
                "INSERT INTO case_attachment (incident_id, sha256, media_type, bytes, data) "
                "VALUES (:i, :s, 'image/jpeg', :n, :d)"
            ),
            {"i": jan, "s": sha, "n": len(photo), "d": photo},
        )
    events_before = client.get(f"/cases/{jan}/events", headers=h["city"]).json()
    listed = client.get("/incidents", params={"limit": 100}, headers=h["city"]).json()["items"]
    assert jan in {i["id"] for i in listed}

    done = _cli(db_url, monkeypatch, "archive", "--before", "2025-02")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"archived": ["2025-01"]}

    # The API answers for the months left.
    assert client.get(f"/incidents/{jan}", headers=h["city"]).status_code == 404
    assert client.get(f"/cases/{jan}", headers=h["city"]).status_code == 404
    listed = client.get("/incidents", params={"limit": 100}, headers=h["city"]).json()["items"]
    assert jan not in {i["id"] for i in listed}
    assert client.get(f"/incidents/{cases['feb']}", headers=h["city"]).status_code == 200
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM case_event WHERE incident_id = :i"), {"i": jan}
            ).scalar()
            == 0
        )
        assert conn.execute(
            text("SELECT count(*) FROM archive.case_event_2025_01 WHERE incident_id = :i"),
            {"i": jan},
        ).scalar() == len(events_before)
        assert (
            conn.execute(
                text("SELECT data FROM archive.case_attachment_2025_01 WHERE incident_id = :i"),
                {"i": jan},
            ).scalar()
            == photo
        )
        assert conn.execute(text("SELECT count(*) FROM archive.incident_2025_01")).scalar() >= 1
    listing = [
        json.loads(line)
        for line in _cli(db_url, monkeypatch, "partitions").output.split("\n")
        if line
    ]
    archived = [p for p in listing if p["archived"]]
    assert [(p["month"], p["rows"]) for p in archived] == [("2025-01", 2)]  # the case + 1 import

    # A case filed for January meanwhile waits in the default partition, then joins its month.
    body = {
        "category": "gas",
        "source": "patrol",
        "lon": IN_NW[0],
        "lat": IN_NW[1],
        "reported_at": "2025-01-20T08:00:00+08:00",
    }
    late = client.post("/incidents", json=body, headers=h["city"])
    assert late.status_code == 201, late.text
    assert _partition_of(db_url, [late.json()["id"]]) == {late.json()["id"]: "incident_default"}

    back = _cli(db_url, monkeypatch, "reattach", "2025-01")
    assert back.exit_code == 0, back.output
    assert _partition_of(db_url, [jan, late.json()["id"]]) == {
        jan: "incident_2025_01",
        late.json()["id"]: "incident_2025_01",
    }
    assert client.get(f"/cases/{jan}", headers=h["city"]).status_code == 200
    assert client.get(f"/cases/{jan}/events", headers=h["city"]).json() == events_before
    photo_url = f"/cases/{jan}/attachments/{sha}"
    got = client.get(photo_url, headers=h["city"])
    assert got.status_code == 200 and got.content == photo, got.text
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM pg_tables WHERE schemaname = 'archive'")
        ).scalar()
    engine.dispose()
    assert left == 0


def test_archive_commands_refuse_what_they_cannot_do(db_url, monkeypatch, cases):
    bad = _cli(db_url, monkeypatch, "archive", "--before", "2025-13")
    assert bad.exit_code == 1 and "--before: '2025-13' is not a month" in bad.output
    missing = _cli(db_url, monkeypatch, "reattach", "2024-07")
    assert missing.exit_code == 1 and "month 2024-07 is not archived" in missing.output
    # ensure: partitions ahead, and nothing twice.
    first = _cli(db_url, monkeypatch, "ensure", "--ahead", "2")
    assert first.exit_code == 0, first.output
    again = _cli(db_url, monkeypatch, "ensure", "--ahead", "2")
    assert json.loads(again.output) == {"created": []}
    # A month created now has the storage parameters of every partition (0014's fillfactor).
    engine = make_engine(db_url)
    with engine.connect() as conn:
        options = (
            conn.execute(
                text(
                    "SELECT DISTINCT coalesce(c.reloptions, '{}') FROM "
                    "pg_partition_tree('incident') t JOIN pg_class c ON c.oid = t.relid "
                    "WHERE t.isleaf"
                )
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert options == [["fillfactor=90"]]


def test_two_writers_creating_the_same_month_do_not_collide(db_url):
    import threading

    import psycopg

    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    first = psycopg.connect(dsn)
    made = first.execute("SELECT incident_add_partition(DATE '2031-05-01')").fetchone()[0]
    assert made == "incident_2031_05"  # not committed yet: the second writer must wait
    second: dict = {}

    def other():
        with psycopg.connect(dsn, autocommit=True) as conn:
            try:
                second["made"] = conn.execute(
                    "SELECT incident_add_partition(DATE '2031-05-01')"
                ).fetchone()[0]
            except psycopg.Error as exc:
                second["error"] = exc

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive()  # waiting for the first writer
    first.commit()
    first.close()
    thread.join(10)
    assert second == {"made": None}


def test_a_server_starting_creates_the_coming_year_of_months(db_url):
    # Nobody has run `wangge incidents ensure`: a server start is enough for the next 12 months
    # to get their partitions (rows of a month without one would pile up in the default).
    engine = make_engine(db_url)
    with engine.begin() as conn:
        last = conn.execute(
            text(
                "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'Asia/Shanghai')"
                " + interval '12 months', 'YYYY_MM')"
            )
        ).scalar()
        name = f"incident_{last}"
        if conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar():
            assert conn.execute(text(f"SELECT count(*) FROM {name}")).scalar() == 0
            conn.execute(text(f"ALTER TABLE incident DETACH PARTITION {name}"))
            conn.execute(text(f"DROP TABLE {name}"))
    try:
        with _client(db_url) as fresh:
            assert fresh.get("/health").status_code == 200
            with engine.connect() as conn:
                for _ in range(50):  # the task runs beside the first requests
                    if conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar():
                        break
                    conn.rollback()
                    asyncio.run(asyncio.sleep(0.1))
                made = conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar()
        assert made is not None, f"{name} was not created when the server started"
    finally:
        engine.dispose()
