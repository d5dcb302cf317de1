"""Workload of grid teams: the planner's view of balance.

Per grid of the generation in the analysed area (every grid, with or without incidents):

- ``incidents``: reported in the period [``since``, ``until``) (default: the 90 days up to now),
  and how many of those are ``closed`` by ``until``;
- ``open``: the backlog as of ``until`` (reported before it, not closed by then, whenever it
  was reported: a case open for 100 days is still the team's work), and ``overdue``: those of
  the backlog whose current step is overdue (flagged by the deadline sweep, or past its
  deadline at ``until``: the case's own time limits decide); only a backlog case with no
  deadline at all falls back to "reported more than ``overdue_hours`` (default 72) before
  ``until``";
- ``z``: (incidents − mean) / standard deviation over the grids in the area, and
  ``median_ratio``: incidents / median.

A grid is a ``high`` outlier when z > ``z`` (default 2) or incidents > ``median_ratio``
(default 3) × the median, a ``low`` outlier when z < −``z``. Items are every grid, high
outliers first, then low outliers, then the rest; heaviest load first within each.
Incidents are counted in the grid they are in now (``grid_code``), the team that owns them.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Unpack

from sqlalchemy import Connection, text

from service.analysis import (
    Where,
    area_in_scope,
    geometry_json,
    located,
    parse_geometry,
    resolve_scope,
)
from service.errors import UnprocessableError

__all__ = [
    "DEFAULT_PERIOD",
    "DEFAULT_OVERDUE_HOURS",
    "DEFAULT_Z",
    "DEFAULT_MEDIAN_RATIO",
    "CHINA_STANDARD_TIME",
    "run_workload",
]

DEFAULT_PERIOD = timedelta(days=90)
DEFAULT_OVERDUE_HOURS = 72.0
DEFAULT_Z = 2.0
DEFAULT_MEDIAN_RATIO = 3.0
#: Times without a zone are China Standard Time, as everywhere in the API.
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")
_COLUMNS = ("id", "reported_at", "closed_at", "status", "step_overdue", "step_due_at")

#: The incidents an "as of now" workload reads: the period's, and the older backlog — cases
#: open now (``status``, indexed with ``reported_at`` in every monthly partition). The
#: conditions below, true of both, keep the two apart. Written as two branches so the period
#: prunes to its months and the backlog reads the open cases' index entries, where the one
#: condition ``reported_at >= since OR closed_at IS NULL OR …`` read every partition whole
#: (at a year of cases, 1 M rows: 1 s of the planning page's first visit).
_NOW = """(
    SELECT * FROM {located} p WHERE p.reported_at >= :since AND p.reported_at < :until
    UNION ALL
    SELECT * FROM {located} p WHERE p.reported_at < :since AND p.status IN ('new', 'open')
)"""

_WORKLOAD_SQL = """
WITH grids AS (
    SELECT a.code, a.name, a.parent_code, a.geom FROM area a
    WHERE a.depth = 3 AND a.generation_low <= :g AND a.generation_high >= :g
      AND {in_scope_areas}
),
inc AS (
    SELECT t.grid_code,
           count(*) FILTER (WHERE t.reported_at >= :since) AS incidents,
           count(*) FILTER (WHERE t.reported_at >= :since AND t.closed_at < :until) AS closed,
           count(*) FILTER (WHERE t.closed_at IS NULL OR t.closed_at >= :until) AS open,
           count(*) FILTER (WHERE (t.closed_at IS NULL OR t.closed_at >= :until)
                            AND (t.step_overdue OR t.step_due_at < :until
                                 OR (t.step_due_at IS NULL
                                     AND t.reported_at < :overdue_before))) AS overdue
    FROM {incidents} t
    WHERE t.reported_at < :until
      AND (t.reported_at >= :since OR t.closed_at IS NULL OR t.closed_at >= :until)
      AND {in_scope_incidents}
    GROUP BY t.grid_code
),
teams AS (
    SELECT m.serving_grid_code AS code, count(*) AS team_size FROM member m
    WHERE m.team_role IS NOT NULL AND m.serving_grid_code IN (SELECT code FROM grids)
    GROUP BY m.serving_grid_code
),
joined AS (
    SELECT g.code, g.name, g.parent_code, g.geom, coalesce(tm.team_size, 0) AS team_size,
           coalesce(i.incidents, 0) AS incidents, coalesce(i.closed, 0) AS closed,
           coalesce(i.open, 0) AS open, coalesce(i.overdue, 0) AS overdue
    FROM grids g LEFT JOIN inc i ON i.grid_code = g.code LEFT JOIN teams tm ON tm.code = g.code
),
stats AS (
    SELECT count(*) AS grids, avg(incidents)::float8 AS mean,
           stddev_pop(incidents)::float8 AS sd,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY incidents) AS median
    FROM joined
)
SELECT j.code, j.name, j.parent_code, j.team_size, j.incidents, j.closed, j.open, j.overdue,
       s.grids, s.mean, s.sd, s.median,
       (j.incidents - s.mean) / nullif(s.sd, 0) AS z,
       j.incidents / nullif(s.median, 0) AS median_ratio,
       {geometry} AS geometry
