"""Time limits (table ``case_time_limit``) and the deadline sweep.

**Time limits** are minutes per category, priority and step (accept, sign, handle, verify),
seeded by migration 0010 and changed by admins (``PUT /time-limits/...``). A clock takes the
limit in force when it starts (an action that starts a step reads the table in its own
transaction); changing a limit moves no running deadline. Reading them is one primary-key
lookup per action, so there is no cache to go stale between server processes.

**The sweep** (:func:`sweep_deadlines`) raises the two system actions of the lifecycle
(:data:`service.dispatch.lifecycle.ACTIONS`):

- ``overdue``: a case in an open state whose step is past ``step_due_at`` and not yet flagged
  gets ``step_overdue`` and ``supervised`` (the level above sees a supervision flag);
- ``auto_escalate``: a case flagged overdue and still past its deadline by the grace
  (``WANGGE_DISPATCH_ESCALATE_AFTER_MINUTES``): supervision moves one level up. Waiting in a
  queue (reported, registered) it goes up as an owner's escalation does (registered at the
  parent centre, a new accept clock); in work (dispatched, signed, handled) the parent centre
  becomes the owner (it verifies, sends back or takes over) while the state and the handler
  stay, and the step's clock starts again. The city has no level above: its overdue cases
  stay flagged.

It is set-based, so that 10,000 deadlines passing at once cost well under a second among a
million open cases: per batch of up to :data:`BATCH` cases, one ``SELECT ... FOR NO KEY
UPDATE SKIP LOCKED`` locks the due rows (the index ``incident_step_due``; each batch starts
at the deadline the one before ended), then one statement updates them and inserts their
events (``WITH changed AS (UPDATE ...) INSERT INTO case_event``). The rows are locked before
any event is inserted (inserting events takes the event lock of migration 0010 until commit:
taking row locks after it could deadlock with a case action). Flagging sets only columns no
index holds, so on pages with room (incident's fillfactor) it is a HOT update: none of the
table's indexes is written.

Exactly once, however many processes sweep: the condition "not yet flagged for this step"
(``NOT step_overdue``; for escalation ``step_overdue``, which the escalation's new clock
clears) is in the WHERE of the locking statement, and a row another sweep has locked is
skipped, not waited for; one whose flag committed meanwhile is read again by the lock and
no longer matches. A case a person is acting on is skipped and caught by the next sweep.

The SQL writes exactly what :func:`~service.dispatch.lifecycle.decide` and
:func:`~service.dispatch.lifecycle.apply` make of these actions (the row stays the replay of
its events); ``tests/service/test_deadlines.py`` proves it case by case, and the declarations
the SQL relies on are checked when this module is imported.

The clock is controllable: ``now`` (default: the database's ``now()``) is the time the sweep
judges deadlines by and stamps on events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.background import pause
from service.dispatch.lifecycle import (
    ACTIONS,
    CATEGORIES,
    IN_WORK,
    LEVELS,
    OPEN_STATES,
    PRIORITIES,
    STATUS_OF_STATE,
    STEP_OF_STATE,
    STEPS,
    SYSTEM,
    CaseState,
)
from service.errors import NotFoundError
from service.tables import case_time_limit

__all__ = [
    "BATCH",
    "SweepResult",
    "list_limits",
    "load_limits",
    "set_limit",
    "check_limit_key",
    "sweep_deadlines",
    "sweep_forever",
]

log = logging.getLogger(__name__)

#: Cases per transaction of the sweep: bounds how long a batch holds its row locks and the
#: event lock (5,000 take 0.1-0.3 s, mostly the index upkeep of the updated rows). At most
#: 5,000 also keeps the tile caches exact: a larger incident update announces "every tile
#: of the layer changed" (migration 0009).
BATCH = 5000

# -- time limits ----------------------------------------------------------------------------

_ORDER = {
    "category": {c: i for i, c in enumerate(CATEGORIES)},
    "priority": {p: i for i, p in enumerate(PRIORITIES)},
    "step": {s: i for i, s in enumerate(STEPS)},
}


def check_limit_key(category: str, priority: str, step: str) -> tuple[str, str, str]:
    """Return the key of a time limit, or raise NotFoundError naming the unknown part."""
    for name, value, known in (
        ("category", category, CATEGORIES),
        ("priority", priority, PRIORITIES),
        ("step", step, STEPS),
    ):
        if value not in known:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise NotFoundError(f"no {name} {shown!r}; one of {', '.join(known)}", field=name)
    return category, priority, step


async def list_limits(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Return every time limit, by category, priority (urgent first) and step (in order)."""
    rows = (await conn.execute(select(case_time_limit))).mappings().all()
    return sorted(
        (dict(r) for r in rows),
        key=lambda r: tuple(_ORDER[k].get(r[k], 99) for k in ("category", "priority", "step")),
    )


