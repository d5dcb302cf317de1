"""Evaluation (综合评价) of grid teams, communities and districts over a period, from case events.

Per area of the chosen level inside the caller's scope (every area, with or without cases),
over the cases reported in [``since``, ``until``):

- ``cases``; ``on_time_sign_rate``: of the cases dispatched whose sign-for deadline has come
  (or that were signed for), those signed for by the deadline their first dispatch set;
  ``on_time_handle_rate``: the same for handling (feedback by the deadline the first sign-for
  set); ``closure_rate``: closed of those not cancelled; ``escalation_rate``: cases escalated
  at least once (by hand or by the clock) of all; ``reopen_rate``: cases reopened by a
  callback of those ever closed; ``overdue``: cases whose current step is overdue now;
- ``median_sign_minutes`` (first dispatch → first sign-for), ``median_handle_minutes``
  (first sign-for → first feedback), ``median_close_minutes`` (report → first verification);
- ``mean_satisfaction`` (1..5, the callbacks' latest).

Rates are ``null`` when nothing is counted under them. One set-based statement: each case's
events are folded into one row (first times, flags), then rows into areas; it reads
``case_event`` once for the period's cases, so a million cases cost seconds, not minutes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from service.analysis import area_in_scope, geometry_json, parse_geometry, resolve_scope
from service.analysis.workload import _aware
from service.auth import Principal
from service.errors import UnprocessableError

__all__ = ["LEVELS", "FIELDS", "DEFAULT_PERIOD", "run_evaluation"]

DEFAULT_PERIOD = timedelta(days=90)
#: level → (area depth, the incident's column of that level's code)
LEVELS = {
    "grid": (3, "grid_code"),
    "community": (2, "community_code"),
    "district": (1, "district_code"),
}
#: The figures of each area, in the order of the CSV columns.
FIELDS = (
    "cases",
    "on_time_sign_rate",
    "on_time_handle_rate",
    "closure_rate",
    "escalation_rate",
    "reopen_rate",
    "overdue",
    "median_sign_minutes",
    "median_handle_minutes",
    "median_close_minutes",
    "mean_satisfaction",
)

_EVALUATION_SQL = """
WITH areas AS (
    SELECT a.code, a.name, a.parent_code, a.geom FROM area a
    WHERE a.depth = :depth AND a.generation_low <= :g AND a.generation_high >= :g
      AND {in_scope_areas}
),
cases AS (
    SELECT t.id, t.{column} AS code, t.state, t.satisfaction, t.reopens,
           t.step_overdue AND t.state IN ('reported', 'registered', 'dispatched', 'signed',
                                          'handled') AS overdue_now
    FROM incident t
    WHERE t.reported_at >= :since AND t.reported_at < :until AND {in_scope_incidents}
),
per_case AS (
    SELECT c.id, c.code, c.state, c.satisfaction, c.reopens, c.overdue_now,
           min(e.at) AS first_at,
           min(e.at) FILTER (WHERE e.action = 'dispatch') AS dispatched,
           min(e.at) FILTER (WHERE e.action = 'sign') AS signed,
           min(e.at) FILTER (WHERE e.action = 'feedback') AS handled,
           min(e.at) FILTER (WHERE e.action = 'verify') AS verified,
           bool_or(e.action IN ('escalate', 'auto_escalate')) AS escalated,
           -- the deadline the first dispatch / first sign-for set (ISO text in the event)
           (array_agg(e.data->>'due_at' ORDER BY e.seq)
               FILTER (WHERE e.action = 'dispatch'))[1]::timestamptz AS sign_due,
           (array_agg(e.data->>'due_at' ORDER BY e.seq)
               FILTER (WHERE e.action = 'sign'))[1]::timestamptz AS handle_due
    FROM cases c JOIN case_event e ON e.incident_id = c.id
    GROUP BY c.id, c.code, c.state, c.satisfaction, c.reopens, c.overdue_now
),
per_area AS (
    SELECT p.code,
           count(*) AS cases,
           count(*) FILTER (WHERE p.signed <= p.sign_due) AS signed_on_time,
           count(*) FILTER (WHERE p.sign_due IS NOT NULL
                            AND (p.signed IS NOT NULL OR p.sign_due < :until)) AS sign_counted,
           count(*) FILTER (WHERE p.handled <= p.handle_due) AS handled_on_time,
           count(*) FILTER (WHERE p.handle_due IS NOT NULL
                            AND (p.handled IS NOT NULL OR p.handle_due < :until)) AS handle_counted,
           count(*) FILTER (WHERE p.state = 'closed') AS closed,
           count(*) FILTER (WHERE p.state <> 'cancelled') AS not_cancelled,
           count(*) FILTER (WHERE p.escalated) AS escalated,
           count(*) FILTER (WHERE p.reopens > 0) AS reopened,
           count(*) FILTER (WHERE p.verified IS NOT NULL) AS ever_closed,
           count(*) FILTER (WHERE p.overdue_now) AS overdue,
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM p.signed - p.dispatched) / 60) AS median_sign,
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM p.handled - p.signed) / 60) AS median_handle,
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM p.verified - p.first_at) / 60) AS median_close,
           avg(p.satisfaction)::float8 AS mean_satisfaction
    FROM per_case p GROUP BY p.code
)
SELECT a.code, a.name, a.parent_code, coalesce(s.cases, 0) AS cases,
       s.signed_on_time, s.sign_counted, s.handled_on_time, s.handle_counted, s.closed,
       s.not_cancelled, s.escalated, s.reopened, s.ever_closed, coalesce(s.overdue, 0) AS overdue,
       s.median_sign, s.median_handle, s.median_close, s.mean_satisfaction,
       {geometry} AS geometry
