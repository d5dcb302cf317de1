"""Read incidents as Open311 service requests: by id, or by period, category and status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import Principal
from service.repositories import entities as repo
from service.repositories.filters import Where
from service.specs.entity_kinds import INCIDENTS

__all__ = ["PUBLIC_ACTIONS", "NOTED_ACTIONS", "find_open311_requests", "find_open311_updates"]

#: The case events a resident is told about (Open311 service request updates): what the
#: city did with the request. Internal ones (comment, supervise, overdue, a return between
#: levels) never are.
PUBLIC_ACTIONS = (
    "report",
    "import",
    "accept",
    "reject",
    "dispatch",
    "sign",
    "feedback",
    "verify",
    "send_back",
    "callback",
    "escalate",
    "auto_escalate",
    "take_over",
    "send_down",
)
#: The events whose note (or reason) is written for the resident: the closing note, the
#: reason a request was not accepted. Other notes stay internal; their update says what
#: happened in fixed words.
NOTED_ACTIONS = ("verify", "reject")

# The lifecycle fields of a request: who is responsible now (the unit assigned, else the
# owning dispatch centre), the current step's deadline, the last event's time and the
# latest public note.
_LIFECYCLE_COLUMNS = """,
    t.state AS o311_state, t.step_due_at AS o311_due,
    CASE WHEN t.assignee_kind = 'unit'
         THEN (SELECT u.name FROM unit u WHERE u.id::text = t.assignee_code) END AS o311_unit,
    (SELECT a.name FROM area a WHERE a.code = t.owner_area_code
      ORDER BY a.generation_high DESC LIMIT 1) AS o311_owner,
    t.owner_area_code AS o311_owner_code,
    (SELECT max(e.at) FROM case_event e WHERE e.incident_id = t.id) AS o311_updated,
    (SELECT coalesce(e.note, CASE WHEN e.reason IS NOT NULL THEN 'not accepted: ' || e.reason END)
       FROM case_event e
      WHERE e.incident_id = t.id AND e.action = ANY(CAST(:o311_noted AS text[]))
        AND (e.note IS NOT NULL OR e.reason IS NOT NULL)
      ORDER BY e.seq DESC LIMIT 1) AS o311_note"""


def _listed(values: Sequence | None) -> list | None:
    return None if values is None else list(values)


async def find_open311_requests(
    *,
    conn: AsyncConnection,
    principal: Principal,
    ids: Sequence[int] | None = None,
    reported_from: datetime | None = None,
    reported_to: datetime | None = None,
    categories: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """Return the incidents the principal may see that match every filter given, newest first.

    ``ids`` are incident ids, ``reported_from`` / ``reported_to`` bound ``reported_at``
    (inclusive), ``categories`` and ``statuses`` are the incident's own values.
    """
    where = Where(
        repo.visible_sql(INCIDENTS), o311_noted=list(NOTED_ACTIONS), **repo.scope_params(principal)
    )
    where.given("t.id = ANY(CAST(:ids AS bigint[]))", ids=_listed(ids))
    where.given("t.reported_at >= :start", start=reported_from)
    where.given("t.reported_at <= :end", end=reported_to)
    where.given("t.category = ANY(CAST(:codes AS text[]))", codes=_listed(categories))
    where.given("t.status = ANY(CAST(:states AS text[]))", states=_listed(statuses))
    sql = (
        f"SELECT {repo.select_columns(INCIDENTS)}{_LIFECYCLE_COLUMNS} "
        f"FROM incident t WHERE {where.sql()} "
        f"ORDER BY t.reported_at DESC, t.id DESC LIMIT {int(limit)}"
    )
    rows = (await conn.execute(text(sql), where.params)).all()
    return [_with_lifecycle(r) for r in rows]


def _with_lifecycle(row: Any) -> dict[str, Any]:
    m = row._mapping
    out = repo.row_to_read(INCIDENTS, row)
    out["lifecycle"] = {
        "state": m["o311_state"],
        "due_at": m["o311_due"],
        "agency": m["o311_unit"] or m["o311_owner"] or m["o311_owner_code"],
        "updated_at": m["o311_updated"],
        "note": m["o311_note"],
    }
    return out


async def find_open311_updates(
    *,
    conn: AsyncConnection,
    principal: Principal,
    ids: Sequence[int] | None = None,
    updated_from: datetime | None = None,
    updated_to: datetime | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """Return the public events of requests the principal may see, oldest first.

    ``ids`` are incident ids; ``updated_from`` / ``updated_to`` bound the event's time
    (inclusive). Each row: event id, incident id, action, to_state, at, and the public note
    (only for :data:`NOTED_ACTIONS`), the request's current status.
    """
    where = Where(
        repo.visible_sql(INCIDENTS),
        "e.action = ANY(CAST(:public AS text[]))",
        public=list(PUBLIC_ACTIONS),
        noted=list(NOTED_ACTIONS),
        **repo.scope_params(principal),
    )
    where.given("e.incident_id = ANY(CAST(:ids AS bigint[]))", ids=_listed(ids))
    where.given("e.at >= :start", start=updated_from)
    where.given("e.at <= :end", end=updated_to)
    sql = (
        "SELECT e.id, e.incident_id, e.action, e.to_state, e.at, e.data, "
        "CASE WHEN e.action = ANY(CAST(:noted AS text[])) THEN "
        "coalesce(e.note, e.reason) END AS note "
        f"FROM case_event e JOIN incident t ON t.id = e.incident_id WHERE {where.sql()} "
        f"ORDER BY e.at, e.id LIMIT {int(limit)}"
    )
    rows = (await conn.execute(text(sql), where.params)).all()
    return [dict(r._mapping) for r in rows]
