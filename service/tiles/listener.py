"""Keep the tile cache true to the database: apply its change notifications, and forget
everything whenever some may have been missed.

The database announces every write on ``wangge_changes`` (migration 0006). A lost
connection loses notifications with it, so the cache is cleared when the connection drops
and again once it is back, and the listener reconnects in the background, slower each try.
Every change of the listening state goes through ``ChangeListener._set_listening``.
"""

from __future__ import annotations

import asyncio
import logging

from service.tiles.cache import TileCache

__all__ = ["ChangeListener", "listen_for_changes"]

CHANNEL = "wangge_changes"

log = logging.getLogger("wangge.tiles")


class ChangeListener:
    """Feed the database's change notifications to a tile cache; survive a lost connection."""

    def __init__(self, url: str, cache: TileCache):
        # asyncpg takes a plain postgresql:// DSN, not SQLAlchemy's driver-qualified URL.
        self.dsn = f"postgresql://{url.split('://', 1)[1]}"
        self.cache = cache
        self.conn = None
        self.listening = False
        self.closing = False
        self._task = None

    async def start(self) -> ChangeListener:
        """Connect and listen; return self."""
        import asyncpg

        self.conn = await asyncpg.connect(self.dsn)
        await self.conn.add_listener(CHANNEL, self._notified)
        self.conn.add_termination_listener(self._lost)
        self._set_listening(True)
        return self

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        self.cache.on_notification(payload)

    def _set_listening(self, listening: bool) -> None:
        # Either way the cache forgets what it holds: changes may have been missed while
        # away (on the first start the cache is empty and this costs nothing). The cache
        # keeps serving and storing meanwhile; a cache that must not (hardening) is told here.
        self.listening = listening
        self.cache.clear()

    def _lost(self, _conn) -> None:
        self._set_listening(False)
        if not self.closing:
            self._task = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.5
        while not self.closing:
            try:
                await self.start()
                return
            except Exception:  # the database is still away: try again, slower
                log.warning("tile change listener: reconnecting")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    async def close(self) -> None:
        """Stop listening for good (the app is shutting down)."""
        self.closing = True
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()


async def listen_for_changes(url: str, cache: TileCache) -> ChangeListener:
    """Return a running listener of ``wangge_changes`` for ``cache``."""
    return await ChangeListener(url, cache).start()
