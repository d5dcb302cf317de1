"""The coverage report: every planning analysis of one area in one call, and its exports.

:func:`run_report` runs staffing, topology, organisation, care, workload and reach (and
siting, when ``siting_k`` is given) over the same area and generation, timing each, and
adds three tables the analyses' findings do not hold in full (every grid's team, every
grid's and community's party organisation, every community's care counts). The answer is

``{"area", "generated_at", "parameters", "timings", "summary", "analyses", "tables"}``

with ``summary`` the key figures of each analysis and ``analyses`` their full results
(findings with GeoJSON geometry, EPSG:4326). Two exports are made from it:

* :func:`report_geopackage`: one layer per kind of gap (uncovered reach polygons, topology
  defects, grids missing or doubling team roles, workload outliers, grids without a party
  branch, large units without co-building, grids with care gaps, and proposed sites), every
  layer present even when empty, so a GIS project can link to them;
* :func:`report_csv_zip`: one CSV per table (:data:`TABLES`) plus the key figures.

Scope and sensitive data follow the analyses: each checks the caller's scope itself, care
household details appear (in ``analyses.care.items``) only for the roles that may read
them, and are logged there; the exports hold care *counts* only, for every role.

Run it in one transaction (care writes to ``access_log``). In a ``REPEATABLE READ``
transaction (as the API and the CLI open it) every figure comes from one snapshot, and the
evaluation, reach and the tables run on a second connection in that snapshot, beside the
other analyses.
"""

from __future__ import annotations

import io
import re
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Unpack

import orjson
import pandas as pd
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from maps.gaps import GAP_LAYERS
from service.analysis import (
    ANALYSES,
    Scope,
    Where,
    area_in_scope,
    located,
    ratio,
    resolve_scope,
)
from service.analysis.organisation import BRANCH_ORGS
from service.analysis.reach import run_reach
from service.analysis.staffing import TEAM_ROLES
from service.auth import Principal
from service.errors import UnprocessableError, WanggeError

__all__ = [
    "ProgressFn",
    "REPORT_STEPS",
    "TABLES",
    "GAP_LAYERS",
    "run_report",
    "report_tables",
    "gap_layer",
    "report_geopackage",
    "report_csv_zip",
    "table_csv",
]

#: progress(step, done, total, seconds): called with ``seconds`` None when a step starts
#: (``done`` steps finished before it) and with its seconds when it ends.
ProgressFn = Callable[[str, int, int, float | None], None]

#: The steps of a report, in the order they are reported ("tables": the report's own
#: per-area counts). Evaluation, reach and tables may run beside the others
#: (see :func:`run_report`).
REPORT_STEPS = (*ANALYSES, "evaluation", "reach", "tables", "siting")
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$")


def _exported_snapshot(conn: Connection) -> str | None:
    """Return the id of ``conn``'s snapshot for a second connection, or None.

    Only a REPEATABLE READ transaction that has written nothing yet is shared: its snapshot
    is the whole truth another connection can see; otherwise everything runs on ``conn``.
    """
    row = conn.execute(
        text(
            "SELECT current_setting('transaction_isolation') AS isolation, "
            "txid_current_if_assigned() IS NULL AS clean"
        )
    ).one()
    if row.isolation != "repeatable read" or not row.clean:
        return None
    snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar()
    return snapshot if _SNAPSHOT_ID.match(snapshot or "") else None


def _spare_connection(engine: Engine) -> bool:
    """Return whether ``engine``'s pool can lend one more connection without waiting."""
    pool = engine.pool
    try:
        limit = pool.size() + pool._max_overflow  # QueuePool
        return pool._max_overflow < 0 or pool.checkedout() < limit
    except AttributeError:  # pools without a limit (NullPool, StaticPool, …)
        return True


def _in_snapshot(engine: Engine, snapshot: str, work: Callable[[Connection], Any]) -> Any:
    """Return ``work(connection)`` on a new connection that sees exactly ``snapshot``."""
    with engine.connect() as conn:
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        # A literal (checked by _SNAPSHOT_ID): SET takes no bound parameters.
        conn.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
        try:
            return work(conn)
        finally:
            conn.rollback()


