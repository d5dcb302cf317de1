"""Return the area chain (city → district → community → grid) for points.

This is the hot path. It runs on the asyncpg pool with prepared statements rather than the
SQLAlchemy engine (see ``service.db.make_pg_pool``), and single-point lookups that arrive
together are answered by one batch query (:class:`PointLookupBatcher`): under load a round
trip to PostgreSQL serves many requests, at no cost in latency when requests are few.

Single and batch lookups (``POST /lookup/batch``) find each point's deepest area only; the
area's chain (codes and names from the city down) is kept in the process per (generation,
area) for active generations, whose areas never change, and read from the database only for
areas not seen before (:func:`chains_of`: one cache per pool, shared by both paths). The
chain's joins were the part of a lookup that grew with the number of grids (bench.scale).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from geo.areas import LEVELS
from service.auth import Principal, require_readable_generation
from service.db import load_sql, positional
from service.errors import ForbiddenError, NotFoundError

__all__ = [
    "PointLookupBatcher",
    "chains_of",
    "find_chain_for_point",
    "find_chains_for_points",
    "LEVELS",
]

_LOOKUP_BATCH, _LOOKUP_BATCH_ARGS = positional(load_sql("lookup_batch"))


def _areas_sql() -> str:
    """Return lookup_batch.sql up to the deepest area of each point (no chains): the same
    level cascade and tie-break, one row per point with the area's id."""
    sql = load_sql("lookup_batch")
    cut = sql.find("), chains AS (")
    if cut < 0:
        raise RuntimeError("lookup_batch.sql changed: service.repositories.lookup needs updating")
    return sql[:cut] + (
        ")\nSELECT hit.i, g.id AS generation,\n"
        "       (SELECT active FROM generation WHERE id = g.id) AS generation_active,\n"
        "       hit.area_id\nFROM hit CROSS JOIN g ORDER BY hit.i"
    )


_LOOKUP_AREAS, _LOOKUP_AREAS_ARGS = positional(_areas_sql())
#: The chains (city down to the area) of areas by id, in a generation.
_CHAINS = """
SELECT d.id AS area_id, d.path,
       array_agg(a.code ORDER BY a.depth) AS codes, array_agg(a.name ORDER BY a.depth) AS names
FROM area d
JOIN area a ON a.code = ANY (string_to_array(d.path, '/'))
           AND a.generation_low <= $2 AND a.generation_high >= $2
WHERE d.id = ANY (CAST($1 AS bigint[]))
GROUP BY d.id, d.path
"""
#: Chains kept per process: (generation, area id) → (path, codes, names). A province's
#: areas are ~40,000; past this many the cache starts again.
MAX_CHAINS = 200_000
_NO_CHAIN: dict[str, Any] = {"path": None, "codes": [], "names": []}


def _args(names: tuple[str, ...], **values: Any) -> list[Any]:
    return [values[n] for n in names]


async def _fetch_chains(pool, lons: list[float], lats: list[float], generation: int | None):
    return await pool.fetch(
        _LOOKUP_BATCH, *_args(_LOOKUP_BATCH_ARGS, lons=lons, lats=lats, generation=generation)
    )


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def chains_of(pool) -> dict[tuple[int, int], dict[str, Any]]:
    """Return the chains kept for ``pool``'s database: (generation, area id) → path, codes,
    names (one dict per pool, made on first use; single and batch lookups share it)."""
    chains = _CACHES.get(pool)
    if chains is None:
        chains = _CACHES[pool] = {}
    return chains


async def _fetch_with_chains(
    pool,
    chains: dict[tuple[int, int], dict[str, Any]],
    lons: list[float],
    lats: list[float],
    generation: int | None,
):
    """Return each point's row (i, generation, generation_active, path, codes, names), in
    input order: the deepest area of each point from the database, its chain from ``chains``
    (areas not in it read and kept; a pending or unknown generation read whole, not kept)."""
    args = {"lons": lons, "lats": lats, "generation": generation}
    rows = await pool.fetch(_LOOKUP_AREAS, *[args[n] for n in _LOOKUP_AREAS_ARGS])
    if not rows or not rows[0]["generation_active"]:
        # No such generation, or a pending one (its areas may still change): the whole
        # chain from the database, nothing kept.
        return await _fetch_chains(pool, lons, lats, generation)
    gen = rows[0]["generation"]
    missing = {
        r["area_id"] for r in rows if r["area_id"] is not None and (gen, r["area_id"]) not in chains
    }
    if missing:
        found = await pool.fetch(_CHAINS, sorted(missing), gen)
        if len(chains) + len(found) > MAX_CHAINS:
            chains.clear()
        for c in found:
            chains[gen, c["area_id"]] = {
                "path": c["path"],
                "codes": list(c["codes"]),
                "names": list(c["names"]),
            }
    out = []
    for r in rows:
        chain = _NO_CHAIN if r["area_id"] is None else chains.get((gen, r["area_id"]))
        if chain is None:  # dropped by a clear above: read whole, as for pending ones
            return await _fetch_chains(pool, lons, lats, generation)
        out.append({"i": r["i"], "generation": gen, "generation_active": True, **chain})
    return out


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
        self.chains = chains_of(pool)

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
                rows = await self._fetch([i[0] for i in items], [i[1] for i in items], generation)
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

    async def _fetch(self, lons: list[float], lats: list[float], generation: int | None):
        """Return each point's row (generation, generation_active, path, codes, names)."""
        return await _fetch_with_chains(self._pool, self.chains, lons, lats, generation)


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
    rows = await _fetch_with_chains(pool, chains_of(pool), lons, lats, generation)
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