async def load_limits(
    conn: AsyncConnection, *, category: str | None = None
) -> dict[tuple[str, str, str], int]:
    """Return ``(category, priority, step) -> minutes`` (of one category, or all), the
    mapping :func:`~service.dispatch.lifecycle.decide` takes."""
    query = select(
        case_time_limit.c.category,
        case_time_limit.c.priority,
        case_time_limit.c.step,
        case_time_limit.c.minutes,
    )
    if category is not None:
        query = query.where(case_time_limit.c.category == category)
    return {(r[0], r[1], r[2]): r[3] for r in await conn.execute(query)}


async def set_limit(
    conn: AsyncConnection,
    *,
    category: str,
    priority: str,
    step: str,
    minutes: int,
    updated_by: str | None,
) -> dict[str, Any]:
    """Set one time limit (clocks started from now on take it); return its row."""
    check_limit_key(category, priority, step)
    values = {
        "category": category,
        "priority": priority,
        "step": step,
        "minutes": minutes,
        "updated_by": updated_by,
        "updated_at": func.now(),
    }
    statement = (
        insert(case_time_limit)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["category", "priority", "step"],
            set_={k: values[k] for k in ("minutes", "updated_by", "updated_at")},
        )
        .returning(*case_time_limit.c)
    )
    return dict((await conn.execute(statement)).mappings().one())


# -- the sweep ------------------------------------------------------------------------------


def _check_declarations() -> None:
    """Fail at import if the lifecycle declares these actions otherwise than the SQL does."""
    overdue, escalate = ACTIONS["overdue"], ACTIONS["auto_escalate"]
    # Where auto_escalate leaves each open state, and what becomes of the assignee there.
    targets = {
        s: escalate.to(CaseState(state=s), {}) if callable(escalate.to) else escalate.to
        for s in OPEN_STATES
    }
    assignees = {
        s: escalate.assignee(CaseState(state=s))
        if callable(escalate.assignee)
        else escalate.assignee
        for s in OPEN_STATES
    }
    expected = (
        overdue.states == OPEN_STATES
        and overdue.actors == frozenset({SYSTEM})
        and overdue.to is None
        and (overdue.owner, overdue.assignee, overdue.clock) == ("keep", "keep", "keep")
        and set(overdue.flags) == {"step_overdue", "supervised"}
        and overdue.counts is None
        and escalate.states == OPEN_STATES
        and escalate.actors == frozenset({SYSTEM})
        and targets == {s: s if s in IN_WORK else "registered" for s in OPEN_STATES}
        and assignees == {s: "keep" if s in IN_WORK else "clear" for s in OPEN_STATES}
        and (escalate.owner, escalate.clock) == ("parent", "start")
        and escalate.counts == "escalations"
        and not escalate.flags
        and STEP_OF_STATE["registered"] == "accept"
        and all(STATUS_OF_STATE[s] == "open" for s in ("registered", *IN_WORK))
        and LEVELS == ("city", "district", "community", "grid")
    )
    if not expected:
        raise RuntimeError(
            "service.dispatch.lifecycle changed the overdue or auto_escalate action: "
            "bring the sweep's SQL (service.dispatch.deadlines) in line"
        )


_check_declarations()

_OPEN = ", ".join(f"'{s}'" for s in OPEN_STATES)
_IN_WORK = ", ".join(f"'{s}'" for s in IN_WORK)
_LEVEL_OF_DEPTH = "ARRAY[" + ", ".join(f"'{level}'" for level in LEVELS) + "]"
_STEP_OF = "CASE {} " + " ".join(f"WHEN '{s}' THEN '{STEP_OF_STATE[s]}'" for s in IN_WORK)
_STEP_OF += " ELSE 'accept' END"
_EVENT_COLUMNS = (
    "incident_id, seq, at, action, actor_role, from_state, to_state, from_owner_area_code, "
    "to_owner_area_code, assignee_kind, assignee_code, data"
)


# The months of incident's partitions the locked rows lie in (a lookup by id alone probes the
# primary key of every month; the batch's reported_at range prunes the others).
def _reported(t: str = "") -> str:
    return (
        f"{t}reported_at BETWEEN CAST(:first_reported AS timestamptz) "
        "AND CAST(:last_reported AS timestamptz)"
    )


