"""Entity kinds: one :class:`EntitySpec` per kind of thing wangge maps to cells.

A new kind is one declaration here, plus its table (a migration) and its schemas
(:mod:`service.schemas.entities`). The router, repository, bulk import, file transfer and map
layer read everything else from the spec: what differs between kinds is a field of the spec,
never a test of the kind's name. The spec's columns come from its schemas; its map layer
(:mod:`service.specs.map_layers`) from its columns.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from service.auth import CARE_DETAIL_ROLES, MANAGER_ROLES, Principal
from service.dispatch.start import start_columns
from service.schemas import entities as s

__all__ = [
    "EntitySpec",
    "Lifecycle",
    "Reference",
    "MapLayer",
    "Rule",
    "ENTITIES",
    "UNITS",
    "FACILITIES",
    "MEMBERS",
    "CARE",
    "INCIDENTS",
    "CELL_COLUMNS",
    "REPORTED_CELL_COLUMNS",
    "unwrap",
]

#: Fields of a schema that give the location, not a column of their own.
LOCATION_FIELDS = ("lon", "lat", "crs")
#: The cells the database assigns to every located entity (trigger ``locate_entity``).
CELL_COLUMNS = ("grid_code", "community_code", "district_code")
#: Where a kind that keeps the cell it was reported in stores it (read back as ``reported``);
#: ``reported_area_path`` is written too, never read.
REPORTED_CELL_COLUMNS: dict[str, type] = {"reported_generation": int, "reported_grid_code": str}
#: The role of systems that file cases (the 12319 hotline, a camera platform).
INTAKE = "intake"

#: A check across the columns of one row: ``(field, reason)`` when the row breaks it.
Rule = Callable[[Mapping[str, Any]], "tuple[str, str] | None"]


def unwrap(annotation: Any) -> tuple[Any, bool, list]:
    """Return the annotation without ``| None`` or ``Annotated``, whether None was allowed,
    and the metadata ``Annotated`` carried."""
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        annotation = args[0]
    metadata: list = []
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            metadata.extend(getattr(item, "metadata", []) or [item])
    return annotation, nullable, metadata


def _python_type(annotation: Any) -> type:
    """Return the plain type a field holds: ``str`` for a Literal of strings, ``list``..."""
    annotation, _, _ = unwrap(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return type(typing.get_args(annotation)[0])
    return typing.get_origin(annotation) or annotation


@dataclass(frozen=True)
class Lifecycle:
    """The statuses an entity moves through, and what a change of status records."""

    statuses: tuple[str, ...]  #: every status; a new entity starts in the first (column default)
    closed: str  #: the status that stamps ``closed_at`` (leaving it clears the stamp)
    column: str = "status"
    closed_at: str = "closed_at"
    #: ``starts(conn, columns=, paths=) -> columns``: the columns a bulk writer fills so that
    #: new rows skip the database's per-row start trigger (incidents: the case lifecycle)
    starts: Callable[..., dict[str, Any]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.closed not in self.statuses:
            raise ValueError(f"closed status {self.closed!r} is not one of {self.statuses}")
        # Layer SQL compares with the closed status as a literal (map_layers): keep it plain.
        if not all(st.replace("_", "").isalnum() and st.isascii() for st in self.statuses):
            raise ValueError(f"statuses must be plain words: {self.statuses}")

    @property
    def initial(self) -> str:
        return self.statuses[0]

    @property
    def open_statuses(self) -> tuple[str, ...]:
        return tuple(st for st in self.statuses if st != self.closed)


@dataclass(frozen=True)
class Reference:
    """A column naming another record: an area of one level, or an entity of another kind.

    Every write checks it: the code names an area of that level, the id an entity of that
    kind the caller may see.
    """

    target: str  #: ``"area"``, or the name of the kind referred to (``"members"``)
    level: str | None = None  #: areas: the level the code must have
    #: areas: the column where the database keeps the area's path (a trigger). A kind without
    #: a location is scoped by these paths: it is in every area one of them is in.
    path_column: str | None = None


@dataclass(frozen=True)
class MapLayer:
    """How a located kind is drawn: a layer of GeoJSON items, OGC API Features and tiles."""

    title: str
    min_zoom: int  #: tiles below this zoom are empty (too much to draw)
    #: columns shown, in this order (None: every column); the cells are added
    properties: tuple[str, ...] | None = None
    #: properties a request may filter on (None: those of the kind's filters that are shown);
    #: the cells are added
    filters: tuple[str, ...] | None = None


@dataclass(frozen=True)
class EntitySpec:
    """How one entity kind is stored, validated, scoped, exposed and drawn."""

    name: str  #: URL segment and layer name, plural ("units")
    table: str  #: table name (a fixed identifier, never from a request)
    label: str  #: singular, for messages
    create: type[BaseModel]
    update: type[BaseModel]
    read: type[BaseModel]
    filters: tuple[str, ...] = ()  #: columns a listing may filter on by equality
    #: located by a point, cells assigned by the database; False: no location, scoped by the
    #: paths of its area references
    point: bool = True
    write_roles: frozenset[str] = MANAGER_ROLES
    #: Sensitive personal data: only these roles see details, everyone in scope sees counts,
    #: and every detail read is written to the access log.
    detail_roles: frozenset[str] | None = None
    #: columns that name other records, checked on every write
    references: Mapping[str, Reference] = field(default_factory=dict, hash=False)
    #: checks across columns, run on each row written (a change: on the row as it would be)
    rules: tuple[Rule, ...] = ()
    #: when it happened (listings take ``since``/``until`` on it, the layer ``datetime``)
    time_column: str | None = None
    lifecycle: Lifecycle | None = None
    #: the column an intake token's source is written to, whatever the body says; every
    #: write must give it
    intake_source: str | None = None
    #: keeps the cell it was reported in (:data:`REPORTED_CELL_COLUMNS`) when boundaries are
    #: redrawn: set on insert by a trigger, and by bulk COPY
    keeps_reported_cell: bool = False
    layer: MapLayer | None = None
    #: writable columns: the fields of the create and update schemas besides the location,
    #: in the order the read schema shows them (derived)
    columns: tuple[str, ...] = field(init=False)
    #: the columns holding floats (numeric columns are read as Decimal) (derived)
    float_columns: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        writable = {*self.create.model_fields, *self.update.model_fields} - {*LOCATION_FIELDS}
        if self.lifecycle is not None:
            # Imports of history carry the status; afterwards only the lifecycle changes it
            # (incidents: the case actions of service.dispatch), never a PATCH.
            writable.add(self.lifecycle.column)
        missing = writable - set(self.read.model_fields)
        if missing:
            raise ValueError(f"{self.name}: {sorted(missing)} are written but never read")
        columns = tuple(f for f in self.read.model_fields if f in writable)
        object.__setattr__(self, "columns", columns)
        floats = tuple(c for c in columns if self.column_type(c) is float)
        object.__setattr__(self, "float_columns", floats)
        if self.layer is not None and not self.point:
            raise ValueError(f"{self.name}: only located kinds are drawn")

    @property
    def sensitive(self) -> bool:
        return self.detail_roles is not None

    @property
    def change_roles(self) -> frozenset[str]:
        """Roles that may change an entity: intake systems file cases, never edit them."""
        return self.write_roles - {INTAKE}

    @property
    def delete_roles(self) -> frozenset[str]:
        return self.write_roles & MANAGER_ROLES

    @property
    def import_roles(self) -> frozenset[str]:
        """Roles that may import files: managers, and intake systems where they may write."""
        return self.write_roles & (MANAGER_ROLES | {INTAKE})

    @property
    def extra_read_columns(self) -> tuple[str, ...]:
        """Columns read besides the writable ones, the ids, timestamps and cells."""
        out: tuple[str, ...] = ()
        if self.lifecycle is not None:
            out += (self.lifecycle.closed_at,)
        if self.keeps_reported_cell:
            out += tuple(REPORTED_CELL_COLUMNS)
        return out

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns that never hold null: a change may not empty them."""
        out = tuple(
            c
            for c in self.columns
            if c in self.create.model_fields
            and not unwrap(self.create.model_fields[c].annotation)[1]
        )
        if self.lifecycle is not None:
            out += (self.lifecycle.column,)
        return out

    @property
    def area_path_columns(self) -> dict[str, str]:
        """Reference column → the column holding its area's path (kinds without location)."""
        return {c: r.path_column for c, r in self.references.items() if r.path_column}

    def column_type(self, column: str) -> type:
        """Return the Python type a column holds (``str`` for codes and Literals)."""
        if column in CELL_COLUMNS:
            return str
        if column in REPORTED_CELL_COLUMNS:
            return REPORTED_CELL_COLUMNS[column]
        for schema in (self.read, self.create, self.update):
            if column in schema.model_fields:
                return _python_type(schema.model_fields[column].annotation)
        raise KeyError(f"{self.name} has no column {column!r}")

    def forced_values(self, principal: Principal) -> dict[str, Any]:
        """Return the values a write by ``principal`` takes whatever it sends."""
        if self.intake_source is not None and principal.role == INTAKE:
            return {self.intake_source: principal.source}
        return {}