# -- the report's own tables -----------------------------------------------------------------
# Every grid in scope with its team per role (the staffing analysis lists only the gaps).
_TEAM_TABLE_SQL = """
WITH grids AS (
    SELECT a.code, a.name, a.parent_code FROM area a
    WHERE a.depth = 3 AND a.generation_low <= :g AND a.generation_high >= :g AND {in_scope}
),
team AS (
    SELECT m.serving_grid_code AS code,
           count(*) FILTER (WHERE m.team_role = 'party_building_instructor') AS pbi,
           count(*) FILTER (WHERE m.team_role = 'grid_manager') AS manager,
           count(*) FILTER (WHERE m.team_role = 'grid_police') AS police
    FROM member m
    WHERE m.team_role IS NOT NULL AND m.serving_grid_code IN (SELECT code FROM grids)
    GROUP BY m.serving_grid_code
)
SELECT g.code, g.name, g.parent_code, coalesce(t.pbi, 0) AS pbi,
       coalesce(t.manager, 0) AS manager, coalesce(t.police, 0) AS police
FROM grids g LEFT JOIN team t ON t.code = g.code
ORDER BY g.code
"""

# Every community and grid in scope with its units (the analysis lists only the gaps).
_ORGANISATION_TABLE_SQL = """
WITH u AS (
    SELECT t.grid_code, t.community_code, t.party_org FROM {rows} t WHERE {rows_in_scope}
),
per_grid AS (
    SELECT grid_code AS code, count(*) AS units,
           count(*) FILTER (WHERE party_org = 'none') AS without_org,
           count(*) FILTER (WHERE party_org = ANY(CAST(:branch AS text[]))) AS branches
    FROM u WHERE grid_code IS NOT NULL GROUP BY grid_code
),
per_community AS (
    SELECT community_code AS code, count(*) AS units,
           count(*) FILTER (WHERE party_org = 'none') AS without_org,
           count(*) FILTER (WHERE party_org = ANY(CAST(:branch AS text[]))) AS branches
    FROM u WHERE community_code IS NOT NULL GROUP BY community_code
)
SELECT a.level, a.code, a.name, a.parent_code,
       coalesce(g.units, c.units, 0) AS units,
       coalesce(g.without_org, c.without_org, 0) AS without_org,
       coalesce(g.branches, c.branches, 0) AS branches
FROM area a
LEFT JOIN per_grid g ON a.depth = 3 AND g.code = a.code
LEFT JOIN per_community c ON a.depth = 2 AND c.code = a.code
WHERE a.depth IN (2, 3) AND a.generation_low <= :g AND a.generation_high >= :g
  AND {areas_in_scope}
ORDER BY a.depth, a.code
"""

# Care counts per community (counts only: nothing here identifies a household). Households
# in scope outside every community make one row without a code.
_CARE_TABLE_SQL = """
WITH hh AS (
    SELECT t.community_code, t.cadre_member_id,
           (t.cadre_member_id IS NOT NULL
            AND m.home_community_code IS DISTINCT FROM t.community_code) AS cadre_outside
    FROM {rows} t LEFT JOIN member m ON m.id = t.cadre_member_id
    WHERE {rows_in_scope}
),
per AS (
    SELECT community_code, count(*) AS households,
           count(*) FILTER (WHERE cadre_member_id IS NULL) AS without_cadre,
           count(*) FILTER (WHERE cadre_outside) AS cadre_outside,
           count(DISTINCT cadre_member_id) AS cadres
    FROM hh GROUP BY community_code
),
communities AS (
    SELECT a.code FROM area a
    WHERE a.depth = 2 AND a.generation_low <= :g AND a.generation_high >= :g AND {areas_in_scope}
    UNION
    SELECT community_code FROM per WHERE community_code IS NOT NULL
)
SELECT c.code, n.name, coalesce(p.households, 0) AS households,
       coalesce(p.without_cadre, 0) AS without_cadre,
       coalesce(p.cadre_outside, 0) AS cadre_outside, coalesce(p.cadres, 0) AS cadres
FROM communities c
LEFT JOIN per p ON p.community_code = c.code
LEFT JOIN area n ON n.code = c.code AND n.generation_low <= :g AND n.generation_high >= :g
UNION ALL
SELECT NULL, NULL, p.households, p.without_cadre, p.cadre_outside, p.cadres
FROM per p WHERE p.community_code IS NULL
ORDER BY 1 NULLS LAST
"""