# Due and not yet flagged. The same condition again in the update: harmless on rows this
# transaction has locked, and it keeps the statement honest on its own.
_OVERDUE_WHERE = (
    f"state IN ({_OPEN}) AND step_due_at <= CAST(:now AS timestamptz) AND NOT step_overdue"
)
# Each batch starts where the one before ended (the index need not walk past the rows just
# flagged again). Rows passed over because someone held them wait for the next sweep.
_LOCK_OVERDUE = text(
    f"SELECT id, step_due_at, reported_at FROM incident WHERE {_OVERDUE_WHERE} "
    "AND step_due_at >= CAST(:after AS timestamptz) "
    "ORDER BY step_due_at LIMIT :batch FOR NO KEY UPDATE SKIP LOCKED"
)
# decide(overdue): state, owner, assignee and clock unchanged; data carries the assignee's
# path when there is one. apply: the flags set, version = seq. No column it sets is in an
# index, so with the room incident's fillfactor leaves on each page the update is HOT: none
# of its indexes is written (an index on one of them would cost ~25 buffer hits a row).
_RECORD_OVERDUE = text(
    f"""
    WITH changed AS (
        UPDATE incident SET step_overdue = true, supervised = true,
               version = version + 1, updated_at = now()
        WHERE id = ANY(CAST(:ids AS bigint[])) AND {_reported()} AND {_OVERDUE_WHERE}
        RETURNING id, version, state, owner_area_code, assignee_kind, assignee_code,
                  assignee_path
    )
    INSERT INTO case_event ({_EVENT_COLUMNS})
    SELECT id, version, CAST(:now AS timestamptz), 'overdue', '{SYSTEM}', state, state,
           owner_area_code, owner_area_code, assignee_kind, assignee_code,
           CASE WHEN assignee_code IS NULL THEN CAST('{{}}' AS jsonb)
                ELSE jsonb_build_object('assignee_path', assignee_path) END
    FROM changed ORDER BY id
    RETURNING incident_id
    """
)


# Flagged, past the deadline by the grace, with a level above (community or district, the
# guard _not_at_top of the lifecycle).
def _escalate_where(t: str = "") -> str:
    return (
        f"{t}state IN ({_OPEN}) AND {t}step_overdue "
        f"AND {t}step_due_at <= CAST(:due_before AS timestamptz) "
        f"AND {t}owner_level IN ('community', 'district') AND {t}owner_area_path LIKE '%/%'"
    )


_LOCK_ESCALATE = text(
    f"SELECT id, step_due_at, reported_at FROM incident WHERE {_escalate_where()} "
    "AND step_due_at >= CAST(:after AS timestamptz) "
    "ORDER BY step_due_at LIMIT :batch FOR NO KEY UPDATE SKIP LOCKED"
)
# decide(auto_escalate): the owner becomes the parent of the owner's path (level by its
# depth). A case waiting in a queue (reported, registered) becomes registered there without
# an assignee; one in work (dispatched, signed, handled) keeps its state and its handler.
# The step of the new state starts its clock at now (no limit: no deadline); data carries
# owner_level/owner_area_path when the owner changes, assignee_path when an assignee stays,
# and due_at when the deadline or the step changes. apply: the dispatch times cleared when a
# case leaves work for the queue, supervised cleared when the owner moves, escalations + 1,
# step_overdue reset with a new deadline.
_RECORD_ESCALATE = text(
    f"""
    WITH old AS (
        SELECT i.id, i.state, i.step, i.step_due_at, i.owner_area_code,
               i.state IN ({_IN_WORK}) AS in_work,
               {_STEP_OF.format("i.state")} AS new_step,
               substring(i.owner_area_path FROM '^(.*)/[^/]*$') AS parent_path,
               CAST(:now AS timestamptz) + make_interval(mins => lim.minutes) AS due
        FROM incident i
        LEFT JOIN case_time_limit lim
               ON lim.category = i.category AND lim.priority = i.priority
              AND lim.step = {_STEP_OF.format("i.state")}
        WHERE i.id = ANY(CAST(:ids AS bigint[])) AND {_reported("i.")}
          AND {_escalate_where("i.")}
    ), target AS (
        SELECT old.*,
               CASE WHEN in_work THEN state ELSE 'registered' END AS new_state,
               ({_LEVEL_OF_DEPTH})[array_length(string_to_array(parent_path, '/'), 1)]
                   AS parent_level,
               substring(parent_path FROM '[^/]*$') AS parent_code,
               (due IS DISTINCT FROM step_due_at OR step IS DISTINCT FROM new_step)
                   AS new_clock
        FROM old
    ), changed AS (
        UPDATE incident i SET
            state = t.new_state, status = 'open', step = t.new_step,
            owner_level = t.parent_level, owner_area_code = t.parent_code,
            owner_area_path = t.parent_path,
            assignee_kind = CASE WHEN t.in_work THEN i.assignee_kind END,
            assignee_code = CASE WHEN t.in_work THEN i.assignee_code END,
            assignee_path = CASE WHEN t.in_work THEN i.assignee_path END,
            step_due_at = CASE WHEN t.new_clock THEN t.due ELSE i.step_due_at END,
            step_overdue = CASE WHEN t.new_clock THEN false ELSE i.step_overdue END,
            dispatched_at = CASE WHEN i.state = t.new_state THEN i.dispatched_at END,
            signed_at = CASE WHEN i.state = t.new_state THEN i.signed_at END,
            handled_at = CASE WHEN i.state = t.new_state THEN i.handled_at END,
            closed_at = NULL,
            supervised = CASE WHEN t.parent_code IS DISTINCT FROM i.owner_area_code
                              THEN false ELSE i.supervised END,
            escalations = i.escalations + 1,
            version = i.version + 1, updated_at = now()
        FROM target t WHERE i.id = t.id
        RETURNING i.id, i.version, t.state AS from_state, i.state AS to_state,
                  t.owner_area_code AS from_owner, i.owner_area_code, i.owner_level,
                  i.owner_area_path, i.assignee_kind, i.assignee_code, i.assignee_path,
                  t.due, t.new_clock
    )
    INSERT INTO case_event ({_EVENT_COLUMNS})
    SELECT id, version, CAST(:now AS timestamptz), 'auto_escalate', '{SYSTEM}', from_state,
           to_state, from_owner, owner_area_code, assignee_kind, assignee_code,
           CASE WHEN owner_area_code IS DISTINCT FROM from_owner
                THEN jsonb_build_object('owner_level', owner_level,
                                        'owner_area_path', owner_area_path)
                ELSE CAST('{{}}' AS jsonb) END
           || CASE WHEN assignee_code IS NOT NULL
                   THEN jsonb_build_object('assignee_path', assignee_path)
                   ELSE CAST('{{}}' AS jsonb) END
           || CASE WHEN new_clock THEN jsonb_build_object('due_at', due)
                   ELSE CAST('{{}}' AS jsonb) END
    FROM changed ORDER BY id
    RETURNING incident_id
    """
)


