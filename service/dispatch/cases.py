"""Cases in the database: the queue, one case, its history, duplicates, and acting on one.

Acting on a case (:func:`act_on_case`, on the hot pool: raw asyncpg) is a read and one
write: the case is read with its time limits and its row version (``xmin``), its version
compared with ``If-Match``, the action judged by :mod:`service.dispatch.lifecycle`
(``judge``, then ``decide`` once the fields that need the database are resolved), and the
event written with the case it leaves (``apply``) in one statement, which applies only if
the row is still the one read and nobody holds it. Otherwise the case is read again, locked
(``SELECT ... FOR UPDATE``) in a transaction, and judged again: of two conflicting actions
on one case the second sees the first's result and is refused (409), or fails its
``If-Match`` (412). Nothing is written unless all of it is. Concurrent actions read
together and write together (:class:`ActionBatches`: one statement, one event lock and one
commit for several), each still judged and guarded on its own. With an ``Idempotency-Key``
the key, the locked read, the write and the stored answer are one transaction.

:func:`record_event` is the one write of an event and the case it leaves; the deadline sweep
(:mod:`service.dispatch.deadlines`) writes the same columns set-based, and its tests hold its
SQL to ``decide``/``apply``. Every case row stays the replay of its events.

Who sees a case (:func:`case_visible_sql`): a principal whose scope holds where it lies,
who owns it or who handles it; city-level scopes also see cases outside every area. A lower
level never sees a sibling's case: it lies, is owned and is handled outside its area.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import Principal
from service.db import positional
from service.dispatch.lifecycle import (
    LIFECYCLE_COLUMNS,
    ActionInputError,
    Actor,
    CaseState,
    Event,
    NotPermittedError,
    TransitionRefused,
    UnknownActionError,
    allowed_actions,
    apply,
    decide,
    judge,
)
from service.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnprocessableError,
    WanggeError,
)
from service.preconditions import if_match_holds, parse_if_match
from service.repositories.byid import ById
from service.repositories.entities import scope_params
from service.repositories.filters import Where
from service.repositories.paging import fetch_page

__all__ = [
    "PreconditionFailedError",
    "case_visible_sql",
    "actor_of",
    "clock_of",
    "list_cases",
    "get_case",
    "list_case_events",
    "find_duplicates",
    "act_on_case",
    "record_event",
    "ActionBatches",
    "load_events",
]

#: Share of a step's limit after which its clock turns amber.
AMBER_AT = 0.8


class PreconditionFailedError(WanggeError):
    status = 412
    title = "Precondition failed"


def case_visible_sql(alias: str = "t") -> str:
    """Return the SQL condition "the caller may see this case" (params :scope, :scope_city)."""
    inside = " OR ".join(
        f"{alias}.{c} = :scope OR {alias}.{c} LIKE :scope || '/%'"
        for c in ("area_path", "owner_area_path", "assignee_path")
    )
    return (
        f"(CAST(:scope AS text) IS NULL OR {inside} OR ({alias}.area_path IS NULL AND :scope_city))"
    )


def actor_of(principal: Principal) -> Actor:
    """Return the lifecycle's actor for a request's principal."""
    return Actor(
        role=principal.role,
        area_code=principal.area_code,
        area_path=principal.scope_path,
        token_id=principal.token_id,
    )


def clock_of(case: Mapping[str, Any], minutes: int | None, now: datetime) -> str | None:
    """Return green, amber (past 80 % of the step's limit) or red (overdue); None: no clock."""
    due = case["step_due_at"]
    if due is None:
        return None
    if case["step_overdue"] or now >= due:
        return "red"
    if minutes and now >= due - timedelta(minutes=minutes * (1 - AMBER_AT)):
        return "amber"
    return "green"


#: A case's columns as the API answers them (and its clock reads them).
_CASE_FIELDS = (
    "t.id",
    "t.category",
    "t.description",
    "t.address",
    "t.source",
    "t.reported_at",
    "t.attachments",
    "ST_X(t.geom) AS lon",
    "ST_Y(t.geom) AS lat",
    "t.area_path",
    "t.grid_code",
    *(f"t.{c}" for c in LIFECYCLE_COLUMNS),
)
_CASE_COLUMNS = ", ".join(
    [
        *_CASE_FIELDS,
        # the running step's limit, for the amber clock
        "(SELECT l.minutes FROM case_time_limit l WHERE l.category = t.category "
        "AND l.priority = t.priority AND l.step = t.step) AS step_minutes",
    ]
)


def _read(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("step_minutes", "total", "limits")}
    out["attachments"] = list(out["attachments"] or [])
    out["clock"] = clock_of(row, row.get("step_minutes"), now)
    return out


def _now() -> datetime:
    return datetime.now(UTC)


_AREA_SQL = (
    "SELECT a.path, a.level FROM area a WHERE a.code = :code "
    "AND a.generation_low <= (SELECT max(id) FROM generation WHERE active) "
    "AND a.generation_high >= (SELECT max(id) FROM generation WHERE active)"
)


async def _area(conn: AsyncConnection, code: str) -> Mapping[str, Any] | None:
    """Return (path, level) of the current version of an area, or None."""
    row = (await conn.execute(text(_AREA_SQL), {"code": code})).first()
    return row._mapping if row is not None else None


# -- reading --------------------------------------------------------------------------------


async def list_cases(
    conn: AsyncConnection,
    *,
    principal: Principal,
    states: list[str] | None = None,
    owner_level: str | None = None,
    category: str | None = None,
    overdue: bool | None = None,
    assignee: str | None = None,
    area: str | None = None,
    mine: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    """Return a page of the cases the caller sees (ordered by id) and how many match."""
    where = Where(case_visible_sql(), **scope_params(principal))
    where.given("t.state = ANY(CAST(:states AS text[]))", states=states or None)
    where.equal(owner_level=owner_level, category=category, assignee_code=assignee)
    if overdue is not None:
        late = (
            "(t.state IN ('reported', 'registered', 'dispatched', 'signed', 'handled') "
            "AND (t.step_overdue OR t.step_due_at <= now()))"
        )
        where.add(late if overdue else f"NOT coalesce({late}, false)")
    if area is not None:
        # An area that does not exist holds no cases (as the entity listings' cell filters).
        found = await _area(conn, area)
        if found is None:
            where.add("false")
        else:
            where.add(
                "(t.area_path = :area_path OR t.area_path LIKE :area_path || '/%')",
                area_path=found["path"],
            )
    if mine:
        if principal.role == "grid_officer":
            where.add("t.assignee_kind = 'grid' AND t.assignee_code = :me")
        else:
            where.add("t.owner_area_code = :me")
        where.add("t.status <> 'closed'", me=principal.area_code)
    where.given("t.reported_at >= :since", since=since)
    where.given("t.reported_at < :until", until=until)
    rows, total = await fetch_page(
        conn,
        columns=_CASE_COLUMNS,
        source="incident t",
        where=where,
        order="t.id",
        limit=limit,
        offset=offset,
    )
    now = _now()
    return [_read(r._mapping, now) for r in rows], total


# The case's time limits, read with the locked row (one round trip less per action).
_LIMITS = (
    ", (SELECT jsonb_object_agg(l.priority || '/' || l.step, l.minutes) FROM case_time_limit l "
    "WHERE l.category = t.category) AS limits"
)


async def _fetch(
    conn, principal: Principal, case_id: int, *, lock: bool = False
) -> Mapping[str, Any]:
    """Return the case as the API reads it (404 when the caller does not see it); ``conn``:
    a SQLAlchemy ``AsyncConnection`` or the hot pool's raw asyncpg connection."""
    # In its month's partition only (ById: the month from incident_month). The hot pool's
    # generic plan takes the month in the statement (pruned as it runs); SQLAlchemy's,
    # planned per call, needs it as a parameter: looked up first.
    raw = hasattr(conn, "fetchrow")
    by_id = ById.of_map("incident", case_id) if raw else None
    while True:
        if by_id is None:
            by_id = await ById.look_up(conn, "incident", case_id)
        sql = (
            f"SELECT {_CASE_COLUMNS}{_LIMITS if lock else ''} FROM incident t "
            f"WHERE {by_id.sql()} AND {case_visible_sql()}" + (" FOR UPDATE OF t" if lock else "")
        )
        params = {**by_id.params, **scope_params(principal)}
        if raw:  # a prepared statement, a generic plan
            found = await _row(conn, sql, **params)
            row = None if found is None else dict(found)
        else:
            found = (await conn.execute(text(sql), params)).first()
            row = None if found is None else found._mapping
        if row is not None:
            return row
        if not by_id.inline:
            raise NotFoundError(f"no case {case_id} that you may see", field="id")
        by_id = None  # not in the map (or not the caller's): ask again, by its looked-up month


async def get_case(conn, *, principal: Principal, case_id: int) -> dict[str, Any]:
    """Return one case the caller sees, with the actions it may take now (404 otherwise).

    ``conn``: a SQLAlchemy ``AsyncConnection`` or a raw asyncpg one (``GET /cases/{id}``
    reads on the hot pool: its generic plan prunes to the case's month as it starts, where
    SQLAlchemy's prepared statement was planned anew per call)."""
    row = await _fetch(conn, principal, case_id)
    out = _read(row, _now())
    case = CaseState.from_row(row)
    out["allowed_actions"] = list(allowed_actions(case, actor_of(principal)))
    return out


async def load_events(conn: AsyncConnection, *, case_id: int) -> list[Mapping[str, Any]]:
    """Return a case's event rows in order (no scope check: callers check the case)."""
    rows = await conn.execute(
        text(
            "SELECT e.*, k.name AS actor_name FROM case_event e "
            "LEFT JOIN api_token k ON k.id = e.actor_token_id "
            "WHERE e.incident_id = :id ORDER BY e.seq"
        ),
        {"id": case_id},
    )
    return [r._mapping for r in rows]


async def list_case_events(
    conn: AsyncConnection, *, principal: Principal, case_id: int
) -> list[dict[str, Any]]:
    """Return the history of a case the caller sees, oldest first."""
    await _fetch(conn, principal, case_id)
    return [
        {
            **{k: v for k, v in e.items() if k != "incident_id"},
            "attachments": list(e["attachments"]),
        }
        for e in await load_events(conn, case_id=case_id)
    ]


async def find_duplicates(
    conn: AsyncConnection,
    *,
    principal: Principal,
    case_id: int,
    distance_m: float,
    hours: float,
) -> list[dict[str, Any]]:
    """Return the cases the caller sees that may repeat this one: same category, within
    ``distance_m`` (geodesic) and ``hours`` of it, not cancelled; nearest first."""
    case = await _fetch(conn, principal, case_id)
    # The window as bounds of the candidates' own reported_at: they read only its months.
    window = timedelta(hours=hours)
    by_id = ById("incident", case_id, case["reported_at"])
    rows = await conn.execute(
        text(
            "SELECT c.id, c.category, c.state, c.description, c.address, c.reported_at, "
            "ST_X(c.geom) AS lon, ST_Y(c.geom) AS lat, "
            "ST_Distance(c.geom::geography, t.geom::geography) AS distance_m, "
            "abs(extract(epoch FROM c.reported_at - t.reported_at)) / 3600 AS hours_apart "
            "FROM incident t JOIN incident c ON c.category = t.category AND c.id <> t.id "
            # A box in degrees first (the geometry index), then the exact geodesic test.
            " AND c.geom && ST_Expand(t.geom, :d / (111320 * cos(radians(ST_Y(t.geom)))) * 1.01,"
            "    :d / 110574 * 1.01) "
            " AND ST_DWithin(c.geom::geography, t.geom::geography, :d) "
            " AND c.reported_at BETWEEN :since AND :until "
            " AND c.state <> 'cancelled' "
            f"WHERE {by_id.sql()} AND {case_visible_sql('c')} "
            "ORDER BY distance_m, c.id LIMIT 100"
        ),
        {
            **by_id.params,
            "d": distance_m,
            "since": case["reported_at"] - window,
            "until": case["reported_at"] + window,
            **scope_params(principal),
        },
    )
    return [
        {**r._mapping, "hours_apart": float(r.hours_apart), "distance_m": float(r.distance_m)}
        for r in rows
    ]


# -- acting ---------------------------------------------------------------------------------
#
# On the hot pool (raw asyncpg, prepared statements; service.db's rule, case actions):
# the Python around two short statements is what limits actions per second.


@functools.cache
def _statement(sql: str) -> tuple[str, tuple[str, ...]]:
    return positional(sql)


async def _row(conn, sql: str, **params: Any):
    """Return the first row of ``sql`` (``:name`` parameters) on a raw asyncpg connection."""
    query, names = _statement(sql)
    return await conn.fetchrow(query, *[params[n] for n in names])


# The case as an action reads it: its columns, its category's time limits and its row
# version (xmin), which the write checks so that nothing changed the row in between. Found
# by id in its month's partition (``by_id``: ById.sql, the month from incident_month).
@functools.cache
def _act_read(by_id: str, lock: bool) -> str:
    return (
        f"SELECT t.xmin AS row_xmin, {', '.join(_CASE_FIELDS)}{_LIMITS} FROM incident t "
        f"WHERE {by_id} AND {case_visible_sql()}" + (" FOR UPDATE OF t" if lock else "")
    )


# The same for several actions at once (ActionBatches): each with its caller's scope, each
# case in its month (incident_month joined: pruned per case as the join runs). A case the
# map lacks is not found here: its action reads it again alone (_act_once).
_ACT_READ_MANY = (
    f"SELECT q.ord, t.xmin AS row_xmin, {', '.join(_CASE_FIELDS)}{_LIMITS} "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:scopes AS text[]), CAST(:cities AS boolean[])) "
    "WITH ORDINALITY AS q(id, scope, scope_city, ord) "
    "JOIN incident_month m ON m.id = q.id "
    "JOIN incident t ON t.id = q.id AND t.reported_at = m.reported_at WHERE "
    + case_visible_sql().replace(":scope_city", "q.scope_city").replace(":scope", "q.scope")
)

