"""``wangge incidents partitions|ensure|archive|reattach``: the monthly partitions of incidents.

Incidents are partitioned by month of ``reported_at`` in Guiyang's time (migration 0013).
``ensure`` creates the coming months (run it monthly, e.g. from cron); ``archive --before
2025-01`` detaches every month before January 2025 into schema ``archive`` with its cases'
events and photos (the API then answers for the months left); ``reattach 2024-12`` brings a
month back. Each command is one transaction: it happens whole or not at all.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

import typer

from service.cli.common import dumps, fail, run

__all__ = ["app"]

app = typer.Typer(help="Incidents: monthly partitions and their archive", no_args_is_help=True)

_MONTH = re.compile(r"^([0-9]{4})-([0-9]{2})$")


def _month(value: str, option: str) -> date:
    match = _MONTH.match(value)
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1000:
        fail(f"{option}: {value!r} is not a month YYYY-MM (e.g. 2025-01)")
    return date(int(match[1]), int(match[2]), 1)


def _database_error(exc: Exception) -> str:
    """Return PostgreSQL's own message of a failed command (first line)."""
    orig = getattr(exc, "orig", None)
    diag = getattr(orig, "diag", None)
    message = getattr(diag, "message_primary", None) or str(orig or exc)
    return message.splitlines()[0]


def _run(fn, lock_timeout_s: float | None = None):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    def body(conn):
        if lock_timeout_s is not None:
            conn.execute(text(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'"))
        return fn(conn)

    try:
        return run(body)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) is None:
            raise
        fail(_database_error(exc))


LockTimeout = Annotated[
    float,
    typer.Option(
        help="seconds to wait for the lock on incident (DETACH/ATTACH take it briefly; a "
        "long-running read holds it off) before giving up, changing nothing",
        min=0.1,
    ),
]


@app.command("partitions")
def partitions(
    counts: Annotated[bool, typer.Option(help="count each partition's rows")] = True,
) -> None:
    """List incident partitions and archived months as JSON lines (oldest first)."""
    from service.repositories.partitions import list_partitions

    for part in _run(lambda conn: list_partitions(conn, counts=counts)):
        typer.echo(dumps(part))


@app.command("ensure")
def ensure(
    ahead: Annotated[
        int, typer.Option(help="months after the current one to create", min=0, max=120)
    ] = 12,
    since: Annotated[
        str | None,
        typer.Option(help="also every month from this one (YYYY-MM), e.g. before an import"),
    ] = None,
    lock_timeout: LockTimeout = 10.0,
) -> None:
    """Create the partitions of this month and the next AHEAD months (rows the default
    partition holds for them move in). Prints the partitions created."""
    from service.repositories.partitions import ensure_partitions

    start = _month(since, "--since") if since is not None else None
    made = _run(lambda conn: ensure_partitions(conn, months_ahead=ahead, since=start), lock_timeout)
    typer.echo(dumps({"created": made}))


@app.command("archive")
def archive(
    before: Annotated[str, typer.Option(help="archive every month before this one (YYYY-MM)")],
    lock_timeout: LockTimeout = 10.0,
) -> None:
    """Detach every month before BEFORE into schema archive, with its cases' events and
    photos. The API answers for the months left. Prints the months archived."""
    from service.repositories.partitions import archive_months

    cutoff = _month(before, "--before")
    done = _run(lambda conn: archive_months(conn, before=cutoff), lock_timeout)
    typer.echo(dumps({"archived": done}))


@app.command("reattach")
def reattach(
    month: Annotated[str, typer.Argument(help="the archived month (YYYY-MM)")],
    lock_timeout: LockTimeout = 10.0,
) -> None:
    """Bring an archived month back, with its events and photos (rows filed for it since it
    was archived join it)."""
    from service.repositories.partitions import reattach_month

    first = _month(month, "MONTH")
    done = _run(lambda conn: reattach_month(conn, month=first), lock_timeout)
    typer.echo(dumps({"reattached": done}))
