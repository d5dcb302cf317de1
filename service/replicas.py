"""Reads on PostgreSQL streaming replicas, writes on the primary, and every caller reads its
own writes.

Configured by ``DATABASE_REPLICA_URLS``: comma-separated URLs of hot standbys of
``DATABASE_URL`` (``pg_basebackup -R``; ``hot_standby = on``, the default). Without it
nothing here runs and every connection is the primary's.

**What goes where.** The read dependencies of :mod:`service.deps` — ``ConnDep``,
``PoolDep``, single lookups (:func:`service.deps.read_batcher`) and ``ReadSyncEngineDep``
(analyses that only read, the coverage report) — are served by a replica chosen once per
request (in turn among the usable ones; every read connection of one request is on the same
replica). Everything else is the primary's: ``WriteConnDep``, ``app.state.engine``,
``app.state.pg_pool``, ``app.state.sync_engine`` (imports, activation, analyses that write),
the token check on a cache miss, and the ``LISTEN`` connections of the tile cache and of the
case stream (a standby cannot ``LISTEN``, and a read that follows a notification must see
what was notified). Each replica has its own SQLAlchemy engines and asyncpg pool, with a
short connect timeout, and its own health state.

**Read-your-writes.** Handlers commit before they answer, so once a request that may have
written (any method but GET/HEAD/OPTIONS, answered below 400) has its answer,
:class:`ReadYourWrites` reads the primary's WAL insert position, which is at or past the
commit of everything the request wrote. It answers it in the ``Wangge-LSN`` header,
remembers it for the caller's token (``written``) and announces it on ``wangge_writes``, so
that every server process remembers it too (:class:`_WritesHeard`). A later read by that
token, or one sending ``Wangge-LSN`` back, is served by a replica whose
``pg_last_wal_replay_lsn()`` has reached that position: the routing polls the replica for at
most ``WANGGE_DB_REPLICA_WAIT_MS``, and sends the read to the primary if it has not.
A process that (re)connects its ``wangge_writes`` listener may have missed announcements:
every read then waits for the primary's position at that moment (``floor``), and while it is
not listening, every read goes to the primary.

**Bounded staleness for everyone.** Every ``TICK_S`` the routing reads the primary's
position and each replica's replay position (:meth:`ReadRouting._tick`); a replica that has
not replayed what the primary had ``WANGGE_DB_REPLICA_MAX_LAG_S`` seconds ago is *lagging*
and is not read from. A token's remembered position is forgotten after that long (plus a
margin), when every usable replica has replayed it anyway.

**Tiles.** The tile cache is invalidated by the primary's notifications, possibly before a
replica has replayed the change: a tile rendered there then would be stored stale. So a tile
is rendered on a replica only if it has replayed the primary's position read after the
cache's latest change (``_tile_epoch``/``_tile_lsn``); a tile asked for before that
position is known goes to the primary, and the position is read in the background.

**Failures.** A replica that refuses or drops a connection is marked down at once and the
read runs on the primary (the hot pool's reads, and connecting ``ConnDep``); a request whose
replica connection died under it is a lost connection, which a GET runs again
(:mod:`service.errors`), then on the primary. The tick probes down replicas and takes them
back when they answer. A statement cancelled by recovery (a conflict with replay, SQLSTATE
40001) runs again on the primary. A replica that is no longer in recovery (promoted) is not
read from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from urllib.parse import parse_qsl, urlsplit

from cachetools import TTLCache
from sqlalchemy import create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import NullPool

from service.auth import split_token
from service.db import make_async_engine, make_engine, make_pg_pool, sync_url
from service.edge import sessions
from service.errors import UnprocessableError
from service.listening import Listening
from service.outage import is_unavailable

__all__ = [
    "HEADER",
    "CHANNEL",
    "Replica",
    "ReadRouting",
    "ReadYourWrites",
    "parse_lsn",
    "format_lsn",
    "caller_of",
]

log = logging.getLogger("wangge.replicas")

#: Answered after a write (the position to read at); a read may send it back.
HEADER = "Wangge-LSN"
CHANNEL = "wangge_writes"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Seconds between looks at the primary's position and the replicas' health and replay.
TICK_S = 0.5
PROBE_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 2.0
#: Seconds between two looks at a replica a read is waiting for.
POLL_S = 0.002
#: A remembered position no replica can reach: the caller reads on the primary.
PRIMARY_ONLY = 1 << 64

_LSN = "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
_PRIMARY_LSN_SQL = f"SELECT {_LSN}"
_ANNOUNCE_SQL = (
    f"SELECT lsn, pg_notify('{CHANNEL}', $1::text || ' ' || lsn::text) "
    f"FROM (SELECT {_LSN} AS lsn) p"
)
_REPLAY_SQL = "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
#: 40001: a statement cancelled on a standby for a conflict with recovery; 25006: a write
#: on a standby (a bug of its caller: it is logged, and served by the primary).
_PRIMARY_CAN_SERVE = frozenset({"40001", "25006"})
_CHOSEN = "wangge.replica"


def parse_lsn(text: str) -> int:
    """Return the WAL position ``X/Y`` (PostgreSQL's ``pg_lsn`` text) as a number.

    >>> parse_lsn("16/B374D848")
    97500059720
    """
    hi, sep, lo = text.strip().partition("/")
    if not sep or not (0 < len(hi) <= 8 and 0 < len(lo) <= 8):
        raise ValueError(text)
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    """Return ``lsn`` as PostgreSQL writes a ``pg_lsn``.

    >>> format_lsn(97500059720)
    '16/B374D848'
    """
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def caller_of(scope) -> str | None:
    """Return the token id a request presents (not verified: it only routes reads).

    The credential is read where :func:`service.deps.get_principal` reads it: the
    ``Authorization: Bearer`` or ``X-API-Key`` header, ``?access_token=``, or the page
    session cookie.
    """
    token = cookie = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token is None:
                token = rest.strip()
        elif name == b"x-api-key":
            token = value.decode("latin-1").strip()
        elif name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == sessions.COOKIE:
                    cookie = val
    if token is None and b"access_token=" in scope.get("query_string", b""):
        token = dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("access_token")
    if token:
        parts = split_token(token)
        return parts[0] if parts else None
    session = sessions.parse_session(cookie) if cookie else None
    return session.token_id if session else None


def _describe(url: str) -> str:
    """Return host:port/database of ``url`` (no user, no password) for the log."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


class Replica:
    """One streaming replica: its engine and hot pool, and what is known of its state."""

    def __init__(self, url: str, *, pool_size: int):
        self.url = url
        self.name = _describe(url)
        self.engine = make_async_engine(url, pool_size=pool_size, connect_timeout=CONNECT_TIMEOUT_S)
        #: Analyses and reports in worker threads (``ReadSyncEngineDep``).
        self.sync_engine = make_engine(url, connect_timeout=int(CONNECT_TIMEOUT_S))
        self.pool_size = pool_size
        self.pool = None  # the hot pool, made by ReadRouting.start
        self.reads = None  # the hot pool's reads, falling back to the primary's
        self.batcher = None  # single lookups on this replica
        #: Answers, and is a standby (probed every tick; down at the first failed connect).
        self.up = False
        #: Has not replayed what the primary had WANGGE_DB_REPLICA_MAX_LAG_S ago.
        self.lagging = False
        #: Its replay position as last seen (it only grows).
        self.replayed = -1
        self.served = 0  # reads routed here (tests and the log)

    @property
    def usable(self) -> bool:
        return self.up and not self.lagging

    def saw(self, replayed: int | None) -> None:
        if replayed is not None and replayed > self.replayed:
            self.replayed = replayed

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        await self.engine.dispose()
        self.sync_engine.dispose()


class _ReplicaReads:
    """The hot pool's reads on one replica; a read it cannot serve runs on the primary."""

    def __init__(self, routing: ReadRouting, replica: Replica):
        self._routing = routing
        self._replica = replica

    async def _read(self, method: str, query, *args, **kwargs):
        try:
            return await getattr(self._replica.pool, method)(query, *args, **kwargs)
        except Exception as exc:
            if not self._routing.falls_back(self._replica, exc):
                raise
        return await getattr(self._routing.primary_pool, method)(query, *args, **kwargs)

    async def fetch(self, query, *args, **kwargs):
        return await self._read("fetch", query, *args, **kwargs)

    async def fetchrow(self, query, *args, **kwargs):
        return await self._read("fetchrow", query, *args, **kwargs)

    async def fetchval(self, query, *args, **kwargs):
        return await self._read("fetchval", query, *args, **kwargs)

    async def run(self, work):
        """Return ``await work(pool)`` on the replica's pool, or on the primary's when the
        replica cannot serve it (for reads that need a connection of their own, e.g. a
        transaction with its own settings: ``acquire`` alone would not fall back)."""
        try:
            return await work(self._replica.pool)
        except Exception as exc:
            if not self._routing.falls_back(self._replica, exc):
                raise
        return await work(self._routing.primary_pool)

    def __getattr__(self, name):
        return getattr(self._replica.pool, name)


class _WritesHeard(Listening):
    """Hear every process's writes (``wangge_writes``: "<token id> <lsn>")."""

    channel = CHANNEL
    what = "replica routing's write listener"
    on_lost = "reads go to the primary until it is back"
    log = log

    def __init__(self, url: str, routing: ReadRouting):
        self.routing = routing
        super().__init__(url)

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        token, _, lsn = payload.partition(" ")
        if token and lsn.isdigit():
            self.routing.remember(token, int(lsn))

    def _set_listening(self, listening: bool) -> None:
        self.listening = listening
        if not listening:
            self.routing.hearing = False

    def _listening_again(self) -> None:
        asyncio.ensure_future(self.routing.set_floor())


class ReadRouting:
    """Choose, per read, a replica that may serve it, or the primary (None)."""

    def __init__(
        self,
        primary_url: str,
        replica_urls: list[str],
        *,
        primary_pool,
        pool_size: int,
        wait_s: float,
        max_lag_s: float,
    ):
        self.primary_url = primary_url
        self.primary_pool = primary_pool
        self.replicas = [Replica(url, pool_size=pool_size) for url in replica_urls]
        self.wait_s = wait_s
        self.max_lag_s = max_lag_s
        #: Token id -> the primary's position after its last write.
        self.written: TTLCache[str, int] = TTLCache(maxsize=100_000, ttl=max_lag_s + 4 * TICK_S)
        #: Every read waits for this position until ``floor_until`` (writes maybe missed).
        self.floor = 0
        self.floor_until = 0.0
        #: The write listener listens and its floor is set: replicas may serve reads.
        self.hearing = False
        self._primary_positions: deque[tuple[float, int]] = deque()
        self._turn = 0
        self._tile_epoch = -1
        self._tile_lsn = 0
        self._tile_refresh: asyncio.Task | None = None
        self._listener: _WritesHeard | None = None
        self._watching: asyncio.Task | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> ReadRouting:
        from service.repositories.lookup import PointLookupBatcher

        loop = asyncio.get_running_loop()
        for replica in self.replicas:
            self._fall_back_in_threads(replica, loop)
            replica.pool = await make_pg_pool(
                replica.url,
                size=replica.pool_size,
                min_size=0,
                connect_timeout=CONNECT_TIMEOUT_S,
            )
            replica.reads = _ReplicaReads(self, replica)
            replica.batcher = PointLookupBatcher(replica.reads)
        await self._tick()
        self._listener = _WritesHeard(self.primary_url, self)
        await self._listener._connect()
        await self.set_floor()
        self._watching = asyncio.create_task(self._watch())
        return self

    def _fall_back_in_threads(self, replica: Replica, loop) -> None:
        """Make ``replica.sync_engine`` connect to the primary while the replica is down.

        Worker threads connect when they need to (SQLAlchemy's ``do_connect``): a replica
        that refuses is marked down (on the event loop) and the thread reads on a primary
        connection, used once (it is replaced at its next checkout).
        """
        primary = create_engine(sync_url(self.primary_url), poolclass=NullPool)
        cargs, cparams = primary.dialect.create_connect_args(primary.url)

        @event.listens_for(replica.sync_engine, "do_connect")
        def connect(dialect, record, args, params):
            try:
                return dialect.connect(*args, **params)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                loop.call_soon_threadsafe(self.falls_back, replica, exc)
                record.info["primary"] = True
                return primary.dialect.connect(*cargs, **cparams)

        @event.listens_for(replica.sync_engine, "checkout")
        def checkout(_dbapi, record, _proxy):
            if record.info.pop("primary", False):
                raise DisconnectionError("a primary connection stood in for the replica")

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        if self._listener is not None:
            await self._listener.close()
        for replica in self.replicas:
            await replica.close()

    async def set_floor(self) -> None:
        """Make every read wait for the primary's position now (announcements were missed)."""
        try:
            lsn = await self.primary_pool.fetchval(_PRIMARY_LSN_SQL)
        except Exception as exc:  # the primary is away; the next tick tries again
            log.warning("replica routing: no primary position (%s)", type(exc).__name__)
            return
        self.floor = max(self.floor, lsn)
        self.floor_until = time.monotonic() + self.written.ttl
        self.hearing = True

    # -- health and lag -------------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self._tick()
            except Exception:  # never let the watch die
                log.exception("replica routing: tick failed")

    async def _tick(self) -> None:
        now = time.monotonic()
        try:
            position = await self.primary_pool.fetchval(_PRIMARY_LSN_SQL)
        except Exception:
            position = None
        if position is not None:
            self._primary_positions.append((now, position))
        # The primary's position max_lag_s ago: the newest sample at least that old.
        old = None
        while self._primary_positions and self._primary_positions[0][0] <= now - self.max_lag_s:
            old = self._primary_positions.popleft()
        if old is not None:
            self._primary_positions.appendleft(old)
        threshold = old[1] if old is not None else 0
        await asyncio.gather(*(self._probe(r, threshold) for r in self.replicas))
        if not self.hearing and self._listener is not None and self._listener.listening:
            await self.set_floor()

    async def _probe(self, replica: Replica, threshold: int) -> None:
        was = replica.usable
        try:
            in_recovery, replayed = await asyncio.wait_for(
                replica.pool.fetchrow(_REPLAY_SQL), PROBE_TIMEOUT_S
            )
        except Exception as exc:
            replica.up = False
            if was:
                log.warning("replica %s is down (%s): reads go elsewhere", replica.name, exc)
            return
        replica.up = bool(in_recovery)
        if not in_recovery:
            if was:
                log.warning("replica %s is not in recovery (promoted?): not read", replica.name)
            return
        replica.saw(replayed)
        replica.lagging = replica.replayed < threshold
        if was and not replica.usable:
            log.warning("replica %s lags over %.1f s: not read", replica.name, self.max_lag_s)
        elif replica.usable and not was:
            log.info("replica %s serves reads", replica.name)

    def falls_back(self, replica: Replica, exc: BaseException) -> bool:
        """Return True if the primary should run a read ``replica`` failed (down: marked)."""
        if is_unavailable(exc):
            if replica.up:
                log.warning("replica %s is down (%s): reads go elsewhere", replica.name, exc)
            replica.up = False
            return True
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate == "25006":
            log.error("a write reached replica %s; it ran on the primary: %s", replica.name, exc)
        return sqlstate in _PRIMARY_CAN_SERVE

    # -- choosing ---------------------------------------------------------------------------
    def remember(self, token: str, lsn: int) -> None:
        """Remember that ``token`` wrote up to ``lsn``."""
        if lsn > self.written.get(token, -1):
            self.written[token] = lsn

    def position_for(self, request) -> int:
        """Return the position a read of ``request`` must see (0: anything)."""
        lsn = self.floor if time.monotonic() < self.floor_until else 0
        token = caller_of(request.scope)
        if token is not None:
            lsn = max(lsn, self.written.get(token, 0))
        sent = request.headers.get(HEADER)
        if sent is not None:
            try:
                lsn = max(lsn, parse_lsn(sent))
            except ValueError:
                raise UnprocessableError(
                    f"{HEADER} is a WAL position as the server sent it (like 0/3000060)",
                    field=HEADER,
                ) from None
        return lsn

    async def replica_for(self, request, *, at_least: int = 0) -> Replica | None:
        """Return the replica this request's reads go to, or None for the primary.

        Chosen once per request: every read connection of a request is on one server.
        """
        state = request.scope.setdefault("state", {})
        chosen = state.get(_CHOSEN, False)
        if chosen is None or (
            chosen is not False and chosen.usable and chosen.replayed >= at_least
        ):
            return chosen
        chosen = await self.choose(max(at_least, self.position_for(request)))
        state[_CHOSEN] = chosen
        return chosen

    async def choose(self, position: int) -> Replica | None:
        """Return a usable replica that has replayed ``position`` (waiting a little), or None."""
        if not self.hearing or position >= PRIMARY_ONLY:
            return None
        usable = [r for r in self.replicas if r.usable]
        if not usable:
            return None
        self._turn += 1
        for i in range(len(usable)):
            replica = usable[(self._turn + i) % len(usable)]
            if replica.replayed >= position:
                replica.served += 1
                return replica
        replica = max(usable, key=lambda r: r.replayed)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                in_recovery, replayed = await replica.pool.fetchrow(_REPLAY_SQL)
            except Exception as exc:
                if not self.falls_back(replica, exc):
                    raise
                return None
            if not in_recovery:
                replica.up = False
                return None
            replica.saw(replayed)
            if replica.replayed >= position:
                replica.served += 1
                return replica
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(POLL_S)

    def tile_position(self, cache) -> int | None:
        """Return the position a tile must be rendered at to be stored in ``cache``.

        None: the cache learnt of a change whose position is not known yet (read in the
        background meanwhile): render on the primary.
        """
        if cache.epoch == self._tile_epoch:
            return self._tile_lsn
        if self._tile_refresh is None or self._tile_refresh.done():
            self._tile_refresh = asyncio.ensure_future(self._learn_tile_position(cache))
        return None

    async def tile_replica(self, request, cache) -> Replica | None:
        """Return the replica a tile of ``request`` may be rendered on for ``cache``, or None."""
        position = self.tile_position(cache)
        if position is None:
            return None
        replica = await self.replica_for(request, at_least=position)
        # The tile route reads the cache's epoch right after its dependencies, with no await
        # in between: checked again after the last await here, the replica has replayed
        # every change the cache knows of when the route reads it.
        again = self.tile_position(cache)
        if replica is None or again is None or replica.replayed < again:
            return None
        return replica

    async def _learn_tile_position(self, cache) -> None:
        epoch = cache.epoch  # every change learnt so far committed before this read
        try:
            lsn = await self.primary_pool.fetchval(_PRIMARY_LSN_SQL)
        except Exception:
            return
        if epoch > self._tile_epoch:
            self._tile_epoch, self._tile_lsn = epoch, lsn

    # -- writes -----------------------------------------------------------------------------
    async def announce(self, token: str | None) -> int | None:
        """Return the primary's position after a write; remember and announce it for ``token``."""
        try:
            lsn = (await self.primary_pool.fetchrow(_ANNOUNCE_SQL, token or ""))[0]
        except Exception as exc:
            # The write is committed but its position unknown: this token reads on the
            # primary until it is forgotten.
            log.warning("replica routing: no position after a write (%s)", type(exc).__name__)
            if token:
                self.written[token] = PRIMARY_ONLY
            return None
        if token:
            self.remember(token, lsn)
        return lsn


class ReadYourWrites:
    """ASGI middleware: after a request that may have written, answer and remember the
    primary's position (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        routing: ReadRouting | None = getattr(scope["app"].state, "read_routing", None)
        if routing is None:
            await self.app(scope, receive, send)
            return

        async def sender(message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                lsn = await routing.announce(caller_of(scope))
                if lsn is not None:
                    headers = list(message.get("headers", []))
                    headers.append((HEADER.lower().encode(), format_lsn(lsn).encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sender)
