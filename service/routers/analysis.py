"""Planning analyses of your area: ``GET /analysis/<name>``, one row of ``ANALYSES`` each.

``staffing``, ``topology``, ``organisation``, ``care``, ``workload``
    ``{"area", "parameters", "summary", "items"}``: numbers, then findings worst first,
    with GeoJSON geometry (EPSG:4326) where a finding has a place.
``reach``
    The "15-minute service circle": per community, the area, care households and units
    beyond a walk of ``minutes`` from a service facility, uncovered parts as polygons,
    worst first (straight line with a detour factor, or along the imported road network
    with pgRouting).
``siting`` (also ``POST``)
    Where ``k`` new facilities reach most households (MCLP), or the fewest that reach all
    (``lscp``), on a lattice of candidates or (POST) on candidates you supply; coverage
    before and after, chosen sites as GeoJSON points.

``area`` (default: your own) narrows an analysis to an area inside your scope; any other
area answers 404. The work is set-based SQL run in a worker thread on the synchronous
engine: the same ``run_*`` functions the CLI (``wangge analysis``) and the report call.
Adding an analysis is a query model in ``service.schemas.analysis`` and a row here.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations.

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from service.analysis import run_care, run_organisation, run_staffing, run_topology, run_workload
from service.analysis.reach import run_reach
from service.analysis.siting import run_siting
from service.auth import Principal
from service.deps import (
    PrincipalDep,
    ReadSyncEngineDep,
    get_read_sync_engine,
    get_sync_engine,
    query_model,
)
from service.dispatch.evaluation import run_evaluation
from service.querymodels import query_parameters_doc
from service.responses import JSON
from service.schemas.analysis import (
    AreaQuery,
    CareQuery,
    OrganisationQuery,
    ReachQuery,
    SitingBody,
    SitingQuery,
    StaffingQuery,
    TopologyQuery,
    WorkloadQuery,
)
from service.schemas.evaluation import EvaluationQuery

__all__ = ["ANALYSES", "Analysis", "router"]

router = APIRouter(prefix="/analysis", tags=["analysis"])


@dataclass(frozen=True)
class Analysis:
    """One ``GET /analysis/<path>``: its parameters, its ``run_*`` function, its documentation."""

    path: str
    query: type[AreaQuery]
    run: Callable[..., dict]
    #: the endpoint's name, part of its OpenAPI operationId
    name: str
    summary: str
    description: str | None = None
    #: in a transaction (committed) on the primary rather than a plain connection, which
    #: may be a read replica's: the care analysis writes its detail reads to access_log
    transaction: bool = False


_SITING_DESCRIPTION = (
    "Maximal covering (`k`: the k new facilities adding most covered demand) or set "
    "covering (`lscp=true`: the fewest covering all demand some candidate reaches), solved "
    "by spopt with HiGHS. Existing facilities stay; coverage = within `minutes` × "
    "`speed_m_per_min` ÷ `detour` (straight line). Candidates on a lattice inside the area "
    "(at most 2,000); more than 5,000 demand points are aggregated to a lattice."
)

ANALYSES = (
    Analysis(
        "/staffing",
        StaffingQuery,
        run_staffing,
        name="staffing",
        summary="1+1+1 grid teams: missing and doubled roles, people in several grids",
        description="Every grid needs exactly one party-building instructor, one grid manager "
        "and one grid police officer. Also lists one person (same name and phone) registered "
        "in several grids, and members serving a grid redrawn away.",
    ),
    Analysis(
        "/topology",
        TopologyQuery,
        run_topology,
        name="topology_",
        summary="Do children tile their parents? Gaps, overlaps, outside pieces, slivers, "
        "multipart",
        description="Per parent area in scope (city→districts, district→communities, "
        "community→grids). Set operations in the stored lon/lat plane; areas measured in the "
        "UTM zone of each parent's centroid.",
    ),
    Analysis(
        "/organisation",
        OrganisationQuery,
        run_organisation,
        name="organisation_",
        summary="Party organisation coverage of units; large units without co-building",
    ),
    Analysis(
        "/care",
        CareQuery,
        run_care,
        name="care_",
        summary="Six must-visit households: without cadre, cadre load, cadre from elsewhere",
        description="Sensitive: counts for every role; household and cadre details only for "
        "grid officers, community and district dispatchers and admins, and every household "
        "shown in detail is written to the access log.",
        transaction=True,
    ),
    Analysis(
        "/workload",
        WorkloadQuery,
        run_workload,
        name="workload_",
        summary="Incidents, backlog and overdue cases per grid team, with outliers",
    ),
    Analysis(
        "/evaluation",
        EvaluationQuery,
        run_evaluation,
        name="evaluation",
        summary="Evaluation (综合评价) per grid team, community or district, with geometry",
        description="The figures of GET /evaluation per area of `level` with its polygon: "
        "on-time sign-for and handling, closure, escalation and reopen rates, overdue cases, "
        "median times and satisfaction over the cases reported in [since, until).",
    ),
    Analysis(
        "/reach",
        ReachQuery,
        run_reach,
        name="reach",
        summary="15-minute service circle: who and what lies beyond a walk to a facility",
        description="Per community in the area: area, care households (counts only) and units "
        "farther than `minutes` × `speed_m_per_min` of walking from a service facility, with "
        "the uncovered part as a polygon, worst first. Straight line ÷ `detour` by default; "
        "along the imported road network (pgRouting `pgr_withPointsDD`, reached streets "
        "buffered by `frontage_m`) when one is imported here or `network=true`. Areas in m² "
        "in the UTM zone of the area's centroid.",
    ),
    Analysis(
        "/siting",
        SitingQuery,
        run_siting,
        name="siting",
        summary="Where k new facilities reach most households (MCLP), or the fewest for all",
        description=_SITING_DESCRIPTION,
    ),
)


async def _run(
    engine: Engine,
    principal: Principal,
    fn: Callable[..., dict],
    arguments: dict[str, Any],
    *,
    transaction: bool,
) -> JSON:
    """Return ``fn``'s answer, run in a worker thread on a connection of ``engine``."""

    def work() -> dict:
        with engine.begin() if transaction else engine.connect() as conn:
            return fn(conn, principal=principal, **arguments)

    return JSON(await run_in_threadpool(work))


