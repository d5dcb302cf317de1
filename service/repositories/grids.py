"""Read what the map pages show of a grid beyond its layers: its team, its workload figures.

Runs on the asyncpg pool, as the pages' layer reads do. Neither query checks scope: the
callers pass only grids the principal sees (found through the layer repository).
"""

from __future__ import annotations

from typing import Any

__all__ = ["list_grid_team", "count_grid_workload"]

_TEAM_SQL = (
    "SELECT name, team_role, phone FROM member WHERE serving_grid_code = $1 "
    "AND team_role IS NOT NULL ORDER BY team_role, name"
)
# The 90 days' incidents counted in one pass over those days (a correlated count per grid
# read every incident of each grid: 8 s at a year of 1 M cases), joined to the grids.
_WORKLOAD_SQL = """
    WITH recent AS (
        SELECT i.grid_code AS code, count(*)::int AS n FROM incident i
        WHERE i.reported_at >= now() - interval '90 days' AND i.grid_code = ANY($1::text[])
        GROUP BY i.grid_code
    )
    SELECT g.code, coalesce(r.n, 0) AS incidents_90d,
           (SELECT count(*) FROM unit u WHERE u.grid_code = g.code)::int AS units,
           (SELECT count(DISTINCT m.team_role) FROM member m
               WHERE m.serving_grid_code = g.code)::int AS team_roles
    FROM unnest($1::text[]) AS g(code) LEFT JOIN recent r ON r.code = g.code
"""

_TEAM_AND_UNITS_SQL = """
    SELECT g.code,
           (SELECT count(*) FROM unit u WHERE u.grid_code = g.code)::int AS units,
           (SELECT count(DISTINCT m.team_role) FROM member m
               WHERE m.serving_grid_code = g.code)::int AS team_roles
    FROM unnest($1::text[]) AS g(code)
"""


async def list_grid_team(*, pool, grid_code: str) -> list[dict[str, Any]]:
    """Return the grid's team members (``name``, ``team_role``, ``phone``), by role."""
    return [dict(r) for r in await pool.fetch(_TEAM_SQL, grid_code)]


async def count_grid_workload(
    *, pool, grid_codes: list[str], recent: bool = True
) -> dict[str, dict[str, Any]]:
    """Return each grid's ``incidents_90d``, ``units`` and ``team_roles`` (roles filled),
    by code; ``recent=False``: without ``incidents_90d`` (the caller has them)."""
    rows = await pool.fetch(_WORKLOAD_SQL if recent else _TEAM_AND_UNITS_SQL, grid_codes)
    return {r["code"]: dict(r) for r in rows}
