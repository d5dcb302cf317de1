"""Return the map pages of the dispatch platform as folium maps, and render them to HTML.

Three pages, each built from GeoJSON dicts and URLs handed in (no database here):

* :func:`dispatch_page` — the dispatch centre's wall: boundaries by level, grids coloured by
  open incidents, clustered open incidents, drill-down links, a breadcrumb, a legend;
* :func:`tablet_page` — one grid on a grid officer's tablet: its boundary, team, units and open
  incidents with large touch targets, and a form that files a case at the device's position;
* :func:`planning_page` — every grid's workload as a choropleth, with an empty "Coverage gaps"
  group that analyses fill with :func:`add_coverage_gap_layer`.

:func:`render_page` turns a page into HTML whose scripts come from ``maps/static`` (linked for
the service, or inlined for a self-contained static file): nothing is fetched from a CDN.

Every builder takes ``lang`` (:data:`maps.i18n.LANGUAGES`, Simplified Chinese by default):
each word on a page comes from :mod:`maps.i18n` (messages marked ``N_``/``t(…)``, names from
:data:`maps.i18n.NAMES`), and ``page.t`` is the page's translator for what is added later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import folium
from branca.element import Figure
from folium.elements import JSCSSMixin
from folium.plugins import MarkerCluster

from geo.areas import LEVELS
from maps.assets import STATIC_URL, UNUSED_FOLIUM_ASSETS, asset_tags
from maps.elements import (
    AreaLayer,
    ClusteredPoints,
    GapThemes,
    HtmlControl,
    PageScript,
    PointLayer,
    RawHtml,
    html_text,
    js,
)
from maps.geojson import (
    POINT,
    POLYGONAL,
    PageDataError,
    bounds_of,
    check_collection,
    check_feature,
    collection,
    merge_bounds,
)
from maps.i18n import DEFAULT_LANGUAGE, N_, NAMES, Translator, translator
from maps.style import (
    BLUES,
    LEVEL_STYLE,
    TEAM,
    YL_OR_RD,
    Classes,
    fixed_classes,
    integer_classes,
)

__all__ = [
    "LEVELS",
    "PLANNING_METRICS",
    "COVERAGE_GAPS",
    "Basemap",
    "Page",
    "PageDataError",
    "dispatch_page",
    "tablet_page",
    "planning_page",
    "add_coverage_gap_layer",
    "render_page",
]

LEVEL_TITLES = {
    "city": N_("City outline"),
    "district": N_("Districts"),
    "community": N_("Communities"),
    "grid": N_("Grids (open incidents)"),
}
#: Outlines of higher levels are drawn over those of lower ones where they coincide.
LINE_RANK = {"city": 3, "district": 2, "community": 1}
#: Planning colour metrics: property → (title, palette; None for the fixed team classes).
PLANNING_METRICS: dict[str, tuple[str, Sequence[str] | None]] = {
    "incidents_90d": (N_("Incidents in the last 90 days"), YL_OR_RD),
    "open_incidents": (N_("Open incidents"), YL_OR_RD),
    "units": (N_("Stationed units"), BLUES),
    "team_roles": (N_("1+1+1 team roles filled (of 3)"), None),
}
#: Key (in ``page.layers``) of the planning page's coverage-gap themes, which analyses add
#: their layers to (:func:`add_coverage_gap_layer`); shown one at a time.
COVERAGE_GAPS = "Coverage gaps"
MISSING = "#cccccc"
INCIDENT_FIELDS = [
    ["category", N_("Category")],
    ["status", N_("Status")],
    ["reported_at", N_("Reported at")],
    ["address", N_("Address")],
    ["description", N_("Description")],
    ["grid_code", N_("Grid")],
]


@dataclass(frozen=True)
class Basemap:
    """A raster basemap: an XYZ URL template and its attribution (none by default: the pages
    must work without internet, and the boundaries carry the map)."""

    url: str
    attribution: str


@dataclass
class Page:
    """A map page before rendering: its folium map, its layers by key (stable English keys,
    whatever the language: "Open incidents", "Grids", :data:`COVERAGE_GAPS`) and its
    translator (``t``: the words of anything added to it later)."""

    kind: str
    title: str
    map: folium.Map
    layers: dict[str, Any] = field(default_factory=dict)
    legend: Legend | None = None
    t: Translator = field(default_factory=translator)
    #: Area code → name of the areas the page holds (its scripts name areas, not codes).
    names: dict[str, str] = field(default_factory=dict)

    def add(self, title: str, layer: Any, *, to: Any = None) -> Any:
        """Return ``layer`` added to the map (or to the group ``to``) under the key ``title``."""
        layer.add_to(self.map if to is None else to)
        self.layers[title] = layer
        return layer


class Legend(HtmlControl):
    """The page's legend; sections can be added until the page is rendered."""

    def __init__(self, title: str, *, position: str = "bottomright"):
        super().__init__("", position=position, cls="wg-legend")
        self.title = title
        self.sections: list[tuple[str, list[str]]] = []

    def add_classes(self, heading: str, classes: Classes, opacity: float = 1.0) -> None:
        """Add a choropleth's swatches (as see-through as its fills)."""
        rows = [
            f'<div class="wg-row"><span class="wg-swatch" style="background:{_rgba(c, opacity)}">'
            "</span>"
            f"{html_text(label)}</div>"
            for c, label in zip(classes.colors, classes.labels, strict=True)
        ]
        self.sections.append((heading, rows))

    def add_rows(self, heading: str, rows: list[str]) -> None:
        """Add prepared (escaped) rows (to the section ``heading`` if there is one)."""
        for existing, section in self.sections:
            if existing == heading:
                section.extend(rows)
                return
        self.sections.append((heading, list(rows)))

    def render(self, **kwargs):
        parts = [f"<h4>{html_text(self.title)}</h4>"] if self.title else []
        for heading, rows in self.sections:
            parts.append(f'<div class="wg-note">{html_text(heading)}</div>' + "".join(rows))
        self.html = "".join(parts)
        self.html_js = js(self.html)
        super().render(**kwargs)


