"""Return the area chain (city → district → community → grid) for points.

This is the hot path. It runs on the asyncpg pool with prepared statements rather than the
SQLAlchemy engine (see ``service.db.make_pg_pool``), and single-point lookups that arrive
together are answered by one batch query (:class:`PointLookupBatcher`): under load a round
trip to PostgreSQL serves many requests, at no cost in latency when requests are few.
"""

from __future__ import annotations

import asyncio
from typing import Any

from geo.areas import LEVELS
from service.auth import Principal, require_readable_generation
from service.db import load_sql, positional
from service.errors import ForbiddenError, NotFoundError

__all__ = ["PointLookupBatcher", "find_chain_for_point", "find_chains_for_points", "LEVELS"]

_LOOKUP_BATCH, _LOOKUP_BATCH_ARGS = positional(load_sql("lookup_batch"))


def _args(names: tuple[str, ...], **values: Any) -> list[Any]:
    return [values[n] for n in names]


async def _fetch_chains(pool, lons: list[float], lats: list[float], generation: int | None):
    return await pool.fetch(
        _LOOKUP_BATCH, *_args(_LOOKUP_BATCH_ARGS, lons=lons, lats=lats, generation=generation)
    )


class PointLookupBatcher:
    """Coalesce concurrent single-point lookups into batch queries.

    A lookup joins the batch being collected for its generation; the batch is sent at the
    next turn of the event loop, so a lone request waits for nothing. At most
    ``max_in_flight`` batches run at once; requests arriving meanwhile queue into the next.
    """

    def __init__(self, pool, *, max_in_flight: int = 8, max_batch: int = 512):
        self._pool = pool
        self._pending: dict[int | None, list[tuple[float, float, asyncio.Future]]] = {}
        self._scheduled = False
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_batch = max_batch

    async def lookup(self, lon: float, lat: float, generation: int | None):
        """Return the batch query's row for one point."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.setdefault(generation, []).append((lon, lat, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for generation, items in pending.items():
            for start in range(0, len(items), self._max_batch):
                asyncio.ensure_future(self._run(generation, items[start : start + self._max_batch]))

    async def _run(self, generation: int | None, items: list) -> None:
        try:
            async with self._slots:
                rows = await _fetch_chains(
                    self._pool, [i[0] for i in items], [i[1] for i in items], generation
                )
        except BaseException as exc:  # every waiter must learn of the failure
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for row, (_, _, future) in zip(rows, items, strict=True):
            if not future.done():
                future.set_result(row)


def _in_scope(principal: Principal, path: str | None) -> bool:
    # The point is in scope when its chain passes through the scope area.
    if principal.scope_path is None:
        return True
    return path is not None and principal.covers_path(path)


def _levels(codes: list[str], names: list[str]) -> dict[str, Any]:
    # A chain always starts at the city (depth 0), so position i is level LEVELS[i].
    out: dict[str, Any] = {level: None for level in LEVELS}
    for level, code, name in zip(LEVELS, codes, names, strict=False):
        out[level] = {"code": code, "name": name}
    return out


async def find_chain_for_point(
    batcher: PointLookupBatcher,
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
    row = await batcher.lookup(lon, lat, generation)
    gen = row["generation"]
    if gen is None or row["generation_active"] is None:
        if generation is None:
            raise NotFoundError("no boundaries have been activated yet", field="generation")
        raise NotFoundError(f"generation {generation} does not exist", field="generation")
    require_readable_generation(principal, gen, row["generation_active"])
    codes, names = row["codes"], row["names"]
    if codes and not _in_scope(principal, row["path"]):
        raise ForbiddenError(
            f"the point lies outside your area {principal.area_code}", field="lon,lat"
        )
    matched = list(LEVELS[: len(codes)])
    out: dict[str, Any] = {"generation": gen, "matched": matched, **_levels(codes, names)}
    if not codes:
        out["note"] = f"the point lies outside every area of generation {gen}"
    elif len(codes) < len(LEVELS):
        deepest = matched[-1]
        out["note"] = (
            f"the point lies in {deepest} {codes[-1]} but in no {LEVELS[len(codes)]} of it"
        )
    return out


async def find_chains_for_points(
    pool,
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
    rows = await _fetch_chains(pool, lons, lats, generation)
    empty = _levels([], [])
    results: list[dict[str, Any]] = []
    for row in rows:
        codes = row["codes"]
        if not codes:
            status, chain = "unmatched", empty
        elif not _in_scope(principal, row["path"]):
            status, chain = "outside_scope", empty
        else:
            status = "matched" if len(codes) == len(LEVELS) else "partial"
            chain = _levels(codes, row["names"])
        results.append({"index": row["i"] - 1, "status": status, **chain})
    return results
