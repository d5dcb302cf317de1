"""Map layers: one :class:`LayerSpec` per layer, read by GeoJSON items, OGC API – Features
and vector tiles alike. A new layer is one declaration here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LayerSpec", "LAYERS", "AREA_LEVEL_LAYERS"]


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
    extra: dict = field(default_factory=dict)


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
        # Open incidents are what the dispatch wall colours grids by.
        props["open_incidents"] = (
            f"(SELECT count(*) FROM incident i WHERE i.{counts} = t.code AND i.status <> 'closed')"
        )
        types["open_incidents"] = "integer"
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
        default_properties=tuple(p for p in props if p not in ("level", "code")),
    )


def _entity_layer(
    name: str,
    table: str,
    title: str,
    props: dict[str, str],
    types: dict[str, str],
    filters: tuple[str, ...],
    **kw,
) -> LayerSpec:
    base = {
        "grid_code": "t.grid_code",
        "community_code": "t.community_code",
        "district_code": "t.district_code",
    }
    return LayerSpec(
        name=name,
        title=title,
        description=title,
        source=f"{table} t",
        id_sql="t.id",
        mvt_id_sql="t.id",
        geometry="point",
        properties={**props, **base},
        property_types={
            **types,
            "grid_code": "string",
            "community_code": "string",
            "district_code": "string",
        },
        filters=(*filters, "grid_code", "community_code", "district_code"),
        kind="entity",
        entity_table=table,
        order_sql="t.id",
        **kw,
    )


LAYERS: dict[str, LayerSpec] = {}
for _spec in (
    _area_layer("cities", "city", "Cities", None, 0),
    _area_layer("districts", "district", "County-level districts", "district_code", 0),
    _area_layer("communities", "community", "Communities", "community_code", 6),
    _area_layer("grids", "grid", "Grids", "grid_code", 8),
    _entity_layer(
        "incidents",
        "incident",
        "Incidents",
        {
            "category": "t.category",
            "status": "t.status",
            "source": "t.source",
            "reported_at": "to_char(t.reported_at AT TIME ZONE 'UTC', "
            '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\')',
            "description": "t.description",
            "address": "t.address",
            "reported_grid_code": "t.reported_grid_code",
        },
        {
            "category": "string",
            "status": "string",
            "source": "string",
            "reported_at": "string",
            "description": "string",
            "address": "string",
            "reported_grid_code": "string",
        },
        ("category", "status", "source", "reported_grid_code"),
        datetime_sql="t.reported_at",
        min_zoom=10,
    ),
    _entity_layer(
        "units",
        "unit",
        "Stationed units",
        {
            "name": "t.name",
            "kind": "t.kind",
            "address": "t.address",
            "party_org": "t.party_org",
            "party_members": "t.party_members",
            "staff": "t.staff",
            "co_building": "t.co_building",
        },
        {
            "name": "string",
            "kind": "string",
            "address": "string",
            "party_org": "string",
            "party_members": "integer",
            "staff": "integer",
            "co_building": "boolean",
        },
        ("kind", "party_org"),
        min_zoom=10,
    ),
    _entity_layer(
        "facilities",
        "facility",
        "Service facilities",
        {"name": "t.name", "kind": "t.kind", "address": "t.address"},
        {"name": "string", "kind": "string", "address": "string"},
        ("kind",),
        min_zoom=8,
    ),
    _entity_layer(
        "care-households",
        "care_household",
        "Care households (sensitive)",
        {"kind": "t.kind", "cadre_member_id": "t.cadre_member_id"},
        {"kind": "string", "cadre_member_id": "integer"},
        ("kind",),
        detail_roles=frozenset(
            {"admin", "district_dispatcher", "community_dispatcher", "grid_officer"}
        ),
        min_zoom=12,
    ),
):
    LAYERS[_spec.name] = _spec

AREA_LEVEL_LAYERS = {s.level: s.name for s in LAYERS.values() if s.kind == "area"}
