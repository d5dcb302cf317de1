"""``wangge network import`` and ``wangge analysis reach|siting``: reach and siting.

``app`` is the ``network`` group; :func:`reach` and :func:`siting` join the ``analysis``
group (:mod:`service.cli` registers them). Results print as a short table; ``--json FILE``
writes the whole answer (``-`` for stdout, then without the table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from geo.reach import DEFAULT_DETOUR, DEFAULT_FRONTAGE_M, DEFAULT_MINUTES, WALK_SPEED_M_PER_MIN
from service.cli.common import fail, operator, options, run_timed, write_json

__all__ = ["app", "network_import", "reach", "siting"]

app = typer.Typer(help="the road network walked by reach analyses", no_args_is_help=True)


def _pct(value) -> str:
    return "   –  " if value is None else f"{100 * value:5.1f}%"


Area = Annotated[
    str | None, typer.Option("--area", help="area code (default: everything; the CLI is admin)")
]
Generation = Annotated[int | None, typer.Option(help="boundary generation (default: current)")]
Minutes = Annotated[float, typer.Option(help="walking time, minutes")]
Speed = Annotated[float, typer.Option("--speed", help="walking speed, metres per minute")]
Detour = Annotated[float, typer.Option(help="straight line: walked ÷ straight distance")]
Kinds = Annotated[
    str | None,
    typer.Option(help="facility kinds that serve, comma-separated (default: halls, stations)"),
]
JsonOut = Annotated[
    Path | None, typer.Option("--json", help="write the whole answer here (- = stdout)")
]


@app.command("import")
def network_import(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".gpkg or .geojson")],
    layer: Annotated[str | None, typer.Option(help="GeoPackage layer")] = None,
    crs: Annotated[
        str | None, typer.Option(help="override the file's CRS: EPSG code, GCJ-02, BD-09")
    ] = None,
    name: Annotated[str | None, typer.Option(help="a name for this import")] = None,
    append: Annotated[bool, typer.Option(help="add to the stored network")] = False,
    snap_m: Annotated[float, typer.Option(help="ends closer than this join, metres")] = 1.0,
    node: Annotated[
        str, typer.Option(help="split lines at: vertices (shared), crossings, endpoints")
    ] = "vertices",
) -> None:
    """Import road lines (GeoPackage, GeoJSON) as the routable walking network."""
    from service.analysis.network import import_network

    kwargs = options(ctx, "path")  # layer, crs, name, append, snap_m, node
    report, elapsed = run_timed(
        lambda conn: import_network(
            conn, principal=operator(), data=path, filename=path.name, **kwargs
        )
    )
    typer.echo(
        f"network import {report['import_id']}: {report['features']} lines → "
        f"{report['edges']} edges, {report['vertices']} vertices, {report['length_km']} km; "
        f"{report['components']} connected parts (largest {_pct(report['largest_component_share'])}"
        f" of the length) in {elapsed:.1f} s"
    )
    if not report["pgrouting"]:
        typer.secho(
            "warning: pgRouting is not installed: network reach will refuse",
            fg=typer.colors.YELLOW,
            err=True,
        )


def reach(
    ctx: typer.Context,
    area_code: Area = None,
    minutes: Minutes = DEFAULT_MINUTES,
    speed_m_per_min: Speed = WALK_SPEED_M_PER_MIN,
    detour: Detour = DEFAULT_DETOUR,
    use_network: Annotated[
        bool | None,
        typer.Option(
            "--network/--straight",
            help="walk the road network, or straight lines "
            "(default: the network when one is imported here)",
        ),
    ] = None,
    frontage_m: Annotated[
        float, typer.Option(help="network: served strip along streets, m")
    ] = DEFAULT_FRONTAGE_M,
    kinds: Kinds = None,
    rank_by: Annotated[str, typer.Option(help="area, households or units")] = "area",
    generation: Generation = None,
    top: Annotated[int, typer.Option(help="communities to list")] = 15,
    json_out: JsonOut = None,
) -> None:
    """Who and what lies beyond a walk of N minutes from a service facility, per community."""
    from service.analysis.reach import run_reach

    kwargs = options(ctx, "top", "json_out")
    geometry = json_out is not None
    body, elapsed = run_timed(
        lambda conn: run_reach(conn, principal=operator(), geometry=geometry, **kwargs)
    )
    if str(json_out) != "-":
        _show_reach(body, elapsed, top=top)
    write_json(json_out, body)


def _show_reach(body: dict, elapsed: float, *, top: int) -> None:
    """Print the reach summary and its ``top`` communities farthest from a facility."""
    s, p = body["summary"], body["parameters"]
    how = (
        f"network walk {p['walk_m']:.0f} m"
        if p["distance"] == "network"
        else f"straight line {p['radius_m']:.0f} m (detour {p['detour']})"
    )
    typer.echo(
        f"{body['area']['name'] or 'all areas'}: {p['minutes']:g} min at "
        f"{p['speed_m_per_min']:g} m/min, {how}; "
        f"{s['facilities']} facilities, {s['communities']} communities "
        f"({s['fully_covered']} fully covered)\n"
        f"beyond reach: area {s['uncovered_area_m2'] / 1e6:,.1f} of {s['area_m2'] / 1e6:,.1f}"
        f" km² ({_pct(s['uncovered_share'])}), households {s['households']['uncovered']} of "
        f"{s['households']['total']} ({_pct(s['households']['uncovered_share'])}), units "
        f"{s['units']['uncovered']} of {s['units']['total']} "
        f"({_pct(s['units']['uncovered_share'])})  [{elapsed:.2f} s]"
    )
    for item in body["items"][:top]:
        typer.echo(
            f"{item['rank']:4d}  {item['code']:<15} {item['name'][:14]:<14} area "
            f"{_pct(item['uncovered_share'])}  households "
            f"{_pct(item['households']['uncovered_share'])}  units "
            f"{_pct(item['units']['uncovered_share'])}"
        )


def siting(
    ctx: typer.Context,
    area_code: Area = None,
    k: Annotated[int | None, typer.Option("--k", help="new facilities to place (MCLP)")] = None,
    lscp: Annotated[bool, typer.Option("--lscp", help="the fewest covering all (LSCP)")] = False,
    candidates: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="JSON file of candidate sites [[lon, lat], …] (default: a lattice)",
        ),
    ] = None,
    spacing_m: Annotated[float | None, typer.Option(help="candidate lattice spacing, m")] = None,
    demand: Annotated[str, typer.Option(help="households, units or both")] = "households",
    minutes: Minutes = DEFAULT_MINUTES,
    speed_m_per_min: Speed = WALK_SPEED_M_PER_MIN,
    detour: Detour = DEFAULT_DETOUR,
    kinds: Kinds = None,
    generation: Generation = None,
    json_out: JsonOut = None,
) -> None:
    """Where k new facilities reach most demand (--k), or the fewest reaching all (--lscp)."""
    from service.analysis.siting import run_siting

    supplied = None
    if candidates is not None:
        try:
            supplied = json.loads(candidates.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            fail(f"{candidates} is not JSON: {exc}")
    kwargs = options(ctx, "candidates", "json_out")
    body, elapsed = run_timed(
        lambda conn: run_siting(conn, principal=operator(), candidates=supplied, **kwargs)
    )
    if str(json_out) != "-":
        _show_siting(body, elapsed)
    write_json(json_out, body)


def _show_siting(body: dict, elapsed: float) -> None:
    """Print the siting summary and the proposed sites, best first."""
    s, p = body["summary"], body["parameters"]
    typer.echo(
        f"{body['area']['name'] or 'all areas'}: {s['method'].upper()} with "
        f"{s['candidates']} candidates ({p['candidates']}"
        + (f", {p['spacing_m']:.0f} m" if p["spacing_m"] else "")
        + f"), radius {p['radius_m']:.0f} m, solver {p['solver']}  [{elapsed:.2f} s]\n"
        f"{s['demand']} covered: {s['covered_before']:g} → {s['covered_after']:g} of "
        f"{s['demand_total']:g} ({_pct(s['share_before'])} → {_pct(s['share_after'])}) "
        f"with {s['new_sites']} new sites" + (f"; {s['note']}" if s.get("note") else "")
    )
    for item in body["items"]:
        lon, lat = item["geometry"]["coordinates"]
        typer.echo(
            f"{item['rank']:4d}  {lon:.6f},{lat:.6f}  in {item['community_code'] or '–'}  "
            f"adds {item['adds']:g}"
        )