def _line_row(label: str, style: Mapping[str, Any]) -> str:
    dash = "dashed" if style.get("dashArray") else "solid"
    return (
        f'<div class="wg-row"><span class="wg-swatch" style="background:transparent;'
        f'border:{max(1, style["weight"])}px {dash} {style["color"]}"></span>'
        f"{html_text(label)}</div>"
    )


def _category_rows(t: Translator) -> list[str]:
    glyphs = t.names("category_glyph")
    return [
        f'<div class="wg-row"><span class="wg-pin wg-{k}">{glyphs[k]}</span>'
        f"{html_text(label)}</div>"
        for k, label in t.names("category").items()
    ]


def _fields(t: Translator, fields: Sequence[Sequence[str]]) -> list[list[str]]:
    """Return popup fields ``[property, label]`` with their labels translated."""
    return [[prop, t(label)] for prop, label in fields]


def _point_labels(t: Translator) -> dict[str, dict[str, str]]:
    """Return how the pins' coded properties read (``wg.points``'s ``labels``)."""
    return {
        "category": t.names("category"),
        "status": t.names("status"),
        "kind": t.names("unit_kind"),
        "party_org": t.names("party_org"),
    }


def _local_times(fc: dict[str, Any], t: Translator, prop: str = "reported_at") -> dict[str, Any]:
    """Return ``fc`` with ``prop`` written as the reader's language does, in the city's time."""
    features = []
    for f in fc["features"]:
        if f["properties"].get(prop):
            f = {**f, "properties": {**f["properties"], prop: t.datetime(f["properties"][prop])}}
        features.append(f)
    return {**fc, "features": features}


#: What Leaflet's own controls say (their defaults are English).
MAP_TEXT = {
    "zoom_in": N_("Zoom in"),
    "zoom_out": N_("Zoom out"),
    "layers": N_("Layers"),
    "close": N_("Close"),
    # The scale bar's lengths ({n}: a number).
    "metres": N_("{n} m"),
    "kilometres": N_("{n} km"),
}


def _new_map(
    bounds: list[float] | None,
    *,
    t: Translator,
    tiles: Basemap | None,
    padding: tuple[int, int, int, int] = (12, 12, 12, 12),
    **kwargs,
) -> folium.Map:
    """Return a map fitted to ``bounds`` inside ``padding`` (left, top, right, bottom px)."""
    center = [(bounds[1] + bounds[3]) / 2, (bounds[0] + bounds[2]) / 2] if bounds else [35.0, 105.0]
    # Without a tile layer the map has no maximum zoom, which marker clustering needs. Half
    # zoom steps let an area fill the screen (whole steps leave up to half of it empty).
    m = folium.Map(
        location=center,
        zoom_start=4,
        tiles=None,
        # A metric scale only (wg.localize adds it): China measures in metres.
        control_scale=False,
        maxZoom=19,
        zoomSnap=0.5,
        **kwargs,
    )
    if tiles is not None:
        folium.TileLayer(tiles.url, attr=tiles.attribution, name="basemap", control=False).add_to(m)
    if bounds:
        m.fit_bounds(
            [[bounds[1], bounds[0]], [bounds[3], bounds[2]]],
            padding_top_left=padding[:2],
            padding_bottom_right=padding[2:],
        )
    PageScript(script=f"wg.localize({{map}}, {js(t.texts(MAP_TEXT))});").add_to(m)
    return m


def _check_url(template: str | None, name: str) -> str | None:
    if template is None:
        return None
    if "{code}" not in template:
        raise PageDataError(f"{name} must contain {{code}}, e.g. '/pages/dispatch?area={{code}}'")
    if re.match(r"\s*(javascript|data|vbscript):", template, re.I):
        raise PageDataError(f"{name} must be an http(s) or relative URL")
    return template


def _crumbs_html(
    t: Translator,
    breadcrumb: Sequence[Mapping[str, Any]],
    area_url: str | None,
    *,
    current: str | None = None,
) -> str:
    parts = []
    for i, crumb in enumerate(breadcrumb):
        for key in ("code", "name", "level"):
            if not crumb.get(key):
                raise PageDataError(f"breadcrumb: entry {i} lacks {key!r}")
        label = f"{t.name('level', crumb['level'])} {crumb['name']}"
        if area_url and crumb["code"] != current:
            href = area_url.replace("{code}", str(crumb["code"]))
            parts.append(f'<a href="{html_text(href)}">{html_text(label)}</a>')
        else:
            parts.append(f"<span>{html_text(label)}</span>")
    return "".join(parts)


