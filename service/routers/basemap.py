"""The offline basemap's raster tiles: ``GET /tiles/basemap/{z}/{x}/{y}.png``.

Drawn from the database's own road network and boundaries (:mod:`service.basemap`), so the
map pages show streets and labelled areas without internet or a provider key. Scoped as
the areas are (the page session cookie is accepted under ``/tiles``), cached per process,
renewed when boundaries or the road network change; ``ETag`` and ``If-None-Match`` → 304.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from service.basemap import MAX_ZOOM, OfflineTiles
from service.deps import PoolDep, PrincipalDep
from service.errors import UnprocessableError

__all__ = ["router"]

router = APIRouter(prefix="/tiles/basemap", tags=["tiles"])

Zoom = Annotated[int, Path(ge=0, le=MAX_ZOOM, examples=[12])]
TileX = Annotated[int, Path(ge=0, le=2**MAX_ZOOM - 1, description="below 2^z", examples=[3262])]
TileY = Annotated[int, Path(ge=0, le=2**MAX_ZOOM - 1, description="below 2^z", examples=[1734])]
Datum = Annotated[
    Literal["WGS84", "GCJ-02", "BD-09"],
    Query(description="the datum of the page's other basemaps (its overlays are in it)"),
]


def _tiles(request: Request) -> OfflineTiles:
    state = request.app.state
    tiles = getattr(state, "offline_tiles", None)
    if tiles is None:
        settings = state.settings.basemap
        tiles = state.offline_tiles = OfflineTiles(settings.cache_bytes, font=settings.font)
    return tiles


@router.get(
    "/{z}/{x}/{y}.png",
    summary="A tile of the offline basemap (roads, rail, water, boundaries, names)",
    response_class=Response,
    responses={
        200: {"description": "the tile", "content": {"image/png": {}}},
        304: {"description": "unchanged since the ETag sent in If-None-Match"},
    },
)
async def basemap_tile(
    request: Request,
    principal: PrincipalDep,
    pool: PoolDep,
    z: Zoom,
    x: TileX,
    y: TileY,
    datum: Datum = "WGS84",
    v: Annotated[
        str | None,
        Query(max_length=80, description="what the page's tiles were drawn from (set by it)"),
    ] = None,
) -> Response:
    n = 2**z
    if x >= n:
        raise UnprocessableError(f"x must be between 0 and {n - 1} at zoom {z}", field="x")
    if y >= n:
        raise UnprocessableError(f"y must be between 0 and {n - 1} at zoom {z}", field="y")
    tile = await _tiles(request).tile(pool, principal, z, x, y, datum)
    headers = {
        "ETag": tile.etag,
        # Scoped data: never in a shared cache. A page's address names the state the tile
        # is drawn from: while it is current the browser may keep the tile a day.
        "Cache-Control": "private, max-age=86400" if v == tile.state else "private, max-age=300",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Authorization, X-API-Key, Cookie",
    }
    if request.headers.get("if-none-match") == tile.etag:
        return Response(status_code=304, headers=headers)
    return Response(tile.data, media_type="image/png", headers=headers)
