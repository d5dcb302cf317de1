"""Vector tiles: the cache, what keeps it true, and the two ways a tile is answered.

A request for ``/tiles/{layers}/{z}/{x}/{y}.mvt`` takes one of two paths:

1. ``shortcut.CachedTileShortcut`` (ASGI middleware, before the framework) answers a cache
   hit when everything it needs is already in memory: a verified token, the current
   generation, the layers' access rules, the tile. It never queries the database.
2. Otherwise the route (``service.routers.tiles``) applies every check, renders what is
   missing (``service.repositories.layers.layer_tile``) and fills the cache.

Both answer through ``response.tile_response`` (ETag, ``If-None-Match`` → 304, gzip, caching
headers), so a tile reads the same whichever path served it. The shortcut looks up the key
the route stores, its query (crs, filters) read by the same ``query.read_tile_query``, and can
only do so once the route has recorded the current generation
(``TileCache.current_generation``).

``cache.TileCache`` holds rendered tiles and drops exactly those a change touched;
``listener.ChangeListener`` feeds it the database's change notifications and clears it
whenever some may have been missed.

The route stays in ``service/routers/`` with every other route, so the route table is one
directory a reader scans (as app.py assembles it); it is a thin handler over this package.
"""

from service.tiles.cache import CachedTile, TileCache, TileKey, tile_bounds
from service.tiles.listener import ChangeListener, listen_for_changes
from service.tiles.response import TileResponse, tile_response
from service.tiles.shortcut import CachedTileShortcut

__all__ = [
    "CachedTile",
    "CachedTileShortcut",
    "ChangeListener",
    "TileCache",
    "TileKey",
    "TileResponse",
    "listen_for_changes",
    "tile_bounds",
    "tile_response",
]