def _rows_per_area(
    conn: Connection, sql: str, table: str, column: str, scope, params: dict[str, Any]
) -> Any:
    """Return the rows of a table query over ``table`` (``{rows}``: its rows with ``column``,
    located in the scope's generation; ``{rows_in_scope}``, ``{areas_in_scope}``)."""
    sql = sql.format(
        rows=located(table, (column,), scope=scope),
        rows_in_scope=area_in_scope("t", "area_path"),
        areas_in_scope=area_in_scope("a"),
    )
    return conn.execute(text(sql), params)


def _tables(conn: Connection, scope) -> dict[str, list[dict[str, Any]]]:
    """Return the report's own tables: teams per grid, organisation per area, care counts."""
    params = {**scope.params(), "branch": list(BRANCH_ORGS)}
    teams = []
    for r in conn.execute(text(_TEAM_TABLE_SQL.format(in_scope=area_in_scope("a"))), params).all():
        counts = dict(zip(TEAM_ROLES, (r.pbi, r.manager, r.police), strict=True))
        teams.append(
            {
                "grid_code": r.code,
                "grid_name": r.name,
                "community_code": r.parent_code,
                **counts,
                "team_members": sum(counts.values()),
                "missing_roles": ";".join(k for k, v in counts.items() if v == 0),
                "doubled_roles": ";".join(k for k, v in counts.items() if v > 1),
                "complete": all(v == 1 for v in counts.values()),
            }
        )
    organisation = [
        {
            "level": r.level,
            "code": r.code,
            "name": r.name,
            "parent_code": r.parent_code,
            "units": r.units,
            "without_org": r.without_org,
            "share_without_org": ratio(r.without_org, r.units),
            "branches": r.branches,
        }
        for r in _rows_per_area(conn, _ORGANISATION_TABLE_SQL, "unit", "party_org", scope, params)
    ]
    care = [
        {
            "community_code": r.code,
            "community_name": r.name,
            "households": r.households,
            "without_cadre": r.without_cadre,
            "share_without_cadre": ratio(r.without_cadre, r.households),
            "cadre_outside_community": r.cadre_outside,
            "cadres": r.cadres,
        }
        for r in _rows_per_area(
            conn, _CARE_TABLE_SQL, "care_household", "cadre_member_id", scope, params
        )
    ]
    return {"staffing_grids": teams, "organisation_areas": organisation, "care_communities": care}


# -- the report ------------------------------------------------------------------------------
def _check_siting_k(siting_k: Any) -> int | None:
    from service.analysis.siting import MAX_K

    if siting_k is None:
        return None
    if isinstance(siting_k, bool) or not isinstance(siting_k, int) or not 1 <= siting_k <= MAX_K:
        raise UnprocessableError(
            f"siting_k must be a whole number from 1 to {MAX_K}, got {siting_k!r}",
            field="siting_k",
        )
    return siting_k


#: A step of a report: its name and what it does on a connection.
Step = tuple[str, Callable[[Connection], Any]]


