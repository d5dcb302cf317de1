"""Plan metrics from the database: what a draft does to balance, compactness and nesting.

:func:`plan_context` reads what the grids are measured against — the communities of the
plan's area in its base generation, population (each community's ``population_estimate``
spread over its incidents, care households and units — people live where those are — or
evenly over its area where it has few), care households, units, the last year's
incidents and the grid teams — and :func:`read_plan_metrics` measures every grid of the
draft (:mod:`geo.planmetrics`).

Interactive edits: the context and the last metrics of each plan are kept in this process
(:class:`MetricsCache`, at most :data:`CACHE_PLANS` plans, a context at most
:data:`CONTEXT_SECONDS` old), so :func:`edit_metrics`, called after each edit, measures only
the grids the edit changed when the cached metrics are of the version just before it;
otherwise (another process edited, or nothing is cached) it measures the whole draft.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, text

from geo.planmetrics import (
    PlanContext,
    PlanMetrics,
    PointLayer,
    dasymetric_population,
    plan_metrics,
    update_plan_metrics,
)
from geo.population import LocalFrame
from service.repositories import plans as plans_repo

__all__ = [
    "CACHE_PLANS",
    "CONTEXT_SECONDS",
    "plan_context",
    "read_plan_metrics",
    "edit_metrics",
    "metrics_json",
    "CACHE",
]

CACHE_PLANS = 16
#: Entities move slowly against a planning session: a context is rebuilt after this long.
CONTEXT_SECONDS = 300.0
#: Incidents of this many days count (incidents per year = count * 365 / days).
INCIDENT_DAYS = 365

_COMMUNITIES_SQL = text(
    "SELECT c.code, ST_AsBinary(c.geom) AS wkb, "
    "coalesce((c.properties->>'population_estimate')::float, 0) AS pop "
    "FROM area c JOIN area p ON p.code = :code AND p.generation_low <= :g "
    "AND p.generation_high >= :g "
    "WHERE c.depth = 2 AND (c.code = p.code OR c.path LIKE p.path || '/%') "
    "AND c.generation_low <= :g AND c.generation_high >= :g ORDER BY c.code"
)
# Entities by their stored cells (the current generation's): a plan's area is the same area.
_POINTS_SQL = {
    "households": "SELECT ST_X(geom), ST_Y(geom) FROM care_household "
    "WHERE area_path = :p OR area_path LIKE :p || '/%'",
    "units": "SELECT ST_X(geom), ST_Y(geom) FROM unit "
    "WHERE area_path = :p OR area_path LIKE :p || '/%'",
    "incidents": "SELECT ST_X(geom), ST_Y(geom) FROM incident "
    "WHERE (area_path = :p OR area_path LIKE :p || '/%') "
    f"AND reported_at >= now() - interval '{INCIDENT_DAYS} days'",
}
_TEAMS_SQL = text(
    "SELECT serving_grid_code AS code, count(*) AS n FROM member "
    "WHERE team_role IS NOT NULL AND (serving_path = :p OR serving_path LIKE :p || '/%') "
    "GROUP BY serving_grid_code"
)
_VERSION_SQL = text("SELECT version FROM boundary_plan WHERE id = :id")


@dataclass
class _Entry:
    base_generation: int
    built: float
    context: PlanContext
    team_sizes: dict[str, int]
    version: int | None = None
    metrics: PlanMetrics | None = None


class MetricsCache:
    """Per plan: the context and the metrics of one version (LRU, thread-safe)."""

    def __init__(self, size: int = CACHE_PLANS) -> None:
        self._size = size
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, plan_id: int) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(plan_id)
            if entry is not None:
                self._entries.move_to_end(plan_id)
            return entry

    def put(self, plan_id: int, entry: _Entry) -> None:
        with self._lock:
            self._entries[plan_id] = entry
            self._entries.move_to_end(plan_id)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear_plan(self, plan_id: int) -> None:
        with self._lock:
            self._entries.pop(plan_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = MetricsCache()


def _points(conn: Connection, sql: str, path: str) -> PointLayer:
    rows = conn.execute(text(sql), {"p": path}).all()
    if not rows:
        return PointLayer.empty()
    xy = np.array(rows, dtype=float)
    return PointLayer(xy[:, 0], xy[:, 1])


def plan_context(conn: Connection, plan: Mapping[str, Any]) -> tuple[PlanContext, dict[str, int]]:
    """Return the measuring context of a plan (its area in its base generation) and the
    team size of each current grid code."""
    rows = conn.execute(
        _COMMUNITIES_SQL, {"code": plan["area_code"], "g": plan["base_generation"]}
    ).all()
    communities = {r.code: shapely.from_wkb(bytes(r.wkb)) for r in rows}
    geoms = list(communities.values())
    if geoms:
        frame = LocalFrame.around(shapely.GeometryCollection(geoms))
    else:
        frame = LocalFrame(0.0, 0.0)
    path = plan["area_path"]
    layers = {name: _points(conn, sql, path) for name, sql in _POINTS_SQL.items()}
    where = PointLayer(
        np.concatenate([layer.lon for layer in layers.values()]),
        np.concatenate([layer.lat for layer in layers.values()]),
    )
    population = dasymetric_population(geoms, [r.pop for r in rows], where, frame=frame)
    teams = {r.code: int(r.n) for r in conn.execute(_TEAMS_SQL, {"p": path}) if r.code}
    ctx = PlanContext(
        frame=frame,
        communities=communities,
        population=population,
        incident_years=INCIDENT_DAYS / 365.0,
        **layers,
    )
    return ctx, teams


def _entry(conn: Connection, plan: Mapping[str, Any], cache: MetricsCache) -> _Entry:
    entry = cache.get(plan["id"])
    fresh = (
        entry is not None
        and entry.base_generation == plan["base_generation"]
        and time.monotonic() - entry.built < CONTEXT_SECONDS
    )
    if not fresh:
        ctx, teams = plan_context(conn, plan)
        entry = _Entry(plan["base_generation"], time.monotonic(), ctx, teams)
        cache.put(plan["id"], entry)
    return entry


def _full(conn: Connection, plan_id: int, entry: _Entry) -> PlanMetrics:
    grids = plans_repo.read_plan_grids(conn, plan_id)
    return plan_metrics(
        list(grids["key"]),
        list(grids.geometry),
        context=entry.context,
        team_sizes=entry.team_sizes,
    )


def read_plan_metrics(
    conn: Connection, plan_id: int, *, cache: MetricsCache = CACHE
) -> tuple[dict[str, Any], PlanMetrics]:
    """Return the plan's row and the metrics of its current version (cached per version)."""
    plan = plans_repo.get_plan(conn, plan_id)
    entry = _entry(conn, plan, cache)
    if entry.metrics is None or entry.version != plan["version"]:
        entry.metrics = _full(conn, plan_id, entry)
        entry.version = plan["version"]
    return plan, entry.metrics


