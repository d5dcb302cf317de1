"""Tell a database that is away from every other error, for the three drivers wangge uses.

While PostgreSQL is stopped, restarting or refusing connections, a request cannot be
served, but nothing is wrong with it: the API answers ``503`` with ``Retry-After``
(:mod:`service.errors`), and the CLI says so in one line (:mod:`service.cli`). The same
failures arrive in many shapes, depending on the path and the moment:

- asyncpg (the hot pool, and under SQLAlchemy's async engine): a refused or reset socket
  is a plain ``OSError`` raised from the driver's connect; a connection that died under a
  statement is ``ConnectionDoesNotExistError`` (SQLSTATE class 08); a server going down or
  starting up answers ``AdminShutdownError``, ``CrashShutdownError``,
  ``CannotConnectNowError`` (57P01-57P03); a full server ``TooManyConnectionsError`` (53300).
- SQLAlchemy wraps what happens on a connection in a ``DBAPIError`` (``InterfaceError``,
  ``OperationalError``), and marks those it judged a disconnect ``connection_invalidated``.
- psycopg (the sync engine) raises ``OperationalError`` with no SQLSTATE when the
  connection failed or was lost, and the server's codes above otherwise.

Precision matters: a statement timeout is an ``OperationalError`` too (57014), invalid
query input an asyncpg ``InterfaceError``, a failed file write an ``OSError``; those are
not outages and stay server errors.
"""

from __future__ import annotations

import os

import asyncpg
import psycopg
from sqlalchemy.exc import DBAPIError

__all__ = [
    "RETRY_AFTER_S",
    "UNAVAILABLE_ERRORS",
    "LOST_CONNECTION_ERRORS",
    "is_unavailable",
    "is_lost_connection",
    "reason",
]

#: What a 503 tells clients to wait before retrying: the pools reconnect on the next
#: request and the tile listener within 2 s of the database's return.
RETRY_AFTER_S = 5

#: The exception classes that may mean an unreachable database; :func:`is_unavailable`
#: decides for each instance (these are the keys of the error handler table).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    psycopg.OperationalError,
    DBAPIError,
    OSError,
)

#: asyncpg errors of a connection that died under a statement (the server restarted, or
#: dropped it): a read-only statement can be run again, once, on a fresh connection.
LOST_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    ConnectionResetError,
)

# 08: connection exception; 57P01-57P03: admin shutdown, crash shutdown, cannot connect
# now (starting up or shutting down); 53300: too many connections.
_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
_DRIVERS = ("asyncpg", "psycopg", "sqlalchemy")


def _sqlstate_unavailable(sqlstate: str | None) -> bool:
    return sqlstate is not None and (sqlstate.startswith("08") or sqlstate in _SQLSTATES)


def _raised_in_driver(exc: BaseException) -> bool:
    # An OSError is an outage only if a database driver raised it (its connect or its
    # socket); one from a file or anything else is a server error.
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith(_DRIVERS):
            return True
        tb = tb.tb_next
    return False


def is_unavailable(exc: BaseException) -> bool:
    """Return True if ``exc`` means the database is unreachable, down or restarting."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        # SQLAlchemy's asyncpg adapter keeps asyncpg's own error as the cause.
        cause = getattr(orig, "__cause__", None)
        return (orig is not None and is_unavailable(orig)) or (
            cause is not None and is_unavailable(cause)
        )
    if isinstance(exc, psycopg.Error):
        # No SQLSTATE: the client's side of the connection failed (refused, lost, closed).
        return isinstance(exc, psycopg.OperationalError) and (
            exc.sqlstate is None or _sqlstate_unavailable(exc.sqlstate)
        )
    if isinstance(exc, asyncpg.PostgresError):
        return _sqlstate_unavailable(exc.sqlstate)
    if isinstance(exc, asyncpg.InterfaceError):
        return "connection is closed" in str(exc)
    if isinstance(exc, OSError):
        return _raised_in_driver(exc)
    return False


def is_lost_connection(exc: BaseException) -> bool:
    """Return True if ``exc`` is a pooled connection that died (not a failed connect).

    Such a connection is replaced on the next use, so an idempotent request may simply be
    run again; a failed connect would only fail again.
    """
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated
    return isinstance(exc, LOST_CONNECTION_ERRORS) and is_unavailable(exc)


def reason(exc: BaseException) -> str:
    """Return why the database is unavailable, in a few words (``connection refused``)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        # asyncio's strerror names the address ("Connect call failed (...)"): the errno says why.
        text = os.strerror(exc.errno)
    else:
        # psycopg: "connection failed: connection to server at ..., port 5432 failed:
        # Connection refused\n\tIs the server running ...": the last clause of line one.
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        text = lines[0].rsplit(": ", 1)[-1]
    return text[:1].lower() + text[1:]