class _Steps:
    """Runs a report's steps, each timed, telling ``say`` when each starts and ends."""

    def __init__(self, conn: Connection, total: int, say: ProgressFn):
        self.conn, self.total, self.say = conn, total, say
        self.results: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.done = 0

    def _run(self, name: str, step: Callable[[Connection], Any], c: Connection) -> None:
        t0 = time.perf_counter()
        self.results[name] = step(c)
        self.timings[name] = round(time.perf_counter() - t0, 4)

    def in_turn(self, steps: list[Step]) -> None:
        """Run ``steps`` one after another on the report's connection."""
        for name, step in steps:
            self.say(name, self.done, self.total, None)
            self._run(name, step, self.conn)
            self.done += 1
            self.say(name, self.done, self.total, self.timings[name])

    def side_by_side(self, steps: list[Step], beside: list[Step], snapshot: str) -> None:
        """Run ``steps`` on the report's connection and ``beside`` at once on a second one
        that sees ``snapshot``; ``beside`` is reported once both are done."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wangge-report")
        lane = pool.submit(
            _in_snapshot,
            self.conn.engine,
            snapshot,
            lambda c: [self._run(n, f, c) for n, f in beside],
        )
        pool.shutdown(wait=False)
        try:
            self.in_turn(steps)
        finally:
            # Wait even when a step above failed: the lane holds a connection.
            error = lane.exception()
        if isinstance(error, PoolTimeoutError) and not any(n in self.results for n, _ in beside):
            self.in_turn(beside)  # no second connection to be had: in turn after all
            return
        for name, _step in beside:  # reported once done, in order
            self.say(name, self.done, self.total, None)
            if error is not None:
                raise error
            self.done += 1
            self.say(name, self.done, self.total, self.timings[name])


def _evaluation(c: Connection, common: dict[str, Any], geometry: bool) -> dict[str, Any]:
    from service.dispatch.evaluation import run_evaluation

    return run_evaluation(c, **common, geometry=geometry)


def _report_steps(
    scope: Scope, *, principal: Principal, siting_k: int | None, geometry: bool, care_details: bool
) -> tuple[list[Step], list[Step], list[Step]]:
    """Return the report's steps in three lists: the SQL analyses, those that may run beside
    them (the evaluation, reach, mostly numpy and shapely work in this process, and the
    report's tables), and siting, last."""
    common = {"principal": principal, "area_code": scope.area_code, "generation": scope.generation}

    def siting(c: Connection) -> dict[str, Any]:
        from service.analysis.siting import run_siting

        try:
            return run_siting(c, **common, k=siting_k)
        except WanggeError as exc:  # e.g. nothing left to cover: the rest still stands
            return {"error": {"status": exc.status, "detail": exc.detail, "field": exc.field}}

    sql: list[Step] = [
        (
            name,
            lambda c, fn=fn, name=name: fn(
                c,
                **common,
                geometry=geometry,
                **({"details": care_details} if name == "care" else {}),
            ),
        )
        for name, fn in ANALYSES.items()
    ]
    beside: list[Step] = [
        # The dispatch evaluation (综合评价) of the area's grid teams over the last 90 days.
        # Beside workload, not after it: both read the area's incidents (a random heap page
        # each, once the table outgrows the cache), so their waits overlap (bench.scale).
        ("evaluation", lambda c: _evaluation(c, common, geometry)),
        ("reach", lambda c: run_reach(c, **common, geometry=geometry)),
        ("tables", lambda c: _tables(c, scope)),
    ]
    tail: list[Step] = [("siting", siting)] if siting_k is not None else []
    return sql, beside, tail


def run_report(
    conn: Connection,
    *,
    siting_k: int | None = None,
    progress: ProgressFn | None = None,
    geometry: bool = True,
    care_details: bool = True,
    **where: Unpack[Where],
) -> dict[str, Any]:
    """Return every analysis of the area, with per-step timings and the report's tables.

    ``care_details=False`` keeps care household details out (and out of the access log)
    even for roles that may read them: the file exports hold counts only.

    Parameters
    ----------
    conn
        A synchronous connection in a transaction (care logs its detail reads).
    **where
        ``principal``, ``area_code``, ``generation`` (:class:`~service.analysis.Where`). Every
        analysis runs on the generation resolved here, even if another is activated
        meanwhile.
    siting_k
        When given (1–100), also place this many new facilities (MCLP over care
        households); a siting that cannot run is reported as ``{"error": …}`` rather than
        failing the report.
    progress
        Called as ``progress(step, done, total, None)`` before each step and
        ``progress(step, done, total, seconds)`` after it.
    geometry
        Include the findings' GeoJSON (needed by :func:`report_geopackage` and maps).

    Returns
    -------
    dict
        ``area``, ``generated_at``, ``parameters``, ``timings`` (seconds per step and
        ``total``), ``summary`` (per analysis), ``analyses`` (full results) and ``tables``
        (``staffing_grids``, ``organisation_areas``, ``care_communities``).

    Notes
    -----
    When ``conn`` is in a REPEATABLE READ transaction that has written nothing (as the API
    and the CLI open it), the evaluation, reach (mostly numpy and shapely work in this
    process) and the tables run on a second connection of ``conn.engine`` that imports the
    same snapshot (``pg_export_snapshot``), beside the other analyses on ``conn`` (care,
    which logs, stays there): the figures are those of one snapshot, and the two lanes use
    two cores. Their progress is reported after the other analyses; each step's time is its
    own, ``total`` the wall time (less than the sum). Otherwise every step runs on ``conn`` in turn.
    """
    siting_k = _check_siting_k(siting_k)
    started = time.perf_counter()
    scope = resolve_scope(conn, **where)
    sql, beside, tail = _report_steps(
        scope,
        principal=where["principal"],
        siting_k=siting_k,
        geometry=geometry,
        care_details=care_details,
    )
    say = progress or (lambda _step, _done, _total, _seconds: None)
    steps = _Steps(conn, len(sql) + len(beside) + len(tail), say)
    snapshot = _exported_snapshot(conn) if _spare_connection(conn.engine) else None
    if snapshot is None:
        steps.in_turn(sql + beside + tail)
    else:
        steps.side_by_side(sql, beside, snapshot)
        steps.in_turn(tail)
    results, timings = steps.results, steps.timings
    timings["total"] = round(time.perf_counter() - started, 4)
    results = {name: results[name] for name in REPORT_STEPS if name in results}
    timings = {name: timings[name] for name in (*results, "total")}
    tables = results.pop("tables")
    return {
        "area": scope.as_dict(),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {
            "siting_k": siting_k,
            "geometry": geometry,
            **{name: r.get("parameters", {}) for name, r in results.items()},
        },
        "timings": timings,
        "summary": {name: r.get("summary", r) for name, r in results.items()},
        "analyses": results,
        "tables": tables,
    }


# -- tables ----------------------------------------------------------------------------------
#: CSV tables of :func:`report_tables`: name → what one row is.
TABLES = {
    "staffing_grids": "a grid: its 1+1+1 team per role",
    "organisation_areas": "a community or grid: its units and party organisation",
    "care_communities": "a community: care households and cadres (counts only)",
    "workload_grids": "a grid: incidents, backlog, overdue, outlier",
    "reach_communities": "a community: area, households and units beyond reach",
    "siting_sites": "a proposed new facility (only when siting ran)",
    "key_figures": "one summary figure of one analysis",
}


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list):
        out.append((prefix, ";".join(str(v) for v in value)))
    else:
        out.append((prefix, value))


