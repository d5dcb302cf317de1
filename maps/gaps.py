"""The coverage-gap layers: one declaration for the planning page, the report map and the
report's GeoPackage (pure: no database, no folium until a page is drawn).

Each :class:`GapLayer` names a kind of gap the coverage analyses find: which analysis of a
report feeds it (``report["analyses"][analysis]["items"]``), which of its findings belong
to it, the columns it has in the GeoPackage, its title and colour on a map, and the
columns its popup shows. :data:`GAP_LAYERS` lists every layer (the GeoPackage writes them
all); :data:`MAP_GAP_LAYERS` the ones the maps draw, in drawing order (the last on top).

>>> GAP_LAYERS["topology_defects"].title
'Partition defects'
>>> [GAP_LAYERS[n].analysis for n in MAP_GAP_LAYERS]
['reach', 'staffing', 'workload', 'topology']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from maps.i18n import N_

__all__ = ["Column", "GapLayer", "GAP_LAYERS", "MAP_GAP_LAYERS", "gap_collection", "add_gap_layers"]


@dataclass(frozen=True)
class Column:
    """A property of a gap layer: its name, pandas dtype and how an analysis finding gives it."""

    name: str
    dtype: str  #: "int64", "float64" or "object" (text)
    get: Callable[[dict], Any]


@dataclass(frozen=True)
class GapLayer:
    """One kind of coverage gap, as every output shows it."""

    name: str  #: layer name in the GeoPackage, and the key of :data:`GAP_LAYERS`
    title: str  #: what a map's legend and tooltips call it
    description: str  #: one sentence for a reader of the GeoPackage or the legend
    analysis: str  #: the report section whose ``items`` feed it
    geometry_type: str  #: "MultiPolygon" or "Point"
    keep: Callable[[dict], bool]  #: which findings of the analysis belong to the layer
    columns: tuple[Column, ...]
    color: str  #: CSS colour on a map
    popup: tuple[tuple[str, str], ...] = ()  #: (column, label) shown when a gap is clicked
    #: Leaflet path options on a map (outline, fill, dashes), over ``color``'s defaults: each
    #: drawn layer its own look, light enough to read the workload colours beneath.
    style: tuple[tuple[str, Any], ...] = ()

    def column(self, name: str) -> Column:
        """Return the column called ``name``."""
        return next(c for c in self.columns if c.name == name)


def _join(values: Any) -> str | None:
    if values is None:
        return None
    if isinstance(values, list | tuple):
        return ";".join(str(v) for v in values)
    return str(values)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _col(name: str, dtype: str = "object", get: Callable[[dict], Any] | None = None) -> Column:
    """Return a column; by default it copies the finding's property of the same name."""
    return Column(name, dtype, get or (lambda i: i[name]))


_GRID = (_col("grid_code"), _col("grid_name"), _col("community_code"))

