"""Planning analyses of your area: ``GET /analysis/<staffing|topology|organisation|care|workload>``.

Each answers ``{"area", "parameters", "summary", "items"}``: numbers, then findings worst
first, with GeoJSON geometry (EPSG:4326) where a finding has a place. ``area`` (default:
your own) narrows the analysis to an area inside your scope; any other area answers 404.
The work is set-based SQL run in a worker thread on the synchronous engine, the same
functions the CLI (``wangge analysis``) and the report call.
"""

# No ``from __future__ import annotations``: Pydantic reads the query models' annotations.

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.analysis import (
    care,
    organisation,
    run_care,
    run_organisation,
    run_staffing,
    run_topology,
    run_workload,
    topology,
    workload,
)
from service.deps import get_principal
from service.querymodels import parse_query, query_parameters_doc
from service.responses import JSON

__all__ = ["router"]

router = APIRouter(prefix="/analysis", tags=["analysis"])


class _AnalysisQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    area: str | None = Field(
        None, pattern=r"^[0-9]{6,18}$", description="area code inside your scope (default: yours)"
    )
    generation: int | None = Field(None, ge=1, description="default: the current generation")
    geometry: bool = Field(True, description="include GeoJSON geometry of the findings")

    def arguments(self) -> dict[str, Any]:
        """Return the keyword arguments of the ``run_*`` function."""
        values = self.model_dump()
        values["area_code"] = values.pop("area")
        return values


class StaffingQuery(_AnalysisQuery):
    pass


class TopologyQuery(_AnalysisQuery):
    min_sliver_m2: float = Field(
        topology.DEFAULT_MIN_SLIVER_M2,
        ge=0,
        le=1e9,
        allow_inf_nan=False,
        description="gaps, overlaps and outside pieces smaller than this are slivers (m²)",
    )


class OrganisationQuery(_AnalysisQuery):
    min_staff: int = Field(
        organisation.DEFAULT_MIN_STAFF,
        ge=1,
        le=10_000_000,
        description="a unit this large (staff) needs a co-building agreement",
    )


class CareQuery(_AnalysisQuery):
    min_contacts: int = Field(
        care.DEFAULT_MIN_CONTACTS, ge=0, le=100_000, description="fewest households per cadre"
    )
    max_contacts: int = Field(
        care.DEFAULT_MAX_CONTACTS, ge=0, le=100_000, description="most households per cadre"
    )


class WorkloadQuery(_AnalysisQuery):
    since: datetime | None = Field(
        None, description="period start, reported at or after (default: until − 90 days)"
    )
    until: datetime | None = Field(
        None, description="period end, reported before; backlog as of then (default: now)"
    )
    overdue_hours: float = Field(
        workload.DEFAULT_OVERDUE_HOURS,
        gt=0,
        le=24 * 3650,
        allow_inf_nan=False,
        description="an open case older than this is overdue (hours)",
    )
    z: float = Field(
        workload.DEFAULT_Z,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="outlier: beyond this many standard deviations from the mean",
    )
    median_ratio: float = Field(
        workload.DEFAULT_MEDIAN_RATIO,
        gt=0,
        le=1000,
        allow_inf_nan=False,
        description="outlier: more incidents than this times the median",
    )


async def _run(request: Request, model: type[_AnalysisQuery], fn: Callable[..., dict]) -> JSON:
    principal = await get_principal(request)
    arguments = parse_query(model, request).arguments()

    def work() -> dict:
        # A transaction: the care analysis logs detail reads to access_log.
        with request.app.state.sync_engine.begin() as conn:
            return fn(conn, principal=principal, **arguments)

    return JSON(await run_in_threadpool(work))


@router.get(
    "/staffing",
    summary="1+1+1 grid teams: missing and doubled roles, people in several grids",
    description="Every grid needs exactly one party-building instructor, one grid manager "
    "and one grid police officer. Also lists one person (same name and phone) registered "
    "in several grids, and members serving a grid redrawn away.",
    openapi_extra=query_parameters_doc(StaffingQuery),
    response_model=dict,
)
async def staffing(request: Request) -> JSON:
    return await _run(request, StaffingQuery, run_staffing)


@router.get(
    "/topology",
    summary="Do children tile their parents? Gaps, overlaps, outside pieces, slivers, multipart",
    description="Per parent area in scope (city→districts, district→communities, "
    "community→grids). Set operations in the stored lon/lat plane; areas measured in the "
    "UTM zone of each parent's centroid.",
    openapi_extra=query_parameters_doc(TopologyQuery),
    response_model=dict,
)
async def topology_(request: Request) -> JSON:
    return await _run(request, TopologyQuery, run_topology)


@router.get(
    "/organisation",
    summary="Party organisation coverage of units; large units without co-building",
    openapi_extra=query_parameters_doc(OrganisationQuery),
    response_model=dict,
)
async def organisation_(request: Request) -> JSON:
    return await _run(request, OrganisationQuery, run_organisation)


@router.get(
    "/care",
    summary="Six must-visit households: without cadre, cadre load, cadre from elsewhere",
    description="Sensitive: counts for every role; household and cadre details only for "
    "grid officers, community and district dispatchers and admins, and every household "
    "shown in detail is written to the access log.",
    openapi_extra=query_parameters_doc(CareQuery),
    response_model=dict,
)
async def care_(request: Request) -> JSON:
    return await _run(request, CareQuery, run_care)


@router.get(
    "/workload",
    summary="Incidents, backlog and overdue cases per grid team, with outliers",
    openapi_extra=query_parameters_doc(WorkloadQuery),
    response_model=dict,
)
async def workload_(request: Request) -> JSON:
    return await _run(request, WorkloadQuery, run_workload)
