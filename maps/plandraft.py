"""A boundary draft on the planning page: its grids beside today's, with the plan's metrics.

:func:`add_plan_draft` adds to a page from :func:`maps.pages.planning_page` the draft's grids
(coloured by their population's deviation from the plan's mean, heavy dashed outlines so
today's grids show through beneath) and a panel comparing the plan's metrics today and in the
draft: balance, compactness, contiguity, nesting (:mod:`geo.planmetrics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import folium

from maps.elements import AreaLayer, HtmlControl, html_text
from maps.geojson import POLYGONAL, PageDataError, check_collection
from maps.i18n import N_
from maps.style import fixed_classes

__all__ = ["DRAFT", "DRAFT_FIELDS", "SUMMARY_ROWS", "add_plan_draft"]

#: Key of the draft's layer in ``page.layers``.
DRAFT = "Draft"
#: Deviation classes: lower bounds of population / plan mean − 1, and their colours.
DEVIATION_BREAKS = (-1e9, -0.15, -0.05, 0.05, 0.15)
DEVIATION_COLORS = ("#2166ac", "#92c5de", "#f7f7f7", "#f4a582", "#b2182b")
DEVIATION_LABELS = (
    N_("more than 15 per cent below the mean"),
    N_("5 to 15 per cent below"),
    N_("within 5 per cent of the mean"),
    N_("5 to 15 per cent above"),
    N_("more than 15 per cent above"),
)
#: The draft grid's popup: property → label.
DRAFT_FIELDS = (
    ("key", N_("Key in the draft")),
    ("code", N_("Code")),
    ("population", N_("Population")),
    ("population_dev_pct", N_("Population vs mean")),
    ("incidents_per_year", N_("Incidents per year")),
    ("incidents_per_member", N_("Incidents per team member")),
    ("polsby_popper", N_("Polsby–Popper")),
    ("reock", N_("Reock")),
    ("convex_hull_ratio", N_("Convex-hull ratio")),
    ("parts", N_("Parts")),
    ("straddles", N_("Communities straddled")),
)
#: The panel's rows: summary key, label, how it reads (pct, int, ratio).
SUMMARY_ROWS = (
    ("grids", N_("Grids"), "int"),
    ("population_max_abs_dev", N_("Largest population deviation"), "pct"),
    ("population_max_abs_dev_in_community", N_("… within its community"), "pct"),
    ("incidents_per_member_max_abs_dev", N_("Largest workload deviation"), "pct"),
    ("polsby_popper_mean", N_("Polsby–Popper, mean"), "ratio"),
    ("reock_mean", N_("Reock, mean"), "ratio"),
    ("convex_hull_ratio_mean", N_("Convex-hull ratio, mean"), "ratio"),
    ("noncontiguous", N_("Grids in several parts"), "int"),
    ("straddling", N_("Grids straddling communities"), "int"),
)
_STYLE = {"color": "#222222", "weight": 2.5, "dashArray": "6 4", "fillOpacity": 0.75}


def _read(value: Any, how: str) -> str:
    if value is None:
        return "–"
    if how == "pct":
        return f"{100 * float(value):.1f}%"
    if how == "ratio":
        return f"{float(value):.3f}"
    return f"{int(value):d}"


def _rounded(props: Mapping[str, Any]) -> dict[str, Any]:
    out = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in props.items()
    }
    dev = out.get("population_dev")
    out["population_dev_pct"] = None if dev is None else f"{100 * float(dev):+.1f}%"
    for k in ("population", "incidents_per_year"):
        if out.get(k) is not None:
            out[k] = round(float(out[k]))
    for k in ("incidents_per_member",):
        if out.get(k) is not None:
            out[k] = round(float(out[k]), 1)
    for k in ("polsby_popper", "reock", "convex_hull_ratio"):
        if out.get(k) is not None:
            out[k] = round(float(out[k]), 3)
    return out


def _before_layer_control(m, element) -> None:
    """Move ``element`` before the map's layer control: the control's script names every
    overlay, so an overlay added after it would be undefined when the control is made."""
    items = list(m._children.items())
    names = [k for k, v in items]
    control = next(
        (i for i, (_k, v) in enumerate(items) if isinstance(v, folium.LayerControl)), None
    )
    name = element.get_name()
    if control is None or names.index(name) < control:
        return
    mine = items.pop(names.index(name))
    items.insert(control, mine)
    m._children.clear()
    m._children.update(items)


def add_plan_draft(
    page,
    *,
    name: str,
    grids: Mapping[str, Any],
    today: Mapping[str, Any],
    draft: Mapping[str, Any],
) -> AreaLayer:
    """Return the draft's layer, added to a planning page with the panel of its metrics.

    Parameters
    ----------
    page : maps.pages.Page
        A page from :func:`maps.pages.planning_page` (its translator speaks the page's
        language).
    name : str
        The draft's name (shown as it is).
    grids : FeatureCollection
        The draft's grids with ``key``, ``code`` and the measures of
        :func:`geo.planmetrics.plan_metrics` (``population_dev`` colours them).
    today, draft : mapping
        The plan summaries (:attr:`geo.planmetrics.PlanMetrics.plan`) of today's grids of the
        same area and of the draft.

    Raises
    ------
    PageDataError
        For a malformed layer.
    """
    t = page.t
    fc = check_collection(
        grids,
        layer="draft grids",
        geometry=POLYGONAL,
        required=("key",),
    )
    for i, f in enumerate(fc["features"]):
        dev = f["properties"].get("population_dev", "missing")
        if dev is not None and (isinstance(dev, bool) or not isinstance(dev, int | float)):
            raise PageDataError(
                f"draft grids: feature {i}: population_dev must be a number or null, not {dev!r}"
            )
    fc = {
        **fc,
        "features": [{**f, "properties": _rounded(f["properties"])} for f in fc["features"]],
    }
    if page.legend is None:
        raise PageDataError(f"the {page.kind} page has no legend for the draft")
    classes = fixed_classes(
        DEVIATION_BREAKS, DEVIATION_COLORS, [t(label) for label in DEVIATION_LABELS]
    )
    title = t("Draft: {name}", name=name)
    layer = AreaLayer(
        fc,
        name=title,
        options={
            "style": _STYLE,
            "choropleth": {
                "property": "population_dev",
                "breaks": list(classes.breaks),
                "colors": list(classes.colors),
                "missing": "#cccccc",
            },
            "tooltip": {
                "title": "key",
                "fields": [["population_dev_pct", t("Population vs mean")]],
            },
            "popup": {"title": "name", "fields": [[p, t(label)] for p, label in DRAFT_FIELDS]},
        },
    )
    page.add(DRAFT, layer)
    _before_layer_control(page.map, layer)
    page.legend.add_classes(t("Draft grids: population vs the plan's mean"), classes)
    today_label, draft_label = t("Today"), t("Draft")
    head = f"<tr><th></th><th>{html_text(today_label)}</th><th>{html_text(draft_label)}</th></tr>"
    rows = "".join(
        f"<tr><td>{html_text(t(label))}</td><td>{html_text(_read(today.get(key), how))}</td>"
        f"<td>{html_text(_read(draft.get(key), how))}</td></tr>"
        for key, label, how in SUMMARY_ROWS
    )
    panel = (
        f'<div class="wg-plan"><b>{html_text(title)}</b>'
        f'<table class="wg-plan-table">{head}{rows}</table></div>'
    )
    HtmlControl(panel, position="bottomleft", cls="wg-plan-panel").add_to(page.map)
    return layer
