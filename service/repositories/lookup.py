"""Return the area chain (city → district → community → grid) for points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import Principal
from service.db import load_sql
from service.errors import ForbiddenError, NotFoundError

__all__ = ["find_chain_for_point", "find_chains_for_points", "LEVELS"]

LEVELS = ("city", "district", "community", "grid")
_LOOKUP = text(load_sql("lookup"))
_LOOKUP_BATCH = text(load_sql("lookup_batch"))


def _chain(rows: Sequence[Any]) -> tuple[dict[str, Any], str | None]:
    """Return level → {code, name} for a chain of rows, and the deepest path."""
    chain: dict[str, Any] = {}
    path = None
    for r in rows:
        if r.code is None:
            continue
        chain[r.level] = {"code": r.code, "name": r.name}
        path = r.path
    return chain, path


def _in_scope(principal: Principal, path: str | None) -> bool:
    # The point is in scope when its chain passes through the scope area.
    if principal.scope_path is None:
        return True
    return path is not None and principal.covers_path(path)


def _describe(chain: dict[str, Any], generation: int) -> dict[str, Any]:
    matched = [level for level in LEVELS if level in chain]
    out: dict[str, Any] = {"generation": generation, "matched": matched}
    for level in LEVELS:
        out[level] = chain.get(level)
    if not matched:
        out["note"] = f"the point lies outside every area of generation {generation}"
    elif len(matched) < len(LEVELS):
        deepest = matched[-1]
        below = LEVELS[len(matched)]
        out["note"] = (
            f"the point lies in {deepest} {chain[deepest]['code']} but in no {below} of it"
        )
    return out


async def find_chain_for_point(
    conn: AsyncConnection,
    *,
    principal: Principal,
    lon: float,
    lat: float,
    generation: int | None,
) -> dict[str, Any]:
    """Return the chain of areas covering (lon, lat) in ``generation`` (default: current).

    A point outside every area is an answer (``matched: []``), not an error. A point inside
    the system but outside the caller's scope is refused (403) without naming its areas.
    """
    rows = (
        await conn.execute(_LOOKUP, {"lon": lon, "lat": lat, "generation": generation})
    ).all()
    gen = rows[0].generation
    if gen is None or rows[0].generation_active is None:
        if generation is None:
            raise NotFoundError("no boundaries have been activated yet", field="generation")
        raise NotFoundError(f"generation {generation} does not exist", field="generation")
    if not rows[0].generation_active and principal.role not in ("admin", "planner"):
        raise ForbiddenError(
            f"generation {gen} is pending; only planners and admins may read it",
            field="generation",
        )
    chain, path = _chain(rows)
    if chain and not _in_scope(principal, path):
        raise ForbiddenError(
            f"the point lies outside your area {principal.area_code}", field="lon,lat"
        )
    return _describe(chain, gen)


async def find_chains_for_points(
    conn: AsyncConnection,
    *,
    principal: Principal,
    lons: list[float],
    lats: list[float],
    generation: int,
) -> list[dict[str, Any]]:
    """Return one result per input point, in input order (``generation`` already resolved).

    Each result has a ``status``: ``matched`` (a grid), ``partial`` (some levels),
    ``unmatched`` (no area) or ``outside_scope`` (in an area the caller may not see).
    """
    rows = (
        await conn.execute(
            _LOOKUP_BATCH, {"lons": lons, "lats": lats, "generation": generation}
        )
    ).all()
    results: list[dict[str, Any]] = []
    start = 0
    n = len(rows)
    while start < n:
        stop = start
        index = rows[start].i
        while stop < n and rows[stop].i == index:
            stop += 1
        chain, path = _chain(rows[start:stop])
        if not chain:
            status = "unmatched"
        elif not _in_scope(principal, path):
            status = "outside_scope"
            chain = {}
        elif "grid" in chain:
            status = "matched"
        else:
            status = "partial"
        item: dict[str, Any] = {"index": index - 1, "status": status}
        for level in LEVELS:
            item[level] = chain.get(level)
        results.append(item)
        start = stop
    return results
