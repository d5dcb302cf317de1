"""One LISTEN connection that comes back: hear a channel, and when the connection is lost,
reconnect in the background, at most ``MAX_RECONNECT_DELAY_S`` apart.

Both listeners of the service build on it: the tile cache's change listener
(``service.tiles.listener``) and the case stream (``service.dispatch.stream``). A subclass
names its ``channel``, says what a notification does (``_notified``), what a change of the
listening state means (``_set_listening``) and what to do once a lost connection is back
(``_listening_again``: notifications sent meanwhile were missed).
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["MAX_RECONNECT_DELAY_S", "Listening"]

MAX_RECONNECT_DELAY_S = 2.0


class Listening:
    """A LISTEN on ``channel`` that reconnects by itself until ``close``."""

    channel: str
    #: Names the listener in the log, and what losing the connection means for it.
    what: str
    on_lost: str
    log: logging.Logger

    def __init__(self, url: str):
        # asyncpg takes a plain postgresql:// DSN, not SQLAlchemy's driver-qualified URL.
        self.dsn = f"postgresql://{url.split('://', 1)[1]}"
        self.conn = None
        self.listening = False
        self.closing = False
        self._reconnect_task: asyncio.Task | None = None

    async def _connect(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.add_listener(self.channel, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self.conn = conn
        conn.add_termination_listener(self._lost)
        self._set_listening(True)

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        raise NotImplementedError

    def _set_listening(self, listening: bool) -> None:
        self.listening = listening

    def _listening_again(self) -> None:
        """The connection is back after a loss (what was notified meanwhile was missed)."""

    def _lost(self, _conn) -> None:
        self._set_listening(False)
        if not self.closing:
            self.log.warning("%s: connection lost; %s", self.what, self.on_lost)
            self._reconnect_task = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        # Try often (a refused connect costs next to nothing), at most
        # MAX_RECONNECT_DELAY_S apart.
        delay = 0.1
        while not self.closing:
            try:
                await self._connect()
            except Exception as exc:  # the database is still away: try again
                self.log.debug("%s: reconnecting (%s)", self.what, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY_S)
                continue
            self._listening_again()
            self.log.info("%s: listening again", self.what)
            return

    async def close(self) -> None:
        """Stop listening for good (the app is shutting down)."""
        self.closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()
