"""Return database engines and connections for the service, the CLI and migrations.

The rule for reaching the database: three ways, each for one kind of path.

1. **SQLAlchemy async engine** (asyncpg driver; ``app.state.engine``, handed to handlers as
   ``ConnDep`` / ``WriteConnDep`` by :mod:`service.deps`): the ordinary reads and writes of
   request handlers (areas, entities, generations, tokens, health, and the token check on a
   cache miss). The default for new code. A ``WriteConnDep`` is one transaction, committed
   when the request succeeds; repository functions never commit. Synchronous repository
   functions (:mod:`service.repositories.boundaries`, :func:`service.auth.create_token`)
   run on the request's connection through ``AsyncConnection.run_sync``, inside that
   transaction.

2. **The raw asyncpg "hot pool"** (:func:`make_pg_pool`; ``app.state.pg_pool``, ``PoolDep``):
   point lookups, vector tiles, layer items and OGC features, and resolving the generation
   those read. A point lookup costs ~0.1 ms in PostGIS, so SQLAlchemy's per-call Python was
   the limit; here statements are fixed strings run as prepared statements, sessions use
   generic plans (planning each call cost more than running it: 0.3 ms against 0.15 ms for
   one point), and a connection goes back to the pool without asyncpg's reset round trip.
   That is safe only because nothing on this pool changes session state: no ``SET``, no
   ``LISTEN``, no temporary tables. Everything here is a single read-only statement, with
   one exception: **case actions** (:func:`service.dispatch.cases.act_on_case`) read the
   case and write its event with the case it leaves in one statement (its own transaction),
   or with an ``Idempotency-Key`` in a short transaction on one connection; asyncpg rolls
   back a transaction left open before a connection goes back, reset query or not. Reason:
   an action's own Python, not the database, was what limited actions per second (3.4 ms
   CPU per action on SQLAlchemy, about 1.5 ms here; bench ``dispatch --sections actions``).
   ``GET /cases/{id}`` (:func:`service.dispatch.cases.get_case`) reads here as well: one
   statement naming the case's month by a sub-select of ``incident_month``, which the generic
   plan prunes on as it runs (bench ``cases``: 0.47x the CPU of the SQLAlchemy read by id
   alone at 1 M incidents).
   These paths keep their tuned SQL (``service/sql/*.sql``, SQL built from the layer
   declarations) instead of statements built on :mod:`service.tables`.

3. **SQLAlchemy sync engine** (psycopg 3; :func:`make_engine`): the CLI, Alembic migrations,
   tests and fixtures, and in the app ``app.state.sync_engine`` (``SyncEngineDep``) for work
   that would block the event loop, run in a worker thread (``run_in_threadpool``,
   ``asyncio.to_thread``): bulk imports and exports (psycopg's ``COPY`` streaming, numpy
   cell assignment), activating a generation (re-maps every entity), analyses, reach and
   reports. Such work opens its own transaction (``engine.begin()``).

One more connection is outside the pools: the tile cache's ``LISTEN`` on a dedicated
asyncpg connection (:mod:`service.tiles.listener`), since listening is session state.

**Read replicas** (``DATABASE_REPLICA_URLS``; :mod:`service.replicas`): the read paths —
``ConnDep``, ``PoolDep``, single lookups and ``ReadSyncEngineDep`` (analyses that only read,
the coverage report) — may be served by a streaming replica, which has engines and a hot
pool of its own (made here, with a short connect timeout);
a caller reads its own writes there or is served by the primary. A replica refuses every
write, so: **a write, and a read that must see the latest commit, names the primary** —
``WriteConnDep``, ``request.app.state.engine``, ``PrimaryPoolDep`` /
``request.app.state.pg_pool``, ``SyncEngineDep`` — never ``ConnDep``, ``PoolDep`` or
``ReadSyncEngineDep``. The
``LISTEN`` connections (tile cache, case stream) and what they read after a notification are
the primary's: a standby cannot listen, and may not have replayed what was notified.

Statements: on the SQLAlchemy paths, build them from the declared tables
(:mod:`service.tables`, GeoAlchemy2 geometry columns) where that reads as well as the SQL;
PostGIS-heavy or set-based SQL stays a ``text()`` string. Always bound parameters;
identifiers only from fixed mappings.

When the database goes away: requests answer 503 (:mod:`service.outage`, the handlers in
:mod:`service.errors`); once it is back, the async engine replaces a pooled connection the
server closed as it hands it out, the hot pool runs a read once more on one that died
under it, and a GET whose connection died is run again once. No ping per request.
"""

from __future__ import annotations

import re
from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.outage import LOST_CONNECTION_ERRORS

__all__ = [
    "sync_url",
    "async_url",
    "make_engine",
    "make_async_engine",
    "migrate",
    "load_sql",
    "positional",
    "make_pg_pool",
    "ensure_database",
]


def _with_driver(url: str, driver: str) -> str:
    scheme, rest = url.split("://", 1)
    base = scheme.split("+", 1)[0]
    if base == "postgres":
        base = "postgresql"
    return f"{base}+{driver}://{rest}"