def _add_route(analysis: Analysis) -> None:
    """Add ``GET /analysis/<path>`` for ``analysis`` to the router."""

    async def endpoint(
        request: Request,
        principal: PrincipalDep,
        arguments: Annotated[AreaQuery, Depends(query_model(analysis.query))],
    ) -> JSON:
        # An analysis that only reads may run on a read replica (service.replicas); one in
        # a transaction writes (the access log) and runs on the primary.
        engine = (
            get_sync_engine(request)
            if analysis.transaction
            else await get_read_sync_engine(request)
        )
        return await _run(
            engine,
            principal,
            analysis.run,
            arguments.arguments(),
            transaction=analysis.transaction,
        )

    router.add_api_route(
        analysis.path,
        endpoint,
        methods=["GET"],
        name=analysis.name,
        summary=analysis.summary,
        description=analysis.description,
        openapi_extra=query_parameters_doc(analysis.query),
        response_model=dict,
    )


for _analysis in ANALYSES:
    _add_route(_analysis)


@router.post(
    "/siting",
    summary="Siting on candidate sites you supply",
    description=_SITING_DESCRIPTION + " The body takes the query's parameters and "
    "`candidates`: [[lon, lat], …] inside the area.",
    response_model=dict,
)
async def siting_post(engine: ReadSyncEngineDep, principal: PrincipalDep, body: SitingBody) -> JSON:
    return await _run(engine, principal, run_siting, body.arguments(), transaction=False)
