"""Schemas of boundary plans: a draft, its edits, the diff and a publish."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.inputs import NulFreeModel

__all__ = [
    "PlanCreate",
    "PlanRead",
    "PlanEdit",
    "PlanEditRead",
    "PlanEditResult",
    "PlanDiff",
    "PlanPublished",
]

Key = Annotated[str, Field(min_length=1, max_length=40, description="a grid's key in the plan")]
GeoJSONGeometry = Annotated[
    dict[str, Any], Field(description="a GeoJSON geometry in EPSG:4326 (lon/lat)")
]


class PlanCreate(NulFreeModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"\S")
    area_code: str = Field(
        pattern=r"^[0-9]{6,18}$", description="a community or county (district) of yours"
    )


class PlanRead(BaseModel):
    id: int
    name: str
    area_code: str
    area_level: Literal["district", "community"]
    base_generation: int
    base_is_current: bool = Field(description="false: publishing is refused; start anew")
    status: Literal["draft", "published", "discarded"]
    version: int = Field(description="the ETag; send it as If-Match with an edit")
    grids: int
    created_by: str
    created_by_name: str
    created_at: datetime
    updated_at: datetime
    published_generation: int | None
    published_at: datetime | None


class _Edit(BaseModel):
    # Not a NulFreeModel: its field validator would run on ``op``, which a discriminated
    # union refuses; the router checks the body for NUL (service.inputs.find_nul).
    model_config = ConfigDict(extra="forbid")


class SplitLine(_Edit):
    """Cut a grid along a line drawn across it, boundary to boundary."""

    op: Literal["split_line"]
    key: Key
    line: GeoJSONGeometry = Field(description="a LineString across the grid")
    names: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None, max_length=50, description="names of the pieces, west→east, north→south"
    )


class SplitParts(_Edit):
    """Split a grid into ``parts`` compact pieces of equal area."""

    op: Literal["split_parts"]
    key: Key
    parts: int = Field(ge=2, le=50)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class Merge(_Edit):
    """Merge grids of one community that together form one polygon."""

    op: Literal["merge"]
    keys: list[Key] = Field(min_length=2, max_length=50)
    name: str | None = Field(None, min_length=1, max_length=200)


class MoveEdge(_Edit):
    """Redraw the shared edge of two neighbouring grids along a line."""

    op: Literal["move_edge"]
    keys: list[Key] = Field(min_length=2, max_length=2)
    line: GeoJSONGeometry = Field(description="the new edge, across the two grids")


class Reassign(_Edit):
    """Give the part of grid ``from_key`` inside ``region`` to its neighbour ``to_key``."""

    op: Literal["reassign"]
    from_key: Key
    to_key: Key
    region: GeoJSONGeometry = Field(description="a Polygon")


class _GridFeature(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["Feature"] = "Feature"
    geometry: GeoJSONGeometry
    properties: dict[str, Any] = Field(
        default_factory=dict,
        description="name; optional parent_code (else the community holding most of it) and "
        "code (kept when the grid equals that current grid)",
    )


class ReplaceAll(_Edit):
    """Replace every grid of the plan (a redrawn set, e.g. from QGIS)."""

    op: Literal["replace_all"]
    features: list[_GridFeature] = Field(min_length=1, max_length=20_000)


PlanEdit = Annotated[
    SplitLine | SplitParts | Merge | MoveEdge | Reassign | ReplaceAll, Field(discriminator="op")
]


class PlanEditRead(BaseModel):
    version: int
    op: str
    actor: str
    actor_name: str
    at: datetime
    removed: list[str]
    added: list[str]
    payload: dict[str, Any]


class PlanEditResult(BaseModel):
    plan_id: int
    version: int = Field(description="the plan's new ETag")
    removed: list[str] = Field(description="keys of the grids the edit removed or redrew")
    added: dict[str, Any] = Field(description="GeoJSON FeatureCollection of the new grids")
    metrics: dict[str, Any] | None = Field(
        description="measures of the changed grids and of the plan"
    )


class PlanDiff(BaseModel):
    plan_id: int
    version: int
    generation: int
    base_generation: int
    base_is_current: bool
    unchanged: list[str]
    retired: list[str]
    added: list[str]
    transfers: list[dict[str, Any]]
    moved_m2: float = Field(description="territory that changes grid (m²)")
    redrawn_m2: float = Field(description="territory of the retired grids (m²)")
    entities: dict[str, Any]
    staff: dict[str, Any]


class PlanPublished(BaseModel):
    plan_id: int
    version: int
    generation: int
    codes: dict[str, str] = Field(description="new code of each new grid, by key")
    kept: list[str]
    retired: list[str]
    remapped: dict[str, int]
