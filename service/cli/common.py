"""What every ``wangge`` command shares: the database, the operator, errors and JSON output.

The CLI acts as :func:`operator`: an operator with the admin role (it holds the database
already), so care details are shown and their reads logged under the token id ``cli``.

Heavy imports (SQLAlchemy, the service) happen inside the functions, so ``wangge --help``
stays quick.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from service.auth import Principal
    from service.errors import WanggeError

__all__ = [
    "operator",
    "database_url",
    "settings",
    "fail",
    "database_unreachable",
    "connect",
    "run",
    "run_timed",
    "options",
    "dumps",
    "write_json",
]

T = TypeVar("T")


def operator() -> Principal:
    """Return the principal every command acts as (:data:`service.auth.OPERATOR`)."""
    from service.auth import OPERATOR

    return OPERATOR


def database_url() -> str:
    """Return the URL of the configured database (``DATABASE_URL`` or the local cluster)."""
    return settings().db.resolved_url()


def settings():
    """Return the service's settings; a setting that cannot work (``WANGGE_BASEMAP=bogus``,
    a keyed basemap without its key) ends the command in one line naming it, without the
    values read (a provider key stays out of the terminal and the logs)."""
    from pydantic import ValidationError

    from service.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        said = []
        for error in exc.errors(include_input=False, include_url=False):
            msg = error["msg"].removeprefix("Value error, ")
            where = ".".join(str(p) for p in error.get("loc", ()))
            said.append(msg if msg.startswith("WANGGE_") or not where else f"{where}: {msg}")
        fail("; ".join(said) or f"{exc.title}: invalid settings")


def fail(message: str) -> NoReturn:
    """End the command with ``error: message`` on stderr and exit code 1."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def database_unreachable(exc: BaseException) -> str | None:
    """Return one line saying the database is unreachable and why, if ``exc`` means so."""
    from sqlalchemy.engine import make_url

    from service.db import sync_url
    from service.outage import is_unavailable, reason

    if not is_unavailable(exc):
        return None
    url = make_url(sync_url(database_url()))
    return f"the database at {url.host}:{url.port or 5432} is unreachable: {reason(exc)}"


def describe(exc: WanggeError) -> str:
    """Return a domain error as one line, led by the input at fault (unless it names it first)."""
    if exc.field and not exc.detail.startswith(exc.field):
        return f"{exc.field}: {exc.detail}"
    return exc.detail


@contextmanager
def connect() -> Iterator[Connection]:
    """Yield a connection to the configured database; a domain error ends the command.

    The error is reported by :func:`fail` without a traceback; the engine is disposed of.
    """
    from service.db import make_engine
    from service.errors import WanggeError

    engine = make_engine(database_url())
    try:
        with engine.connect() as conn:
            yield conn
    except WanggeError as exc:
        fail(describe(exc))
    finally:
        engine.dispose()


def run(fn: Callable[[Connection], T]) -> T:
    """Return ``fn(conn)`` run in one transaction, committed when it returns.

    Analyses run here too: the care analysis logs its detail reads to ``access_log``.
    """
    with connect() as conn, conn.begin():
        return fn(conn)


def run_timed(fn: Callable[[Connection], T]) -> tuple[T, float]:
    """Return ``(fn(conn), seconds fn took)``, run as :func:`run` runs it."""

    def timed(conn: Connection) -> tuple[T, float]:
        started = time.perf_counter()
        return fn(conn), time.perf_counter() - started

    return run(timed)


def options(ctx: typer.Context, *leave_out: str) -> dict[str, Any]:
    """Return the command's parameters (``ctx.params``) but ``leave_out``.

    For a command whose parameters are named as the keywords of the function it runs (the
    flags may read otherwise, e.g. ``--area`` for ``area_code``): it passes them on at once.
    """
    return {name: value for name, value in ctx.params.items() if name not in leave_out}


def dumps(body: Any, *, indent: int | None = None) -> str:
    """Return ``body`` as JSON text (UTF-8 kept, dates and decimals as strings)."""
    return json.dumps(body, ensure_ascii=False, indent=indent, default=str)


def write_json(target: Path | None, body: Any) -> None:
    """Write ``body`` as indented JSON to ``target`` (``-``: stdout; None: nowhere)."""
    if target is None:
        return
    text = dumps(body, indent=1)
    if str(target) == "-":
        sys.stdout.write(text + "\n")
    else:
        target.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {target}", err=True)