def sync_url(url: str) -> str:
    """Return ``url`` with the psycopg (v3) driver, for the CLI and migrations."""
    return _with_driver(url, "psycopg")


def async_url(url: str) -> str:
    """Return ``url`` with the asyncpg driver, for the HTTP service."""
    return _with_driver(url, "asyncpg")


def make_engine(url: str, *, connect_timeout: int | None = None) -> Engine:
    """Return a synchronous (psycopg) engine on ``url``: CLI, migrations, worker threads."""
    args = {} if connect_timeout is None else {"connect_args": {"connect_timeout": connect_timeout}}
    return create_engine(sync_url(url), pool_pre_ping=True, **args)


def make_async_engine(
    url: str, *, pool_size: int = 10, connect_timeout: float | None = None
) -> AsyncEngine:
    """Return the service's SQLAlchemy asyncpg engine on ``url`` (request handlers).

    ``connect_timeout`` bounds a connect (asyncpg's default is 60 s): the replicas' engines
    set it, so a replica that stopped answering falls back to the primary quickly.
    """
    connect_args: dict = {"server_settings": {"application_name": "wangge", "jit": "off"}}
    if connect_timeout is not None:
        connect_args["timeout"] = connect_timeout
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine, "checkout", _drop_closed_connection)
    return engine


def _drop_closed_connection(dbapi_connection, _record, _proxy) -> None:
    # A database restart closes every pooled connection, and the first request after it
    # failed on one. asyncpg knows a socket the server closed without a round trip, so
    # this check is free (pool_pre_ping would cost a round trip per request); on
    # DisconnectionError the pool connects afresh.
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def alembic_config(url: str) -> Config:
    """Return the Alembic configuration for the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", "service:migrations")
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def load_sql(name: str) -> str:
    """Return the text of ``service/sql/<name>.sql``."""
    return resources.files("service.sql").joinpath(f"{name}.sql").read_text(encoding="utf-8")


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if the server lacks it; return True if created."""
    from sqlalchemy.engine import make_url

    target = make_url(sync_url(url))
    admin = target.set(database="postgres")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.exec_driver_sql(
                "SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)
            ).scalar()
            if exists:
                return False
            conn.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
            return True
    finally:
        engine.dispose()


_NAMED = re.compile(r"(?<![:\w]):([a-zA-Z_]\w*)")


def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """Return ``sql`` with ``:name`` parameters as asyncpg's ``$n`` and the names in order.

    Examples
    --------
    >>> positional("SELECT :a, :b, :a")
    ('SELECT $1, $2, $1', ('a', 'b'))
    """
    names: list[str] = []

    def repl(match: re.Match) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(repl, sql), tuple(names)


async def make_pg_pool(
    url: str, *, size: int = 10, min_size: int = 1, connect_timeout: float = 60.0
):
    """Return the asyncpg pool of the hot read paths (lookups, tiles, layer items).

    See the module docstring for why these skip SQLAlchemy and what may run here. A
    replica's pool has ``min_size=0`` (the app starts while a replica is down) and a short
    ``connect_timeout``.
    """
    import asyncpg

    class _NoResetConnection(asyncpg.Connection):
        # The hot pool runs single read-only statements and never changes session state,
        # so the reset round trip asyncpg makes on every release is pure latency.
        def get_reset_query(self) -> str:
            return ""

    class _HotPool(asyncpg.Pool):
        # asyncpg replaces a connection it knows is closed, but one the server dropped
        # unseen (a restart, a network cut) fails its statement. Every statement here is
        # one read, so it runs again, once, on a fresh connection. Free until it happens:
        # no ping before use.
        async def fetch(self, query, *args, **kwargs):
            try:
                return await super().fetch(query, *args, **kwargs)
            except LOST_CONNECTION_ERRORS:
                return await super().fetch(query, *args, **kwargs)

        async def fetchrow(self, query, *args, **kwargs):
            try:
                return await super().fetchrow(query, *args, **kwargs)
            except LOST_CONNECTION_ERRORS:
                return await super().fetchrow(query, *args, **kwargs)

        async def fetchval(self, query, *args, **kwargs):
            try:
                return await super().fetchval(query, *args, **kwargs)
            except LOST_CONNECTION_ERRORS:
                return await super().fetchval(query, *args, **kwargs)

    dsn = url.split("://", 1)[1]
    # asyncpg.create_pool's defaults, spelled out: it cannot build a subclass.
    return await _HotPool(
        f"postgresql://{dsn}",
        min_size=min_size,
        max_size=size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        record_class=asyncpg.Record,
        connection_class=_NoResetConnection,
        timeout=connect_timeout,
        # Generic plans: the hot statements are fixed and planning them anew per call cost
        # more than running them (0.3 ms against 0.15 ms for one point).
        server_settings={
            "application_name": "wangge-hot",
            "jit": "off",
            "plan_cache_mode": "force_generic_plan",
            # Map and lookup queries are bounded: a runaway request fails fast.
            "statement_timeout": "15000",
        },
    )
