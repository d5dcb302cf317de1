"""Map layers: one :class:`LayerSpec` per layer, read by GeoJSON items, OGC API – Features
and vector tiles alike.

The area layers (one per level) are declared here. Each located entity kind with a
:class:`~service.specs.entity_kinds.MapLayer` is a layer too, derived from its
:class:`~service.specs.entity_kinds.EntitySpec`: its properties' SQL and types come from the
kind's columns, its scope and sensitivity from the kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from service.specs.entity_kinds import CELL_COLUMNS, ENTITIES, INCIDENTS, EntitySpec

__all__ = [
    "LayerSpec",
    "LAYERS",
    "AREA_LEVEL_LAYERS",
    "INCIDENT_BIN_ZOOMS",
    "CLUSTER_PROPERTIES",
    "entity_layer",
]

#: The zooms of ``incident_bin`` (migrations 0012, 0021) besides its counters (z = 0): an
#: incident tile at zoom z clusters the bins of z + CLUSTER_SHIFT (the first at or above it).
INCIDENT_BIN_ZOOMS = (15, 16, 17, 18, 19, 20, 21)
#: A clustered tile draws one point per 1/2^CLUSTER_SHIFT of its side (32 x 32 cells).
CLUSTER_SHIFT = 5
#: A cluster's properties in a tile (its feature has no id): how many incidents it stands
#: for, and how many of them are not closed.
CLUSTER_PROPERTIES = {"point_count": "integer", "open_count": "integer"}


@dataclass(frozen=True)
class LayerSpec:
    """How a layer is selected, scoped, described and drawn."""

    name: str  #: collection id / tile layer name
    title: str
    description: str
    source: str  #: FROM clause, aliased ``t`` (a fixed identifier, never from a request)
    id_sql: str  #: feature id expression
    mvt_id_sql: str  #: integer feature id for vector tiles
    geometry: str  #: "polygon" or "point"
    properties: dict[str, str]  #: property name → SQL expression (the selectable set)
    property_types: dict[str, str]  #: property name → JSON schema type, for queryables
    filters: tuple[str, ...] = ()  #: properties a request may filter on by equality
    kind: str = "area"  #: "area" (generation-aware, visible with ancestors) or "entity"
    level: str | None = None
    entity_table: str | None = None  #: for entity layers: the table (scope and changes)
    datetime_sql: str | None = None  #: for the OGC ``datetime`` parameter
    detail_roles: frozenset[str] | None = None  #: sensitive: only these roles may read it
    min_zoom: int = 0  #: tiles below this zoom are empty (too much to draw)
    max_features_per_tile: int = 5000
    order_sql: str = ""
    #: properties sent when a request names none (``None``: all); the rest stay selectable
    default_properties: tuple[str, ...] | None = None
    #: properties vector tiles leave out (they have no ?properties=): those costly to compute
    untiled: tuple[str, ...] = ()
    #: table of counts kept on write (``incident_bin``): tiles holding more than
    #: ``cluster_above`` features draw its bins as clusters (:data:`CLUSTER_PROPERTIES`)
    bins: str | None = None
    cluster_above: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def tile_properties(self) -> dict[str, str]:
        """Property name → SQL expression of what a vector tile's features carry."""
        return {k: v for k, v in self.properties.items() if k not in self.untiled}

    @property
    def tile_property_types(self) -> dict[str, str]:
        """Property name → JSON type of a tile's features (clusters' too: TileJSON)."""
        types = {k: v for k, v in self.property_types.items() if k not in self.untiled}
        return types | (CLUSTER_PROPERTIES if self.bins else {})


def _open_incidents_sql() -> str:
    # Open incidents are what the dispatch wall colours grids by: summed from the counters
    # kept on write (incident_bin at z = 0, by area path and status), never recounted from
    # the incidents (at a year of cases that recount was most of a grid tile's time). An
    # area's incidents are those whose chain is its path or under it (paths hold digits and
    # '/': path <= p < path || '0').
    lifecycle = INCIDENTS.lifecycle
    return (
        "(SELECT coalesce(sum(b.n), 0) FROM incident_bin b WHERE b.z = 0 "
        f"AND b.{lifecycle.column} <> '{lifecycle.closed}' "
        """AND b.area_path >= t.path COLLATE "C" AND b.area_path < t.path || '0' COLLATE "C")"""
    )


