"""The coverage report of an area: every analysis in one call, as JSON or as files.

``GET /analysis/report``
    staffing, topology, organisation, care, workload and reach (and siting with
    ``siting_k``) of the area, with per-analysis timings: ``{"area", "generated_at",
    "parameters", "timings", "summary", "analyses", "tables"}``.
``GET /analysis/report.gpkg``
    a GeoPackage with one layer per kind of gap (uncovered reach, topology defects, grids
    missing or doubling team roles, workload outliers, …).
``GET /analysis/report.zip``
    one CSV per table (teams per grid, organisation per community and grid, care counts per
    community, workload per grid, reach per community, key figures).

Scope and sensitive data are those of each analysis: the area must lie in your scope (404
otherwise), care household details appear in the JSON only for the roles that may read them
(and are logged), the files hold care counts only. The work runs in a worker thread on the
synchronous engine, in one REPEATABLE READ transaction: every figure comes from one snapshot.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from service.analysis.report import report_csv_zip, report_geopackage, run_report
from service.auth import Principal
from service.deps import PrincipalDep, ReadSyncEngineDep, query_model
from service.querymodels import query_parameters_doc
from service.responses import JSON
from service.schemas.analysis import ReportJsonQuery, ReportQuery

__all__ = ["router"]

router = APIRouter(tags=["analysis"])


async def _report(
    engine: Engine,
    principal: Principal,
    arguments: dict[str, Any],
    export: Callable[[dict], bytes] | None = None,
):
    """Return the report (and ``export(report)``), run in a worker thread from one snapshot."""

    def work():
        # One snapshot for all analyses; a transaction because care logs detail reads.
        with engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                report = run_report(conn, principal=principal, **arguments)
        # Files are made after the transaction: no connection is held while writing them.
        return report if export is None else (report, export(report))

    return await run_in_threadpool(work)


async def _report_file(
    engine: Engine,
    principal: Principal,
    arguments: dict[str, Any],
    export: Callable[[dict], bytes],
    *,
    media_type: str,
    suffix: str,
) -> Response:
    """Return the report exported by ``export`` as an attachment named after its area."""
    # The files hold care counts only: no detail is read, so none is logged.
    report, data = await _report(engine, principal, {**arguments, "care_details": False}, export)
    area = report["area"]
    filename = f"wangge-report-{area['code'] or 'all'}-g{area['generation']}.{suffix}"
    return Response(
        data,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


ReportQueryDep = Annotated[ReportQuery, Depends(query_model(ReportQuery))]


@router.get(
    "/analysis/report",
    summary="Coverage report: every analysis of the area in one call, with timings",
    description="Runs staffing, topology, organisation, care, workload and reach (and "
    "siting when `siting_k` is given) over the area, from one snapshot. Care household "
    "details only for the roles that may read them; counts for everyone.",
    openapi_extra=query_parameters_doc(ReportJsonQuery),
    response_model=dict,
)
async def report(
    engine: ReadSyncEngineDep,
    principal: PrincipalDep,
    query: Annotated[ReportJsonQuery, Depends(query_model(ReportJsonQuery))],
) -> JSON:
    return JSON(await _report(engine, principal, query.arguments()))


@router.get(
    "/analysis/report.gpkg",
    summary="Coverage report: the gaps as a GeoPackage, one layer per kind",
    description="Layers: reach_uncovered, topology_defects, staffing_missing_roles, "
    "staffing_doubled_roles, workload_outliers, organisation_grids_without_branch, "
    "organisation_large_units_without_co_building, care_grid_gaps (counts only) and, with "
    "`siting_k`, siting_sites. Every layer is present, empty when nothing was found. "
    "EPSG:4326.",
    openapi_extra=query_parameters_doc(ReportQuery),
    response_class=Response,
    responses={200: {"content": {"application/geopackage+sqlite3": {}}}},
)
async def report_gpkg(
    engine: ReadSyncEngineDep, principal: PrincipalDep, query: ReportQueryDep
) -> Response:
    return await _report_file(
        engine,
        principal,
        query.arguments(),
        report_geopackage,
        media_type="application/geopackage+sqlite3",
        suffix="gpkg",
    )


@router.get(
    "/analysis/report.zip",
    summary="Coverage report: the tables as CSV files in a zip",
    description="staffing_grids, organisation_areas, care_communities (counts only), "
    "workload_grids, reach_communities, key_figures and, with `siting_k`, siting_sites; "
    "UTF-8 with a BOM (Excel opens Chinese names correctly).",
    openapi_extra=query_parameters_doc(ReportQuery),
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
async def report_zip(
    engine: ReadSyncEngineDep, principal: PrincipalDep, query: ReportQueryDep
) -> Response:
    # The tables need no geometry: the analyses skip making it.
    arguments = {**query.arguments(), "geometry": False}
    return await _report_file(
        engine, principal, arguments, report_csv_zip, media_type="application/zip", suffix="zip"
    )
