"""The ``wangge`` command: what operators do without HTTP.

This module is the command table: every command and group, in the order ``wangge --help``
lists them. Each command lives in the module of its group; what they share (the database,
the operator principal, errors, JSON output) is in :mod:`service.cli.common`.

==========================================  ============================================
``wangge db start|stop|url``, ``migrate``   :mod:`service.cli.db`
``import-admin``, ``import-areas``,         :mod:`service.cli.boundaries`
``generation list|new|activate``
``token create|list|revoke``                :mod:`service.cli.tokens`
``demo``                                    :mod:`service.cli.demo`
``serve``                                   :mod:`service.cli.serve`
``import``, ``export``                      :mod:`service.cli.transfer`
``map``                                     :mod:`service.cli.maps`
``analysis staffing|topology|organisation|  :mod:`service.cli.analysis`
care|workload``
``analysis reach|siting``,                  :mod:`service.cli.network`
``network import``
``analysis report``                         :mod:`service.cli.report`
``dispatch sweep``                          :mod:`service.cli.dispatch`
``incidents partitions|ensure|archive|      :mod:`service.cli.archive`
reattach``
==========================================  ============================================

A new command goes into the module of its group (or a new module for a new group) and is
registered here.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from service.cli import (
    analysis,
    archive,
    boundaries,
    db,
    demo,
    dispatch,
    maps,
    network,
    report,
    serve,
    tokens,
    transfer,
)

__all__ = ["app"]


class _Commands(TyperGroup):
    # Every command reaches the database its own way (the sync engine, migrations, the
    # asyncpg pool of `map`): a database that is away ends any of them in one line, here.
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from service.cli.common import database_unreachable

            message = database_unreachable(exc)
            if message is None:
                raise
            typer.secho(f"wangge: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None


app = typer.Typer(help="wangge: grid management on PostGIS", no_args_is_help=True, cls=_Commands)

app.command()(db.migrate)
app.command("import-admin")(boundaries.import_admin)
app.command("import-areas")(boundaries.import_areas)
app.command()(demo.demo)
app.command()(serve.serve)
app.command("import")(transfer.import_entities)
app.command("export")(transfer.export_entities)
app.command("map")(maps.map_page)

analysis.app.command("reach")(network.reach)
analysis.app.command("siting")(network.siting)
analysis.app.command("report")(report.report)

app.add_typer(db.app, name="db")
app.add_typer(tokens.app, name="token")
app.add_typer(boundaries.generation_app, name="generation")
app.add_typer(analysis.app, name="analysis")
app.add_typer(network.app, name="network")
app.add_typer(dispatch.app, name="dispatch")
app.add_typer(archive.app, name="incidents")
