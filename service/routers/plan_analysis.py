"""Plan analysis: a draft's metrics, automatic proposals as drafts, what-if coverage.

``GET /plans/{id}/metrics``
    Per grid and for the plan: loads (population, households, units, incidents per year and
    per team member) with their deviation from the mean, Polsby–Popper, Reock, convex-hull
    ratio, parts, communities straddled (:mod:`service.planning.metrics`).
``POST /plans/proposals``
    A new draft of ``k`` balanced, contiguous grids proposed for an area
    (:mod:`service.planning.proposals`, :mod:`geo.proposal`).
``GET /plans/{id}/coverage``
    The coverage analyses (staffing, workload, care, reach) on the draft's grids beside
    today's, and the change (:mod:`service.planning.whatif`; nothing is written).

Planners and admins, on plans of their own area, like the rest of ``/plans``.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations.
from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from service.auth import Principal
from service.deps import PrincipalDep, SyncEngineDep
from service.errors import ForbiddenError, UnprocessableError
from service.planning import metrics as plan_metrics
from service.planning.proposals import create_proposal_draft
from service.planning.whatif import WHATIF_ANALYSES, run_whatif
from service.repositories import plans as plans_repo
from service.responses import JSON
from service.schemas.plan_analysis import (
    PlanCoverageRead,
    PlanMetricsRead,
    ProposalCreate,
    ProposalCreated,
)

router = APIRouter(prefix="/plans", tags=["plans"])

PLAN_ROLES = frozenset({"admin", "planner"})
PlanId = Annotated[int, Path(ge=1, le=2**62)]


def _require_planner(principal: Principal) -> None:
    if principal.role not in PLAN_ROLES:
        raise ForbiddenError(
            f"boundary plans are for planners and admins; you are {principal.role}",
            field="role",
        )


def _require_area(principal: Principal, path: str | None, code: str) -> None:
    if path is None or not principal.covers_path(path):
        raise ForbiddenError(f"area {code} is outside your area", field="area_code")


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


@router.get(
    "/{plan_id}/metrics",
    response_model=PlanMetricsRead,
    summary="A draft's metrics: balance, compactness, contiguity, nesting",
    description="Per grid (by key) and for the plan: population (community estimates spread "
    "over where incidents, care households and units are), care households, units, incidents "
    "per year (last 365 days) and per team member (the grid's 1+1+1 team, 3 where none is "
    "assigned yet), each with `<measure>_dev` = value / plan mean − 1; area, perimeter, "
    "Polsby–Popper, Reock, convex-hull ratio; parts (1 = contiguous); the communities a grid "
    "overlaps and `straddles` (beyond the first: should be 0).",
)
async def get_plan_metrics(engine: SyncEngineDep, principal: PrincipalDep, plan_id: PlanId) -> JSON:
    _require_planner(principal)

    def work():
        with engine.connect() as conn:
            plans_repo.get_plan_in(conn, plan_id, principal.covers_path)
            plan, metrics = plan_metrics.read_plan_metrics(conn, plan_id)
            return plan, plan_metrics.metrics_json(metrics)

    plan, body = await run_in_threadpool(work)
    return JSON(
        {"plan_id": plan_id, "version": plan["version"], **body}, headers=_etag(plan["version"])
    )


@router.post(
    "/proposals",
    status_code=201,
    response_model=ProposalCreated,
    summary="Propose k balanced, contiguous grids for an area as a new draft",
    description="Blocks (a quadtree lattice noded with the communities) weighted by "
    "`balance` over population, care households, units and incidents are cut by GerryChain's "
    "recursive spanning-tree partition into `k` connected grids within `epsilon` of their "
    "community's ideal load, then made more compact by short bursts of ReCom. With `nest` "
    "(default) grids never cross a community boundary and each community gets a share of "
    "`k` by load. The draft is edited, measured and published like any other.",
)
async def create_proposal(
    engine: SyncEngineDep, principal: PrincipalDep, body: ProposalCreate
) -> JSON:
    _require_planner(principal)

    def work():
        with engine.begin() as conn:
            path = conn.execute(plans_repo.AREA_PATH_SQL, {"code": body.area_code}).scalar()
            _require_area(principal, path, body.area_code)
            balance = {k: v for k, v in body.balance.model_dump().items() if v > 0}
            if not balance:
                raise UnprocessableError("balance needs a measure above 0", field="balance")
            made = create_proposal_draft(
                conn,
                name=body.name.strip(),
                area_code=body.area_code,
                k=body.k,
                created_by=principal.token_id,
                created_by_name=principal.name,
                balance=balance,
                epsilon=body.epsilon,
                seed=body.seed,
                nest=body.nest,
                bursts=body.bursts,
            )
        with engine.connect() as conn:
            plan, metrics = plan_metrics.read_plan_metrics(conn, made["plan_id"])
        return plan, made, metrics

    plan, made, metrics = await run_in_threadpool(work)
    return JSON(
        {
            "plan_id": made["plan_id"],
            "version": plan["version"],
            "proposal": made["proposal"],
            "metrics": {"plan": metrics.plan},
        },
        status_code=201,
        headers={**_etag(plan["version"]), "Location": f"/plans/{made['plan_id']}"},
    )


@router.get(
    "/{plan_id}/coverage",
    response_model=PlanCoverageRead,
    responses={
        409: {
            "description": "The plan's base generation is no longer current, or a generation "
            "is pending (loaded, not activated)"
        }
    },
    summary="What-if coverage: the analyses on the draft's grids beside today's",
    description="Runs staffing (1+1+1 teams), workload, care and reach (straight line) on "
    "the plan's area twice: on today's grids and on the draft's (written as a hypothetical "
    "generation in a transaction that is always rolled back; new grids get provisional "
    "codes), and answers both summaries, their change and the draft's worst findings. 409 "
    "when the plan's base generation is no longer current or a generation is pending.",
)
async def get_plan_coverage(
    engine: SyncEngineDep,
    principal: PrincipalDep,
    plan_id: PlanId,
    analyses: Annotated[
        str | None,
        Query(
            max_length=100,
            description="comma-separated subset of staffing, workload, care, reach",
        ),
    ] = None,
) -> JSON:
    _require_planner(principal)
    names = tuple(WHATIF_ANALYSES)
    if analyses:
        names = tuple(dict.fromkeys(a.strip() for a in analyses.split(",") if a.strip()))
        unknown = [a for a in names if a not in WHATIF_ANALYSES]
        if unknown or not names:
            raise UnprocessableError(
                f"unknown analyses {', '.join(unknown)!s}; choose from "
                f"{', '.join(WHATIF_ANALYSES)}",
                field="analyses",
            )

    def work():
        with engine.connect() as conn:
            try:
                plans_repo.get_plan_in(conn, plan_id, principal.covers_path)
                return run_whatif(conn, plan_id=plan_id, principal=principal, analyses=names)
            finally:
                conn.rollback()  # the hypothetical generation is never kept

    body = await run_in_threadpool(work)
    return JSON(body, headers=_etag(body["version"]))