FROM areas a LEFT JOIN per_area s ON s.code = a.code
ORDER BY a.code
"""


def _rate(part: int | None, whole: int | None) -> float | None:
    return round(part / whole, 4) if whole else None


def _minutes(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def run_evaluation(
    conn: Connection,
    *,
    principal: Principal,
    level: str = "grid",
    area_code: str | None = None,
    generation: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    geometry: bool = False,
) -> dict[str, Any]:
    """Return the evaluation figures of every area of ``level`` in scope, by area code."""
    if level not in LEVELS:
        raise UnprocessableError(f"level must be one of {', '.join(LEVELS)}", field="level")
    until = _aware(until, "until") or datetime.now(UTC)
    since = _aware(since, "since") or until - DEFAULT_PERIOD
    if since >= until:
        raise UnprocessableError("since must be before until", field="since")
    # ``generation`` picks the areas; cases are counted in the cells they are in now.
    scope = resolve_scope(conn, principal=principal, area_code=area_code, generation=generation)
    depth, column = LEVELS[level]
    sql = _EVALUATION_SQL.format(
        column=column,  # from the fixed LEVELS mapping, never the request
        in_scope_areas=area_in_scope("a"),
        in_scope_incidents=area_in_scope("t", "area_path"),
        geometry=geometry_json("a.geom", geometry),
    )
    params = {**scope.params(), "depth": depth, "since": since, "until": until}
    items = []
    for r in conn.execute(text(sql), params):
        item = {
            "level": level,
            "code": r.code,
            "name": r.name,
            "parent_code": r.parent_code,
            "cases": r.cases,
            "on_time_sign_rate": _rate(r.signed_on_time, r.sign_counted),
            "on_time_handle_rate": _rate(r.handled_on_time, r.handle_counted),
            "closure_rate": _rate(r.closed, r.not_cancelled),
            "escalation_rate": _rate(r.escalated, r.cases),
            "reopen_rate": _rate(r.reopened, r.ever_closed),
            "overdue": r.overdue,
            "median_sign_minutes": _minutes(r.median_sign),
            "median_handle_minutes": _minutes(r.median_handle),
            "median_close_minutes": _minutes(r.median_close),
            "mean_satisfaction": None
            if r.mean_satisfaction is None
            else round(r.mean_satisfaction, 2),
        }
        if geometry:
            item["geometry"] = parse_geometry(r.geometry)
        items.append(item)
    return {
        "area": scope.as_dict(),
        "parameters": {"level": level, "since": since.isoformat(), "until": until.isoformat()},
        "summary": {
            "areas": len(items),
            "cases": sum(i["cases"] for i in items),
            "overdue": sum(i["overdue"] for i in items),
        },
        "items": items,
    }
