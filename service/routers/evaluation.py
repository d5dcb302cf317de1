"""``GET /evaluation``: the 综合评价 of grid teams, communities or districts for a period.

The figures of :func:`service.dispatch.evaluation.run_evaluation` (JSON, or CSV one row per
area), scoped to the caller's area like every analysis.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations.

import csv
import io
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from service.deps import PrincipalDep, SyncEngineDep
from service.dispatch.evaluation import FIELDS, run_evaluation
from service.inputs import Moment
from service.responses import JSON

__all__ = ["router"]

router = APIRouter(tags=["cases"])


@router.get(
    "/evaluation",
    summary="Evaluation (综合评价) per grid team, community or district",
    description="Over the cases reported in [from, to) (default: the 90 days up to now): "
    "cases, on-time sign-for and handling rates, closure, escalation and reopen rates, cases "
    "overdue now, median sign-for / handling / closing minutes and mean satisfaction, for "
    "every area of the level inside `area` (default: your own). Computed from the case events.",
    response_model=dict,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def evaluation(
    engine: SyncEngineDep,
    principal: PrincipalDep,
    level: Annotated[Literal["grid", "community", "district"], Query()] = "grid",
    area: Annotated[str | None, Query(max_length=64, description="an area code")] = None,
    since: Annotated[Moment | None, Query(alias="from")] = None,
    until: Annotated[Moment | None, Query(alias="to")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    def work() -> dict:
        with engine.begin() as conn:
            return run_evaluation(
                conn, principal=principal, level=level, area_code=area, since=since, until=until
            )

    result = await run_in_threadpool(work)
    if format == "json":
        return JSON(result)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["level", "code", "name", "parent_code", *FIELDS])
    for item in result["items"]:
        writer.writerow([item[k] for k in ("level", "code", "name", "parent_code", *FIELDS)])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="evaluation-{level}.csv"'},
    )
