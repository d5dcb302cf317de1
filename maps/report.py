"""Return the coverage report as one self-contained HTML page: figures, SVG charts, a map.

:func:`report_html` takes the report dict of :func:`service.analysis.report.run_report`
(data in, HTML out; nothing here reads a database) and draws:

* the key figures as cards;
* bar charts and a histogram as inline SVG (:func:`bar_chart`, :func:`histogram`);
* a map of the grids (:func:`maps.pages.planning_page`, Leaflet inlined from ``maps/static``
  by :func:`maps.pages.render_page`, no basemap, no CDN) with the gap layers the maps draw
  (:data:`maps.gaps.MAP_GAP_LAYERS`);
* the communities farthest from a service facility, as a table.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

from maps.gaps import GAP_LAYERS, MAP_GAP_LAYERS, add_gap_layers

__all__ = ["bar_chart", "histogram", "report_html"]

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


# -- SVG charts --------------------------------------------------------------------------------
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


# -- the map -----------------------------------------------------------------------------------
_TEAM_ROLES = ("party_building_instructor", "grid_manager", "grid_police")


def _feature(item: dict, properties: dict) -> dict:
    return {"type": "Feature", "geometry": item["geometry"], "properties": properties}


def _collection(features: list[dict]) -> dict:
    return {"type": "FeatureCollection", "features": features}


def _grid_features(report: dict) -> list[dict]:
    """Return every grid of the workload analysis with the planning page's metrics."""
    units = {
        r["code"]: r["units"]
        for r in report["tables"]["organisation_areas"]
        if r["level"] == "grid"
    }
    roles = {
        r["grid_code"]: sum(1 for k in _TEAM_ROLES if r[k])
        for r in report["tables"]["staffing_grids"]
    }
    return [
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
        for i in report["analyses"]["workload"]["items"]
    ]


def _community_outlines(work: list[dict]) -> list[dict]:
    """Return community outlines: the union of their grids (grids tile communities exactly)."""
    import numpy as np
    import orjson
    import shapely

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
    return outlines


def _period_days(parameters: dict) -> float | None:
    try:
        since = datetime.fromisoformat(parameters["since"])
        until = datetime.fromisoformat(parameters["until"])
    except (KeyError, TypeError, ValueError):
        return None
    return round((until - since).total_seconds() / 86400, 3)


def _map_html(report: dict) -> str | None:
    """Return the map page (self-contained HTML) of the report, or None without geometry."""
    from maps.pages import planning_page, render_page

    analyses = report["analyses"]
    work = analyses["workload"]["items"]
    if not work or any(i.get("geometry") is None for i in work):
        return None
    period_days = _period_days(analyses["workload"]["parameters"])
    page = planning_page(
        grids=_collection(_grid_features(report)),
        outlines={"community": _collection(_community_outlines(work))},
        metric="incidents_90d" if period_days == 90 else "open_incidents",
        title=f"Coverage gaps: {report['area']['name'] or 'all areas'}",
    )
    add_gap_layers(page, analyses)
    return render_page(page, assets="inline")


def _map_layer_titles() -> str:
    return ", ".join(GAP_LAYERS[name].title.lower() for name in MAP_GAP_LAYERS)


# -- the page ----------------------------------------------------------------------------------
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


def _share_row(label: str, share: float | None) -> tuple[str, float, str]:
    return (label, share or 0.0, _pct(share))


def _count_row(label: str, n: float | int) -> tuple[str, float, str]:
    return (label, n, _num(n))


def _reach_charts(report: dict) -> list[str]:
    reach = report["summary"]["reach"]
    return [
        bar_chart(
            "Beyond a 15-minute walk (share)",
            [
                _share_row("area", reach["uncovered_share"]),
                _share_row("care households", reach["households"]["uncovered_share"]),
                _share_row("units", reach["units"]["uncovered_share"]),
            ],
            color="#6a3d9a",
            max_value=1.0,
        ),
        bar_chart(
            "Worst communities: area beyond reach",
            [
                (f"{i['name']} {i['code']}", i["uncovered_share"], _pct(i["uncovered_share"]))
                for i in report["analyses"]["reach"]["items"][:10]
            ],
            color="#6a3d9a",
            max_value=1.0,
        ),
    ]


def _staffing_chart(report: dict) -> str:
    st = report["summary"]["staffing"]
    return bar_chart(
        "1+1+1 grid teams",
        [
            _count_row("complete teams", st["complete_teams"]),
            *[
                _count_row(f"missing {role.replace('_', ' ')}", n)
                for role, n in st["missing_by_role"].items()
            ],
            _count_row("grids with a doubled role", st["grids_with_doubled_role"]),
            _count_row("people in several grids", st["people_in_several_grids"]),
        ],
        color="#d95f02",
    )


def _care_chart(report: dict) -> str:
    return bar_chart(
        "Care households without a cadre, by kind",
        [
            (
                kind.replace("_", " "),
                v["without_cadre"],
                f"{v['without_cadre']:,} of {v['households']:,}",
            )
            for kind, v in report["summary"]["care"]["by_kind"].items()
        ],
        color="#b2182b",
    )


def _organisation_chart(report: dict) -> str:
    org = report["summary"]["organisation"]
    return bar_chart(
        "Party organisation of units",
        [
            _count_row("units", org["units"]),
            _count_row("with a branch", org["units_with_branch"]),
            _count_row("without organisation", org["units_without_org"]),
            _count_row("large, no co-building", org["large_units_without_co_building"]),
        ],
        color="#c51b7d",
    )


def _workload_chart(report: dict) -> str:
    return histogram(
        "Workload: grids by incidents in the period",
        [i["incidents"] for i in report["analyses"]["workload"]["items"]],
    )


def _topology_chart(report: dict) -> str:
    topo = report["summary"]["topology"]
    return bar_chart(
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


def _timings_chart(report: dict) -> str:
    return bar_chart(
        "Seconds per analysis",
        [(k, v, f"{v:.2f} s") for k, v in report["timings"].items() if k != "total"],
        color="#636363",
    )


def _charts(report: dict) -> str:
    charts = [
        *_reach_charts(report),
        _staffing_chart(report),
        _care_chart(report),
        _organisation_chart(report),
        _workload_chart(report),
        _topology_chart(report),
        _timings_chart(report),
    ]
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
        f'<p class="note">Grids coloured by workload; layers: {_e(_map_layer_titles())} '
        "(switch them in the map's layer control).</p>"
        f"<h2>Charts</h2>{_charts(report)}"
        f"<h2>Communities farthest from a service facility</h2>{_worst_table(report)}"
        "</main></body></html>"
    )
