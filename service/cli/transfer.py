"""``wangge import`` and ``wangge export``: entities from and to files.

An import is all or nothing unless ``--skip-bad``; either way every bad row is reported.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import connect, dumps, fail, operator, options, run

__all__ = ["import_entities", "export_entities"]


def _spec(entity: str):
    """Return the declaration of entity kind ``entity``, or end the command."""
    from service.specs.entity_kinds import ENTITIES

    spec = ENTITIES.get(entity)
    if spec is None:
        fail(f"unknown entity {entity!r}; one of {', '.join(ENTITIES)}")
    return spec


class _ImportProgress:
    """Show an import's progress on stderr: a line per stage, a bar while rows are written."""

    STAGES = {
        "read": "reading",
        "validate": "validating",
        "assign": "assigning cells",
        "write": "writing",
    }

    def __init__(self) -> None:
        self.bar = None
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            if stage == "write" and total > 0:
                self.bar = typer.progressbar(length=total, label="writing", file=sys.stderr)
                self.bar.__enter__()
            else:
                typer.echo(f"{self.STAGES.get(stage, stage)}…", err=True)
        if self.bar is not None:
            self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def import_entities(
    ctx: typer.Context,
    entity: Annotated[
        str, typer.Argument(help="units, facilities, members, care-households, incidents")
    ],
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    crs: Annotated[
        str | None,
        typer.Option(
            help="EPSG:4326, EPSG:4490, GCJ-02 or BD-09 (default: the file's, else WGS84)"
        ),
    ] = None,
    skip_bad: Annotated[bool, typer.Option(help="import the good rows, report the bad")] = False,
    lon_column: Annotated[str | None, typer.Option()] = None,
    lat_column: Annotated[str | None, typer.Option()] = None,
    layer: Annotated[str | None, typer.Option()] = None,
    report: Annotated[Path | None, typer.Option(help="write the full JSON report here")] = None,
) -> None:
    """Import entities from GeoJSON, CSV, GeoPackage or zipped Shapefile; all or nothing."""
    from service.transfer import import_file

    spec = _spec(entity)
    kwargs = options(ctx, "entity", "path", "report")  # crs, skip_bad, columns, layer
    progress = _ImportProgress()
    try:
        with connect() as conn, conn.begin() as tx:
            result = import_file(
                conn,
                spec,
                principal=operator(),
                data=path,
                filename=path.name,
                progress=progress,
                **kwargs,
            )
            if not result.committed:
                tx.rollback()
    finally:
        progress.close()
    _show_import(entity, result, report)
    if not result.committed:
        raise typer.Exit(code=1)


def _show_import(entity: str, result, report: Path | None) -> None:
    """Print the first problems and the counts; write the whole report to ``report``."""
    body = result.as_dict()
    if report:
        report.write_text(dumps(body, indent=1), encoding="utf-8")
    for p in body["problems"][:20]:
        typer.echo(f"row {p['row']}: {p['field']}: {p['reason']}", err=True)
    if body["problems_total"] > 20:
        typer.echo(f"… and {body['problems_total'] - 20} more problems", err=True)
    typer.echo(
        f"{entity}: {result.rows} rows, {result.accepted} accepted, {result.rejected} rejected, "
        f"{result.unassigned} outside every grid, {len(result.per_grid)} grids"
        + ("" if result.committed else " — nothing imported (use --skip-bad to keep the good)")
    )


def export_entities(
    entity: Annotated[str, typer.Argument()],
    output: Annotated[Path, typer.Argument(help="file to write")],
    format: Annotated[str, typer.Option(help="geojson, csv, gpkg or shp")] = "geojson",
) -> None:
    """Export all entities of a kind to a file."""
    from service.transfer import export_rows

    spec = _spec(entity)
    data = run(lambda c: export_rows(c, spec, principal=operator(), format=format))
    output.write_bytes(data)
    typer.echo(f"wrote {output} ({len(data):,} bytes)")
