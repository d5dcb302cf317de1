"""``wangge analysis …``: the planning analyses from the command line.

One command per analysis, e.g. ``wangge analysis staffing --area 520121 [--json]``. Without
``--json`` a command prints the summary and the worst findings, without geometry. The
group also holds ``reach`` and ``siting`` (:mod:`service.cli.network`) and ``report``
(:mod:`service.cli.report`); :mod:`service.cli` registers them.

The CLI acts as the operator (:func:`service.cli.common.operator`), so care details are
shown and written to ``access_log`` under the token id ``cli``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer

from service.cli.common import dumps, operator, options, run

__all__ = ["app"]

app = typer.Typer(help="coverage gap analyses", no_args_is_help=True)

Area = Annotated[
    str | None, typer.Option(help="area code (default: everything)", show_default=False)
]
Generation = Annotated[
    int | None, typer.Option(help="boundary generation (default: the current one)", min=1)
]
AsJson = Annotated[bool, typer.Option("--json", help="print the full result as JSON")]
Geometry = Annotated[bool, typer.Option(help="with --json: include GeoJSON geometry")]
Limit = Annotated[int, typer.Option(help="findings to print (without --json)", min=0)]


def _compact(value: Any) -> Any:
    """Return lists and dicts as compact JSON, other values as they are."""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def _line(item: dict[str, Any]) -> str:
    fields = [
        f"{key}={_compact(value)}" for key, value in item.items() if key not in ("kind", "geometry")
    ]
    return f"{item['kind']}: " + " ".join(fields)


def _show(name: str, result: dict, *, as_json: bool, limit: int) -> None:
    if as_json:
        typer.echo(dumps(result))
        return
    area = result["area"]
    where = f"{area['code']} {area['name']} ({area['level']})" if area["code"] else "everything"
    typer.echo(f"{name} of {where}, generation {area['generation']}")
    for key, value in result["summary"].items():
        typer.echo(f"  {key}: {_compact(value)}")
    items = result["items"]
    if items and limit:
        typer.echo(f"findings (worst first, {min(limit, len(items))} of {len(items)}):")
        for item in items[:limit]:
            typer.echo("  " + _line(item))


def _analyse(ctx: typer.Context, fn: Callable[..., dict]) -> None:
    """Run analysis ``fn`` as the operator, in one transaction, and print it.

    The command's options (``ctx.params``) are the analysis' parameters, but ``--area``
    (``area_code``) and the output options ``--json``, ``--geometry`` and ``--limit``.
    """
    kwargs = options(ctx, "area", "as_json", "geometry", "limit")
    as_json = ctx.params["as_json"]
    result = run(
        lambda conn: fn(
            conn,
            principal=operator(),
            area_code=ctx.params["area"],
            geometry=as_json and ctx.params["geometry"],
            **kwargs,
        )
    )
    _show(ctx.info_name, result, as_json=as_json, limit=ctx.params["limit"])


@app.command()
def staffing(
    ctx: typer.Context,
    area: Area = None,
    generation: Generation = None,
    as_json: AsJson = False,
    geometry: Geometry = True,
    limit: Limit = 20,
) -> None:
    """1+1+1 teams: missing and doubled roles, people in several grids, redrawn grids."""
    from service.analysis import run_staffing

    _analyse(ctx, run_staffing)


@app.command()
def topology(
    ctx: typer.Context,
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

    _analyse(ctx, run_topology)


@app.command()
def organisation(
    ctx: typer.Context,
    area: Area = None,
    generation: Generation = None,
    min_staff: Annotated[int, typer.Option(help="large units need co-building", min=1)] = 50,
    as_json: AsJson = False,
    geometry: Geometry = True,
    limit: Limit = 20,
) -> None:
    """Units without a party organisation, grids without a branch, co-building gaps."""
    from service.analysis import run_organisation

    _analyse(ctx, run_organisation)


@app.command()
def care(
    ctx: typer.Context,
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

    _analyse(ctx, run_care)


@app.command()
def workload(
    ctx: typer.Context,
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

    _analyse(ctx, run_workload)
