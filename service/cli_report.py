"""``wangge analysis report --area CODE -o DIR``: the coverage report of an area, as files.

Runs every analysis (:func:`service.analysis.report.run_report`), one line per step with
its time, and writes into ``DIR``:

* ``report.json``: the whole report (summaries, findings with GeoJSON, timings, tables);
* ``gaps.gpkg``: one layer per kind of gap (:data:`service.analysis.report.GAP_LAYERS`);
* ``tables/*.csv``: one CSV per table (:data:`service.analysis.report.TABLES`);
* ``report.html``: one self-contained page, readable offline: the key figures, bar charts
  drawn as inline SVG, and a map of the grids (folium, Leaflet inlined from
  ``maps/static`` by :func:`maps.pages.render_page`, no basemap, no CDN) with the gap
  layers: uncovered reach, topology defects, grids missing team roles, workload outliers.

The CLI acts as an operator with the admin role (it holds the database already), so care
details are in ``report.json`` and logged under the token id ``cli``; the other files hold
care counts only. Siting (``--siting-k``, default 5 new facilities) runs unless
``--no-siting``.

``report`` is a plain typer command function; the ``analysis`` group registers it.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["report", "report_html"]


def _principal():
    from service.auth import OPERATOR

    return OPERATOR


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def report(
    out: Annotated[
        Path,
        typer.Option("-o", "--out", file_okay=False, help="directory to write the report into"),
    ],
    area: Annotated[
        str | None, typer.Option("--area", help="area code (default: everything; the CLI is admin)")
    ] = None,
    generation: Annotated[
        int | None, typer.Option(help="boundary generation (default: the current one)", min=1)
    ] = None,
    siting: Annotated[
        bool, typer.Option("--siting/--no-siting", help="also place new facilities (MCLP)")
    ] = True,
    siting_k: Annotated[
        int, typer.Option("--siting-k", help="new facilities to place", min=1, max=100)
    ] = 5,
) -> None:
    """Run every analysis of an area; write report.json, gaps.gpkg, tables/*.csv, report.html."""
    from sqlalchemy import text

    from service.analysis.report import report_geopackage, report_tables, run_report
    from service.db import make_engine
    from service.errors import WanggeError
    from service.settings import get_settings

    def progress(step: str, done: int, total: int, seconds: float | None) -> None:
        if seconds is None:
            typer.echo(f"[{done + 1}/{total}] {step:<13}", nl=False)
        else:
            typer.echo(f"{seconds:8.2f} s")

    engine = make_engine(get_settings().db.resolved_url())
    try:
        with engine.begin() as conn:
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            body = run_report(
                conn,
                principal=_principal(),
                area_code=area,
                generation=generation,
                siting_k=siting_k if siting else None,
                progress=progress,
            )
    except WanggeError as exc:
        label = f"{exc.field}: " if exc.field else ""
        _fail(f"{label}{exc.detail}")
    finally:
        engine.dispose()
    typer.echo(f"analyses done in {body['timings']['total']:.2f} s")

    out.mkdir(parents=True, exist_ok=True)
    tables_dir = out / "tables"
    tables_dir.mkdir(exist_ok=True)

    def write(label: str, fn) -> None:
        started = time.perf_counter()
        typer.echo(f"writing {label:<13}", nl=False)
        fn()
        typer.echo(f"{time.perf_counter() - started:8.2f} s")

    write(
        "report.json",
        lambda: (out / "report.json").write_text(
            json.dumps(body, ensure_ascii=False, default=str), encoding="utf-8"
        ),
    )
    write("gaps.gpkg", lambda: (out / "gaps.gpkg").write_bytes(report_geopackage(body)))

    def tables() -> None:
        from service.analysis.report import table_csv

        for name, frame in report_tables(body).items():
            (tables_dir / f"{name}.csv").write_bytes(table_csv(frame))

    write("tables/*.csv", tables)
    write("report.html", lambda: (out / "report.html").write_text(report_html(body), "utf-8"))
    where = body["area"]["code"] or "all areas"
    typer.echo(f"report of {where} written to {out}")


# -- the HTML report ---------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",
sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#8b1a1a;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.85}
main{padding:8px 28px 40px;max-width:1400px}
h2{font-size:17px;margin:26px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:22px} .card span{color:#666;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:14px}
.charts svg{background:#fff;border:1px solid #ddd;border-radius:6px}
iframe{width:100%;height:680px;border:1px solid #ccc;border-radius:6px;background:#fff}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f0f0f0}
td.l,th.l{text-align:left}
.note{color:#666;font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _num(value: float | int | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def bar_chart(
    title: str,
    rows: list[tuple[str, float, str]],
    *,
    color: str = "#4292c6",
    width: int = 500,
    max_value: float | None = None,
) -> str:
    """Return an inline SVG horizontal bar chart of (label, value, value text) rows."""
    bar_h, gap, top, label_w = 18, 6, 30, 230
    height = top + len(rows) * (bar_h + gap) + 10
    top_value = max_value or max([v for _, v, _ in rows] + [0]) or 1
    plot_w = width - label_w - 70
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(title)}">',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{_e(title)}</text>',
    ]
    for i, (label, value, shown) in enumerate(rows):
        y = top + i * (bar_h + gap)
        w = 0 if not math.isfinite(value) else max(0.0, value) / top_value * plot_w
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" font-size="12" text-anchor="end">'
            f"{_e(label if len(label) <= 32 else label[:31] + '…')}</text>"
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}">'
            f"<title>{_e(label)}: {_e(shown)}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="12">{_e(shown)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    title: str, values: list[float], *, bins: int = 20, color: str = "#fc8d59", width: int = 500
) -> str:
    """Return an inline SVG histogram of ``values`` (counts per equal-width bin)."""
    import numpy as np

    height, left, bottom, top = 220, 40, 34, 30
    if not values:
        return bar_chart(title, [], width=width)
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins)
    plot_w, plot_h = width - left - 12, height - top - bottom
    peak = int(counts.max()) or 1
    bw = plot_w / len(counts)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(title)}">',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{_e(title)}</text>',
        f'<text x="{left - 4}" y="{top + 10}" font-size="11" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="11" text-anchor="end">0</text>',
    ]
    for i, c in enumerate(counts):
        h = c / peak * plot_h
        x = left + i * bw
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{max(bw - 1, 1):.1f}" '
            f'height="{h:.1f}" fill="{color}"><title>{edges[i]:.0f}–{edges[i + 1]:.0f}: '
            f"{c}</title></rect>"
        )
    for x_value, anchor in ((edges[0], "start"), (edges[-1], "end")):
        x = left if anchor == "start" else left + plot_w
        parts.append(
            f'<text x="{x:.1f}" y="{height - 18}" font-size="11" text-anchor="{anchor}">'
            f"{x_value:.0f}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="11" '
        'text-anchor="middle">incidents per grid (period)</text></svg>'
    )
    return "".join(parts)


def _feature(item: dict, properties: dict) -> dict:
    return {"type": "Feature", "geometry": item["geometry"], "properties": properties}


def _map_html(report: dict) -> str | None:
    """Return the map page (self-contained HTML) of the report, or None without geometry."""
    import numpy as np
    import orjson
    import shapely

    from maps.pages import add_coverage_gap_layer, planning_page, render_page

    analyses = report["analyses"]
    work = analyses["workload"]["items"]
    if not work or any(i.get("geometry") is None for i in work):
        return None
    units = {
        r["code"]: r["units"]
        for r in report["tables"]["organisation_areas"]
        if r["level"] == "grid"
    }
    roles = {
        r["grid_code"]: sum(
            1 for k in ("party_building_instructor", "grid_manager", "grid_police") if r[k]
        )
        for r in report["tables"]["staffing_grids"]
    }
    period_days = _period_days(analyses["workload"]["parameters"])
    grids = [
        _feature(
            i,
            {
                "code": i["grid_code"],
                "name": i["grid_name"] or i["grid_code"],
                # The planning page calls it "incidents_90d"; the report's period is 90 days
                # unless the workload was asked for another.
                "incidents_90d": i["incidents"],
                "open_incidents": i["open"],
                "units": units.get(i["grid_code"], 0),
                "team_roles": roles.get(i["grid_code"], 0),
            },
        )
        for i in work
    ]
    # Community outlines: the union of their grids (grids tile communities exactly).
    by_community: dict[str, list] = {}
    for i in work:
        by_community.setdefault(i["community_code"], []).append(i["geometry"])
    outlines = []
    for code, geoms in sorted(by_community.items()):
        shapes = shapely.from_geojson([orjson.dumps(g).decode() for g in geoms])
        union = shapely.coverage_union_all(np.asarray(shapes, dtype=object))
        outlines.append(
            {
                "type": "Feature",
                "geometry": orjson.loads(shapely.to_geojson(union)),
                "properties": {"code": code, "name": code},
            }
        )
    area = report["area"]
    page = planning_page(
        grids={"type": "FeatureCollection", "features": grids},
        outlines={"community": {"type": "FeatureCollection", "features": outlines}},
        metric="incidents_90d" if period_days == 90 else "open_incidents",
        title=f"Coverage gaps: {area['name'] or 'all areas'}",
    )
    layers = [
        (
            "Beyond a 15-minute walk",
            "#6a3d9a",
            [
                _feature(
                    i,
                    {
                        "code": i["code"],
                        "name": i["name"],
                        "uncovered": _pct(i["uncovered_share"]),
                        "households": i["households"]["uncovered"],
                        "units": i["units"]["uncovered"],
                    },
                )
                for i in analyses["reach"]["items"]
                if i.get("geometry") is not None
            ],
            [
                ("name", "Community"),
                ("uncovered", "Area uncovered"),
                ("households", "Households beyond"),
                ("units", "Units beyond"),
            ],
        ),
        (
            "Topology defects",
            "#e31a1c",
            [
                _feature(
                    i,
                    {
                        "kind": i["kind"],
                        "parent_code": i["parent_code"],
                        "codes": ", ".join(i["codes"]),
                        "area_m2": i["area_m2"],
                    },
                )
                for i in analyses["topology"]["items"]
                if i.get("geometry") is not None
            ],
            [
                ("kind", "Defect"),
                ("parent_code", "Parent"),
                ("codes", "Areas"),
                ("area_m2", "Area m²"),
            ],
        ),
        (
            "Grids missing a team role",
            "#d95f02",
            [
                _feature(
                    i,
                    {
                        "kind": i["kind"],
                        "grid_code": i["grid_code"],
                        "roles": ", ".join(i["roles"]),
                    },
                )
                for i in analyses["staffing"]["items"]
                if i["kind"] == "missing_role" and i.get("geometry") is not None
            ],
            [("grid_code", "Grid"), ("roles", "Missing")],
        ),
        (
            "Workload outliers",
            "#1b9e77",
            [
                _feature(
                    i,
                    {
                        "kind": i["outlier"],
                        "grid_code": i["grid_code"],
                        "incidents": i["incidents"],
                        "z": i["z"],
                    },
                )
                for i in work
                if i["outlier"] is not None
            ],
            [("grid_code", "Grid"), ("kind", "Outlier"), ("incidents", "Incidents"), ("z", "z")],
        ),
    ]
    for name, color, features, fields in layers:
        if features:
            add_coverage_gap_layer(
                page,
                {"type": "FeatureCollection", "features": features},
                name=name,
                color=color,
                popup_fields=fields,
            )
    return render_page(page, assets="inline")


def _period_days(parameters: dict) -> float | None:
    from datetime import datetime

    try:
        since = datetime.fromisoformat(parameters["since"])
        until = datetime.fromisoformat(parameters["until"])
    except (KeyError, TypeError, ValueError):
        return None
    return round((until - since).total_seconds() / 86400, 3)


def _cards(report: dict) -> str:
    s = report["summary"]
    staffing, reach, care = s["staffing"], s["reach"], s["care"]
    work, org, topo = s["workload"], s["organisation"], s["topology"]
    defects = sum(topo[k]["count"] for k in ("gaps", "overlaps", "outside", "slivers"))
    cards = [
        (_num(staffing["grids"]), "grids"),
        (f"{_num(staffing['complete_teams'])}", "complete 1+1+1 teams"),
        (_num(staffing["grids_missing_role"]), "grids missing a role"),
        (_pct(reach["uncovered_share"]), "of the area beyond a 15-min walk"),
        (_pct(reach["households"]["uncovered_share"]), "of care households beyond it"),
        (_num(care["without_cadre"]), "care households without a cadre"),
        (_pct(org["share_without_org"]), "of units without a party organisation"),
        (_num(org["grids_without_party_branch"]), "grids without a party branch"),
        (_num(work["incidents"]), "incidents in the period"),
        (_num(work["outliers_high"]), "grids with an outlying workload"),
        (_num(defects), "topology defects (gaps, overlaps, outside, slivers)"),
    ]
    if "siting" in s and "new_sites" in s["siting"]:
        t = s["siting"]
        cards.append(
            (
                f"{_pct(t['share_before'])} → {_pct(t['share_after'])}",
                f"households reached with {t['new_sites']} new facilities",
            )
        )
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{_e(v)}</b><span>{_e(label)}</span></div>' for v, label in cards
        )
        + "</div>"
    )


def _charts(report: dict) -> str:
    s = report["summary"]
    a = report["analyses"]
    reach = s["reach"]
    charts = [
        bar_chart(
            "Beyond a 15-minute walk (share)",
            [
                ("area", reach["uncovered_share"] or 0.0, _pct(reach["uncovered_share"])),
                (
                    "care households",
                    reach["households"]["uncovered_share"] or 0.0,
                    _pct(reach["households"]["uncovered_share"]),
                ),
                (
                    "units",
                    reach["units"]["uncovered_share"] or 0.0,
                    _pct(reach["units"]["uncovered_share"]),
                ),
            ],
            color="#6a3d9a",
            max_value=1.0,
        ),
        bar_chart(
            "Worst communities: area beyond reach",
            [
                (f"{i['name']} {i['code']}", i["uncovered_share"], _pct(i["uncovered_share"]))
                for i in a["reach"]["items"][:10]
            ],
            color="#6a3d9a",
            max_value=1.0,
        ),
    ]
    st = s["staffing"]
    charts.append(
        bar_chart(
            "1+1+1 grid teams",
            [
                ("complete teams", st["complete_teams"], _num(st["complete_teams"])),
                *[
                    (f"missing {role.replace('_', ' ')}", n, _num(n))
                    for role, n in st["missing_by_role"].items()
                ],
                (
                    "grids with a doubled role",
                    st["grids_with_doubled_role"],
                    _num(st["grids_with_doubled_role"]),
                ),
                (
                    "people in several grids",
                    st["people_in_several_grids"],
                    _num(st["people_in_several_grids"]),
                ),
            ],
            color="#d95f02",
        )
    )
    care = s["care"]
    charts.append(
        bar_chart(
            "Care households without a cadre, by kind",
            [
                (
                    kind.replace("_", " "),
                    v["without_cadre"],
                    f"{v['without_cadre']:,} of {v['households']:,}",
                )
                for kind, v in care["by_kind"].items()
            ],
            color="#b2182b",
        )
    )
    org = s["organisation"]
    charts.append(
        bar_chart(
            "Party organisation of units",
            [
                ("units", org["units"], _num(org["units"])),
                ("with a branch", org["units_with_branch"], _num(org["units_with_branch"])),
                ("without organisation", org["units_without_org"], _num(org["units_without_org"])),
                (
                    "large, no co-building",
                    org["large_units_without_co_building"],
                    _num(org["large_units_without_co_building"]),
                ),
            ],
            color="#c51b7d",
        )
    )
    charts.append(
        histogram(
            "Workload: grids by incidents in the period",
            [i["incidents"] for i in a["workload"]["items"]],
        )
    )
    topo = s["topology"]
    charts.append(
        bar_chart(
            "Partition topology: defects (count)",
            [
                (
                    kind,
                    topo[kind]["count"],
                    f"{topo[kind]['count']:,} · {topo[kind]['area_m2']:,.0f} m²",
                )
                for kind in ("gaps", "overlaps", "outside", "slivers", "multipart")
            ],
            color="#e31a1c",
        )
    )
    timings = report["timings"]
    charts.append(
        bar_chart(
            "Seconds per analysis",
            [(k, v, f"{v:.2f} s") for k, v in timings.items() if k != "total"],
            color="#636363",
        )
    )
    return '<div class="charts">' + "".join(charts) + "</div>"


def _worst_table(report: dict) -> str:
    rows = report["analyses"]["reach"]["items"][:15]
    head = (
        '<tr><th>rank</th><th class="l">community</th><th>area km²</th><th>beyond reach</th>'
        "<th>care households beyond</th><th>units beyond</th></tr>"
    )
    body = "".join(
        f"<tr><td>{i['rank']}</td><td class='l'>{_e(i['name'])} {_e(i['code'])}</td>"
        f"<td>{i['area_m2'] / 1e6:,.1f}</td><td>{_pct(i['uncovered_share'])}</td>"
        f"<td>{i['households']['uncovered']:,} of {i['households']['total']:,}</td>"
        f"<td>{i['units']['uncovered']:,} of {i['units']['total']:,}</td></tr>"
        for i in rows
    )
    return f"<table>{head}{body}</table>"


def report_html(report: dict) -> str:
    """Return the report as one self-contained HTML page (charts as SVG, map inlined)."""
    area = report["area"]
    title = f"Coverage report: {area['name'] or 'all areas'}"
    where = f"{area['code']} ({area['level']})" if area["code"] else "every area"
    map_html = _map_html(report)
    if map_html is None:
        map_part = '<p class="note">The report was made without geometry: no map.</p>'
    else:
        # The map is a page of its own (Leaflet wants the whole viewport); srcdoc keeps it
        # in this one file.
        map_part = (
            f'<iframe title="map of the gaps" srcdoc="{html.escape(map_html, quote=True)}">'
            "</iframe>"
        )
    siting = report["summary"].get("siting")
    siting_note = ""
    if isinstance(siting, dict) and "error" in siting:
        siting_note = f'<p class="note">Siting did not run: {_e(siting["error"]["detail"])}</p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(where)}, boundary generation "
        f"{area['generation']} · made {_e(report['generated_at'])} · analyses took "
        f"{report['timings']['total']:.2f} s</p></header><main>"
        f"<h2>Key figures</h2>{_cards(report)}{siting_note}"
        f"<h2>Map of the gaps</h2>{map_part}"
        '<p class="note">Grids coloured by workload; layers: beyond a 15-minute walk, topology '
        "defects, grids missing a team role, workload outliers (switch them in the map's "
        "layer control).</p>"
        f"<h2>Charts</h2>{_charts(report)}"
        f"<h2>Communities farthest from a service facility</h2>{_worst_table(report)}"
        "</main></body></html>"
    )