_LAYERS = (
    GapLayer(
        name="reach_uncovered",
        title=N_("Beyond a 15-minute walk"),
        description=N_(
            "The part of each community farther than a 15-minute walk from every "
            "service facility, with the households and units in it."
        ),
        analysis="reach",
        geometry_type="MultiPolygon",
        keep=lambda i: i["uncovered_area_m2"] > 0,
        columns=(
            _col("rank", "int64"),
            _col("code"),
            _col("name"),
            _col("area_m2", "float64"),
            _col("uncovered_area_m2", "float64"),
            _col("uncovered_share", "float64"),
            _col("households_total", "int64", lambda i: i["households"]["total"]),
            _col("households_uncovered", "int64", lambda i: i["households"]["uncovered"]),
            _col("units_total", "int64", lambda i: i["units"]["total"]),
            _col("units_uncovered", "int64", lambda i: i["units"]["uncovered"]),
        ),
        color="#6a3d9a",
        # A light wash with a thin edge: large areas, read over the workload colours.
        style=(("weight", 1), ("fillOpacity", 0.22)),
        popup=(
            ("name", N_("Community")),
            ("uncovered_share", N_("Share of area")),
            ("households_uncovered", N_("Households beyond")),
            ("units_uncovered", N_("Units beyond")),
        ),
    ),
    GapLayer(
        name="topology_defects",
        title=N_("Partition defects"),
        description=N_(
            "Where an area's children do not tile it exactly: gaps, overlaps, parts "
            "outside it, slivers and grids in several parts."
        ),
        analysis="topology",
        geometry_type="MultiPolygon",
        keep=lambda i: True,
        columns=(
            _col("kind"),
            _col("of", get=lambda i: i.get("of")),
            _col("parent_code"),
            _col("codes", get=lambda i: _join(i["codes"])),
            _col("area_m2", "float64"),
            _col("mean_width_m", "float64", lambda i: i.get("mean_width_m", math.nan)),
            _col("parts", "float64", lambda i: i.get("parts", math.nan)),
        ),
        color="#000000",
        # Small shapes (slivers, gaps): dark and solid, so they stand out.
        style=(("weight", 2), ("fillOpacity", 0.6)),
        popup=(
            ("kind", N_("Defect")),
            ("parent_code", N_("Parent")),
            ("codes", N_("Areas")),
            ("area_m2", N_("Area m²")),
        ),
    ),
    GapLayer(
        name="staffing_missing_roles",
        title=N_("Grids missing a team role"),
        description=N_("Grids whose 1+1+1 team lacks a role."),
        analysis="staffing",
        geometry_type="MultiPolygon",
        keep=lambda i: i["kind"] == "missing_role",
        columns=(
            *_GRID,
            _col("missing_roles", get=lambda i: _join(i["roles"])),
            _col("missing", "int64", lambda i: i["count"]),
        ),
        color="#2166ac",
        # Whole grids: a heavy outline, almost no fill (the grid's own colour shows).
        style=(("weight", 4), ("fillOpacity", 0.05)),
        popup=(("grid_code", N_("Grid")), ("missing_roles", N_("Missing"))),
    ),
    GapLayer(
        name="staffing_doubled_roles",
        title=N_("Grids doubling a team role"),
        description=N_("Grids with more than one member in a 1+1+1 team role."),
        analysis="staffing",
        geometry_type="MultiPolygon",
        keep=lambda i: i["kind"] == "doubled_role",
        columns=(
            *_GRID,
            _col("role"),
            _col("count", "int64"),
            _col("member_ids", get=lambda i: _join(i["member_ids"])),
        ),
        color="#fb9a99",
    ),
    GapLayer(
        name="workload_outliers",
        title=N_("Workload outliers"),
        description=N_("Grids whose incidents per team member lie far above or below the others'."),
        analysis="workload",
        geometry_type="MultiPolygon",
        keep=lambda i: i["outlier"] is not None,
        columns=(
            *_GRID,
            _col("outlier"),
            _col("incidents", "int64"),
            _col("closed", "int64"),
            _col("open", "int64"),
            _col("overdue", "int64"),
            _col("team_size", "int64"),
            _col("z", "float64", lambda i: _nan(i["z"])),
            _col("median_ratio", "float64", lambda i: _nan(i["median_ratio"])),
        ),
        color="#d01c8b",
        # Whole grids, told from missing roles by the dashes.
        style=(("weight", 4), ("dashArray", "8 6"), ("fillOpacity", 0.05)),
        popup=(
            ("grid_code", N_("Grid")),
            ("outlier", N_("Outlier")),
            ("open", N_("Open")),
            ("overdue", N_("Overdue")),
            ("incidents", N_("Incidents")),
        ),
    ),
    GapLayer(
        name="organisation_grids_without_branch",
        title=N_("Grids without a party branch"),
        description=N_("Grids none of whose units has a party branch."),
        analysis="organisation",
        geometry_type="MultiPolygon",
        keep=lambda i: i["kind"] == "grid_without_party_branch",
        columns=(
            _col("code"),
            _col("name"),
            _col("parent_code"),
            _col("units", "int64"),
            _col("without_org", "int64"),
        ),
        color="#b15928",
    ),
    GapLayer(
        name="organisation_large_units_without_co_building",
        title=N_("Large units without co-building"),
        description=N_("Large units with neither a party organisation nor a co-building link."),
        analysis="organisation",
        geometry_type="Point",
        keep=lambda i: i["kind"] == "large_unit_without_co_building",
        columns=(
            _col("unit_id", "int64"),
            _col("name"),
            _col("unit_kind"),
            _col("staff", "int64"),
            _col("party_org"),
            _col("grid_code"),
        ),
        color="#cab2d6",
    ),
    # Counts per grid only: never a household's position or identity.
    GapLayer(
        name="care_grid_gaps",
        title=N_("Grids with care gaps"),
        description=N_(
            "Grids with care households without a cadre or with a cadre from "
            "another community (counts only)."
        ),
        analysis="care",
        geometry_type="MultiPolygon",
        keep=lambda i: i["kind"] == "grid_care_gaps",
        columns=(
            *_GRID,
            _col("households", "int64"),
            _col("without_cadre", "int64"),
            _col("cadre_outside_community", "int64"),
        ),
        color="#1f78b4",
    ),
    GapLayer(
        name="siting_sites",
        title=N_("Proposed sites"),
        description=N_("New service facilities proposed by the siting analysis, best first."),
        analysis="siting",
        geometry_type="Point",
        keep=lambda i: True,
        columns=(
            _col("rank", "int64"),
            _col("community_code"),
            _col("adds", "float64"),
            _col("adds_share", "float64", lambda i: _nan(i["adds_share"])),
        ),
        color="#33a02c",
    ),
)