#: Columns of the tables that copy the report's own tables or an analysis's findings.
_COLUMNS = {
    "staffing_grids": [
        "grid_code",
        "grid_name",
        "community_code",
        *TEAM_ROLES,
        "team_members",
        "missing_roles",
        "doubled_roles",
        "complete",
    ],
    "organisation_areas": [
        "level",
        "code",
        "name",
        "parent_code",
        "units",
        "without_org",
        "share_without_org",
        "branches",
    ],
    "care_communities": [
        "community_code",
        "community_name",
        "households",
        "without_cadre",
        "share_without_cadre",
        "cadre_outside_community",
        "cadres",
    ],
    "workload_grids": [
        "grid_code",
        "grid_name",
        "community_code",
        "team_size",
        "incidents",
        "closed",
        "open",
        "overdue",
        "z",
        "median_ratio",
        "outlier",
    ],
    "reach_communities": [
        "rank",
        "code",
        "name",
        "level",
        "area_m2",
        "uncovered_area_m2",
        "uncovered_share",
        "households_total",
        "households_uncovered",
        "households_uncovered_share",
        "units_total",
        "units_uncovered",
        "units_uncovered_share",
    ],
    "siting_sites": ["rank", "lon", "lat", "community_code", "adds", "adds_share"],
}


def _workload_rows(workload: dict[str, Any]) -> list[dict[str, Any]]:
    columns = _COLUMNS["workload_grids"]
    rows = [{k: i[k] for k in columns} for i in workload["items"]]
    return sorted(rows, key=lambda r: r["grid_code"])


def _reach_rows(reach: dict[str, Any]) -> list[dict[str, Any]]:
    copied = [c for c in _COLUMNS["reach_communities"] if not c.startswith(("households", "units"))]
    rows = []
    for i in reach["items"]:
        row = {k: i[k] for k in copied}
        for kind in ("households", "units"):
            row[f"{kind}_total"] = i[kind]["total"]
            row[f"{kind}_uncovered"] = i[kind]["uncovered"]
            row[f"{kind}_uncovered_share"] = i[kind]["uncovered_share"]
        rows.append(row)
    return rows


def _siting_rows(siting: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "rank": i["rank"],
            "lon": i["geometry"]["coordinates"][0],
            "lat": i["geometry"]["coordinates"][1],
            "community_code": i["community_code"],
            "adds": i["adds"],
            "adds_share": i["adds_share"],
        }
        for i in siting["items"]
    ]


