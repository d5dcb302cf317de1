"""Read boundary generations: the current one, the one a request reads, all of them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import Principal, require_readable_generation
from service.errors import NotFoundError

__all__ = ["resolve_generation", "find_current_generation", "list_generations"]

_CURRENT_SQL = "SELECT max(id) FROM generation WHERE active"
_LIST_SQL = text(
    "SELECT g.id, g.description, g.active, g.created_at, g.activated_at, "
    "g.id = (SELECT max(id) FROM generation WHERE active) AS current, "
    "(SELECT count(*) FROM area a WHERE a.generation_low <= g.id "
    " AND a.generation_high >= g.id) AS areas "
    "FROM generation g ORDER BY g.id DESC"
)


async def resolve_generation(*, pool, principal: Principal, requested: int | None) -> int:
    """Return the generation a request reads: ``requested`` if it exists and may be read,
    else the current one.

    Raises 404 when no generation is active yet or ``requested`` does not exist, 403 when
    the principal may not read a pending generation. It runs on the hot asyncpg pool
    (``app.state.pg_pool``) because tiles and layer items ask it on every request.
    """
    if requested is None:
        current = await pool.fetchval(_CURRENT_SQL)
        if current is None:
            raise NotFoundError("no boundaries have been activated yet", field="generation")
        return current
    row = await pool.fetchrow("SELECT active FROM generation WHERE id = $1", requested)
    if row is None:
        raise NotFoundError(f"generation {requested} does not exist", field="generation")
    require_readable_generation(principal, requested, row["active"])
    return requested


async def find_current_generation(*, conn: AsyncConnection) -> int | None:
    """Return the id of the current (newest active) generation, or None before any."""
    return (await conn.execute(text(_CURRENT_SQL))).scalar()


async def list_generations(*, conn: AsyncConnection) -> list[dict[str, Any]]:
    """Return all generations, newest first, with their area counts and which is current."""
    rows = (await conn.execute(_LIST_SQL)).all()
    return [
        {
            "id": r.id,
            "description": r.description,
            "active": r.active,
            "current": bool(r.current),
            "created_at": r.created_at,
            "activated_at": r.activated_at,
            "areas": r.areas,
        }
        for r in rows
    ]