FROM joined j CROSS JOIN stats s
"""

# What the grids do not show: the area's incidents outside every grid in the period.
_UNASSIGNED_SQL = """
SELECT count(*) FILTER (WHERE t.reported_at >= :since) AS incidents,
       count(*) FILTER (WHERE t.closed_at IS NULL OR t.closed_at >= :until) AS open
FROM {incidents} t
WHERE t.grid_code IS NULL AND t.reported_at < :until
  AND (t.reported_at >= :since OR t.closed_at IS NULL OR t.closed_at >= :until)
  AND {in_scope_incidents}
"""


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise UnprocessableError("must be a date and time", field=field)
    return value if value.tzinfo is not None else value.replace(tzinfo=CHINA_STANDARD_TIME)


def _positive(value: float, field: str) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise UnprocessableError(f"{field} must be a finite number > 0", field=field)
    return float(value)


def _grid_workload(r, *, z: float, median_ratio: float) -> dict[str, Any]:
    """Return a grid team's workload finding, an outlier ("high", "low") beyond ``z``
    standard deviations from the mean or above ``median_ratio`` times the median."""
    zr = None if r.z is None else float(r.z)
    ratio = None if r.median_ratio is None else float(r.median_ratio)
    if (zr is not None and zr > z) or (ratio is not None and ratio > median_ratio):
        outlier = "high"
    elif zr is not None and zr < -z:
        outlier = "low"
    else:
        outlier = None
    return {
        "kind": "grid_workload",
        "grid_code": r.code,
        "grid_name": r.name,
        "community_code": r.parent_code,
        "team_size": r.team_size,
        "incidents": r.incidents,
        "closed": r.closed,
        "open": r.open,
        "overdue": r.overdue,
        "z": None if zr is None else round(zr, 3),
        "median_ratio": None if ratio is None else round(ratio, 3),
        "outlier": outlier,
        "geometry": parse_geometry(r.geometry),
    }


def run_workload(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    overdue_hours: float = DEFAULT_OVERDUE_HOURS,
    z: float = DEFAULT_Z,
    median_ratio: float = DEFAULT_MEDIAN_RATIO,
    geometry: bool = True,
    **where: Unpack[Where],
) -> dict[str, Any]:
    """Return incidents, backlog and overdue cases per grid team, with outliers, ranked."""
    as_of_now = until is None
    until = _aware(until, "until") or datetime.now(UTC)
    since = _aware(since, "since") or until - DEFAULT_PERIOD
    if since >= until:
        raise UnprocessableError("since must be before until", field="since")
    overdue_hours = _positive(overdue_hours, "overdue_hours")
    z = _positive(z, "z")
    median_ratio = _positive(median_ratio, "median_ratio")
    scope = resolve_scope(conn, **where)
    params = {
        **scope.params(),
        "since": since,
        "until": until,
        "overdue_before": until - timedelta(hours=overdue_hours),
    }
    incidents = located("incident", _COLUMNS, scope=scope)
    fmt = {
        # As of now (no until given), the backlog is the cases open now; as of a past
        # moment, those not closed by then (closed_at, read from every partition).
        "incidents": _NOW.format(located=incidents) if as_of_now else incidents,
        "in_scope_areas": area_in_scope("a"),
        "in_scope_incidents": area_in_scope("t", "area_path"),
    }
    rows = conn.execute(
        text(_WORKLOAD_SQL.format(**fmt, geometry=geometry_json("j.geom", geometry))), params
    ).all()
    unassigned = conn.execute(text(_UNASSIGNED_SQL.format(**fmt)), params).one()

    items = [_grid_workload(r, z=z, median_ratio=median_ratio) for r in rows]
    rank = {"high": 0, "low": 1, None: 2}
    items.sort(key=lambda i: (rank[i["outlier"]], -i["incidents"], -i["overdue"], i["grid_code"]))
    first = rows[0] if rows else None
    summary = {
        "grids": len(rows),
        "incidents": sum(i["incidents"] for i in items),
        "closed": sum(i["closed"] for i in items),
        "open": sum(i["open"] for i in items),
        "overdue": sum(i["overdue"] for i in items),
        "mean": round(first.mean, 3) if first else None,
        "stddev": round(first.sd, 3) if first else None,
        "median": float(first.median) if first else None,
        "outliers_high": sum(1 for i in items if i["outlier"] == "high"),
        "outliers_low": sum(1 for i in items if i["outlier"] == "low"),
        "grids_with_overdue": sum(1 for i in items if i["overdue"]),
        "unassigned_incidents": unassigned.incidents,
        "unassigned_open": unassigned.open,
    }
    return {
        "area": scope.as_dict(),
        "parameters": {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "overdue_hours": overdue_hours,
            "z": z,
            "median_ratio": median_ratio,
        },
        "summary": summary,
        "items": items,
    }