# Events and the cases they leave, written in one statement for one action or for several
# (rows in JSON, typed by the tables themselves), each only if its row is still the one read
# and nobody holds it. The event insert's statement trigger takes the event lock (held to
# commit: migration 0010) before this statement touches a row, so rows are locked without
# waiting (SKIP LOCKED): waiting for a row while holding the event lock would deadlock with a
# writer that holds the row and waits for the event lock (the deadline sweep, an action on its
# locked path). A row held by another is a conflict like a changed one.
# Each case is found in its month's partition: one write names the case's id and month
# (ById.sql: pruned when the statement starts, under generic plans too), several join their
# months (pruned per case as the join runs); writes of a case whose month is unknown name
# the id alone.
_EVENT_COLUMNS = tuple(f.name for f in fields(Event))


@functools.cache
def _record_events(g: str, match: str, where: str) -> str:
    return (
        f"WITH g AS ({g}), "
        "locked AS (SELECT t.id, t.reported_at, g.ord FROM incident t JOIN g ON t.id = g.id "
        f"AND t.version = g.from_version AND t.xmin = g.row_xmin{match} "
        "FOR UPDATE OF t SKIP LOCKED), "
        "c AS (SELECT * FROM jsonb_populate_recordset(NULL::incident, CAST(:cases AS jsonb)) "
        "WITH ORDINALITY AS c), "
        "changed AS (UPDATE incident t SET "
        + ", ".join(f"{col} = c.{col}" for col in LIFECYCLE_COLUMNS)
        + ", updated_at = now() FROM locked JOIN c ON c.ordinality = locked.ord "
        f"WHERE t.id = locked.id{where} RETURNING t.id, locked.ord), "
        "e AS (SELECT * FROM jsonb_populate_recordset(NULL::case_event, CAST(:events AS jsonb)) "
        "WITH ORDINALITY AS e) "
        "INSERT INTO case_event (incident_id, "
        + ", ".join(_EVENT_COLUMNS)
        + ") SELECT changed.id, "
        + ", ".join(f"e.{col}" for col in _EVENT_COLUMNS)
        + " FROM changed JOIN e ON e.ordinality = changed.ord ORDER BY changed.ord "
        "RETURNING incident_id, id"
    )


