"""Cases: the incident with its lifecycle, its history, the body of an action, the queue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

from service.dispatch.lifecycle import (
    API_ACTIONS,
    CATEGORIES,
    OWNER_LEVELS,
    PRIORITIES,
    REJECT_REASONS,
    STATES,
)
from service.inputs import Moment, NulFreeModel, Offset, RowId

__all__ = [
    "Assignee",
    "CaseAction",
    "CaseRead",
    "CaseDetail",
    "CaseEventRead",
    "CasePage",
    "CaseListQuery",
    "DuplicatesQuery",
    "DuplicateCandidate",
]

State = Literal[STATES]  # type: ignore[valid-type]
Priority = Literal[PRIORITIES]  # type: ignore[valid-type]
Code = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")]
Clock = Literal["green", "amber", "red"]


class Assignee(NulFreeModel):
    """Who handles the case: a grid team (its grid code) or a stationed unit (its id)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["grid", "unit"]
    code: Code = Field(description="the grid's code, or the unit's id")


class CaseAction(NulFreeModel):
    """The fields of an action; which ones an action needs is in the lifecycle table."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=4000)
    reason: str | None = Field(
        None,
        max_length=1000,
        description=f"reject: one of {', '.join(REJECT_REASONS)}; others: free text",
    )
    attachments: list[AnyHttpUrl] = Field(default_factory=list, max_length=20)
    assignee: Assignee | None = Field(None, description="dispatch: inside the owner's area")
    priority: Priority | None = None
    duplicate_of: RowId | None = Field(None, description="reject as duplicate: the original")
    satisfaction: int | None = Field(
        None, ge=1, le=5, description="callback: 1-5; 2 or less reopens the case"
    )
    due_at: Moment | None = Field(None, description="a deadline instead of the time limit")
    area: Code | None = Field(None, description="send_down: the centre below to send it to")


class CaseRead(BaseModel):
    """A case: the incident and where it stands in its lifecycle."""

    id: int
    category: str
    description: str
    address: str
    source: str
    reported_at: datetime
    attachments: list[str]
    lon: float
    lat: float
    area_path: str | None = Field(description="where it lies (its deepest area)")
    grid_code: str | None
    state: State
    status: Literal["new", "open", "closed"]
    priority: Priority
    owner_level: str | None
    owner_area_code: str | None
    owner_area_path: str | None
    assignee_kind: Literal["grid", "unit"] | None
    assignee_code: str | None
    assignee_path: str | None
    step: str | None
    step_due_at: datetime | None
    step_overdue: bool
    clock: Clock | None = Field(
        description="green; amber past 80% of the step's limit; red when overdue"
    )
    dispatched_at: datetime | None
    signed_at: datetime | None
    handled_at: datetime | None
    closed_at: datetime | None
    supervised: bool
    escalations: int
    reopens: int
    duplicate_of: int | None
    satisfaction: int | None
    version: int = Field(description="the number of events; If-Match takes it as ETag")


class CaseDetail(CaseRead):
    allowed_actions: list[str] = Field(description="what the caller may do now")


class CaseEventRead(BaseModel):
    id: int
    seq: int
    at: datetime
    action: str
    actor_role: str
    actor_token_id: str | None
    actor_name: str | None
    actor_area_code: str | None
    from_state: State | None
    to_state: State
    from_owner_area_code: str | None
    to_owner_area_code: str | None
    assignee_kind: str | None
    assignee_code: str | None
    note: str | None
    reason: str | None
    attachments: list[str]
    data: dict


class CasePage(BaseModel):
    """One page of cases, ordered by id; ``next`` is the next page's URL (null: last)."""

    items: list[CaseRead]
    total: int
    limit: int
    offset: int
    next: str | None


class CaseListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str | None = Field(
        None,
        pattern=rf"^({'|'.join(STATES)})(,({'|'.join(STATES)}))*$",
        description="comma-separated states",
    )
    owner_level: Literal[OWNER_LEVELS] | None = None  # type: ignore[valid-type]
    category: Literal[CATEGORIES] | None = None  # type: ignore[valid-type]
    overdue: bool | None = Field(None, description="open with the step's deadline passed")
    assignee: Code | None = Field(None, description="a grid code or a unit id")
    area: Code | None = Field(None, description="lying in this area (a code)")
    mine: bool | None = Field(
        None, description="the caller's queue: owned by its centre, or dispatched to its grid"
    )
    since: Moment | None = Field(None, description="reported at or after")
    until: Moment | None = Field(None, description="reported before")
    limit: int | None = Field(None, ge=1)
    offset: Offset = 0


class DuplicatesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    distance_m: float | None = Field(None, ge=1, le=50_000, description="default: the setting")
    hours: float | None = Field(None, ge=0.1, le=24 * 365, description="default: the setting")


class DuplicateCandidate(BaseModel):
    id: int
    category: str
    state: State
    description: str
    address: str
    reported_at: datetime
    lon: float
    lat: float
    distance_m: float
    hours_apart: float


#: Every action the API takes, for the path parameter's documentation.
ACTION_NAMES = API_ACTIONS
