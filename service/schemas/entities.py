"""Schemas of the entities mapped to cells: units, facilities, members, care households,
incidents. One family per resource: ``…Create``, ``…Update`` (derived from the create schema
by :func:`patch_schema`: every field optional, same bounds), ``…Read``.

The entity kinds (:mod:`service.specs.entity_kinds`) take their columns from these schemas.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic.fields import FieldInfo

from geo.coords import parse_input_crs
from service.inputs import Moment, NulFreeModel, RowId
from service.schemas.crs import InputCrs
from service.schemas.jsonbody import JsonTypes

UnitKind = Literal[
    "government_agency",
    "enterprise",
    "public_institution",
    "non_public_firm",
    "social_organisation",
    "shop",
]
PartyOrg = Literal["none", "group", "branch", "general_branch", "committee"]
FacilityKind = Literal["service_hall", "service_station", "party_member_station"]
MemberKind = Literal["party_member", "volunteer", "grid_staff"]
TeamRole = Literal["party_building_instructor", "grid_manager", "grid_police"]
CareKind = Literal[
    "hardship", "dispute", "laid_off", "serious_illness", "correction", "elderly_alone"
]
IncidentCategory = Literal[
    "water", "gas", "street_light", "road", "sanitation", "public_order", "other"
]
IncidentSource = Literal["hotline_12319", "patrol", "resident", "camera", "referral"]
IncidentStatus = Literal["new", "open", "closed"]

# Blanks are stripped, so a name needs a character that is not one; no NUL (NulFreeModel).
# Said in OpenAPI only: the checks themselves are min_length after stripping and the NUL check.
Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        json_schema_extra={"pattern": r"^[^\x00]*[^\s\x00][^\x00]*$"},
    ),
]
Text = Annotated[str, Field(max_length=2000)]
Code = Annotated[str, Field(pattern=r"^[0-9]{6,18}$")]
# Examples (documentation, and what the fuzz test starts from): places of the Guiyang demo.
_COMMUNITY = Field(examples=["520102003001"])
_GRID = Field(examples=["520102003001001"])


class _In(NulFreeModel, JsonTypes):
    # JsonTypes: a JSON body's values have their documented JSON types ("1" is not 1).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PointIn(_In):
    """A location in any of the coordinate systems field data arrives in."""

    lon: float = Field(description="longitude in `crs`", examples=[106.7138])
    lat: float = Field(description="latitude in `crs`", examples=[26.5786])
    crs: InputCrs = "EPSG:4326"


def _known_crs(value: str) -> str:
    # Checked even when no point comes with it: a name the server cannot read is an error.
    parse_input_crs(value)
    return value


class PointPatch(_In):
    """A move: ``lon`` and ``lat`` together (both left out: the entity stays where it is)."""

    _crs = field_validator("crs")(_known_crs)

    lon: float = Field(None, json_schema_extra=lambda s: s.pop("default", None))
    lat: float = Field(None, json_schema_extra=lambda s: s.pop("default", None))
    crs: InputCrs = "EPSG:4326"


def _without_default(extra: Any):
    """Return a ``json_schema_extra`` that applies ``extra`` and drops the default."""

    def apply(schema: dict[str, Any]) -> None:
        if callable(extra):
            extra(schema)
        elif extra:
            schema.update(extra)
        # A PATCH field left out is unchanged: its absence has no value to document.
        schema.pop("default", None)

    return apply


def patch_schema(
    create: type[BaseModel], name: str, *, without: tuple[str, ...] = (), **extra: Any
) -> type[BaseModel]:
    """Return the ``…Update`` schema of a ``…Create`` schema: every field optional (default
    None, so a PATCH names only what it changes), with the same types and bounds.

    ``without`` drops fields a change may not touch; ``extra`` adds fields only a change has
    (``name=(annotation, default)``, as :func:`pydantic.create_model` takes them).
    """
    base = PointPatch if issubclass(create, PointIn) else _In
    fields: dict[str, Any] = {}
    for field_name, info in create.model_fields.items():
        if field_name in base.model_fields or field_name in without:
            continue
        # Keep the type, so null stays refused where a create refuses it (a PATCH leaves
        # out what it does not change), and the bounds (ge, max_length, ...); drop the
        # default (from the documented schema too) and the create-only text.
        patch_info = FieldInfo.merge_field_infos(
            info,
            default=None,
            default_factory=None,
            description=None,
            json_schema_extra=_without_default(info.json_schema_extra),
        )
        fields[field_name] = (info.annotation, patch_info)
    return create_model(name, __base__=base, **fields, **extra)


class Cells(BaseModel):
    """Where an entity lies, for the generation it was (re)mapped in."""

    generation: int | None
    grid_code: str | None
    community_code: str | None
    district_code: str | None


class _PointRead(BaseModel):
    id: int
    lon: float
    lat: float
    cells: Cells
    created_at: datetime
    updated_at: datetime


# -- units --------------------------------------------------------------------------------
class UnitCreate(PointIn):
    name: Name
    kind: UnitKind
    address: Text = ""
    party_org: PartyOrg = "none"
    party_members: int = Field(0, ge=0, le=1_000_000)
    staff: int | None = Field(None, ge=0, le=10_000_000)
    co_building: bool = False


UnitUpdate = patch_schema(UnitCreate, "UnitUpdate")


class UnitRead(_PointRead):
    name: str
    kind: UnitKind
    address: str
    party_org: PartyOrg
    party_members: int
    staff: int | None
    co_building: bool


# -- facilities ---------------------------------------------------------------------------
class FacilityCreate(PointIn):
    name: Name
    kind: FacilityKind
    address: Text = ""
    floor_area_m2: float | None = Field(None, ge=0, le=1_000_000)


FacilityUpdate = patch_schema(FacilityCreate, "FacilityUpdate")


class FacilityRead(_PointRead):
    name: str
    kind: FacilityKind
    address: str
    floor_area_m2: float | None


# -- members ------------------------------------------------------------------------------
class MemberCreate(_In):
    name: Name
    kind: MemberKind
    home_community_code: Annotated[Code, _COMMUNITY]
    team_role: TeamRole | None = None
    serving_grid_code: Annotated[Code, _GRID] | None = None
    phone: Annotated[str, Field(max_length=40)] = ""


MemberUpdate = patch_schema(MemberCreate, "MemberUpdate")


class MemberRead(BaseModel):
    id: int
    name: str
    kind: MemberKind
    home_community_code: str
    team_role: TeamRole | None
    serving_grid_code: str | None
    phone: str
    created_at: datetime
    updated_at: datetime


# -- care households (sensitive) -----------------------------------------------------------
class CareHouseholdCreate(PointIn):
    kind: CareKind
    head_name: Name
    address: Text = ""
    notes: Text = ""
    cadre_member_id: RowId | None = None


CareHouseholdUpdate = patch_schema(CareHouseholdCreate, "CareHouseholdUpdate")


class CareHouseholdRead(_PointRead):
    kind: CareKind
    head_name: str
    address: str
    notes: str
    cadre_member_id: int | None


# -- incidents ----------------------------------------------------------------------------
class IncidentCreate(PointIn):
    category: IncidentCategory
    description: Text = ""
    address: Text = ""
    source: IncidentSource | None = Field(
        None, description="required unless the token is an intake source's"
    )
    reported_at: Moment | None = Field(None, description="default: now")
    attachments: list[AnyHttpUrl] = Field(default_factory=list, max_length=20)


# Where and when an incident was reported, and by whom, stay as filed. Its status follows
# its case's lifecycle (service.dispatch): it changes through POST /cases/{id}/actions/...
IncidentUpdate = patch_schema(IncidentCreate, "IncidentUpdate", without=("source", "reported_at"))


class ReportedCell(BaseModel):
    """The cell an incident was reported in, kept when boundaries are redrawn."""

    generation: int | None
    grid_code: str | None


class IncidentRead(_PointRead):
    category: IncidentCategory
    description: str
    address: str
    source: IncidentSource
    status: IncidentStatus
    reported_at: datetime
    closed_at: datetime | None
    attachments: list[str]
    reported: ReportedCell


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a listing, ordered by id; ``next`` is the next page's URL (null: last)."""

    items: list[T]
    total: int
    limit: int
    offset: int
    next: str | None


class CountRow(BaseModel):
    """One group's count; the group's keys are the ``by`` names (null: outside every cell)."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"additionalProperties": {"type": ["string", "null"]}}
    )

    count: int


class ImportProblem(BaseModel):
    row: int
    field: str
    reason: str


class ImportReport(BaseModel):
    """What an import did (``service.bulk.ImportReport``); refused imports carry it in 422."""

    entity: str
    rows: int
    accepted: int
    rejected: int
    unassigned: int
    committed: bool
    skip_bad: bool
    crs: str
    per_grid: dict[str, int]
    kept_in_properties: list[str]
    ignored_columns: list[str]
    problems: list[ImportProblem] = Field(description="the first 1000")
    problems_total: int
