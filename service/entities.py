"""Declarations of the entities wangge maps to cells: one :class:`EntitySpec` each.

A new entity kind is one declaration here (plus its table and schemas); the repository,
router, import and export machinery read everything else from the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from service.schemas import entities as s

__all__ = ["EntitySpec", "ENTITIES", "UNITS", "FACILITIES", "MEMBERS", "CARE", "INCIDENTS"]

DISPATCHERS = frozenset({"admin", "city_dispatcher", "district_dispatcher", "community_dispatcher"})


@dataclass(frozen=True)
class EntitySpec:
    """How one entity kind is stored, validated, scoped and exposed."""

    name: str  #: URL segment and layer name, plural ("units")
    table: str  #: table name (a fixed identifier, never from a request)
    label: str  #: singular, for messages
    create: type[BaseModel]
    update: type[BaseModel]
    read: type[BaseModel]
    columns: tuple[str, ...]  #: writable columns besides the location
    filters: tuple[str, ...] = ()  #: columns a listing may filter on by equality
    point: bool = True
    write_roles: frozenset[str] = DISPATCHERS
    #: Sensitive personal data: only these roles see details, everyone in scope sees counts,
    #: and every detail read is written to the access log.
    detail_roles: frozenset[str] | None = None
    sortable: tuple[str, ...] = ("id",)
    extra_read_columns: tuple[str, ...] = field(default=())

    @property
    def sensitive(self) -> bool:
        return self.detail_roles is not None


UNITS = EntitySpec(
    name="units",
    table="unit",
    label="unit",
    create=s.UnitCreate,
    update=s.UnitUpdate,
    read=s.UnitRead,
    columns=("name", "kind", "address", "party_org", "party_members", "staff", "co_building"),
    filters=("kind", "party_org", "co_building"),
)
FACILITIES = EntitySpec(
    name="facilities",
    table="facility",
    label="facility",
    create=s.FacilityCreate,
    update=s.FacilityUpdate,
    read=s.FacilityRead,
    columns=("name", "kind", "address", "floor_area_m2"),
    filters=("kind",),
)
MEMBERS = EntitySpec(
    name="members",
    table="member",
    label="member",
    create=s.MemberCreate,
    update=s.MemberUpdate,
    read=s.MemberRead,
    columns=("name", "kind", "home_community_code", "team_role", "serving_grid_code", "phone"),
    filters=("kind", "team_role", "serving_grid_code", "home_community_code"),
    point=False,
)
CARE = EntitySpec(
    name="care-households",
    table="care_household",
    label="care household",
    create=s.CareHouseholdCreate,
    update=s.CareHouseholdUpdate,
    read=s.CareHouseholdRead,
    columns=("kind", "head_name", "address", "notes", "cadre_member_id"),
    filters=("kind", "cadre_member_id"),
    write_roles=frozenset({"admin", "district_dispatcher", "community_dispatcher", "grid_officer"}),
    # Those who visit and those who direct the visits; planners and the city centre see counts.
    detail_roles=frozenset(
        {"admin", "district_dispatcher", "community_dispatcher", "grid_officer"}
    ),
)
INCIDENTS = EntitySpec(
    name="incidents",
    table="incident",
    label="incident",
    create=s.IncidentCreate,
    update=s.IncidentUpdate,
    read=s.IncidentRead,
    columns=(
        "category",
        "description",
        "address",
        "source",
        "status",
        "reported_at",
        "attachments",
    ),
    filters=("category", "source", "status", "reported_grid_code"),
    write_roles=DISPATCHERS | {"grid_officer", "intake"},
    sortable=("id", "reported_at"),
    extra_read_columns=("closed_at", "reported_generation", "reported_grid_code"),
)

ENTITIES: dict[str, EntitySpec] = {e.name: e for e in (UNITS, FACILITIES, MEMBERS, CARE, INCIDENTS)}
