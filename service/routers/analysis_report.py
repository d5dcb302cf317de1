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

# No ``from __future__ import annotations``: Pydantic reads the query models' annotations.

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from service.analysis.report import report_csv_zip, report_geopackage, run_report
from service.analysis.siting import MAX_K
from service.deps import get_principal
from service.querymodels import parse_query, query_parameters_doc
from service.responses import JSON

__all__ = ["router"]

router = APIRouter(tags=["analysis"])


class ReportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    area: str | None = Field(
        None, pattern=r"^[0-9]{6,18}$", description="area code inside your scope (default: yours)"
    )
    generation: int | None = Field(None, ge=1, description="default: the current generation")
    siting_k: int | None = Field(
        None,
        ge=1,
        le=MAX_K,
        description="also place this many new facilities (maximal covering of care households)",
    )

    def arguments(self) -> dict[str, Any]:
        return {"area_code": self.area, "generation": self.generation, "siting_k": self.siting_k}


class ReportJsonQuery(ReportQuery):
    geometry: bool = Field(True, description="include GeoJSON geometry of the findings")

    def arguments(self) -> dict[str, Any]:
        return {**super().arguments(), "geometry": self.geometry}


async def _report(request: Request, model: type[ReportQuery], export=None, **fixed: Any):
    principal = await get_principal(request)
    arguments = {**parse_query(model, request).arguments(), **fixed}

    def work():
        # One snapshot for all analyses; a transaction because care logs detail reads.
        with request.app.state.sync_engine.begin() as conn:
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            report = run_report(conn, principal=principal, **arguments)
        # Files are made after the transaction: no connection is held while writing them.
        return report if export is None else (report, export(report))

    return await run_in_threadpool(work)


def _filename(report: dict, suffix: str) -> str:
    area = report["area"]
    return f"wangge-report-{area['code'] or 'all'}-g{area['generation']}.{suffix}"


@router.get(
    "/analysis/report",
    summary="Coverage report: every analysis of the area in one call, with timings",
    description="Runs staffing, topology, organisation, care, workload and reach (and "
    "siting when `siting_k` is given) over the area, from one snapshot. Care household "
    "details only for the roles that may read them; counts for everyone.",
    openapi_extra=query_parameters_doc(ReportJsonQuery),
    response_model=dict,
)
async def report(request: Request) -> JSON:
    return JSON(await _report(request, ReportJsonQuery))


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
async def report_gpkg(request: Request) -> Response:
    # The files hold care counts only: no detail is read, so none is logged.
    report, data = await _report(request, ReportQuery, report_geopackage, care_details=False)
    return Response(
        data,
        media_type="application/geopackage+sqlite3",
        headers={"Content-Disposition": f'attachment; filename="{_filename(report, "gpkg")}"'},
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
async def report_zip(request: Request) -> Response:
    # The tables need no geometry: the analyses skip making it.
    report, data = await _report(
        request, ReportQuery, report_csv_zip, geometry=False, care_details=False
    )
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{_filename(report, "zip")}"'},
    )
