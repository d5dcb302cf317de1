"""``wangge db start|stop|url`` (the local cluster) and ``wangge migrate`` (the schema)."""

from __future__ import annotations

import os

import typer

from service.cli.common import database_url

__all__ = ["app", "migrate"]

app = typer.Typer(help="the project's local PostgreSQL + PostGIS cluster", no_args_is_help=True)


@app.command("start")
def db_start() -> None:
    """Initialise (first time) and start the local cluster, and create the database."""
    from service.db import ensure_database
    from service.localdb import LocalCluster

    if os.environ.get("DATABASE_URL"):
        ensure_database(database_url())
        typer.echo("DATABASE_URL is set: using that server, no local cluster started")
        return
    cluster = LocalCluster.from_env()
    cluster.start()
    ensure_database(cluster.url)
    typer.echo(f"PostgreSQL running: {cluster.url} (data in {cluster.datadir})")


@app.command("stop")
def db_stop() -> None:
    """Stop the local cluster (its data is kept)."""
    from service.localdb import LocalCluster

    LocalCluster.from_env().stop()
    typer.echo("local PostgreSQL stopped")


@app.command("url")
def db_url() -> None:
    """Print the database URL in use."""
    typer.echo(database_url())


def migrate() -> None:
    """Apply the database migrations (idempotent)."""
    from service.db import migrate as run_migrations

    run_migrations(database_url())
    typer.echo("database schema is up to date")