def _on_time_handling_sql(cell_column: str) -> str:
    # The evaluation's on-time handling rate (service.dispatch.evaluation) of the area's
    # cases reported in the last 90 days: fed back by the deadline their first sign-for set,
    # of those fed back or past that deadline. Selectable, not sent by default (it reads the
    # case events of every area drawn).
    return (
        "(SELECT (count(*) FILTER (WHERE c.handled <= c.due))::float8 / nullif(count(*), 0) "
        "FROM (SELECT min(e.at) FILTER (WHERE e.action = 'feedback') AS handled, "
        "((array_agg(e.data->>'due_at' ORDER BY e.seq) FILTER (WHERE e.action = 'sign'))[1])"
        "::timestamptz AS due "
        f"FROM {INCIDENTS.table} i JOIN case_event e ON e.incident_id = i.id "
        f"WHERE i.{cell_column} = t.code AND i.reported_at >= now() - interval '90 days' "
        "GROUP BY i.id) c WHERE c.due IS NOT NULL AND (c.handled IS NOT NULL OR c.due < now()))"
    )


def _area_layer(name: str, level: str, title: str, counts: str | None, min_zoom: int) -> LayerSpec:
    props = {
        "code": "t.code",
        "name": "t.name",
        "level": "t.level",
        "parent_code": "t.parent_code",
        "area_km2": "round(t.area_m2 / 1e6, 3)",
    }
    types = {
        "code": "string",
        "name": "string",
        "level": "string",
        "parent_code": "string",
        "area_km2": "number",
    }
    if counts:
        props["open_incidents"] = _open_incidents_sql()
        types["open_incidents"] = "integer"
        props["on_time_handling_90d"] = _on_time_handling_sql(counts)
        types["on_time_handling_90d"] = "number"
    return LayerSpec(
        name=name,
        title=title,
        description=f"{title}: boundaries of the current generation (or ?generation=)",
        source="area t",
        id_sql="t.code",
        mvt_id_sql="CAST(t.code AS bigint)",  # codes are digits: their number is the id
        geometry="polygon",
        properties=props,
        property_types=types,
        filters=("code", "parent_code", "name"),
        kind="area",
        level=level,
        min_zoom=min_zoom,
        order_sql="t.code",
        # A layer holds one level, and the feature's id is its code: repeating either on
        # every feature is payload for nothing (both stay selectable with ?properties=).
        default_properties=tuple(
            p for p in props if p not in ("level", "code", "on_time_handling_90d")
        ),
        # Per grid it reads every case of 90 days and their events: not for every tile.
        untiled=("on_time_handling_90d",),
    )


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", datetime: "string"}


def _property_sql(column: str, python_type: type) -> str:
    if python_type is datetime:
        # RFC 3339 in UTC, as the API's JSON writes it.
        return f"to_char(t.{column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    return f"t.{column}"


#: An incident tile holding more than this many incidents draws clusters instead.
CLUSTER_ABOVE = 1000


def entity_layer(spec: EntitySpec) -> LayerSpec:
    """Return the map layer of a located entity kind, derived from its spec."""
    drawn = spec.layer
    shown = drawn.properties if drawn.properties is not None else spec.columns
    filters = drawn.filters
    if filters is None:
        filters = tuple(p for p in shown if p in spec.filters)
    columns = (*shown, *CELL_COLUMNS)
    return LayerSpec(
        name=spec.name,
        title=drawn.title,
        description=drawn.title,
        source=f"{spec.table} t",
        id_sql="t.id",
        mvt_id_sql="t.id",
        geometry="point",
        properties={c: _property_sql(c, spec.column_type(c)) for c in columns},
        property_types={c: _JSON_TYPES[spec.column_type(c)] for c in columns},
        filters=(*filters, *CELL_COLUMNS),
        kind="entity",
        entity_table=spec.table,
        datetime_sql=f"t.{spec.time_column}" if spec.time_column else None,
        detail_roles=spec.detail_roles,
        min_zoom=drawn.min_zoom,
        order_sql="t.id",
        # Incidents pile up (a year of cases: 1 M); their counts are kept on write.
        bins="incident_bin" if spec is INCIDENTS else None,
        cluster_above=CLUSTER_ABOVE if spec is INCIDENTS else 0,
    )


LAYERS: dict[str, LayerSpec] = {}
for _spec in (
    _area_layer("cities", "city", "Cities", None, 0),
    _area_layer("districts", "district", "County-level districts", "district_code", 0),
    _area_layer("communities", "community", "Communities", "community_code", 6),
    _area_layer("grids", "grid", "Grids", "grid_code", 8),
    *(entity_layer(e) for e in ENTITIES.values() if e.layer is not None),
):
    LAYERS[_spec.name] = _spec

AREA_LEVEL_LAYERS = {s.level: s.name for s in LAYERS.values() if s.kind == "area"}
