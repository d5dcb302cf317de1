"""Mapbox vector tiles and TileJSON 3.0 for every layer, cached and scoped.

``/tiles/{layers}/{z}/{x}/{y}.mvt`` where ``layers`` is one layer or several separated by
commas (one request for a whole map style); the layers' property filters apply
(``?status=open`` draws open incidents only). Tiles are filtered by the caller's area,
generalised per zoom, capped in features, and carry an ``ETag`` (``If-None-Match`` → 304).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from service.deps import PoolDep, PrincipalDep, layer_or_404, parse_generation
from service.errors import UnprocessableError
from service.repositories import layers as repo
from service.repositories.generations import resolve_generation
from service.responses import JSON
from service.schemas.tiles import TileJSON
from service.specs.map_layers import LAYERS, LayerSpec
from service.tiles import TileKey, TileResponse
from service.tiles.query import TILE_CRS, read_tile_query
from service.tiles.response import HIT, MISS
from service.tiles.shifted import shifted_layer_tile

router = APIRouter(prefix="/tiles", tags=["tiles"])

MAX_ZOOM = 22

# Not a pattern: an unknown layer is 404, as an unknown OGC collection is.
Layers = Annotated[
    str,
    Path(
        description=f"one layer, or up to ten separated by commas (each once): {', '.join(LAYERS)}",
        examples=["grids", "grids,incidents"],
    ),
]
# Examples: the tile of central Guiyang at zoom 12 (what the demo holds).
Zoom = Annotated[int, Path(ge=0, le=MAX_ZOOM, examples=[12])]
TileX = Annotated[int, Path(ge=0, le=2**MAX_ZOOM - 1, description="below 2^z", examples=[3262])]
TileY = Annotated[int, Path(ge=0, le=2**MAX_ZOOM - 1, description="below 2^z", examples=[1734])]


def _layers(raw: str) -> list[LayerSpec]:
    names = [n for n in raw.split(",") if n]
    if not names or len(names) > 10:
        raise UnprocessableError("name one to ten layers, separated by commas", field="layers")
    if len(set(names)) != len(names):
        raise UnprocessableError("a layer is named twice", field="layers")
    return [layer_or_404(n) for n in names]


def _tile_numbers(z: int, x: int, y: int) -> None:
    if not 0 <= z <= MAX_ZOOM:
        raise UnprocessableError(f"z must be between 0 and {MAX_ZOOM}", field="z")
    n = 2**z
    if not 0 <= x < n:
        raise UnprocessableError(f"x must be between 0 and {n - 1} at zoom {z}", field="x")
    if not 0 <= y < n:
        raise UnprocessableError(f"y must be between 0 and {n - 1} at zoom {z}", field="y")


@router.get(
    "/{layers}/{z}/{x}/{y}.mvt",
    summary="A vector tile of one or more layers",
    response_class=Response,
    responses={
        200: {
            "description": "the tile (gzipped when the client accepts it)",
            "content": {"application/vnd.mapbox-vector-tile": {"schema": {"type": "string"}}},
        },
        204: {"description": "no feature in this tile (no body)"},
        304: {"description": "the tile is unchanged since the ETag sent in If-None-Match"},
    },
)
async def tile(
    request: Request,
    principal: PrincipalDep,
    pool: PoolDep,
    layers: Layers,
    z: Zoom,
    x: TileX,
    y: TileY,
) -> Response:
    specs = _layers(layers)
    _tile_numbers(z, x, y)
    for spec in specs:
        repo.check_readable(spec, principal)
    q = request.query_params
    cache = request.app.state.tile_cache
    # Read before anything is read from the database: what changes from here on may be
    # missing from the tile, which is then not kept (TileCache.put).
    epoch = cache.epoch
    generation = await resolve_generation(
        pool=pool, principal=principal, requested=parse_generation(q.get("generation"))
    )
    if q.get("generation") is None:
        cache.current_generation = generation
    # crs=GCJ-02: the tile of a GCJ-02 map, drawn by service.tiles.shifted; the layers'
    # filters. Read as the shortcut reads them (service.tiles.query).
    query = read_tile_query(specs, q)
    crs, filters = query.crs, query.filters
    key = TileKey(
        tuple(s.name for s in specs), z, x, y, principal.scope_path, generation, query.key_params
    )
    entry = cache.get(key)
    marks = HIT
    if entry is None:
        marks = MISS
        if crs in TILE_CRS:
            parts = [
                await shifted_layer_tile(
                    pool,
                    spec,
                    principal=principal,
                    generation=generation,
                    z=z,
                    x=x,
                    y=y,
                    crs=crs,
                    filters=filters[spec.name],
                )
                for spec in specs
            ]
        else:
            parts = [
                await repo.layer_tile(
                    pool,
                    spec,
                    principal=principal,
                    generation=generation,
                    z=z,
                    x=x,
                    y=y,
                    filters=filters[spec.name],
                )
                for spec in specs
            ]
        # MVT layers are independent protobuf messages: concatenated tiles are one tile.
        entry = cache.put(key, b"".join(parts), epoch=epoch)
    return TileResponse(entry, request.scope["headers"], marks)


@router.get("/{layer}.json", summary="TileJSON 3.0 of a layer", response_model=TileJSON)
async def tilejson(request: Request, principal: PrincipalDep, pool: PoolDep, layer: Layers) -> JSON:
    specs = _layers(layer)
    for spec in specs:
        repo.check_readable(spec, principal)
    generation = await resolve_generation(pool=pool, principal=principal, requested=None)
    base = str(request.base_url).rstrip("/")
    query = ""
    if "access_token" in request.query_params:
        query = f"?access_token={request.query_params['access_token']}"
    bounds = None
    for spec in specs:
        extent = await repo.layer_extent(pool, spec, principal=principal, generation=generation)
        if extent:
            bounds = (
                extent
                if bounds is None
                else [
                    min(bounds[0], extent[0]),
                    min(bounds[1], extent[1]),
                    max(bounds[2], extent[2]),
                    max(bounds[3], extent[3]),
                ]
            )
    bounds = bounds or [-180, -85.0511, 180, 85.0511]
    minzoom = min(s.min_zoom for s in specs)
    types = {"string": "String", "integer": "Number", "number": "Number", "boolean": "Boolean"}
    return JSON(
        {
            "tilejson": "3.0.0",
            "name": layer,
            "scheme": "xyz",
            "tiles": [f"{base}/tiles/{layer}/{{z}}/{{x}}/{{y}}.mvt{query}"],
            "minzoom": minzoom,
            "maxzoom": MAX_ZOOM,
            "bounds": bounds,
            "center": [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, max(minzoom, 10)],
            "vector_layers": [
                {
                    "id": s.name,
                    "description": s.title,
                    "minzoom": s.min_zoom,
                    "maxzoom": MAX_ZOOM,
                    "fields": {n: types[t] for n, t in s.tile_property_types.items()},
                }
                for s in specs
            ],
        }
    )
