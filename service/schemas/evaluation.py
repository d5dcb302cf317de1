"""Query of ``GET /analysis/evaluation``: the evaluation as an analysis, with geometry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from service.inputs import Moment
from service.schemas.analysis import AnalysisQuery

__all__ = ["EvaluationQuery"]


class EvaluationQuery(AnalysisQuery):
    level: Literal["grid", "community", "district"] = Field(
        "grid", description="evaluate grid teams, communities or districts"
    )
    since: Moment | None = Field(
        None, description="period start, reported at or after (default: until − 90 days)"
    )
    until: Moment | None = Field(None, description="period end, reported before (default: now)")
