"""Schemas of point lookups."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from service.inputs import GenerationNumber, NulFreeModel
from service.schemas.crs import InputCrs
from service.schemas.jsonbody import JsonTypes

Lon = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False, description="longitude")]
Lat = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False, description="latitude")]
# In a JSON body a coordinate is a JSON number, as documented: not a string, not a boolean
# (a query string's are text, read as numbers).
BodyLon = Annotated[Lon, Strict()]
BodyLat = Annotated[Lat, Strict()]


class LookupQuery(BaseModel):
    """Query parameters of ``GET /lookup``."""

    model_config = ConfigDict(extra="forbid")

    lon: Lon
    lat: Lat
    crs: InputCrs = "EPSG:4326"
    generation: GenerationNumber | None = Field(None, description="default: the current generation")


class AreaRef(BaseModel):
    code: str
    name: str


class LookupResult(BaseModel):
    """The chain of areas covering a point; levels that did not match are null."""

    generation: int
    matched: list[Literal["city", "district", "community", "grid"]]
    city: AreaRef | None
    district: AreaRef | None
    community: AreaRef | None
    grid: AreaRef | None
    note: str | None = Field(None, description="why the chain is incomplete, when it is")
    point: dict | None = None


class BatchPoint(NulFreeModel, JsonTypes):
    model_config = ConfigDict(extra="forbid")

    lon: BodyLon
    lat: BodyLat
    # Integers in I-JSON's exact range (RFC 7493: +-(2^53-1)), the range every JSON reader
    # keeps to the digit; larger identifiers go as strings. A bound of 2^63-1 read as a
    # double (as JSON Schema validators read it) would let 2^63+191 pass the schema.
    id: str | Annotated[int, Field(ge=-(2**53 - 1), le=2**53 - 1)] | None = Field(
        None,
        description="your identifier, echoed back: a string, or an integer within "
        "+-(2^53-1) (larger integers lose digits in JSON readers; send them as strings)",
    )


class BatchLookupRequest(NulFreeModel, JsonTypes):
    """Points to look up, as objects or as ``[lon, lat]`` pairs (no text holds a NUL, as
    everywhere in the API; values of their documented JSON types)."""

    model_config = ConfigDict(extra="forbid")

    points: list[BatchPoint | tuple[BodyLon, BodyLat]] = Field(min_length=1)
    crs: InputCrs = "EPSG:4326"
    generation: GenerationNumber | None = None


class BatchLookupItem(BaseModel):
    index: int
    id: str | int | None = None
    status: Literal["matched", "partial", "unmatched", "outside_scope"]
    city: AreaRef | None
    district: AreaRef | None
    community: AreaRef | None
    grid: AreaRef | None


class BatchLookupResult(BaseModel):
    generation: int
    summary: dict[str, int]
    results: list[BatchLookupItem]