# -- dispatch --------------------------------------------------------------------------------
def _check_levels(areas: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return the dispatch page's area layers checked, by level from the top."""
    unknown = [k for k in areas if k not in LEVELS]
    if unknown:
        raise PageDataError(f"unknown level {unknown[0]!r}; levels are {', '.join(LEVELS)}")
    checked = {
        level: check_collection(
            areas[level],
            layer=f"{level} areas",
            geometry=POLYGONAL,
            required=("code", "name", "open_incidents") if level == "grid" else ("code", "name"),
            numeric=("open_incidents",),
        )
        for level in LEVELS
        if level in areas
    }
    if not any(fc["features"] for fc in checked.values()):
        raise PageDataError("the dispatch page needs at least one area to show")
    return checked


def _dispatch_area_layer(
    t: Translator,
    level: str,
    fc: dict[str, Any],
    grid_classes: Classes | None,
    area_url: str | None,
    tablet_url: str | None,
) -> AreaLayer:
    """Return the layer of one level: grids coloured by open incidents, the levels above
    them as lines over the colours, each area clickable (its popup links further)."""
    links = []
    if area_url:
        links.append([area_url, t("Open this {level} →", level=t.name("level", level).lower())])
    if level == "grid" and tablet_url:
        links.append([tablet_url, t("Tablet page of this grid →")])
    fields = [["code", t("Code")]]
    if any("open_incidents" in f["properties"] for f in fc["features"]):
        fields.append(["open_incidents", t("Open incidents")])
    options: dict[str, Any] = {
        "popup": {"title": "name", "fields": fields, "links": links},
        "tooltip": {"title": "name", "fields": fields[1:]},
    }
    if level == "grid":
        options["choropleth"] = {
            "property": "open_incidents",
            "breaks": list(grid_classes.breaks),
            "colors": list(grid_classes.colors),
            "missing": MISSING,
        }
    else:
        # Lines above the grid colours; the whole area clickable (drill-down) below them.
        options["lines"] = LINE_RANK[level]
    options["style"] = dict(LEVEL_STYLE[level])
    return AreaLayer(fc, name=t(LEVEL_TITLES[level]), options=options)


def _incident_cluster(t: Translator, points: dict[str, Any]) -> MarkerCluster:
    """Return the open incidents as category pins in clusters that show their counts."""
    cluster = MarkerCluster(
        name=t("Open incidents"),
        options={"maxClusterRadius": 45, "disableClusteringAtZoom": 17, "chunkedLoading": True},
    )
    ClusteredPoints(
        _local_times(points, t),
        options={
            "cls": "wg-incident",
            "classBy": "category",
            "size": 26,
            "glyphs": t.names("category_glyph"),
            "title": "category",
            "labels": _point_labels(t),
            "popup": {"title": "category", "fields": _fields(t, INCIDENT_FIELDS[1:])},
        },
    ).add_to(cluster)
    return cluster


def _dispatch_legend(
    t: Translator, checked: Mapping[str, Any], grid_classes: Classes | None
) -> Legend:
    legend = Legend(t("Legend"))
    if grid_classes is not None:
        legend.add_classes(
            t("Open incidents per grid"), grid_classes, LEVEL_STYLE["grid"]["fillOpacity"]
        )
    legend.add_rows(
        t("Boundaries"),
        [_line_row(t.name("level", lv), LEVEL_STYLE[lv]) for lv in checked if lv != "grid"],
    )
    legend.add_rows(t("Open incidents (clusters show counts)"), _category_rows(t))
    return legend


def dispatch_page(
    *,
    areas: Mapping[str, Mapping[str, Any]],
    incidents: Mapping[str, Any],
    breadcrumb: Sequence[Mapping[str, Any]] = (),
    focus: str | None = None,
    area_url: str | None = None,
    tablet_url: str | None = None,
    incidents_matched: int | None = None,
    title: str | None = None,
    tiles: Basemap | None = None,
    lang: str = DEFAULT_LANGUAGE,
) -> Page:
    """Return the dispatch wall page: the caller's area by level, its open incidents.

    Parameters
    ----------
    areas : mapping of level → FeatureCollection
        Levels among ``city``, ``district``, ``community``, ``grid`` (top first), polygons
        with ``code`` and ``name``; grids also need ``open_incidents`` (their colour).
    incidents : FeatureCollection
        Open incidents (points with ``category``), drawn clustered.
    breadcrumb : sequence of {code, name, level}
        The focused area's ancestors, then the area itself.
    focus : str, optional
        Code of the focused area (shown in the breadcrumb without a link).
    area_url, tablet_url : str, optional
        Link templates with ``{code}``: the drill-down page of an area, the tablet page of a
        grid. Without them popups carry no links (a static export).
    incidents_matched : int, optional
        How many open incidents there are, when ``incidents`` holds only the first ones.
    title : str, optional
        Page title (default: "Dispatch · " and the focused area's name, in ``lang``).
    tiles : Basemap, optional
        A raster basemap (none by default: the page must work offline).
    lang : str
        The page's language (:data:`maps.i18n.LANGUAGES`).

    Raises
    ------
    PageDataError
        When a layer is malformed, a level is unknown or there is no area at all.
    """
    t = translator(lang)
    checked = _check_levels(areas)
    area_url = _check_url(area_url, "area_url")
    tablet_url = _check_url(tablet_url, "tablet_url")
    points = check_collection(incidents, layer="incidents", geometry=POINT, required=("category",))
    bounds = merge_bounds(*(bounds_of(fc["features"]) for fc in checked.values()))
    # Room for the title (top left), the layer control (top right) and the legend (right).
    m = _new_map(bounds, t=t, tiles=tiles, zoom_control="bottomleft", padding=(20, 80, 270, 20))
    if title is None:
        name = breadcrumb[-1].get("name") if breadcrumb else None
        title = t("Dispatch · {name}", name=name or t("all areas"))
    page = Page("dispatch", title, m, t=t)
    page.names = {str(c["code"]): str(c["name"]) for c in breadcrumb if c.get("name")}
    for fc in checked.values():
        for f in fc["features"]:
            props = f["properties"]
            page.names[str(props["code"])] = str(props["name"])
    grid_classes = None
    if "grid" in checked:
        grid_classes = integer_classes(
            (f["properties"]["open_incidents"] for f in checked["grid"]["features"]), classes=6
        )
    for level, fc in checked.items():
        page.add(
            LEVEL_TITLES[level],
            _dispatch_area_layer(t, level, fc, grid_classes, area_url, tablet_url),
        )
    page.add("Open incidents", _incident_cluster(t, points))
    page.legend = _dispatch_legend(t, checked, grid_classes)
    page.legend.add_to(m)

    shown = len(points["features"])
    count = t.ngettext("{n} open incident", "{n} open incidents", shown)
    if incidents_matched is not None and incidents_matched > shown:
        count = t(
            "{shown} of {matched} open incidents shown", shown=shown, matched=incidents_matched
        )
    crumbs = _crumbs_html(t, breadcrumb, area_url, current=focus)
    head = (
        f'<div class="wg-title"><b>{html_text(title)}</b> · {html_text(count)}'
        f'<div class="wg-crumbs">{crumbs}</div></div>'
    )
    HtmlControl(head, position="topleft", cls="wg-titlebar").add_to(m)
    folium.LayerControl(collapsed=False, position="topright").add_to(m)
    return page


# -- tablet ----------------------------------------------------------------------------------
def _tablet_pin(t: Translator) -> dict[str, Any]:
    """Return the tablet's incident pins, on the map and for the cases its form files."""
    return {
        "cls": "wg-incident",
        "classBy": "category",
        "size": 44,  # a fingertip: at least 44 px, as touch guidelines ask
        "glyphs": t.names("category_glyph"),
        "title": "category",
        "labels": _point_labels(t),
        "popup": {"title": "category", "fields": _fields(t, INCIDENT_FIELDS[1:-1])},
    }


#: What a refusal says on a page not in English, by HTTP status (``wg.problem``): the
#: service's problem details are English. ``{field}`` is the input at fault, by its label.
HTTP_TEXT = {
    "http.400": N_("The request was not understood."),
    "http.401": N_("Your page session has ended: open the page again."),
    "http.403": N_("You may not do this."),
    "http.404": N_("Not found, or outside your area."),
    "http.409": N_("The case's state does not allow this now."),
    "http.412": N_("Someone else changed this first: reload and try again."),
    "http.413": N_("Too large."),
    "http.415": N_("This kind of file is not accepted."),
    "http.422": N_("Check what was entered: {field}"),
    "http.429": N_("Too many requests: try again shortly."),
    "http.5xx": N_("The service could not do it: try again later."),
    # A refusal as shown, with its status ({detail}: one of the above, or the service's).
    "http.refused": N_("{detail} (HTTP {status})"),
}

#: What the tablet's report form says as it works (filled in by ``wg.reportForm``).
REPORT_FORM_TEXT = {
    **HTTP_TEXT,
    "field.category": N_("Category"),
    "field.description": N_("What is wrong"),
    "field.lon": N_("Position"),
    "field.lat": N_("Position"),
    "no_gps": N_("no GPS on this device: tap the map where the case is"),
    "locating": N_("locating…"),
    "gps": N_("GPS ±{m} m"),
    # The browser's own reasons are English: the officer needs only what to do.
    "no_fix": N_("no GPS fix: tap the map where the case is"),
    "tapped": N_("tapped on the map"),
    "static": N_("This is a static copy: open the served page to report a case."),
    "retrying": N_("Network trouble, retrying — it will be filed once…"),
    "no_network": N_(
        "Not sent: no network. Press Report again — the case will still be filed once."
    ),
    "filed_in": N_("Filed case #{id} in grid {grid}"),
    "filed_outside": N_("Filed case #{id} (outside every grid: queued for dispatch)"),
    "no_position": N_("No position yet: wait for GPS or tap the map where the case is."),
    "sending": N_("Sending…"),
}
#: A landscape tablet puts the sheet beside the map rather than below it. This CSS goes in
#: the head so the map has its final size before Leaflet fits the grid into it.
TABLET_CSS = (
    "@media (min-width: 900px) and (orientation: landscape) { "
    "#{map} { position: fixed; top: 0; left: 0; width: 58%; height: 100%; } "
    ".wg-sheet { margin-left: 58%; } }"
)


CALL = N_("Call")


def _tel(phone: str) -> str:
    return re.sub(r"[^0-9+]", "", phone or "")


def _team_html(t: Translator, team: Sequence[Mapping[str, Any]]) -> str:
    items = []
    for i, member in enumerate(team):
        if not isinstance(member, Mapping) or not member.get("name"):
            raise PageDataError(f"team: member {i} needs a name")
        role = member.get("team_role")
        if role not in NAMES["team_role"]:
            raise PageDataError(
                f"team: member {i} has role {role!r}; roles are {', '.join(NAMES['team_role'])}"
            )
        tel = _tel(str(member.get("phone") or ""))
        call = f'<a class="wg-tel" href="tel:{tel}">{html_text(t(CALL))}</a>' if tel else ""
        items.append(
            f"<li><span><b>{html_text(str(member['name']))}</b>"
            f'<span class="wg-role">{html_text(t.name("team_role", role))}</span></span>{call}</li>'
        )
    present = {m["team_role"] for m in team}
    for role, label in t.names("team_role").items():
        if role not in present:
            missing = html_text(t("No {role} assigned", role=label.lower()))
            items.append(f'<li><span class="wg-role">{missing}</span></li>')
    return f'<ul class="wg-team">{"".join(items)}</ul>'


def _add_tablet_layers(page: Page, feature: dict, units_fc: dict, incidents_fc: dict) -> None:
    """Add the grid's boundary, its stationed units and its open incidents to the page."""
    t = page.t
    page.add(
        "Grid boundary",
        AreaLayer(
            collection([feature]),
            name=t("Grid boundary"),
            options={
                "style": {
                    "color": "#0b57d0",
                    "weight": 4,
                    "fillColor": "#0b57d0",
                    "fillOpacity": 0.06,
                },
                "popup": {"title": "name", "fields": [["code", t("Code")]]},
            },
        ),
    )
    page.add(
        "Stationed units",
        PointLayer(
            units_fc,
            name=t("Stationed units"),
            options={
                "cls": "wg-unitpin",
                "classBy": "kind",
                "size": 36,
                "glyphs": {},
                "title": "name",
                "labels": _point_labels(t),
                "popup": {
                    "title": "name",
                    "fields": [
                        ["kind", t("Kind")],
                        ["address", t("Address")],
                        ["party_org", t("Party organisation")],
                    ],
                },
            },
        ),
    )
    page.add(
        "Open incidents",
        PointLayer(_local_times(incidents_fc, t), name=t("Open incidents"), options=_tablet_pin(t)),
    )


def _tablet_sheet(
    t: Translator, props: Mapping[str, Any], team_html: str, incidents: int, units: int
) -> str:
    """Return the sheet below (or beside) the map: the grid's counts, its team, the form."""
    options = "".join(
        f'<option value="{k}">{html_text(label)}</option>'
        for k, label in t.names("category").items()
    )
    name, code = html_text(props["name"]), html_text(props["code"])
    counts = t(
        "{incidents} · {units} (square markers)",
        incidents=t.ngettext("{n} open incident", "{n} open incidents", incidents),
        units=t.ngettext("{n} stationed unit", "{n} stationed units", units),
    )
    h = {
        key: html_text(t(message))
        for key, message in {
            "team": N_("Team"),
            "report": N_("Report a case here"),
            "category": N_("Category"),
            "what": N_("What is wrong"),
            "example": N_("e.g. burst pipe at the east gate"),
            "locate": N_("Use my position (GPS)"),
            "where": N_("position: not yet known (GPS, or tap the map)"),
            "send": N_("Report"),
        }.items()
    }
    return f"""
<div class="wg-sheet wg-tablet">
<h2>{name} <small class="wg-note">{code}</small></h2>
<div class="wg-counts">{html_text(counts)}</div>
<h2>{h["team"]}</h2>
{team_html}
<h2>{h["report"]}</h2>
<form id="wg-report" class="wg-form" autocomplete="off">
<label for="wg-category">{h["category"]}</label>
<select id="wg-category" name="category" required>{options}</select>
<label for="wg-description">{h["what"]}</label>
<textarea id="wg-description" name="description" maxlength="2000"
 placeholder="{h["example"]}"></textarea>
<button type="button" class="wg-locate">{h["locate"]}</button>
<div class="wg-where">{h["where"]}</div>
<button type="submit">{h["send"]}</button>
<div class="wg-answer" role="status" aria-live="polite"></div>
</form>
</div>"""


def tablet_page(
    *,
    grid: Mapping[str, Any],
    team: Sequence[Mapping[str, Any]],
    units: Mapping[str, Any],
    incidents: Mapping[str, Any],
    report_endpoint: str | None = None,
    csrf_token: str | None = None,
    title: str | None = None,
    tiles: Basemap | None = None,
    lang: str = DEFAULT_LANGUAGE,
) -> Page:
    """Return a grid officer's tablet page: one grid, its team, units, incidents, a report form.

    Parameters
    ----------
    grid : Feature
        The grid's (simplified) polygon with ``code`` and ``name``.
    team : sequence of {name, team_role, phone}
        Its 1+1+1 team; ``team_role`` one of ``party_building_instructor``, ``grid_manager``,
        ``grid_police``.
    units, incidents : FeatureCollection
        Stationed units (points with ``name``) and open incidents (points with ``category``).
    report_endpoint : str, optional
        Where the form POSTs new incidents (``/incidents``). None renders the form disabled
        with a note (a static copy cannot file cases).
    csrf_token : str, optional
        Sent as ``X-CSRF-Token`` with the report, which the served page's session cookie
        authenticates (``service.edge.sessions``). The page never holds a token.
    title : str, optional
        Page title (default: the grid's name).
    tiles : Basemap, optional
        A raster basemap.
    lang : str
        The page's language (:data:`maps.i18n.LANGUAGES`).

    Raises
    ------
    PageDataError
        When the grid, the team or a layer is malformed.
    """
    t = translator(lang)
    feature = check_feature(grid, layer="grid", geometry=POLYGONAL, required=("code", "name"))
    units_fc = check_collection(units, layer="units", geometry=POINT, required=("name",))
    incidents_fc = check_collection(
        incidents, layer="incidents", geometry=POINT, required=("category",)
    )
    team_html = _team_html(t, team)
    props = feature["properties"]
    title = title or t("Grid {name}", name=props["name"])
    bounds = merge_bounds(
        bounds_of([feature]), bounds_of(incidents_fc["features"]), bounds_of(units_fc["features"])
    )
    # The map takes the upper part of the screen; team and form follow below it.
    m = _new_map(bounds, t=t, tiles=tiles, height="55%", padding=(30, 30, 30, 30))
    page = Page("tablet", title, m, t=t)
    _add_tablet_layers(page, feature, units_fc, incidents_fc)
    folium.LayerControl(collapsed=True).add_to(m)

    sheet = _tablet_sheet(
        t, props, team_html, len(incidents_fc["features"]), len(units_fc["features"])
    )
    form_options = {
        "form": "wg-report",
        "endpoint": report_endpoint,
        "csrf": csrf_token,
        "source": "patrol",
        "crs": "EPSG:4326",
        "retries": 3,
        "pin": _tablet_pin(t),
        "text": t.texts(REPORT_FORM_TEXT),
        "locale": t.lang,
        # The answer names the case's grid: by name when it is this page's.
        "names": {str(props["code"]): str(props["name"])},
    }
    script = (
        '{map}.getContainer().classList.add("wg-tablet");\n'
        f"wg.reportForm({{map}}, {js(form_options)});"
    )
    PageScript(html=sheet, script=script, css=TABLET_CSS).add_to(m)
    return page


# -- planning --------------------------------------------------------------------------------
#: The planning page's grid popup.
PLANNING_FIELDS = [
    ["code", N_("Code")],
    ["open_incidents", N_("Open incidents")],
    ["incidents_90d", N_("Incidents, 90 days")],
    ["units", N_("Stationed units")],
    ["team_roles", N_("Team roles (of 3)")],
]
TEAM_CLASS_LABELS = [N_("no role filled"), N_("1 of 3 roles"), N_("2 of 3 roles"), N_("complete")]


def _planning_classes(t: Translator, metric: str, values: list[float]) -> Classes:
    title, palette = PLANNING_METRICS[metric]
    if palette is None:
        return fixed_classes([0, 1, 2, 3], TEAM, [t(label) for label in TEAM_CLASS_LABELS])
    return integer_classes(values, classes=6, palette=palette)


def _check_planning(
    grids: Mapping[str, Any], outlines: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Return the planning page's grids and outlines by level, checked."""
    grid_fc = check_collection(
        grids,
        layer="grids",
        geometry=POLYGONAL,
        required=("code", "name", *PLANNING_METRICS),
        numeric=tuple(PLANNING_METRICS),
    )
    for i, f in enumerate(grid_fc["features"]):
        if f["properties"]["team_roles"] > 3:
            raise PageDataError(f"grids: feature {i}: team_roles is 0 to 3")
    checked = {}
    for level, fc in outlines.items():
        if level not in LEVEL_STYLE or level == "grid":
            raise PageDataError(f"outlines: unknown level {level!r}; city, district or community")
        checked[level] = check_collection(
            fc, layer=f"{level} outlines", geometry=POLYGONAL, required=("code", "name")
        )
    return grid_fc, checked


def _planning_grid_layer(
    t: Translator, grid_fc: dict[str, Any], metric: str, classes: Classes, area_url: str | None
) -> AreaLayer:
    """Return the grids coloured by ``metric``, each with its figures in a popup."""
    metric_title = t(PLANNING_METRICS[metric][0])
    links = [[area_url, t("Dispatch view of this grid →")]] if area_url else []
    return AreaLayer(
        grid_fc,
        name=t("Grids: {metric}", metric=metric_title.lower()),
        options={
            # As the dispatch page's grids: the streets show through the workload colours.
            "style": {
                "color": "#555555",
                "weight": 1,
                "fillOpacity": LEVEL_STYLE["grid"]["fillOpacity"],
            },
            "choropleth": {
                "property": metric,
                "breaks": list(classes.breaks),
                "colors": list(classes.colors),
                "missing": MISSING,
            },
            "tooltip": {"title": "name", "fields": [[metric, metric_title]]},
            "popup": {"title": "name", "fields": _fields(t, PLANNING_FIELDS), "links": links},
        },
    )


def planning_page(
    *,
    grids: Mapping[str, Any],
    outlines: Mapping[str, Mapping[str, Any]] | None = None,
    metric: str = "incidents_90d",
    area_url: str | None = None,
    title: str | None = None,
    tiles: Basemap | None = None,
    lang: str = DEFAULT_LANGUAGE,
) -> Page:
    """Return the planning page: every grid's workload as a choropleth, and a place for the
    coverage gaps (:func:`add_coverage_gap_layer`), shown one theme at a time.

    Parameters
    ----------
    grids : FeatureCollection
        Grid polygons with ``code``, ``name`` and the workload figures ``open_incidents``,
        ``incidents_90d``, ``units`` and ``team_roles`` (0–3).
    outlines : mapping of level → FeatureCollection, optional
        Boundaries drawn for orientation (``city``, ``district``, ``community``).
    metric : str
        The figure that colours the grids: one of :data:`PLANNING_METRICS`.
    area_url : str, optional
        Link template with ``{code}`` for a grid's popup (its dispatch view).
    title : str, optional
        Page title (default: "Planning: grid workload", in ``lang``).
    tiles : Basemap, optional
        A raster basemap.
    lang : str
        The page's language (:data:`maps.i18n.LANGUAGES`).

    Raises
    ------
    PageDataError
        For an unknown metric or malformed layer.
    """
    t = translator(lang)
    if metric not in PLANNING_METRICS:
        raise PageDataError(f"unknown metric {metric!r}; one of {', '.join(PLANNING_METRICS)}")
    area_url = _check_url(area_url, "area_url")
    grid_fc, checked = _check_planning(grids, outlines or {})
    bounds = merge_bounds(
        bounds_of(grid_fc["features"]), *(bounds_of(fc["features"]) for fc in checked.values())
    )
    m = _new_map(bounds, t=t, tiles=tiles, padding=(20, 110, 270, 20))
    page = Page("planning", title or t("Planning: grid workload"), m, t=t)
    metric_title = t(PLANNING_METRICS[metric][0])
    classes = _planning_classes(t, metric, [f["properties"][metric] for f in grid_fc["features"]])
    page.add("Grids", _planning_grid_layer(t, grid_fc, metric, classes, area_url))
    for level in ("community", "district", "city"):
        if level in checked:
            # Lines only (not clickable): a click anywhere inside reaches the grid's popup.
            options = {"style": dict(LEVEL_STYLE[level]), "lines": LINE_RANK[level]}
            page.add(
                LEVEL_TITLES[level],
                AreaLayer(checked[level], name=t(LEVEL_TITLES[level]), options=options),
            )
    page.legend = Legend(metric_title)
    page.legend.add_classes(t("per grid"), classes, LEVEL_STYLE["grid"]["fillOpacity"])
    if checked:
        page.legend.add_rows(
            t("Boundaries"), [_line_row(t.name("level", lv), LEVEL_STYLE[lv]) for lv in checked]
        )
    page.legend.add_to(m)
    head = (
        f'<div class="wg-title"><b>{html_text(page.title)}</b>'
        f'<div class="wg-crumbs">'
        + html_text(
            t(
                "{grids} · colour: {metric}",
                grids=t.ngettext("{n} grid", "{n} grids", len(grid_fc["features"])),
                metric=metric_title.lower(),
            )
        )
        + "</div></div>"
    )
    HtmlControl(head, position="topleft", cls="wg-titlebar").add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    # After the layer control and the legend: the themes' chooser goes below the one, and
    # marks its theme in the other.
    themes = GapThemes(title=t("Coverage gaps: one theme at a time"), none=t("No gap layer"))
    page.add(COVERAGE_GAPS, themes)
    return page


def _rgba(color: str, opacity: float) -> str:
    """Return a #rgb/#rrggbb colour with ``opacity`` as CSS (other colours as they are)."""
    h = color.lstrip("#")
    if not color.startswith("#") or len(h) not in (3, 6):
        return color
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{opacity:g})"


def _gap_swatch(style: Mapping[str, Any], *, point: bool) -> str:
    """Return the legend swatch of a gap layer: as its fill, outline and dashes are drawn."""
    if point:
        return (
            f'<span class="wg-swatch" style="background:{style["color"]};border-radius:50%"></span>'
        )
    fill = _rgba(style.get("fillColor", style["color"]), style.get("fillOpacity", 0.2))
    dash = "dashed" if style.get("dashArray") else "solid"
    weight = max(1, min(4, int(style.get("weight", 2))))
    return (
        f'<span class="wg-swatch" style="background:{fill};'
        f'border:{weight}px {dash} {style["color"]}"></span>'
    )


def _gap_style(color: str, style: Mapping[str, Any] | None) -> dict[str, Any]:
    default = {"color": color, "weight": 2, "fillColor": color, "fillOpacity": 0.2}
    out = {**default, **(style or {})}
    for key in ("color", "fillColor"):
        if not re.fullmatch(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]+", str(out[key])):
            raise PageDataError(f"color must be a CSS colour name or #hex, not {out[key]!r}")
    return out


def add_coverage_gap_layer(
    page: Page,
    data: Mapping[str, Any],
    *,
    name: str,
    color: str = "#6a3d9a",
    style: Mapping[str, Any] | None = None,
    description: str | None = None,
    popup_fields: Sequence[tuple[str, str]] = (),
) -> folium.map.Layer:
    """Return the layer added as one theme of the planning page's coverage gaps (one call).

    The themes are shown one at a time, chosen in their own control: the first added is
    shown when the page opens. Each has one row in the legend's "Coverage gaps" section.

    Parameters
    ----------
    page : Page
        A page from :func:`planning_page`.
    data : FeatureCollection
        The gaps: polygons (areas nobody covers) or points (e.g. households out of reach).
    name : str
        What the gaps are, for the chooser, the legend and tooltips (in the page's language).
    color : str
        A CSS colour (the outline and fill unless ``style`` says otherwise).
    style : mapping, optional
        Leaflet path options for polygons (``weight``, ``fillOpacity``, ``dashArray``, …).
    description : str, optional
        One line under the name in the legend (in the page's language).
    popup_fields : sequence of (property, label)
        Properties shown when a gap is clicked (labels in the page's language).

    Raises
    ------
    PageDataError
        When the page has no gap themes or the data is malformed.
    """
    themes = page.layers.get(COVERAGE_GAPS)
    if not isinstance(themes, GapThemes) or page.legend is None:
        raise PageDataError(f"the {page.kind} page has no {COVERAGE_GAPS!r} group")
    path_style = _gap_style(color, style)
    features = data.get("features") if isinstance(data, Mapping) else None
    first = features[0]["geometry"]["type"] if features else "Polygon"
    fields = [list(f) for f in popup_fields]
    label = {"text": name, "fields": fields}
    point = first in POINT
    if point:
        fc = check_collection(data, layer=name, geometry=POINT)
        layer = PointLayer(
            fc,
            name=name,
            control=False,
            show=False,
            options={
                "cls": "wg-gap",
                "classBy": "kind",
                "size": 18,
                "color": path_style["color"],
                "popup": label,
            },
        )
    else:
        fc = check_collection(data, layer=name, geometry=POLYGONAL)
        layer = AreaLayer(
            fc,
            name=name,
            control=False,
            show=False,
            options={"style": path_style, "tooltip": {"text": name}, "popup": label},
        )
    index = themes.add_theme(name, layer)
    page.add(f"{COVERAGE_GAPS}: {name}", layer, to=themes)
    note = f'<div class="wg-note">{html_text(description)}</div>' if description else ""
    page.legend.add_rows(
        page.t("Coverage gaps"),
        [
            f'<div class="wg-row wg-theme" data-theme="{index}">'
            f"{_gap_swatch(path_style, point=point)}<span>{html_text(name)}{note}</span></div>"
        ],
    )
    return layer


# -- rendering -------------------------------------------------------------------------------
def _walk(element):
    yield element
    for child in list(element._children.values()):
        yield from _walk(child)


def render_page(page: Page, *, assets: str = "link", static_url: str = STATIC_URL) -> str:
    """Return the page as one HTML document whose scripts come from ``maps/static``.

    Parameters
    ----------
    page : Page
        A page from one of the builders.
    assets : {"link", "inline"}
        ``"link"``: ``<script src>`` to ``static_url`` (served pages: cached by the browser);
        ``"inline"``: every script, stylesheet and image in the file (a static export that
        works offline from disk).
    static_url : str
        Where the service serves ``maps/static`` (for ``"link"``).

    Raises
    ------
    ValueError
        When an element needs a script that is not vendored (a new folium plugin: vendor it in
        ``maps/static`` and list it in :data:`maps.assets.ASSETS`).
    """
    needed: set[str] = set()
    for element in _walk(page.map):
        if isinstance(element, JSCSSMixin):
            # Class-level lists: what the element needs, even on a second rendering.
            for name, _url in [*type(element).default_js, *type(element).default_css]:
                if name not in UNUSED_FOLIUM_ASSETS:
                    needed.add(name)
            # Instance lists, emptied: folium would otherwise link its CDN copies.
            element.default_js = []
            element.default_css = []
    figure = page.map.get_root()
    if not isinstance(figure, Figure):  # pragma: no cover - folium always makes one
        raise ValueError("the page's map is not in a figure")
    figure.title = html_text(page.title)
    figure.header.add_child(RawHtml(asset_tags(needed, assets, static_url)), name="wg_assets")
    html = figure.render()
    return html.replace("<html>", f'<html lang="{page.t.lang}">', 1)
