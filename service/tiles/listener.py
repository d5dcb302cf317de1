"""Keep the tile cache true to the database: apply its change notifications, and forget
everything whenever some may have been missed.

The database announces every write on ``wangge_changes`` (migration 0006). A lost
connection loses notifications with it, so the cache is cleared when the connection drops
and again once it is back; in between it neither serves nor stores (``TileCache.listening``):
tiles are rendered afresh. The listener reconnects in the background, at most 2 s apart,
so the cache is back soon after the database. Every change of the listening state goes
through ``ChangeListener._set_listening``.
"""

from __future__ import annotations

import logging

from service.listening import Listening
from service.tiles.cache import TileCache

__all__ = ["ChangeListener", "listen_for_changes"]

CHANNEL = "wangge_changes"


class ChangeListener(Listening):
    """Feed the database's change notifications to a tile cache; survive a lost connection."""

    channel = CHANNEL
    what = "tile change listener"
    on_lost = "tile cache off until it is back"
    log = logging.getLogger("wangge.tiles")

    def __init__(self, url: str, cache: TileCache):
        self.cache = cache
        super().__init__(url)

    async def start(self) -> ChangeListener:
        """Connect and listen; return self."""
        await self._connect()
        return self

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        self.cache.on_notification(payload)

    def _set_listening(self, listening: bool) -> None:
        # Either way the cache forgets what it holds: changes may have been missed while
        # away (on the first start the cache is empty and this costs nothing). While not
        # listening it stores nothing, so it serves nothing either: every tile is rendered
        # until the connection is back.
        self.listening = listening
        self.cache.listening = listening
        self.cache.clear()


async def listen_for_changes(url: str, cache: TileCache) -> ChangeListener:
    """Return a running listener of ``wangge_changes`` for ``cache``."""
    return await ChangeListener(url, cache).start()