@dataclass
class SweepResult:
    """What one sweep did: the time it judged by and the cases it flagged and escalated."""

    at: datetime
    overdue: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    batches: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "overdue": len(self.overdue),
            "escalated": len(self.escalated),
            "batches": self.batches,
        }


async def _sweep_action(
    engine: AsyncEngine,
    lock: Any,
    record: Any,
    params: Mapping[str, Any],
    batch_size: int,
    result: SweepResult,
    out: list[int],
) -> None:
    after = datetime.min.replace(tzinfo=UTC)
    while True:
        async with engine.begin() as conn:
            locked = (
                await conn.execute(lock, {**params, "batch": batch_size, "after": after})
            ).all()
            if not locked:
                return
            ids, reported = [r[0] for r in locked], [r[2] for r in locked]
            rows = {"ids": ids, "first_reported": min(reported), "last_reported": max(reported)}
            done = (await conn.execute(record, {**params, **rows})).scalars().all()
        after = locked[-1][1]
        result.batches += 1
        out.extend(done)
        # A short batch: nothing left but rows other sweeps (or case actions) hold.
        if len(ids) < batch_size or not done:
            return


async def sweep_deadlines(
    engine: AsyncEngine,
    *,
    now: datetime | None = None,
    escalate_after: timedelta | None = timedelta(minutes=60),
    batch_size: int = BATCH,
) -> SweepResult:
    """Flag every case whose step is past its deadline (``overdue``), then escalate those
    flagged and past it by ``escalate_after`` (``auto_escalate``; None: never); return what
    was done. Each batch is its own transaction; safe to run in many processes at once.

    ``now``: the time to judge by and stamp on the events (default: the database's now).
    """
    if now is None:
        async with engine.connect() as conn:
            now = (await conn.execute(text("SELECT now()"))).scalar_one()
    elif now.tzinfo is None:
        raise ValueError("now needs a time zone")
    result = SweepResult(at=now)
    await _sweep_action(
        engine, _LOCK_OVERDUE, _RECORD_OVERDUE, {"now": now}, batch_size, result, result.overdue
    )
    if escalate_after is not None:
        params = {"now": now, "due_before": now - escalate_after}
        await _sweep_action(
            engine, _LOCK_ESCALATE, _RECORD_ESCALATE, params, batch_size, result, result.escalated
        )
    return result


async def sweep_forever(
    engine: AsyncEngine,
    stop: asyncio.Event,
    *,
    every_seconds: float,
    escalate_after: timedelta | None,
) -> None:
    """Sweep every ``every_seconds`` until ``stop`` is set (a server process's background
    task; a sweep in flight ends first, see :mod:`service.background`).

    Errors are logged, never raised: a database that is away now is swept on a later round.
    """
    while not await pause(stop, every_seconds):
        try:
            result = await sweep_deadlines(engine, escalate_after=escalate_after)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("deadline sweep failed; trying again in %g s", every_seconds, exc_info=True)
            continue
        if result.overdue or result.escalated:
            log.info(
                "deadline sweep: %d overdue, %d escalated",
                len(result.overdue),
                len(result.escalated),
            )
