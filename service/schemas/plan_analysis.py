"""Schemas of plan analysis: metrics, automatic proposals, what-if coverage."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.inputs import NulFreeModel

__all__ = ["ProposalCreate", "ProposalCreated", "PlanMetricsRead", "PlanCoverageRead"]


class Balance(BaseModel):
    """Importance of each load in the balanced weight (shares of the area's totals)."""

    model_config = ConfigDict(extra="forbid")

    population: float = Field(1.0, ge=0, le=100)
    households: float = Field(0.0, ge=0, le=100)
    units: float = Field(0.0, ge=0, le=100)
    incidents: float = Field(0.0, ge=0, le=100)
    area: float = Field(0.0, ge=0, le=100, description="square metres")


class ProposalCreate(NulFreeModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"\S")
    area_code: str = Field(
        pattern=r"^[0-9]{6,18}$", description="a community or county (district) of yours"
    )
    k: int = Field(ge=1, le=200, description="number of grids (at least one per community)")
    balance: Balance = Field(default_factory=Balance)
    epsilon: float = Field(
        0.04, gt=0, le=0.25, description="allowed deviation from the community's ideal load"
    )
    nest: bool = Field(
        True, description="grids nest in communities (false: balance the whole area)"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    bursts: int = Field(10, ge=0, le=30, description="ReCom short bursts for compactness")


class ProposalCreated(BaseModel):
    plan_id: int
    version: int
    proposal: dict[str, Any]
    metrics: dict[str, Any]


class PlanMetricsRead(BaseModel):
    plan_id: int
    version: int
    plan: dict[str, Any] = Field(description="the plan's summary: totals, means, worst deviations")
    grids: list[dict[str, Any]] = Field(description="per grid, by key")


class PlanCoverageRead(BaseModel):
    plan_id: int
    version: int
    area_code: str
    base_generation: int
    provisional_codes: dict[str, str]
    analyses: dict[str, Any] = Field(
        description="per analysis: today's and the draft's summary, their change, the "
        "draft's worst findings"
    )
