"""Return the HTTP answer for a cached tile: the one place its headers are decided.

Both ways a tile leaves the server use it: the shortcut (``service.tiles.shortcut``) sends
its parts as raw ASGI messages, the route (``service.routers.tiles``) returns them as a
``TileResponse``. A hit therefore carries the same ETag, 304, gzip and caching headers
whichever path answered it.

It works on raw ASGI headers (lower-case byte names) and prebuilt header pairs, so the
shortcut's path allocates no more than the header list and the length it must send.
"""

from __future__ import annotations

from starlette.responses import Response

from service.tiles.cache import CachedTile

__all__ = ["MVT", "MISS", "HIT", "SHORTCUT_HIT", "header", "tile_response", "TileResponse"]

MVT = b"application/vnd.mapbox-vector-tile"

# Tiles depend on the caller's token or page session (its area and role): private, varying by it.
_CACHE_CONTROL = (b"cache-control", b"private, max-age=60")
_VARY = (b"vary", b"Authorization, X-API-Key, Cookie")
_CONTENT_TYPE = (b"content-type", MVT)
_GZIP = (b"content-encoding", b"gzip")

#: How the tile was found, as ``X-Tile-Cache`` (and ``X-Tile-Shortcut``) tell clients and
#: tests: rendered for this request, found in the cache by the route, found by the shortcut.
MISS = ((b"x-tile-cache", b"miss"),)
HIT = ((b"x-tile-cache", b"hit"),)
SHORTCUT_HIT = (*HIT, (b"x-tile-shortcut", b"1"))

Headers = list[tuple[bytes, bytes]]


def header(headers: Headers, name: bytes) -> bytes | None:
    """Return the first value of header ``name`` (lower-case) in raw ASGI ``headers``."""
    for key, value in headers:
        if key == name:
            return value
    return None


def tile_response(
    entry: CachedTile, request_headers: Headers, marks: tuple[tuple[bytes, bytes], ...]
) -> tuple[int, Headers, bytes]:
    """Return status, headers and body answering a request for ``entry``.

    304 without a body when the client's ``If-None-Match`` is the entry's ETag; 204 without
    a body for a tile with no feature (as MVT servers answer: a 0-byte 200 is no tile GDAL
    can open); the gzipped copy when the client accepts gzip and the entry has one;
    ``marks`` (``MISS``, ``HIT``, ``SHORTCUT_HIT``) say how the tile was found.
    """
    headers = [(b"etag", entry.etag), _CACHE_CONTROL, _VARY, *marks]
    if header(request_headers, b"if-none-match") == entry.etag:
        return 304, headers, b""
    if not entry.data:
        return 204, headers, b""
    body = entry.data
    accept = header(request_headers, b"accept-encoding") or b""
    if entry.gzipped is not None and b"gzip" in accept:
        body = entry.gzipped
        headers.append(_GZIP)
    headers.append(_CONTENT_TYPE)
    headers.append((b"content-length", str(len(body)).encode()))
    return 200, headers, body


class TileResponse(Response):
    """The route's answer for a tile: ``tile_response`` as a Starlette response."""

    def __init__(
        self,
        entry: CachedTile,
        request_headers: Headers,
        marks: tuple[tuple[bytes, bytes], ...],
    ) -> None:
        # Response.__init__ would rebuild the headers from a dict; these are final already.
        self.status_code, self.raw_headers, self.body = tile_response(entry, request_headers, marks)
        self.background = None