def edit_metrics(
    conn: Connection,
    *,
    plan_id: int,
    removed: list[str],
    changed: Mapping[str, BaseGeometry],
    cache: MetricsCache = CACHE,
) -> dict[str, Any]:
    """Return ``{"grids": [the changed grids' measures], "plan": {summary}}`` after an edit.

    Measures only the changed grids when this process holds the metrics of the version
    just before the edit; otherwise the whole draft.
    """
    version = conn.execute(_VERSION_SQL, {"id": plan_id}).scalar()
    entry = cache.get(plan_id)
    if (
        version is not None
        and entry is not None
        and entry.metrics is not None
        and entry.version == version - 1
        and time.monotonic() - entry.built < CONTEXT_SECONDS
    ):
        entry.metrics = update_plan_metrics(
            entry.metrics,
            changed=dict(changed),
            removed=removed,
            context=entry.context,
            team_sizes=entry.team_sizes,
        )
        entry.version = version
        metrics = entry.metrics
    else:
        _plan, metrics = read_plan_metrics(conn, plan_id, cache=cache)
    body = metrics_json(metrics, keys=list(changed))
    return {"grids": body["grids"], "plan": body["plan"]}


def metrics_json(metrics: PlanMetrics, *, keys: list[str] | None = None) -> dict[str, Any]:
    """Return ``{"plan": summary, "grids": [rows keyed by "key"]}`` (only ``keys`` if given)."""
    frame = metrics.grids if keys is None else metrics.grids.loc[metrics.grids.index.isin(keys)]
    rows = PlanMetrics(frame, metrics.plan).grid_records()
    return {"plan": metrics.plan, "grids": [{"key": r.pop("code"), **r} for r in rows]}


_CURRENT_GRIDS_SQL = text(
    "SELECT a.code, ST_AsBinary(a.geom) AS wkb FROM area a JOIN area p ON p.code = :code "
    "AND p.generation_low <= :g AND p.generation_high >= :g "
    "WHERE a.depth = 3 AND a.path LIKE p.path || '/%' "
    "AND a.generation_low <= :g AND a.generation_high >= :g ORDER BY a.code"
)


def read_base_metrics(
    conn: Connection, plan_id: int, *, cache: MetricsCache = CACHE
) -> PlanMetrics:
    """Return the metrics of the plan area's grids in its base generation ("today"), measured
    against the same context as the draft."""
    plan = plans_repo.get_plan(conn, plan_id)
    entry = _entry(conn, plan, cache)
    rows = conn.execute(
        _CURRENT_GRIDS_SQL, {"code": plan["area_code"], "g": plan["base_generation"]}
    ).all()
    return plan_metrics(
        [r.code for r in rows],
        [shapely.from_wkb(bytes(r.wkb)) for r in rows],
        context=entry.context,
        team_sizes=entry.team_sizes,
    )
