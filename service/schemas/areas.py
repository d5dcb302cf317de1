"""Schemas of areas, generations and tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.auth import ROLES, SOURCES
from service.inputs import NulFreeModel
from service.schemas.jsonbody import JsonTypes

Level = Literal["city", "district", "community", "grid"]


class _AreaProperties(BaseModel):
    code: str = Field(pattern=r"^[0-9]{6,18}$", description="its level's length, under its parent")
    name: str = Field(pattern=r"\S", description="not blank")
    level: Level
    parent_code: str | None = Field(
        None, pattern=r"^[0-9]{6,18}$", description="required below the city level"
    )


class _AreaGeometry(BaseModel):
    type: Literal["Polygon", "MultiPolygon"]
    coordinates: list[Any] = Field(description="a valid polygon in the collection's CRS")


class _AreaFeature(BaseModel):
    type: Literal["Feature"]
    properties: _AreaProperties
    geometry: _AreaGeometry


class _NamedCrs(BaseModel):
    type: Literal["name"]
    properties: dict[str, str] = Field(description='{"name": "EPSG:4326"} or EPSG:4490')


class AreaFeatureCollection(BaseModel):
    """The body of ``POST /generations/{id}/areas`` as documented (``geo.areas`` checks it)."""

    type: Literal["FeatureCollection"]
    crs: _NamedCrs | None = Field(None, description="default EPSG:4326")
    features: list[_AreaFeature] = Field(min_length=1)


class AreaRead(BaseModel):
    code: str
    name: str
    level: Level
    parent_code: str | None
    path: list[str] = Field(description="codes from the city down to this area")
    generation_low: int
    generation_high: int
    area_km2: float
    source: str
    geometry: dict[str, Any] | None = None


class AreaList(BaseModel):
    items: list[AreaRead]
    total: int
    limit: int
    offset: int
    generation: int
    next: str | None


class GenerationRead(BaseModel):
    id: int
    description: str
    active: bool
    current: bool
    created_at: datetime
    activated_at: datetime | None
    areas: int


class GenerationCreate(NulFreeModel, JsonTypes):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1, max_length=500)
    carry_over: bool = Field(True, description="carry the current areas into the new generation")


class AreaImportResult(BaseModel):
    generation: int
    inserted: int
    replaced: int
    unchanged: int


class TokenCreate(NulFreeModel, JsonTypes):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Literal[ROLES]  # type: ignore[valid-type]
    area_code: str | None = Field(None, pattern=r"^[0-9]{6,18}$")
    source: Literal[SOURCES] | None = Field(  # type: ignore[valid-type]
        None, description="intake tokens: where their incidents come from"
    )


class TokenCreated(BaseModel):
    token: str = Field(description="shown once; only its hash is stored")
    name: str
    role: str
    area_code: str | None


class PrincipalRead(BaseModel):
    token_id: str
    name: str
    role: str
    area_code: str | None
