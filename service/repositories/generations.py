"""Read boundary generations: the current one, the one a request reads, all of them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import Principal, require_readable_generation
from service.errors import NotFoundError
from service.tables import area, generation

__all__ = [
    "resolve_generation",
    "find_current_generation",
    "list_generations",
    "LIST_GENERATIONS",
]

_CURRENT_SQL = "SELECT max(id) FROM generation WHERE active"
_g = generation.alias("g")
_CURRENT = select(func.max(generation.c.id)).where(generation.c.active).scalar_subquery()
_AREAS = (
    select(func.count())
    .where(area.c.generation_low <= _g.c.id, area.c.generation_high >= _g.c.id)
    .scalar_subquery()
)
#: All generations, newest first, with their area counts and which is current. One Core
#: statement for the async engine (the API) and a sync connection (the CLI).
LIST_GENERATIONS = select(
    _g, (_g.c.id == _CURRENT).label("current"), _AREAS.label("areas")
).order_by(_g.c.id.desc())


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
    rows = (await conn.execute(LIST_GENERATIONS)).all()
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
