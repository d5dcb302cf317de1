"""What a tile request's query parameters ask for, and the part of its cache key they make.

One reading for both ways a tile is answered: the route (``service.routers.tiles``) refuses
what is wrong with the errors below, and the shortcut (``service.tiles.shortcut``) answers a
hit for the same key without the framework or the database, so a cached GCJ-02 tile
(``?crs=GCJ-02``) or a filtered one (``?status=open``) costs what a plain one does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from geo.coords import EPSG_4326, EPSG_4490, GCJ02
from service.crs_output import UnknownCrsError, output_crs
from service.errors import UnprocessableError
from service.specs.map_layers import LayerSpec

__all__ = ["TILE_CRS", "TileQuery", "read_tile_query"]

#: The coordinate systems tiles can be drawn in besides WGS84 (service.tiles.shifted).
TILE_CRS = (GCJ02,)
#: Drawn as WGS84 tiles (CGCS2000 is centimetres from WGS84: geo.coords takes it unchanged).
_PLAIN_CRS = (EPSG_4326, EPSG_4490)
#: Parameters that are not the layers' filters; ``generation`` and ``access_token`` are read
#: by the route (a generation is checked in the database, a token in the query verified).
NOT_FILTERS = ("generation", "access_token", "crs")


@dataclass(frozen=True)
class TileQuery:
    crs: str  #: canonical name (geo.coords)
    filters: dict[str, dict[str, str]]  #: per layer: its filters asked for
    key_params: tuple[tuple[str, str], ...]  #: what the query adds to the tile's cache key


def read_tile_query(specs: Sequence[LayerSpec], query: Mapping[str, str]) -> TileQuery:
    """Return what ``query`` (one value a name: the last) asks of tiles of ``specs``.

    Refuses a crs tiles cannot be drawn in (400) and a parameter none of the layers filters
    on (422).
    """
    crs = output_crs(query.get("crs"))
    if crs not in (*_PLAIN_CRS, *TILE_CRS):
        raise UnknownCrsError(
            f"crs: no {crs} tiles (Baidu's maps use a tile grid of their own); tiles are "
            "EPSG:4326 (default) or GCJ-02; GeoJSON items take crs=BD-09",
            field="crs",
        )
    filters: dict[str, dict[str, str]] = {s.name: {} for s in specs}
    for name, value in query.items():
        if name in NOT_FILTERS:
            continue
        owners = [s for s in specs if name in s.filters]
        if not owners:
            raise UnprocessableError(f"unknown parameter {name!r} for these layers", field=name)
        for spec in owners:
            filters[spec.name][name] = value
    # The crs by its canonical name: "amap" and "GCJ-02" are one tile (and the cache's
    # invalidation knows which keys are shifted, service.tiles.cache); a WGS84 one is no
    # parameter at all.
    key_params = tuple(
        sorted(
            (k, crs if k == "crs" else v)
            for k, v in query.items()
            if k != "access_token" and not (k == "crs" and crs not in TILE_CRS)
        )
    )
    return TileQuery(crs, filters, key_params)