#: How coded values of the popups read (the team roles come from :data:`maps.i18n.NAMES`).
VALUE_NAMES: dict[str, dict[str, str]] = {
    "kind": {
        "gap": N_("gap"),
        "overlap": N_("overlap"),
        "outside": N_("outside its parent"),
        "sliver": N_("sliver"),
        "multipart": N_("in several parts"),
    },
    "outlier": {"high": N_("far above the others"), "low": N_("far below the others")},
}

#: Every gap layer by name, in GeoPackage order.
GAP_LAYERS: dict[str, GapLayer] = {layer.name: layer for layer in _LAYERS}
#: The layers the planning page and the report map draw, one at a time, in the order their
#: chooser lists them: the first that has gaps is shown when the page opens.
MAP_GAP_LAYERS = (
    "reach_uncovered",
    "staffing_missing_roles",
    "workload_outliers",
    "topology_defects",
)


def _shown(name: str, value: Any) -> Any:
    """Return a column's value as a popup shows it (shares in per cent, NaN as nothing)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if name.endswith("_share"):
            return f"{100 * value:.1f}%"
        return round(value, 1)
    return value


def gap_collection(layer: GapLayer, items: list[dict]) -> dict[str, Any]:
    """Return the findings of ``layer``'s analysis that belong to it as a FeatureCollection
    for a map: the popup's columns as properties (findings without geometry left out)."""
    features = []
    for item in items:
        if item.get("geometry") is None or not layer.keep(item):
            continue
        properties = {
            name: _shown(name, layer.column(name).get(item)) for name, _label in layer.popup
        }
        features.append({"type": "Feature", "geometry": item["geometry"], "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def _read(t, layer: GapLayer, data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` with its coded popup values in the reader's words."""
    for f in data["features"]:
        props = f["properties"]
        for name, names in VALUE_NAMES.items():
            if name in props and props[name] in names:
                props[name] = t(names[props[name]])
        if props.get("missing_roles"):
            roles = props["missing_roles"].split(";")
            props["missing_roles"] = t.join(t.name("team_role", r) for r in roles)
    return data


def add_gap_layers(page, analyses: Mapping[str, Mapping[str, Any]]) -> None:
    """Add the non-empty :data:`MAP_GAP_LAYERS` to a planning page's coverage-gap themes,
    in the page's language.

    Parameters
    ----------
    page : maps.pages.Page
        A page from :func:`maps.pages.planning_page`.
    analyses : mapping of analysis name → result
        Results of the coverage analyses (as in a report's ``analyses``); a layer whose
        analysis is absent, or has no ``items``, is left out.
    """
    from maps.pages import add_coverage_gap_layer

    t = page.t
    for name in MAP_GAP_LAYERS:
        layer = GAP_LAYERS[name]
        data = gap_collection(layer, list(analyses.get(layer.analysis, {}).get("items", ())))
        if data["features"]:
            add_coverage_gap_layer(
                page,
                _read(t, layer, data),
                name=t(layer.title),
                color=layer.color,
                style=dict(layer.style),
                description=t(layer.description),
                popup_fields=[(col, t(label)) for col, label in layer.popup],
            )
