"""Return the coverage report as one self-contained HTML page: figures, SVG charts, a map.

:func:`report_html` takes the report dict of :func:`service.analysis.report.run_report`
(data in, HTML out; nothing here reads a database) and draws:

* the key figures as cards;
* bar charts and a histogram as inline SVG (:func:`bar_chart`, :func:`histogram`);
* a map of the grids (:func:`maps.pages.planning_page`, Leaflet inlined from ``maps/static``
  by :func:`maps.pages.render_page`, no basemap, no CDN) with the gap layers the maps draw
  (:data:`maps.gaps.MAP_GAP_LAYERS`);
* the communities farthest from a service facility, as a table.

In Simplified Chinese by default, English with ``lang="en"`` (:mod:`maps.i18n`).
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

from maps.gaps import GAP_LAYERS, MAP_GAP_LAYERS, add_gap_layers
from maps.i18n import DEFAULT_LANGUAGE, N_, Translator, translator

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
iframe{width:100%;height:860px;border:1px solid #ccc;border-radius:6px;background:#fff}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f0f0f0}
td.l,th.l{text-align:left}
.note{color:#666;font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: float | int | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _of(t: Translator, part: int, whole: int) -> str:
    return t("{part} of {whole}", part=format(part, ","), whole=format(whole, ","))


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
    title: str,
    values: list[float],
    *,
    bins: int = 20,
    color: str = "#fc8d59",
    width: int = 500,
    axis: str = "",
) -> str:
    """Return an inline SVG histogram of ``values`` (counts per equal-width bin), ``axis``
    naming what the bins count."""
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
        f'text-anchor="middle">{_e(axis)}</text></svg>'
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


def _map_html(report: dict, t: Translator, basemaps=None) -> str | None:
    """Return the map page (self-contained HTML) of the report, or None without geometry."""
    from maps.basemap import add_basemaps, shift_geojson
    from maps.pages import planning_page, render_page

    if basemaps is not None:
        # The overlays in the basemaps' datum (GCJ-02 tiles get GCJ-02 grids).
        report = shift_geojson(report, basemaps.datum)

    analyses = report["analyses"]
    work = analyses["workload"]["items"]
    if not work or any(i.get("geometry") is None for i in work):
        return None
    period_days = _period_days(analyses["workload"]["parameters"])
    page = planning_page(
        grids=_collection(_grid_features(report)),
        outlines={"community": _collection(_community_outlines(work))},
        metric="incidents_90d" if period_days == 90 else "open_incidents",
        title=t("Coverage gaps: {area}", area=report["area"]["name"] or t("all areas")),
        lang=t.lang,
    )
    add_gap_layers(page, analyses)
    if basemaps is not None:
        add_basemaps(page.map, basemaps, page.t)
    return render_page(page, assets="inline")


def _map_layer_titles(t: Translator) -> str:
    return t.join(t(GAP_LAYERS[name].title).lower() for name in MAP_GAP_LAYERS)


# -- the page ----------------------------------------------------------------------------------
def _cards(report: dict, t: Translator) -> str:
    s = report["summary"]
    staffing, reach, care = s["staffing"], s["reach"], s["care"]
    work, org, topo = s["workload"], s["organisation"], s["topology"]
    defects = sum(topo[k]["count"] for k in ("gaps", "overlaps", "outside", "slivers"))
    cards = [
        (_num(staffing["grids"]), t("grids")),
        (f"{_num(staffing['complete_teams'])}", t("complete 1+1+1 teams")),
        (_num(staffing["grids_missing_role"]), t("grids missing a role")),
        (_pct(reach["uncovered_share"]), t("of the area beyond a 15-min walk")),
        (_pct(reach["households"]["uncovered_share"]), t("of care households beyond it")),
        (_num(care["without_cadre"]), t("care households without a cadre")),
        (_pct(org["share_without_org"]), t("of units without a party organisation")),
        (_num(org["grids_without_party_branch"]), t("grids without a party branch")),
        (_num(work["incidents"]), t("incidents in the period")),
        (_num(work["outliers_high"]), t("grids with an outlying workload")),
        (_num(defects), t("topology defects (gaps, overlaps, outside, slivers)")),
    ]
    if "siting" in s and "new_sites" in s["siting"]:
        sit = s["siting"]
        cards.append(
            (
                f"{_pct(sit['share_before'])} → {_pct(sit['share_after'])}",
                t("households reached with {n} new facilities", n=sit["new_sites"]),
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


def _reach_charts(report: dict, t: Translator) -> list[str]:
    reach = report["summary"]["reach"]
    return [
        bar_chart(
            t("Beyond a 15-minute walk (share)"),
            [
                _share_row(t("area"), reach["uncovered_share"]),
                _share_row(t("care households"), reach["households"]["uncovered_share"]),
                _share_row(t("units"), reach["units"]["uncovered_share"]),
            ],
            color="#6a3d9a",
            max_value=1.0,
        ),
        bar_chart(
            t("Worst communities: area beyond reach"),
            [
                (f"{i['name']} {i['code']}", i["uncovered_share"], _pct(i["uncovered_share"]))
                for i in report["analyses"]["reach"]["items"][:10]
            ],
            color="#6a3d9a",
            max_value=1.0,
        ),
    ]


def _staffing_chart(report: dict, t: Translator) -> str:
    st = report["summary"]["staffing"]
    return bar_chart(
        t("1+1+1 grid teams"),
        [
            _count_row(t("complete teams"), st["complete_teams"]),
            *[
                _count_row(t("missing: {role}", role=t.name("team_role", role).lower()), n)
                for role, n in st["missing_by_role"].items()
            ],
            _count_row(t("grids with a doubled role"), st["grids_with_doubled_role"]),
            _count_row(t("people in several grids"), st["people_in_several_grids"]),
        ],
        color="#d95f02",
    )


def _care_chart(report: dict, t: Translator) -> str:
    return bar_chart(
        t("Care households without a cadre, by kind"),
        [
            (
                t.name("care_kind", kind),
                v["without_cadre"],
                _of(t, v["without_cadre"], v["households"]),
            )
            for kind, v in report["summary"]["care"]["by_kind"].items()
        ],
        color="#b2182b",
    )


def _organisation_chart(report: dict, t: Translator) -> str:
    org = report["summary"]["organisation"]
    return bar_chart(
        t("Party organisation of units"),
        [
            _count_row(t("units"), org["units"]),
            _count_row(t("with a branch"), org["units_with_branch"]),
            _count_row(t("without organisation"), org["units_without_org"]),
            _count_row(t("large, no co-building"), org["large_units_without_co_building"]),
        ],
        color="#c51b7d",
    )


def _workload_chart(report: dict, t: Translator) -> str:
    return histogram(
        t("Workload: grids by incidents in the period"),
        [i["incidents"] for i in report["analyses"]["workload"]["items"]],
        axis=t("incidents per grid (period)"),
    )


#: The defects of the topology chart: summary key → its name.
_DEFECTS = {
    "gaps": N_("gaps"),
    "overlaps": N_("overlaps"),
    "outside": N_("outside their parent"),
    "slivers": N_("slivers"),
    "multipart": N_("in several parts"),
}
#: The analyses of the timings chart.
_ANALYSES = {
    "staffing": N_("team staffing"),
    "reach": N_("15-minute reach"),
    "care": N_("care households"),
    "organisation": N_("party organisation"),
    "workload": N_("workload"),
    "topology": N_("partition topology"),
    "evaluation": N_("team evaluation"),
    "tables": N_("report tables"),
    "siting": N_("siting"),
}


def _topology_chart(report: dict, t: Translator) -> str:
    topo = report["summary"]["topology"]
    return bar_chart(
        t("Partition topology: defects (count)"),
        [
            (
                t(name),
                topo[kind]["count"],
                t(
                    "{n} · {area} m²",
                    n=format(topo[kind]["count"], ","),
                    area=format(topo[kind]["area_m2"], ",.0f"),
                ),
            )
            for kind, name in _DEFECTS.items()
        ],
        color="#e31a1c",
    )


def _timings_chart(report: dict, t: Translator) -> str:
    return bar_chart(
        t("Seconds per analysis"),
        [
            (t(_ANALYSES[k]) if k in _ANALYSES else k, v, t("{s} s", s=format(v, ".2f")))
            for k, v in report["timings"].items()
            if k != "total"
        ],
        color="#636363",
    )


def _charts(report: dict, t: Translator) -> str:
    charts = [
        *_reach_charts(report, t),
        _staffing_chart(report, t),
        _care_chart(report, t),
        _organisation_chart(report, t),
        _workload_chart(report, t),
        _topology_chart(report, t),
        _timings_chart(report, t),
    ]
    return '<div class="charts">' + "".join(charts) + "</div>"


def _worst_table(report: dict, t: Translator) -> str:
    rows = report["analyses"]["reach"]["items"][:15]
    heads = [
        t("rank"),
        t("community"),
        t("area km²"),
        t("beyond reach"),
        t("care households beyond"),
        t("units beyond"),
    ]
    cells = [
        f'<th class="l">{_e(h)}</th>' if i == 1 else f"<th>{_e(h)}</th>"
        for i, h in enumerate(heads)
    ]
    head = "<tr>" + "".join(cells) + "</tr>"
    body = "".join(
        f"<tr><td>{i['rank']}</td><td class='l'>{_e(i['name'])} {_e(i['code'])}</td>"
        f"<td>{i['area_m2'] / 1e6:,.1f}</td><td>{_pct(i['uncovered_share'])}</td>"
        f"<td>{_e(_of(t, i['households']['uncovered'], i['households']['total']))}</td>"
        f"<td>{_e(_of(t, i['units']['uncovered'], i['units']['total']))}</td></tr>"
        for i in rows
    )
    return f"<table>{head}{body}</table>"


def report_html(report: dict, *, lang: str = DEFAULT_LANGUAGE, basemaps=None) -> str:
    """Return the report as one self-contained HTML page (charts as SVG, map inlined), in
    ``lang`` (:data:`maps.i18n.LANGUAGES`), its map on ``basemaps`` (a
    :class:`maps.basemap.Basemaps` for a static file, e.g. the offline basemap's tiles inline;
    none: no basemap)."""
    t = translator(lang)
    area = report["area"]
    title = t("Coverage report: {area}", area=area["name"] or t("all areas"))
    where = (
        f"{area['code']} ({t.name('level', area['level'])})" if area["code"] else t("every area")
    )
    map_html = _map_html(report, t, basemaps)
    if map_html is None:
        no_map = t("The report was made without geometry: no map.")
        map_part = f'<p class="note">{_e(no_map)}</p>'
    else:
        # The map is a page of its own (Leaflet wants the whole viewport); srcdoc keeps it
        # in this one file.
        frame = t("map of the gaps")
        map_part = (
            f'<iframe title="{_e(frame)}" srcdoc="{html.escape(map_html, quote=True)}"></iframe>'
        )
    siting = report["summary"].get("siting")
    siting_note = ""
    if isinstance(siting, dict) and "error" in siting:
        note = t("Siting did not run: {detail}", detail=siting["error"]["detail"])
        siting_note = f'<p class="note">{_e(note)}</p>'
    made = t(
        "{where}, boundary generation {generation} · made {made} · analyses took {seconds} s",
        where=where,
        generation=area["generation"],
        made=t.datetime(report["generated_at"]),
        seconds=format(report["timings"]["total"], ".2f"),
    )
    layers = t(
        "Grids coloured by workload; gap layers, one at a time: {layers} (choose in the map's "
        "“Coverage gaps” box).",
        layers=_map_layer_titles(t),
    )
    h = {
        key: _e(t(message))
        for key, message in {
            "figures": N_("Key figures"),
            "map": N_("Map of the gaps"),
            "charts": N_("Charts"),
            "farthest": N_("Communities farthest from a service facility"),
        }.items()
    }
    return (
        f'<!DOCTYPE html><html lang="{t.lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(made)}</p></header><main>"
        f"<h2>{h['figures']}</h2>{_cards(report, t)}{siting_note}"
        f"<h2>{h['map']}</h2>{map_part}"
        f'<p class="note">{_e(layers)}</p>'
        f"<h2>{h['charts']}</h2>{_charts(report, t)}"
        f"<h2>{h['farthest']}</h2>{_worst_table(report, t)}"
        "</main></body></html>"
    )
