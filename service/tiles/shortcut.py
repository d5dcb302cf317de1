"""Answer vector tile cache hits before the web framework does.

A cached tile is bytes in memory; what costs is the framework around it (routing,
dependencies, middleware). This ASGI middleware answers a ``GET /tiles/…/{z}/{x}/{y}.mvt``
straight from the cache when everything it needs is already in memory: a verified token
or map page session cookie (the token cache), the current generation (the tile cache's),
the layers' access rules and the tile. The query (a crs, the layers' filters) is read as the
route reads it (``service.tiles.query``), so ``?crs=GCJ-02`` and ``?status=open`` hits take
this path too (a GCJ-02 hit through the route cost 520-620 µs of the server's CPU and a
database round trip for the generation; here 120-160 µs, as a plain hit: bench.scale's 100x
database, sequential requests). Anything else
— a miss, an unknown token, a query the route must refuse or check in the database
(``generation``, ``access_token``) — goes to the route, which applies every check in full and
fills the caches. The answer itself is the route's (``service.tiles.response``), so a hit
reads the same whichever path served it.
"""

from __future__ import annotations

from starlette.datastructures import QueryParams

from service.edge.sessions import parse_session, session_cookie
from service.errors import WanggeError
from service.specs.map_layers import LAYERS
from service.tiles.cache import TileKey
from service.tiles.query import read_tile_query
from service.tiles.response import SHORTCUT_HIT, header, tile_response

__all__ = ["CachedTileShortcut"]


class CachedTileShortcut:
    """ASGI middleware serving tile cache hits."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path.startswith("/tiles/") and path.endswith(".mvt"):
                response = self._hit(scope)
                if response is not None:
                    status, headers, body = response
                    await send(
                        {"type": "http.response.start", "status": status, "headers": headers}
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def _hit(self, scope):
        parts = scope["path"][7:-4].split("/")
        # isascii: str.isdigit admits "²", which int() refuses.
        if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts[1:]):
            return None
        state = scope["app"].state
        cache = getattr(state, "tile_cache", None)
        if cache is None or cache.current_generation is None:
            return None
        auth = header(scope["headers"], b"authorization")
        token = None
        if auth and auth[:7].lower() == b"bearer ":
            token = auth[7:].strip().decode("latin-1")
        else:
            key = header(scope["headers"], b"x-api-key")
            token = key.strip().decode("latin-1") if key else None
        if token:
            principal = state.token_cache.get(token)
        else:
            # A map page's session cookie (service.edge.sessions), as get_principal reads it.
            session = parse_session(session_cookie(scope["headers"]))
            principal = None
            if session is not None and not session.expired():
                principal = state.token_cache.get(session.value)
        # Only verified principals are in the token cache, so this path never checks a token:
        # the failed-authentication limiter has nothing to count or refuse here (a cached
        # token works from a limited address in the route too: service.edge.limits).
        if principal is None:
            return None
        names = tuple(parts[0].split(","))
        specs = []
        for name in names:
            spec = LAYERS.get(name)
            if spec is None or (
                spec.detail_roles is not None and principal.role not in spec.detail_roles
            ):
                return None
            specs.append(spec)
        params = ()
        if scope["query_string"]:
            # As Starlette reads it for the route (one value a name, the last).
            query = QueryParams(scope["query_string"])
            if "generation" in query or "access_token" in query:
                return None
            try:
                params = read_tile_query(specs, query).key_params
            except WanggeError:  # the route refuses it, naming what is wrong
                return None
        z, x, y = (int(p) for p in parts[1:])
        entry = cache.get(
            TileKey(names, z, x, y, principal.scope_path, cache.current_generation, params)
        )
        if entry is None:
            return None
        return tile_response(entry, scope["headers"], SHORTCUT_HIT)
