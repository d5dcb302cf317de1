"""A server-side cache of vector tiles, invalidated exactly for the tiles whose data changed.

Entries are keyed by (layers, z, x, y, scope, generation). The database announces every
write with the bounding boxes it touched (``NOTIFY wangge_changes``, migration 0006); each
server process listens (``service.tiles.listener``) and drops only the cached tiles of the
named layers that intersect those boxes: an edit to one grid never serves a stale tile, nor
flushes the whole city.
A new generation flushes everything (every boundary may have moved).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
from collections import OrderedDict, deque
from dataclasses import dataclass

import orjson

__all__ = ["TileCache", "TileKey", "tile_bounds", "CachedTile"]

log = logging.getLogger("wangge.tiles")


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """Return the lon/lat bounds of a Web Mercator (XYZ) tile."""
    n = 2**z

    def lat(row: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360 - 180, lat(y + 1), (x + 1) / n * 360 - 180, lat(y)


@dataclass(frozen=True)
class TileKey:
    layers: tuple[str, ...]
    z: int
    x: int
    y: int
    scope: str | None
    generation: int
    params: tuple = ()


@dataclass(frozen=True)
class CachedTile:
    data: bytes
    etag: bytes  #: quoted, as sent: kept in bytes so answering a hit encodes nothing
    gzipped: bytes | None = None  #: the same tile gzip-compressed, for clients that accept it

    @property
    def size(self) -> int:
        # Bytes held, plus what an entry costs even when its tile is empty.
        return len(self.data) + len(self.gzipped or b"") + ENTRY_OVERHEAD


ENTRY_OVERHEAD = 200


#: More than the GCJ-02 shift anywhere it applies (at most 0.0108° in longitude), in degrees.
SHIFT_DEG = 0.011


def _touches(key: TileKey, layer: str, bbox: tuple[float, ...]) -> bool:
    """Return True if a change of ``layer`` within ``bbox`` may show in the tile ``key``."""
    if layer not in key.layers:
        return False
    x0, y0, x1, y1 = bbox
    tx0, ty0, tx1, ty1 = tile_bounds(key.z, key.x, key.y)
    # Features are clipped with a buffer around the tile: widen it a little.
    pad = (tx1 - tx0) * 64 / 4096
    if key.params and any(k == "crs" for k, _ in key.params):
        # A GCJ-02 tile (service.tiles.shifted) draws WGS84 data up to SHIFT_DEG away.
        pad += SHIFT_DEG
    return x0 <= tx1 + pad and x1 >= tx0 - pad and y0 <= ty1 + pad and y1 >= ty0 - pad


#: How many recent changes a cache remembers, to tell whether one touched a tile being
#: rendered (more arriving during one render: the tile is simply not stored).
CHANGES_KEPT = 1024


class TileCache:
    """LRU of rendered tiles, bounded in bytes, with bbox invalidation per layer."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[TileKey, CachedTile] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = self.invalidated = 0
        #: The current generation as last resolved; forgotten with everything else when
        #: boundaries change, so the shortcut (service.tiles.shortcut) never serves a past one.
        self.current_generation: int | None = None
        #: Set by the change listener (service.tiles.listener): a cache nobody keeps true
        #: stores nothing, so it holds nothing to serve (the route and the shortcut miss).
        self.listening = False
        #: Counts the changes the cache learnt of (invalidations, clears); the last ones are
        #: kept, so a tile rendered while one touched it is not stored (it may predate it).
        self.epoch = 0
        self._changes: deque[tuple[int, str | None, tuple[float, ...] | None]] = deque(
            maxlen=CHANGES_KEPT
        )
        #: Told the layer of every change learnt (None: everything), e.g. the planning
        #: page's analyses (service.gap_cache).
        self._subscribers: list = []

    def subscribe(self, learn) -> None:
        """Have ``learn(layer)`` called with every change learnt (None: everything)."""
        self._subscribers.append(learn)

    def get(self, key: TileKey) -> CachedTile | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: TileKey, data: bytes, *, epoch: int) -> CachedTile:
        """Return the entry for ``data`` (ETag, gzipped copy); keep it if it may be.

        ``epoch`` is :attr:`epoch` read before ``data`` was rendered. It is kept only while
        the listener listens, if no change learnt meanwhile touched it, and if there is room.
        """
        entry = CachedTile(
            data,
            b'"' + hashlib.blake2b(data, digest_size=12).hexdigest().encode() + b'"',
            gzip.compress(data, 6, mtime=0) if len(data) > 256 else None,
        )
        if self.max_bytes <= 0 or not self.listening or self._changed_since(key, epoch):
            return entry
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[key] = entry
        self._bytes += entry.size
        while self._bytes > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.size
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def invalidate(self, layer: str, bbox: list[float] | tuple[float, ...]) -> int:
        """Drop cached tiles containing ``layer`` that intersect ``bbox``; return how many."""
        bbox = tuple(bbox)
        self._learn(layer, bbox)
        stale = [key for key in self._entries if _touches(key, layer, bbox)]
        for key in stale:
            self._bytes -= self._entries.pop(key).size
        self.invalidated += len(stale)
        return len(stale)

    def clear(self) -> None:
        self._learn(None, None)
        self.invalidated += len(self._entries)
        self._entries.clear()
        self._bytes = 0
        self.current_generation = None

    def _learn(self, layer: str | None, bbox: tuple[float, ...] | None) -> None:
        self.epoch += 1
        self._changes.append((self.epoch, layer, bbox))
        for learn in self._subscribers:
            learn(layer)

    def _changed_since(self, key: TileKey, epoch: int) -> bool:
        # Did a change learnt after ``epoch`` touch ``key``? Unknown (forgotten) counts as yes.
        if epoch == self.epoch:
            return False
        if not self._changes or self._changes[0][0] > epoch + 1:
            return True
        for when, layer, bbox in reversed(self._changes):
            if when <= epoch:
                return False
            if layer is None or _touches(key, layer, bbox):
                return True
        return False

    def on_notification(self, payload: str) -> None:
        """Apply one ``wangge_changes`` notification."""
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("unreadable change notification: %r", payload[:200])
            self.clear()
            return
        if message.get("all"):
            self.clear()
            return
        for layer, bbox in (message.get("layers") or {}).items():
            if bbox:
                self.invalidate(layer, bbox)