def _key_figures(summaries: dict[str, Any]) -> pd.DataFrame:
    figures: list[tuple[str, str, Any]] = []
    for name, summary in summaries.items():
        if name == "topology":  # by_parent is a table of its own, not a figure
            summary = {k: v for k, v in summary.items() if k != "by_parent"}
        rows: list[tuple[str, Any]] = []
        _flatten("", summary, rows)
        figures.extend((name, k, v) for k, v in rows)
    return pd.DataFrame(figures, columns=["analysis", "figure", "value"])


def report_tables(report: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Return the report's tables as DataFrames (see :data:`TABLES`), care as counts only."""
    analyses = report["analyses"]
    rows = {
        **report["tables"],
        "workload_grids": _workload_rows(analyses["workload"]),
        "reach_communities": _reach_rows(analyses["reach"]),
    }
    siting = analyses.get("siting")
    if siting is not None and "items" in siting:
        rows["siting_sites"] = _siting_rows(siting)
    out = {
        name: pd.DataFrame(rows[name], columns=_COLUMNS[name]) for name in TABLES if name in rows
    }
    out["key_figures"] = _key_figures(report["summary"])
    return out


def table_csv(frame: pd.DataFrame) -> bytes:
    # UTF-8 with a BOM, so that Excel opens Chinese names correctly (as the exports do).
    return frame.to_csv(index=False, lineterminator="\r\n").encode("utf-8-sig")


def report_csv_zip(report: dict[str, Any]) -> bytes:
    """Return a zip of one CSV per table (``<table>.csv``) and a README of the columns."""
    buffer = io.BytesIO()
    tables = report_tables(report)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, frame in tables.items():
            zf.writestr(f"{name}.csv", table_csv(frame))
        area = report["area"]
        lines = [
            f"wangge coverage report of {area['code'] or 'all areas'} "
            f"({area['name'] or ''}), generation {area['generation']}, "
            f"made {report['generated_at']}",
            "",
            *(f"{name}.csv: one row per {TABLES[name]}" for name in tables),
        ]
        zf.writestr("README.txt", "\r\n".join(lines) + "\r\n")
    return buffer.getvalue()


# -- GeoPackage ------------------------------------------------------------------------------
def gap_layer(report: dict[str, Any], name: str):
    """Return the GeoDataFrame of gap layer ``name`` (EPSG:4326; empty when nothing found)."""
    import geopandas
    import shapely

    layer = GAP_LAYERS[name]
    result = report["analyses"].get(layer.analysis) or {}
    items = [i for i in result.get("items", ()) if i.get("geometry") is not None and layer.keep(i)]
    data = {c.name: pd.Series([c.get(i) for i in items], dtype=c.dtype) for c in layer.columns}
    geoms = shapely.from_geojson([orjson.dumps(i["geometry"]).decode() for i in items])
    return geopandas.GeoDataFrame(data, geometry=geopandas.GeoSeries(geoms, crs="EPSG:4326"))


def report_geopackage(report: dict[str, Any]) -> bytes:
    """Return a GeoPackage with one layer per kind of gap (:data:`maps.gaps.GAP_LAYERS`).

    Every layer is written, empty when nothing was found (so a GIS project keeps its
    links); ``siting_sites`` only when siting ran. Needs the report's geometry.
    """
    import pyogrio

    if not report.get("parameters", {}).get("geometry", True):
        raise UnprocessableError(
            "the report was made without geometry; a GeoPackage needs it", field="geometry"
        )
    with tempfile.TemporaryDirectory(prefix="wangge-report-") as tmp:
        path = Path(tmp) / "gaps.gpkg"
        for name, layer in GAP_LAYERS.items():
            result = report["analyses"].get(layer.analysis)
            if result is None or "items" not in result:
                continue
            pyogrio.write_dataframe(
                gap_layer(report, name),
                path,
                layer=name,
                driver="GPKG",
                geometry_type=layer.geometry_type,
                append=path.exists(),
                promote_to_multi=layer.geometry_type == "MultiPolygon",
                layer_options={"GEOMETRY_NAME": "geom", "FID": "fid"},
            )
        return path.read_bytes()
