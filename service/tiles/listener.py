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

import asyncio
import logging

from service.tiles.cache import TileCache

__all__ = ["ChangeListener", "listen_for_changes"]

CHANNEL = "wangge_changes"
MAX_RECONNECT_DELAY_S = 2.0

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

        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self.conn = conn
        conn.add_termination_listener(self._lost)
        self._set_listening(True)
        return self

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        self.cache.on_notification(payload)

    def _set_listening(self, listening: bool) -> None:
        # Either way the cache forgets what it holds: changes may have been missed while
        # away (on the first start the cache is empty and this costs nothing). While not
        # listening it stores nothing, so it serves nothing either.
        self.listening = listening
        self.cache.listening = listening
        self.cache.clear()

    def _lost(self, _conn) -> None:
        self._set_listening(False)
        if not self.closing:
            log.warning("tile change listener: connection lost; tile cache off until it is back")
            self._task = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        # Until it is back the cache is off and every tile is rendered: try often (a
        # refused connect costs next to nothing), at most MAX_RECONNECT_DELAY_S apart.
        delay = 0.1
        while not self.closing:
            try:
                await self.start()
                log.info("tile change listener: listening again")
                return
            except Exception as exc:  # the database is still away: try again
                log.debug("tile change listener: reconnecting (%s)", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY_S)

    async def close(self) -> None:
        """Stop listening for good (the app is shutting down)."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()


async def listen_for_changes(url: str, cache: TileCache) -> ChangeListener:
    """Return a running listener of ``wangge_changes`` for ``cache``."""
    return await ChangeListener(url, cache).start()
