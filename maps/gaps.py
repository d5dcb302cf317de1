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
        title="Beyond a 15-minute walk",
        description="The part of each community farther than a 15-minute walk from every "
        "service facility, with the households and units in it.",
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
        popup=(
            ("name", "Community"),
            ("uncovered_share", "Share of area"),
            ("households_uncovered", "Households beyond"),
            ("units_uncovered", "Units beyond"),
        ),
    ),
    GapLayer(
        name="topology_defects",
        title="Partition defects",
        description="Where an area's children do not tile it exactly: gaps, overlaps, parts "
        "outside it, slivers and grids in several parts.",
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
        popup=(
            ("kind", "Defect"),
            ("parent_code", "Parent"),
            ("codes", "Areas"),
            ("area_m2", "Area m²"),
        ),
    ),
    GapLayer(
        name="staffing_missing_roles",
        title="Grids missing a team role",
        description="Grids whose 1+1+1 team lacks a role.",
        analysis="staffing",
        geometry_type="MultiPolygon",
        keep=lambda i: i["kind"] == "missing_role",
        columns=(
            *_GRID,
            _col("missing_roles", get=lambda i: _join(i["roles"])),
            _col("missing", "int64", lambda i: i["count"]),
        ),
        color="#e31a1c",
        popup=(("grid_code", "Grid"), ("missing_roles", "Missing")),
    ),
    GapLayer(
        name="staffing_doubled_roles",
        title="Grids doubling a team role",
        description="Grids with more than one member in a 1+1+1 team role.",
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
        title="Workload outliers",
        description="Grids whose incidents per team member lie far above or below the others'.",
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
        color="#ff7f00",
        popup=(
            ("grid_code", "Grid"),
            ("outlier", "Outlier"),
            ("open", "Open"),
            ("overdue", "Overdue"),
            ("incidents", "Incidents"),
        ),
    ),
    GapLayer(
        name="organisation_grids_without_branch",
        title="Grids without a party branch",
        description="Grids none of whose units has a party branch.",
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
        title="Large units without co-building",
        description="Large units with neither a party organisation nor a co-building link.",
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
        title="Grids with care gaps",
        description="Grids with care households without a cadre or with a cadre from "
        "another community (counts only).",
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
        title="Proposed sites",
        description="New service facilities proposed by the siting analysis, best first.",
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

#: Every gap layer by name, in GeoPackage order.
GAP_LAYERS: dict[str, GapLayer] = {layer.name: layer for layer in _LAYERS}
#: The layers the planning page and the report map draw, bottom first: the thin partition
#: defects last, over the fills.
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
            return f"{100 * value:.1f} %"
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


def add_gap_layers(page, analyses: Mapping[str, Mapping[str, Any]]) -> None:
    """Add the non-empty :data:`MAP_GAP_LAYERS` to a planning page's "Coverage gaps" group.

    Parameters
    ----------
    page : maps.pages.Page
        A page from :func:`maps.pages.planning_page`.
    analyses : mapping of analysis name → result
        Results of the coverage analyses (as in a report's ``analyses``); a layer whose
        analysis is absent, or has no ``items``, is left out.
    """
    from maps.pages import add_coverage_gap_layer

    for name in MAP_GAP_LAYERS:
        layer = GAP_LAYERS[name]
        data = gap_collection(layer, list(analyses.get(layer.analysis, {}).get("items", ())))
        if data["features"]:
            add_coverage_gap_layer(
                page,
                data,
                name=layer.title,
                color=layer.color,
                popup_fields=[(col, label) for col, label in layer.popup],
            )