def _team_role_goes_with_grid(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """A member serves a grid in a team role, or does neither (the table checks it too)."""
    if row.get("team_role") is not None and row.get("serving_grid_code") is None:
        return "serving_grid_code", "a team role needs the grid served"
    if row.get("serving_grid_code") is not None and row.get("team_role") is None:
        return "team_role", "serving a grid needs a team role"
    return None


UNITS = EntitySpec(
    name="units",
    table="unit",
    label="unit",
    create=s.UnitCreate,
    update=s.UnitUpdate,
    read=s.UnitRead,
    filters=("kind", "party_org", "co_building"),
    layer=MapLayer("Stationed units", min_zoom=10, filters=("kind", "party_org")),
)
FACILITIES = EntitySpec(
    name="facilities",
    table="facility",
    label="facility",
    create=s.FacilityCreate,
    update=s.FacilityUpdate,
    read=s.FacilityRead,
    filters=("kind",),
    layer=MapLayer("Service facilities", min_zoom=8, properties=("name", "kind", "address")),
)
MEMBERS = EntitySpec(
    name="members",
    table="member",
    label="member",
    create=s.MemberCreate,
    update=s.MemberUpdate,
    read=s.MemberRead,
    filters=("kind", "team_role", "serving_grid_code", "home_community_code"),
    point=False,
    references={
        "home_community_code": Reference("area", level="community", path_column="home_path"),
        "serving_grid_code": Reference("area", level="grid", path_column="serving_path"),
    },
    rules=(_team_role_goes_with_grid,),
)
CARE = EntitySpec(
    name="care-households",
    table="care_household",
    label="care household",
    create=s.CareHouseholdCreate,
    update=s.CareHouseholdUpdate,
    read=s.CareHouseholdRead,
    filters=("kind", "cadre_member_id"),
    # The same people record households as may read them.
    write_roles=CARE_DETAIL_ROLES,
    detail_roles=CARE_DETAIL_ROLES,
    references={"cadre_member_id": Reference("members")},
    # Never names, addresses or notes on a map: the layer is for finding gaps in care.
    layer=MapLayer(
        "Care households (sensitive)",
        min_zoom=12,
        properties=("kind", "cadre_member_id"),
        filters=("kind",),
    ),
)
INCIDENTS = EntitySpec(
    name="incidents",
    table="incident",
    label="incident",
    create=s.IncidentCreate,
    update=s.IncidentUpdate,
    read=s.IncidentRead,
    filters=("category", "source", "status", "reported_grid_code"),
    write_roles=MANAGER_ROLES | {"grid_officer", INTAKE},
    time_column="reported_at",
    lifecycle=Lifecycle(
        statuses=typing.get_args(s.IncidentStatus), closed="closed", starts=start_columns
    ),
    intake_source="source",
    keeps_reported_cell=True,
    layer=MapLayer(
        "Incidents",
        min_zoom=10,
        properties=(
            "category",
            "status",
            "source",
            "reported_at",
            "description",
            "address",
            "reported_grid_code",
        ),
    ),
)

ENTITIES: dict[str, EntitySpec] = {e.name: e for e in (UNITS, FACILITIES, MEMBERS, CARE, INCIDENTS)}
