"""Schemas of the tile routes: TileJSON 3.0 (https://github.com/mapbox/tilejson-spec)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class VectorLayer(BaseModel):
    id: str
    description: str
    minzoom: int
    maxzoom: int
    fields: dict[str, Literal["String", "Number", "Boolean"]]


class TileJSON(BaseModel):
    """Where a layer's tiles are and what they hold."""

    tilejson: Literal["3.0.0"]
    name: str
    scheme: Literal["xyz"]
    tiles: list[str]
    minzoom: int
    maxzoom: int
    bounds: list[float] = Field(min_length=4, max_length=4)
    center: list[float] = Field(min_length=3, max_length=3)
    vector_layers: list[VectorLayer]