_ONE_WRITE = (
    "SELECT CAST(:id AS bigint) AS id, CAST(:version AS int) AS from_version, "
    "CAST(:xmin AS xid) AS row_xmin, CAST(1 AS bigint) AS ord"
)
_MANY_WRITES = (
    "SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:versions AS int[]), "
    "CAST(:xmins AS xid[]), CAST(:ats AS timestamptz[])) "
    "WITH ORDINALITY AS g(id, from_version, row_xmin, reported_at, ord)"
)


@dataclass
class _Write:
    """One action's write: the row it read (id, version, xmin), the case after, the event."""

    incident_id: int
    from_version: int
    row_xmin: int
    case: dict[str, Any]
    event: dict[str, Any]
    #: The case's reported_at (its month's partition); None: found by id alone.
    reported_at: datetime | None = None


async def _write_events(conn, writes: list[_Write]) -> dict[int, int]:
    """Write ``writes`` (distinct cases) in one statement; return case id → event id for
    those written."""
    params: dict[str, Any] = {
        "cases": orjson.dumps([w.case for w in writes]).decode(),
        "events": orjson.dumps([w.event for w in writes]).decode(),
    }
    if len(writes) == 1:
        w = writes[0]
        by_id = ById("incident", w.incident_id, w.reported_at)
        cond = f" AND {by_id.sql()}"
        sql = _record_events(_ONE_WRITE, cond, cond)
        params.update(by_id.params, version=w.from_version, xmin=w.row_xmin)
    else:
        months = all(w.reported_at is not None for w in writes)
        sql = _record_events(
            _MANY_WRITES,
            " AND t.reported_at = g.reported_at" if months else "",
            " AND t.reported_at = locked.reported_at" if months else "",
        )
        params.update(
            ids=[w.incident_id for w in writes],
            versions=[w.from_version for w in writes],
            xmins=[w.row_xmin for w in writes],
            ats=[w.reported_at for w in writes],
        )
    query, names = _statement(sql)
    rows = await conn.fetch(query, *[params[n] for n in names])
    return {r["incident_id"]: r["id"] for r in rows}


