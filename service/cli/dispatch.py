"""``wangge dispatch sweep``: raise overdue flags and escalations whose time has come."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from service.cli.common import database_url, dumps, fail

__all__ = ["app"]

app = typer.Typer(help="Command and dispatch: the case deadlines", no_args_is_help=True)


@app.command("sweep")
def sweep(
    at: Annotated[
        str | None,
        typer.Option(
            help="judge deadlines as at this ISO time with its zone, e.g. "
            "2025-05-01T09:30:00+08:00 (default: the database's now)"
        ),
    ] = None,
) -> None:
    """Flag every case past its step's deadline as overdue and escalate those past it by the
    grace (WANGGE_DISPATCH_ESCALATE_AFTER_MINUTES), once each, as the servers do every
    WANGGE_DISPATCH_SWEEP_SECONDS. Prints what it did as JSON."""
    import asyncio
    from datetime import timedelta

    from service.db import make_async_engine
    from service.dispatch.deadlines import sweep_deadlines
    from service.settings import get_settings

    now = None
    if at is not None:
        try:
            now = datetime.fromisoformat(at)
        except ValueError:
            fail(f"--at: {at!r} is not an ISO date and time")
        if now.tzinfo is None:
            fail(f"--at: {at!r} needs its time zone, e.g. +08:00 or Z")
    grace = timedelta(minutes=get_settings().dispatch.escalate_after_minutes)

    async def main():
        engine = make_async_engine(database_url(), pool_size=1)
        try:
            return await sweep_deadlines(engine, now=now, escalate_after=grace)
        finally:
            await engine.dispose()

    result = asyncio.run(main())
    typer.echo(dumps(result.summary()))
