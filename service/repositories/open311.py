"""Read incidents as Open311 service requests: by id, or by period, category and status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import Principal
from service.repositories import entities as repo
from service.specs.entity_kinds import INCIDENTS

__all__ = ["find_open311_requests"]


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
    where, params = [repo.visible_sql(INCIDENTS)], {}
    if ids is not None:
        where.append("t.id = ANY(CAST(:ids AS bigint[]))")
        params["ids"] = list(ids)
    if reported_from is not None:
        where.append("t.reported_at >= :start")
        params["start"] = reported_from
    if reported_to is not None:
        where.append("t.reported_at <= :end")
        params["end"] = reported_to
    if categories is not None:
        where.append("t.category = ANY(CAST(:codes AS text[]))")
        params["codes"] = list(categories)
    if statuses is not None:
        where.append("t.status = ANY(CAST(:states AS text[]))")
        params["states"] = list(statuses)
    sql = (
        f"SELECT {repo.select_columns(INCIDENTS)} FROM incident t WHERE {' AND '.join(where)} "
        f"ORDER BY t.reported_at DESC, t.id DESC LIMIT {int(limit)}"
    )
    rows = (await conn.execute(text(sql), {**params, **repo.scope_params(principal)})).all()
    return [repo.row_to_read(INCIDENTS, r) for r in rows]