class _Pending:
    __slots__ = ("item", "done", "lead")

    def __init__(self, item: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.item = item
        self.done = loop.create_future()  # the item's result
        self.lead = loop.create_future()  # set when this caller is to run the next batch


class _Together:
    """Concurrent calls of one kind on one pool, run together (as group commit does).

    While one statement is in flight, the calls that arrive queue; when it returns, the
    oldest queued caller runs all queued calls in one statement, on its own connection (so
    nobody needs a connection more). Alone, a call runs at once: nothing waits for company.
    A batch that fails is run again one call at a time, so an error is only its own call's.
    """

    #: The most calls in one statement.
    MAX_BATCH = 64

    def __init__(self) -> None:
        self.queue: list[_Pending] = []
        self.busy = False

    def _key(self, item: Any) -> Any:
        """Calls with the same key (not None) go in different statements."""
        return None

    async def _run(self, conn, items: list[Any]) -> list[Any]:
        """Return the results of ``items``, in order, from one statement."""
        raise NotImplementedError

    async def submit(self, conn, item: Any) -> Any:
        """Return the result of ``item``, run alone or with others' on ``conn``."""
        pending = _Pending(item, asyncio.get_running_loop())
        self.queue.append(pending)
        if self.busy:
            try:
                await asyncio.wait(
                    (pending.done, pending.lead), return_when=asyncio.FIRST_COMPLETED
                )
            except asyncio.CancelledError:
                if pending in self.queue:
                    self.queue.remove(pending)
                if pending.lead.done() and not pending.done.done():
                    self._hand_over()
                raise
            if pending.done.done():
                return pending.done.result()
        self.busy = True
        try:
            while not pending.done.done():
                await self._run_batch(conn, self._take())
        finally:
            self._hand_over()
        return pending.done.result()

    def _take(self) -> list[_Pending]:
        """Take the queued calls, oldest first, at most one per key."""
        batch: list[_Pending] = []
        keys: set[Any] = set()
        rest: list[_Pending] = []
        for p in self.queue:
            if p.done.done():
                continue
            key = self._key(p.item)
            if len(batch) >= self.MAX_BATCH or (key is not None and key in keys):
                rest.append(p)
            else:
                keys.add(key)
                batch.append(p)
        self.queue = rest
        return batch

    async def _run_batch(self, conn, batch: list[_Pending]) -> None:
        if not batch:
            return
        try:
            results = await self._run(conn, [p.item for p in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].done.set_exception(exc)
                return
            for p in batch:
                await self._run_batch(conn, [p])
            return
        except BaseException:
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(RuntimeError("the request running it was cancelled"))
            raise
        for p, result in zip(batch, results, strict=True):
            if not p.done.done():
                p.done.set_result(result)

    def _hand_over(self) -> None:
        """Let the oldest queued caller run the next batch, or go idle."""
        for p in self.queue:
            if not p.done.done() and not p.lead.done():
                p.lead.set_result(True)
                return
        self.busy = False


class _Reads(_Together):
    """Cases read for actions (id, scope, scope_city) → the row, or None (none such, not the
    caller's, or not in incident_month)."""

    async def _run(self, conn, items):
        if len(items) == 1:
            case_id, scope, city = items[0]
            by_id = ById.of_map("incident", case_id)
            sql = _act_read(by_id.sql(), False)
            return [await _row(conn, sql, **by_id.params, scope=scope, scope_city=city)]
        query, names = _statement(_ACT_READ_MANY)
        params = {
            "ids": [i[0] for i in items],
            "scopes": [i[1] for i in items],
            "cities": [i[2] for i in items],
        }
        out: list[Any] = [None] * len(items)
        for r in await conn.fetch(query, *[params[n] for n in names]):
            out[r["ord"] - 1] = r
        return out


class _Writes(_Together):
    """Actions' writes (:class:`_Write`) → the event id, or None (another came first)."""

    def _key(self, item):
        return item.incident_id  # a second write of a case conflicts with the first anyway

    async def _run(self, conn, items):
        written = await _write_events(conn, items)
        return [written.get(w.incident_id) for w in items]


class ActionBatches:
    """The reads and the writes of concurrent actions on one pool, each run together.

    Event writes are serialised anyway (each holds the event lock through its commit, its WAL
    flush), and a read costs a round trip for a few rows: together, one lock, one statement
    and one commit serve many actions. Each action is still its own: its row written only if
    unchanged since its read, its event with its case, its errors its own.
    """

    _of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.reads = _Reads()
        self.writes = _Writes()

    @classmethod
    def of(cls, pool) -> ActionBatches:
        """Return the batches of ``pool`` (one per pool, made on first use)."""
        batches = cls._of.get(pool)
        if batches is None:
            batches = cls._of[pool] = cls()
        return batches


async def record_event(
    conn,
    *,
    incident_id: int,
    case: CaseState,
    event: Event,
    row_xmin: int,
    reported_at: datetime | None = None,
    batches: ActionBatches | None = None,
) -> tuple[CaseState, int | None]:
    """Write ``event`` and the case it leaves (``apply``) if the row is still the one read
    (``case.version`` and ``row_xmin``): alone, or with other actions' (``batches``); return
    that case and the event's id, or None for the id when another write came first (nothing
    written). ``reported_at``: the case's, so the write reads its month only."""
    after = apply(case, event)
    write = _Write(
        incident_id=incident_id,
        from_version=case.version,
        row_xmin=row_xmin,
        case={"id": incident_id, **after.columns()},
        event=event.row(),
        reported_at=reported_at,
    )
    if batches is None:
        event_id = (await _write_events(conn, [write])).get(incident_id)
    else:
        event_id = await batches.writes.submit(conn, write)
    return after, event_id


_UNIT_PATH_SQL = "SELECT area_path FROM unit WHERE id = :id"


@functools.cache
def _original_sql(by_id: str) -> str:
    return f"SELECT t.category, t.state FROM incident t WHERE {by_id} AND {case_visible_sql()}"


async def _resolve(
    conn,
    principal: Principal,
    case_id: int,
    category: str,
    taken: set[str],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Return ``params`` with what needs the database resolved (422 naming the field)."""
    out = dict(params)
    assignee = params.get("assignee")
    if assignee is not None and "assignee" in taken:
        kind, code = assignee["kind"], assignee["code"]
        if kind == "grid":
            found = await _row(conn, _AREA_SQL, code=code)
            if found is None:
                raise UnprocessableError(f"no grid {code}", field="assignee")
            if found["level"] != "grid":
                raise UnprocessableError(
                    f"{code} is a {found['level']}, not a grid", field="assignee"
                )
            path = found["path"]
        else:
            unit = await _row(conn, _UNIT_PATH_SQL, id=int(code))
            if unit is None:
                raise UnprocessableError(f"no unit {code}", field="assignee")
            path = unit["area_path"]
        out["assignee"] = {"kind": kind, "code": code, "path": path}
    area = params.get("area")
    if area is not None and "area" in taken:
        found = await _row(conn, _AREA_SQL, code=area)
        if found is None:
            raise UnprocessableError(f"no area {area}", field="area")
        out["area"] = {"code": area, "path": found["path"]}
    duplicate_of = params.get("duplicate_of")
    if duplicate_of is not None and "duplicate_of" in taken:
        if duplicate_of == case_id:
            raise UnprocessableError("a case cannot repeat itself", field="duplicate_of")
        by_id = ById.of_map("incident", duplicate_of)
        original = await _row(
            conn, _original_sql(by_id.sql()), **by_id.params, **scope_params(principal)
        )
        if original is None:  # not in incident_month (or not the caller's): by id alone
            by_id = await ById.look_up(conn, "incident", duplicate_of)
            original = await _row(
                conn, _original_sql(by_id.sql()), **by_id.params, **scope_params(principal)
            )
        if original is None:
            raise UnprocessableError(
                f"no case {duplicate_of} that you may see", field="duplicate_of"
            )
        if original["category"] != category:
            raise UnprocessableError(
                f"case {duplicate_of} is {original['category']}, this one {category}: "
                "a duplicate has the same category",
                field="duplicate_of",
            )
        if original["state"] == "cancelled":
            raise UnprocessableError(
                f"case {duplicate_of} is cancelled; name the case it was kept for",
                field="duplicate_of",
            )
    return out


async def act_on_case(
    conn,
    *,
    principal: Principal,
    case_id: int,
    action: str,
    params: Mapping[str, Any],
    if_match: str | None = None,
    now: datetime | None = None,
    in_transaction: bool = False,
    batches: ActionBatches | None = None,
) -> dict[str, Any]:
    """Take ``action`` on a case; return the case after it.

    ``conn`` is a raw asyncpg connection (the hot pool). Alone, the case is read, the action
    judged, and the event with the case it leaves written in one statement (its own
    transaction) that applies only if the row is still the one read and nobody holds it;
    otherwise the case is read again, locked, in a transaction, and judged again: the second
    of two conflicting actions sees the first's result and is refused. ``in_transaction``:
    the caller holds ``conn`` in a transaction (the Idempotency-Key's); the row is locked as
    it is read, since a failed unlocked write would keep the event lock to the end of it.
    ``batches``: the pool's :class:`ActionBatches`, to read and write with other actions
    arriving at the same time (not in a transaction of the caller's).

    404: no such case for the caller, or no such action; 412: ``if_match`` names another
    version; 409: not possible in the case's state (naming the actions that are); 403: not
    the caller's to take; 422: a field missing or wrong. Refusals write nothing.
    """
    # Every statement of the action reads the case's month only: the reads name it by a
    # sub-select of incident_month (the hot pool's generic plans prune as they run), the write
    # by the reported_at read.
    by_id = ById.of_map("incident", case_id)
    args = (conn, principal, by_id, action, params, if_match, now)
    if in_transaction:
        return await _act_once(*args, lock=True)
    done = await _act_once(*args, lock=False, batches=batches)
    if done is None:
        async with conn.transaction():
            done = await _act_once(*args, lock=True)
    return done


async def _act_once(
    conn,
    principal: Principal,
    by_id: ById,
    action: str,
    params: Mapping[str, Any],
    if_match: str | None,
    now: datetime | None,
    *,
    lock: bool,
    batches: ActionBatches | None = None,
) -> dict[str, Any] | None:
    """Act once; None when the row changed between the read and the write (never locked)."""
    case_id = by_id.id
    scope = scope_params(principal)
    if batches is None or lock:
        found = await _row(conn, _act_read(by_id.sql(), lock), **by_id.params, **scope)
    else:
        found = await batches.reads.submit(conn, (case_id, scope["scope"], scope["scope_city"]))
    if found is None and by_id.inline:
        # Not in incident_month (or not the caller's): by its looked-up month, or id alone.
        by_id = await ById.look_up(conn, "incident", case_id)
        found = await _row(conn, _act_read(by_id.sql(), lock), **by_id.params, **scope)
    if found is None:
        raise NotFoundError(f"no case {case_id} that you may see", field="id")
    row = dict(found)
    row.pop("ord", None)  # a batched read's position
    case = CaseState.from_row(row)
    if not if_match_holds(parse_if_match(if_match), case.version):
        raise PreconditionFailedError(
            f"case {case_id} is at version {case.version}, not {if_match}; "
            "read it again and decide again",
            field="If-Match",
            extra={"version": case.version},
        )
    actor = actor_of(principal)
    try:
        declared = judge(case, action, actor)
        taken = {*declared.requires, *declared.accepts}
        resolved = await _resolve(conn, principal, case_id, case.category, taken, dict(params))
        limits = {
            (case.category, *key.split("/")): minutes
            for key, minutes in orjson.loads(row["limits"] or "{}").items()
        }
        now = now or _now()
        event = decide(case, action, actor, resolved, now=now, limits=limits)
    except UnknownActionError as exc:
        raise NotFoundError(exc.detail, field="action") from None
    except TransitionRefused as exc:
        allowed = ", ".join(exc.allowed) or "none"
        raise ConflictError(
            f"case {case_id}: {exc.detail}; you may: {allowed}",
            field="action",
            extra={
                "state": exc.state,
                "action": exc.action,
                "allowed_actions": list(exc.allowed),
            },
        ) from None
    except NotPermittedError as exc:
        raise ForbiddenError(exc.detail, field="action") from None
    except ActionInputError as exc:
        raise UnprocessableError(exc.detail, field=exc.field) from None
    after, event_id = await record_event(
        conn,
        incident_id=case_id,
        case=case,
        event=event,
        row_xmin=row.pop("row_xmin"),
        reported_at=row["reported_at"],
        batches=batches,
    )
    if event_id is None:
        if lock:
            raise RuntimeError(f"case {case_id} changed under its row lock")
        return None
    out = _read({**row, **after.columns()}, now)
    out["clock"] = clock_of(out, limits.get((case.category, after.priority, after.step)), now)
    out["allowed_actions"] = list(allowed_actions(after, actor))
    return out
