"""Time limits of the case lifecycle: one per category, priority and step."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.dispatch.lifecycle import CATEGORIES, PRIORITIES, STEPS

__all__ = ["TimeLimitRead", "TimeLimitUpdate", "MAX_MINUTES"]

#: The longest limit accepted: a year.
MAX_MINUTES = 366 * 24 * 60


class TimeLimitRead(BaseModel):
    """How long one step of a case may take, for one category and priority."""

    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    priority: Literal[PRIORITIES]  # type: ignore[valid-type]
    step: Literal[STEPS] = Field(  # type: ignore[valid-type]
        description="accept (reported/registered → dispatched), sign (dispatched → signed), "
        "handle (signed → handled), verify (handled → closed)"
    )
    minutes: int = Field(gt=0, description="wall-clock minutes from the step's start")
    updated_by: str | None = Field(None, description="the token id of the last change")
    updated_at: datetime


class TimeLimitUpdate(BaseModel):
    """A new limit; clocks started from now on take it, running ones keep theirs."""

    model_config = ConfigDict(extra="forbid")

    minutes: int = Field(gt=0, le=MAX_MINUTES, description="wall-clock minutes, at most a year")
