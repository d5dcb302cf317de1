"""``/cases``: the caller's queue, one case and its history, duplicates, and case actions.

An action is ``POST /cases/{id}/actions/{action}``; which actions exist, from which states,
for whom and with which fields is the lifecycle's declaration table
(:data:`service.dispatch.lifecycle.ACTIONS`), not code here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Request

from service.deps import PrincipalDep, page, page_limit
from service.dispatch import cases as repo
from service.dispatch.lifecycle import ACTIONS, API_ACTIONS
from service.idempotency import request_fingerprint, run_idempotent_pg
from service.inputs import RowId
from service.querymodels import parse_query, query_parameters_doc
from service.responses import JSON
from service.schemas.cases import (
    CaseAction,
    CaseDetail,
    CaseEventRead,
    CaseListQuery,
    CasePage,
    DuplicateCandidate,
    DuplicatesQuery,
)

__all__ = ["router"]

router = APIRouter(tags=["cases"])

CaseId = Annotated[RowId, Path(description="the case (incident) id")]
ID = "/cases/{case_id:int}"


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _actions_doc() -> str:
    rows = [
        f"- `{a.name}` ({a.title}): from {', '.join(a.states)}"
        + (f"; needs {', '.join(a.requires)}" if a.requires else "")
        for a in ACTIONS.values()
        if a.api
    ]
    return "\n".join(rows)


@router.get(
    "/cases",
    summary="The cases of your area (your queue with ?mine=true)",
    response_model=CasePage,
    openapi_extra=query_parameters_doc(CaseListQuery),
    description="Ordered by id, paged with a `next` link. A dispatcher sees the cases lying "
    "in, owned by or dispatched inside its area; a grid officer those of its grid.",
)
async def list_cases(request: Request, principal: PrincipalDep) -> JSON:
    q = parse_query(CaseListQuery, request)
    limit = page_limit(request.app.state.settings.api, q.limit)
    async with request.app.state.engine.connect() as conn:
        items, total = await repo.list_cases(
            conn,
            principal=principal,
            states=q.state.split(",") if q.state else None,
            owner_level=q.owner_level,
            category=q.category,
            overdue=q.overdue,
            assignee=q.assignee,
            area=q.area,
            mine=q.mine,
            since=q.since,
            until=q.until,
            limit=limit,
            offset=q.offset,
        )
    return JSON(page(request, items, total, limit=limit, offset=q.offset))


@router.get(
    ID,
    summary="One case, with the actions you may take now",
    response_model=CaseDetail,
    description="`ETag` is the case's version: send it back as `If-Match` with an action.",
)
async def get_case(request: Request, principal: PrincipalDep, case_id: CaseId) -> JSON:
    # On the primary's hot pool, as case actions (service.db's rule): one read-only
    # statement after the month's look-up, generic plans, no SQLAlchemy round of Python.
    async with request.app.state.pg_pool.acquire() as conn:
        case = await repo.get_case(conn, principal=principal, case_id=case_id)
    return JSON(case, headers=_etag(case["version"]))


@router.get(ID + "/events", summary="A case's history", response_model=list[CaseEventRead])
async def case_events(request: Request, principal: PrincipalDep, case_id: CaseId) -> JSON:
    async with request.app.state.engine.connect() as conn:
        events = await repo.list_case_events(conn, principal=principal, case_id=case_id)
    return JSON(events)


@router.get(
    ID + "/duplicates",
    summary="Cases that may repeat this one",
    response_model=list[DuplicateCandidate],
    openapi_extra=query_parameters_doc(DuplicatesQuery),
    description="Same category, within `distance_m` metres and `hours` of it (defaults: "
    "the service's settings), not cancelled; nearest first. Reject a repeat with "
    '`{"reason": "duplicate", "duplicate_of": <id>}`.',
)
async def case_duplicates(request: Request, principal: PrincipalDep, case_id: CaseId) -> JSON:
    q = parse_query(DuplicatesQuery, request)
    settings = request.app.state.settings.dispatch
    async with request.app.state.engine.connect() as conn:
        found = await repo.find_duplicates(
            conn,
            principal=principal,
            case_id=case_id,
            distance_m=q.distance_m or settings.duplicate_distance_m,
            hours=q.hours or settings.duplicate_hours,
        )
    return JSON(found)


@router.post(
    ID + "/actions/{action}",
    summary="Act on a case",
    response_model=CaseDetail,
    description="Atomic: the case's version is checked against `If-Match`, the action "
    "judged, and its event written with the case it leaves only if no other action came "
    "first (else it is judged again on the new state). 409 names the case's state and "
    "the actions you may take; 403 says who may. Send an `Idempotency-Key` to make a retry "
    "safe. Actions:\n\n" + _actions_doc(),
    responses={412: {"description": "If-Match names an older version of the case"}},
)
async def act(
    request: Request,
    principal: PrincipalDep,
    case_id: CaseId,
    action: Annotated[str, Path(description=f"one of {', '.join(API_ACTIONS)}", max_length=40)],
    body: Annotated[CaseAction | None, Body()] = None,
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=64)] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSON:
    body = body or CaseAction()
    params = body.model_dump(mode="json", exclude_defaults=True)
    if body.due_at is not None:
        params["due_at"] = body.due_at
    # On the hot pool (service.db's rule: case actions), the Idempotency-Key claimed in the
    # action's own transaction; without a key an action needs no transaction of its own.
    pool = request.app.state.pg_pool
    async with pool.acquire() as conn:

        async def work(in_transaction: bool = True):
            case = await repo.act_on_case(
                conn,
                principal=principal,
                case_id=case_id,
                action=action,
                params=params,
                if_match=if_match,
                in_transaction=in_transaction,
                batches=None if in_transaction else repo.ActionBatches.of(pool),
            )
            return 200, case

        if idempotency_key is None:
            status, case = await work(in_transaction=False)
            replayed = False
        else:
            fingerprint = request_fingerprint(
                "POST",
                request.url.path,
                {"body": body.model_dump(mode="json"), "if_match": if_match},
            )
            async with conn.transaction():
                status, case, replayed = await run_idempotent_pg(
                    conn,
                    principal=principal,
                    key=idempotency_key,
                    fingerprint=fingerprint,
                    work=work,
                )
    headers = _etag(case["version"])
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSON(case, status_code=status, headers=headers)
