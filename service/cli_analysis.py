"""``wangge analysis …``: the planning analyses from the command line.

One command per analysis, e.g. ``wangge analysis staffing --area 520121 [--json]``. The CLI
acts as an operator with the admin role (it has the database already), so care details are
shown and written to ``access_log`` under the token id ``cli``. Without ``--json`` it prints
the summary and the worst findings, without geometry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer

__all__ = ["app"]

app = typer.Typer(
    help="planning analyses: staffing, topology, organisation, care, workload",
    no_args_is_help=True,
)

Area = Annotated[
    str | None, typer.Option(help="area code (default: everything)", show_default=False)
]
Generation = Annotated[
    int | None, typer.Option(help="boundary generation (default: the current one)", min=1)
]
AsJson = Annotated[bool, typer.Option("--json", help="print the full result as JSON")]
Geometry = Annotated[bool, typer.Option(help="with --json: include GeoJSON geometry")]
Limit = Annotated[int, typer.Option(help="findings to print (without --json)", min=0)]


def _principal():
    from service.auth import OPERATOR

    return OPERATOR


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _execute(fn: Callable[..., dict], **kwargs: Any) -> dict:
    """Run one analysis in a transaction (care logs its detail reads); errors without traces."""
    from service.db import make_engine
    from service.errors import WanggeError
    from service.settings import get_settings

    engine = make_engine(get_settings().db.resolved_url())
    try:
        with engine.begin() as conn:
            return fn(conn, principal=_principal(), **kwargs)
    except WanggeError as exc:
        label = f"{exc.field}: " if exc.field else ""
        _fail(f"{label}{exc.detail}")
    finally:
        engine.dispose()


def _line(item: dict[str, Any]) -> str:
    fields = []
    for key, value in item.items():
        if key in ("kind", "geometry"):
            continue
        if isinstance(value, list | dict):
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        fields.append(f"{key}={value}")
    return f"{item['kind']}: " + " ".join(fields)


def _show(name: str, result: dict, *, as_json: bool, limit: int) -> None:
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, default=str))
        return
    area = result["area"]
    where = f"{area['code']} {area['name']} ({area['level']})" if area["code"] else "everything"
    typer.echo(f"{name} of {where}, generation {area['generation']}")
    for key, value in result["summary"].items():
        if isinstance(value, list | dict):
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        typer.echo(f"  {key}: {value}")
    items = result["items"]
    if items and limit:
        typer.echo(f"findings (worst first, {min(limit, len(items))} of {len(items)}):")
        for item in items[:limit]:
            typer.echo("  " + _line(item))


@app.command()
def staffing(
    area: Area = None,
    generation: Generation = None,
    as_json: AsJson = False,
    geometry: Geometry = True,
    limit: Limit = 20,
) -> None:
    """1+1+1 teams: missing and doubled roles, people in several grids, redrawn grids."""
    from service.analysis import run_staffing

    result = _execute(
        run_staffing, area_code=area, generation=generation, geometry=as_json and geometry
    )
    _show("staffing", result, as_json=as_json, limit=limit)


@app.command()
def topology(
    area: Area = None,
    generation: Generation = None,
    min_sliver_m2: Annotated[float, typer.Option(help="slivers are smaller than this", min=0)] = (
        100.0
    ),
    as_json: AsJson = False,
    geometry: Geometry = True,
    limit: Limit = 20,
) -> None:
    """Do children tile their parents: gaps, overlaps, outside pieces, slivers, multipart."""
    from service.analysis import run_topology

    result = _execute(
        run_topology,
        area_code=area,
        generation=generation,
        min_sliver_m2=min_sliver_m2,
        geometry=as_json and geometry,
    )
    _show("topology", result, as_json=as_json, limit=limit)


@app.command()
def organisation(
    area: Area = None,
    generation: Generation = None,
    min_staff: Annotated[int, typer.Option(help="large units need co-building", min=1)] = 50,
    as_json: AsJson = False,
    geometry: Geometry = True,
    limit: Limit = 20,
) -> None:
    """Units without a party organisation, grids without a branch, co-building gaps."""
    from service.analysis import run_organisation

    result = _execute(
        run_organisation,
        area_code=area,
        generation=generation,
        min_staff=min_staff,
        geometry=as_json and geometry,
    )
    _show("organisation", result, as_json=as_json, limit=limit)


@app.command()
def care(
    area: Area = None,
    generation: Generation = None,
    min_contacts: Annotated[int, typer.Option(help="fewest households per cadre", min=0)] = 5,
    max_contacts: Annotated[int, typer.Option(help="most households per cadre", min=0)] = 10,
    as_json: AsJson = False,
    geometry: Geometry = True,
    limit: Limit = 20,
) -> None:
    """Six must-visit households: without cadre, cadre load, cadre from another community."""
    from service.analysis import run_care

    result = _execute(
        run_care,
        area_code=area,
        generation=generation,
        min_contacts=min_contacts,
        max_contacts=max_contacts,
        geometry=as_json and geometry,
    )
    _show("care", result, as_json=as_json, limit=limit)


@app.command()
def workload(
    area: Area = None,
    generation: Generation = None,
    since: Annotated[
        datetime | None, typer.Option(help="period start (default: until − 90 days)")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="period end (default: now)")] = None,
    overdue_hours: Annotated[float, typer.Option(help="open longer is overdue", min=0)] = 72.0,
    z: Annotated[float, typer.Option(help="outlier beyond z standard deviations", min=0)] = 2.0,
    median_ratio: Annotated[float, typer.Option(help="outlier above ratio × median")] = 3.0,
    as_json: AsJson = False,
    geometry: Geometry = True,
    limit: Limit = 20,
) -> None:
    """Incidents, backlog and overdue cases per grid team, with outliers."""
    from service.analysis import run_workload

    result = _execute(
        run_workload,
        area_code=area,
        generation=generation,
        since=since,
        until=until,
        overdue_hours=overdue_hours,
        z=z,
        median_ratio=median_ratio,
        geometry=as_json and geometry,
    )
    _show("workload", result, as_json=as_json, limit=limit)
