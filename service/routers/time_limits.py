"""``/time-limits``: how long each step of a case may take (admins change them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from service.auth import MANAGER_ROLES
from service.deps import AdminDep, ConnDep, PrincipalDep, WriteConnDep
from service.dispatch import deadlines
from service.errors import ForbiddenError
from service.responses import JSON
from service.schemas.time_limits import TimeLimitRead, TimeLimitUpdate

__all__ = ["router"]

router = APIRouter(tags=["cases"])

#: Who reads the limits: the dispatch centres, planners and admins.
READERS = frozenset({*MANAGER_ROLES, "planner"})


def _limit_key(
    category: Annotated[str, Path(description="the case category, e.g. gas")],
    priority: Annotated[str, Path(description="urgent, high or normal")],
    step: Annotated[str, Path(description="accept, sign, handle or verify")],
) -> tuple[str, str, str]:
    # A dependency, so an unknown key answers 404 before the body is judged (422).
    return deadlines.check_limit_key(category, priority, step)


@router.get(
    "/time-limits",
    summary="Time limits per category, priority and step",
    response_model=list[TimeLimitRead],
    description="A step's deadline is its start plus the limit of the case's category and "
    "priority. A case past it is flagged overdue (and supervised from above) by the deadline "
    "sweep, and escalated one level up after the grace the service is set to.",
)
async def list_time_limits(conn: ConnDep, principal: PrincipalDep) -> JSON:
    if principal.role not in READERS:
        raise ForbiddenError(
            f"time limits are for dispatchers, planners and admins; you are {principal.role}"
        )
    return JSON(await deadlines.list_limits(conn))


@router.put(
    "/time-limits/{category}/{priority}/{step}",
    summary="Change a time limit (admin)",
    response_model=TimeLimitRead,
    description="Clocks started from now on take the new limit; running deadlines keep "
    "theirs. Every server process reads it at once (limits are not cached).",
)
async def set_time_limit(
    conn: WriteConnDep,
    admin: AdminDep,
    key: Annotated[tuple[str, str, str], Depends(_limit_key)],
    body: TimeLimitUpdate,
) -> JSON:
    category, priority, step = key
    row = await deadlines.set_limit(
        conn,
        category=category,
        priority=priority,
        step=step,
        minutes=body.minutes,
        updated_by=admin.token_id,
    )
    return JSON(row)
