"""The wangge schema as SQLAlchemy Core tables: every table, column, key, index and constraint.

The migrations (``service/migrations/versions``) create and change the schema; this module
declares the result once, for the SQLAlchemy paths to build statements from
(``select(generation.c.id)``, ``insert(api_token)``) and for Alembic to compare against.
``tests/service/test_tables_match_migrations.py`` proves the two agree: Alembic's
autogenerate comparison finds no difference, and the catalog of a database built from these
declarations equals that of a migrated one, check and exclusion constraints, identities,
defaults and index definitions included. A migration that changes the schema changes this
module in the same commit.

Geometry columns are :class:`geoalchemy2.types.Geometry` with their type and SRID
(``geom`` in EPSG:4326, see :mod:`geo.crs`); their GiST indexes are declared as plain
indexes (``spatial_index=False``) so they keep the names the migrations gave them.
Constraint names are those PostgreSQL chose for the migrations' unnamed constraints, so a
later migration can drop or replace them by name.

What lives only in the migrations, because a table declaration cannot hold it: the
extensions (postgis, btree_gist, pgrouting), the functions (``locate_point``,
``notify_layer_change``, ...) and the triggers that fill derived columns (``area.area_m2``,
``area_part`` rows, the cell columns of point entities, member paths) and announce changes
to map servers. Columns those triggers fill are declared here like any other.
"""

from __future__ import annotations

from typing import get_args

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, ExcludeConstraint

from geo.crs import STORAGE_SRID
from service.dispatch.lifecycle import CATEGORIES, OPEN_STATES, PRIORITIES, STATES, STEPS
from service.schemas.entities import CareKind, UnitKind

__all__ = [
    "metadata",
    "generation",
    "area",
    "area_part",
    "boundary_plan",
    "boundary_plan_grid",
    "boundary_plan_edit",
    "api_token",
    "unit",
    "facility",
    "member",
    "care_household",
    "incident",
    "case_event",
    "case_time_limit",
    "case_attachment",
    "incident_bin",
    "incident_month",
    "access_log",
    "idempotency_key",
    "road_import",
    "road_vertex",
    "road_edge",
    "POINT_TABLES",
]

# PostgreSQL's own names for primary and foreign keys, which the migrations left unnamed.
metadata = MetaData(
    naming_convention={
        "pk": "%(table_name)s_pkey",
        "fk": "%(table_name)s_%(column_0_name)s_fkey",
    }
)

ROLES = (
    "admin",
    "planner",
    "city_dispatcher",
    "district_dispatcher",
    "community_dispatcher",
    "grid_officer",
    "intake",
)
SOURCES = ("hotline_12319", "patrol", "resident", "camera", "referral")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    """Return the SQL condition ``column IN (values...)``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _timestamp(name: str, *, now: bool = False) -> Column:
    """Return a timestamptz column: NOT NULL DEFAULT now() with ``now``, else nullable."""
    if now:
        return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())
    return Column(name, DateTime(timezone=True))


def _identity(*, always: bool = True) -> Column:
    """Return the ``id`` column: bigint generated always (or by default) as identity."""
    return Column("id", BigInteger, Identity(always=always), primary_key=True)


def _not_blank(table: str, column: str) -> CheckConstraint:
    return CheckConstraint(f"length(btrim({column})) > 0", name=f"{table}_{column}_check")


def _valid_geometry(table: str) -> CheckConstraint:
    return CheckConstraint("ST_IsValid(geom) AND NOT ST_IsEmpty(geom)", name=f"{table}_geom_check")


def _text_default(value: str):
    return text(f"'{value}'")


# -- boundaries ---------------------------------------------------------------------------

generation = Table(
    "generation",
    metadata,
    Column("id", Integer, Identity(always=False), primary_key=True),
    Column("description", Text, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("false")),
    _timestamp("created_at", now=True),
    _timestamp("activated_at"),
    CheckConstraint("active = (activated_at IS NOT NULL)", name="generation_check"),
    # MapIt's rule: the current generation is the newest active one; at most one
    # generation waits, inactive, to be activated.
    Index(
        "generation_one_pending", text("(true)"), unique=True, postgresql_where=text("NOT active")
    ),
)

area = Table(
    "area",
    metadata,
    _identity(),
    Column("code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("level", Text, nullable=False),
    Column("depth", SmallInteger, nullable=False),
    Column("parent_code", Text),
    Column("path", Text, nullable=False),
    Column("generation_low", Integer, ForeignKey("generation.id"), nullable=False),
    Column("generation_high", Integer, ForeignKey("generation.id"), nullable=False),
    Column(
        "geom",
        Geometry("MULTIPOLYGON", srid=STORAGE_SRID, spatial_index=False),
        nullable=False,
    ),
    # Filled by the area_before_write trigger (geodesic square metres).
    Column("area_m2", BigInteger, nullable=False, server_default=text("0")),
    Column("source", Text, nullable=False, server_default=_text_default("")),
    Column("properties", JSONB, nullable=False, server_default=_text_default("{}")),
    CheckConstraint("code ~ '^[0-9]{6,18}$'", name="area_code_check"),
    _not_blank("area", "name"),
    CheckConstraint(
        _one_of("level", ("city", "district", "community", "grid")), name="area_level_check"
    ),
    CheckConstraint(
        "depth = array_position(ARRAY['city', 'district', 'community', 'grid'], level) - 1",
        name="area_check",
    ),
    CheckConstraint("(depth = 0) = (parent_code IS NULL)", name="area_check1"),
    CheckConstraint("path = code OR path LIKE '%/' || code", name="area_check2"),
    CheckConstraint("generation_low <= generation_high", name="area_check3"),
    _valid_geometry("area"),
    # A code has at most one version per generation (btree_gist makes ``=`` a GiST operator).
    ExcludeConstraint(
        ("code", "="),
        (text("int4range(generation_low, generation_high, '[]')"), "&&"),
        name="area_code_int4range_excl",
        using="gist",
    ),
    Index("area_level_gen", "depth", "generation_low", "generation_high"),
    Index("area_parent", "parent_code"),
    Index("area_path", "path", postgresql_ops={"path": "text_pattern_ops"}),
    Index("area_geom", "geom", postgresql_using="gist"),
    # The lookup's ancestor chain: an index-only probe per point.
    Index(
        "area_code_generations",
        "code",
        "generation_low",
        "generation_high",
        postgresql_include=["depth", "name"],
    ),
)

# Point lookups run on subdivided copies of the areas (triggers keep them in step).
area_part = Table(
    "area_part",
    metadata,
    _identity(),
    Column("area_id", BigInteger, ForeignKey("area.id", ondelete="CASCADE"), nullable=False),
    Column("code", Text, nullable=False),
    Column("depth", SmallInteger, nullable=False),
    Column("generation_low", Integer, nullable=False),
    Column("generation_high", Integer, nullable=False),
    Column("geom", Geometry("POLYGON", srid=STORAGE_SRID, spatial_index=False), nullable=False),
    Index("area_part_geom", "geom", postgresql_using="gist"),
    Index("area_part_area", "area_id"),
    # One per level for lookup_batch.sql's level-by-level search (migration 0023).
    *(
        Index(
            f"area_part_geom_depth{d}",
            "geom",
            postgresql_using="gist",
            postgresql_where=text(f"depth = {d}"),
        )
        for d in range(4)
    ),
)

# -- boundary plans (drafts of an area's grids, migration 0019) -----------------------------

boundary_plan = Table(
    "boundary_plan",
    metadata,
    _identity(),
    Column("name", Text, nullable=False),
    Column("area_code", Text, nullable=False),
    Column("area_level", Text, nullable=False),
    Column("base_generation", Integer, ForeignKey("generation.id"), nullable=False),
    Column("status", Text, nullable=False, server_default=_text_default("draft")),
    # The ETag: every edit adds one.
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("next_key", Integer, nullable=False, server_default=text("1")),
    Column("created_by", Text, nullable=False),
    Column("created_by_name", Text, nullable=False, server_default=_text_default("")),
    _timestamp("created_at", now=True),
    _timestamp("updated_at", now=True),
    Column("published_generation", Integer, ForeignKey("generation.id")),
    _timestamp("published_at"),
    _not_blank("boundary_plan", "name"),
    CheckConstraint(
        _one_of("area_level", ("district", "community")), name="boundary_plan_area_level_check"
    ),
    CheckConstraint(
        _one_of("status", ("draft", "published", "discarded")), name="boundary_plan_status_check"
    ),
    CheckConstraint(
        "(status = 'published') = (published_generation IS NOT NULL)",
        name="boundary_plan_published_check",
    ),
    CheckConstraint("version >= 1", name="boundary_plan_version_check"),
    Index("boundary_plan_area", "area_code"),
)

boundary_plan_grid = Table(
    "boundary_plan_grid",
    metadata,
    Column(
        "plan_id",
        BigInteger,
        ForeignKey("boundary_plan.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", Text, primary_key=True),
    # The base grid's code while the grid is unchanged; NULL once edited (a new code on publish).
    Column("code", Text),
    Column("parent_code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column(
        "geom",
        Geometry("MULTIPOLYGON", srid=STORAGE_SRID, spatial_index=False),
        nullable=False,
    ),
    _valid_geometry("boundary_plan_grid"),
    Index("boundary_plan_grid_geom", "geom", postgresql_using="gist"),
)

boundary_plan_edit = Table(
    "boundary_plan_edit",
    metadata,
    _identity(),
    Column(
        "plan_id", BigInteger, ForeignKey("boundary_plan.id", ondelete="CASCADE"), nullable=False
    ),
    Column("version", Integer, nullable=False),
    Column("op", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("actor_name", Text, nullable=False, server_default=_text_default("")),
    _timestamp("at", now=True),
    Column("removed", ARRAY(Text), nullable=False, server_default=_text_default("{}")),
    Column("added", ARRAY(Text), nullable=False, server_default=_text_default("{}")),
    Column("payload", JSONB, nullable=False, server_default=_text_default("{}")),
    UniqueConstraint("plan_id", "version", name="boundary_plan_edit_plan_id_version_key"),
)

# -- access -------------------------------------------------------------------------------

api_token = Table(
    "api_token",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("area_code", Text),
    # SHA-256 of the secret; the secret itself is never stored.
    Column("secret_sha256", LargeBinary, nullable=False),
    _timestamp("created_at", now=True),
    _timestamp("expires_at"),
    _timestamp("revoked_at"),
    # Intake tokens: where their incidents come from.
    Column("source", Text),
    CheckConstraint(_one_of("role", ROLES), name="api_token_role_check"),
    CheckConstraint(_one_of("source", SOURCES), name="api_token_source_check"),
    CheckConstraint("(role = 'admin') OR (area_code IS NOT NULL)", name="api_token_check"),
)

# Who read which sensitive record, and when (PIPL: record access).
access_log = Table(
    "access_log",
    metadata,
    _identity(),
    _timestamp("at", now=True),
    Column("token_id", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("entity", Text, nullable=False),
    Column("entity_id", BigInteger, nullable=False),
    Index("access_log_entity", "entity", "entity_id"),
)

idempotency_key = Table(
    "idempotency_key",
    metadata,
    Column("token_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("request_sha256", LargeBinary, nullable=False),
    Column("status", Integer),
    Column("response", JSONB),
    _timestamp("created_at", now=True),
)

# -- point entities -----------------------------------------------------------------------


def _point_table(
    name: str,
    *columns: Column,
    extra: tuple = (),
    grid_index: tuple[str, ...] = ("grid_code",),
    **options,
) -> Table:
    """Return an entity table located by a point, with the cells of its generation
    (``grid_index``: the columns of its index by grid).

    The cell columns are set by triggers from ``geom`` (or by the bulk path, which assigns
    cells itself by the same rule); entity rows have no foreign key to their generation
    (migration 0005: generations are never deleted, and the keys cost a bulk COPY most).
    """
    return Table(
        name,
        metadata,
        _identity(),
        *columns,
        Column("geom", Geometry("POINT", srid=STORAGE_SRID, spatial_index=False), nullable=False),
        Column("generation", Integer),
        Column("area_path", Text),
        Column("grid_code", Text),
        Column("community_code", Text),
        Column("district_code", Text),
        Column("city_code", Text),
        Column("properties", JSONB, nullable=False, server_default=_text_default("{}")),
        Column("created_by", Text),
        _timestamp("created_at", now=True),
        _timestamp("updated_at", now=True),
        *extra,
        Index(f"{name}_geom", "geom", postgresql_using="gist"),
        Index(f"{name}_path", "area_path", postgresql_ops={"area_path": "text_pattern_ops"}),
        Index(f"{name}_grid", *grid_index),
        **options,
    )


unit = _point_table(
    "unit",
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("address", Text, nullable=False, server_default=_text_default("")),
    Column("party_org", Text, nullable=False, server_default=_text_default("none")),
    Column("party_members", Integer, nullable=False, server_default=text("0")),
    Column("staff", Integer),
    Column("co_building", Boolean, nullable=False, server_default=text("false")),
    extra=(
        _not_blank("unit", "name"),
        CheckConstraint(
            _one_of("kind", get_args(UnitKind)),
            name="unit_kind_check",
        ),
        CheckConstraint(
            _one_of("party_org", ("none", "group", "branch", "general_branch", "committee")),
            name="unit_party_org_check",
        ),
        CheckConstraint("party_members >= 0", name="unit_party_members_check"),
        CheckConstraint("staff >= 0", name="unit_staff_check"),
    ),
)

facility = _point_table(
    "facility",
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("address", Text, nullable=False, server_default=_text_default("")),
    Column("floor_area_m2", Numeric),
    extra=(
        _not_blank("facility", "name"),
        CheckConstraint(
            _one_of("kind", ("service_hall", "service_station", "party_member_station")),
            name="facility_kind_check",
        ),
        CheckConstraint("floor_area_m2 >= 0", name="facility_floor_area_m2_check"),
    ),
)

# Members have no location of their own: scope follows their community and grid, whose
# materialised paths a trigger copies from the newest version of those areas.
member = Table(
    "member",
    metadata,
    _identity(),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("home_community_code", Text, nullable=False),
    Column("team_role", Text),
    Column("serving_grid_code", Text),
    Column("phone", Text, nullable=False, server_default=_text_default("")),
    Column("properties", JSONB, nullable=False, server_default=_text_default("{}")),
    Column("created_by", Text),
    _timestamp("created_at", now=True),
    _timestamp("updated_at", now=True),
    Column("home_path", Text),
    Column("serving_path", Text),
    _not_blank("member", "name"),
    CheckConstraint(
        _one_of("kind", ("party_member", "volunteer", "grid_staff")), name="member_kind_check"
    ),
    CheckConstraint(
        _one_of("team_role", ("party_building_instructor", "grid_manager", "grid_police")),
        name="member_team_role_check",
    ),
    CheckConstraint("(team_role IS NULL) = (serving_grid_code IS NULL)", name="member_check"),
    Index("member_home", "home_path", postgresql_ops={"home_path": "text_pattern_ops"}),
    Index("member_grid", "serving_grid_code"),
    Index("member_serving", "serving_path", postgresql_ops={"serving_path": "text_pattern_ops"}),
)

care_household = _point_table(
    "care_household",
    Column("kind", Text, nullable=False),
    Column("head_name", Text, nullable=False),
    Column("address", Text, nullable=False, server_default=_text_default("")),
    Column("notes", Text, nullable=False, server_default=_text_default("")),
    Column("cadre_member_id", BigInteger, ForeignKey("member.id", ondelete="SET NULL")),
    extra=(
        CheckConstraint(
            _one_of("kind", get_args(CareKind)),
            name="care_household_kind_check",
        ),
        _not_blank("care_household", "head_name"),
    ),
)

incident = _point_table(
    "incident",
    Column("category", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=_text_default("")),
    Column("address", Text, nullable=False, server_default=_text_default("")),
    Column("source", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=_text_default("new")),
    # The partition key (migration 0013: a partition per month in Guiyang's time, a DEFAULT
    # one, old months archived), hence in the primary key; ``id`` alone addresses a case.
    Column(
        "reported_at",
        DateTime(timezone=True),
        primary_key=True,
        nullable=False,
        server_default=func.now(),
    ),
    _timestamp("closed_at"),
    Column("attachments", ARRAY(Text), nullable=False, server_default=_text_default("{}")),
    # Where it was reported: fixed for ever, even after boundaries are redrawn.
    Column("reported_generation", Integer),
    Column("reported_area_path", Text),
    Column("reported_grid_code", Text),
    # The case lifecycle (migration 0010): a cache of the replay of its case_event rows,
    # written only through service.dispatch.lifecycle.apply (and the insert trigger).
    Column("state", Text, nullable=False),
    Column("priority", Text, nullable=False, server_default=_text_default("normal")),
    Column("owner_level", Text),
    Column("owner_area_code", Text),
    Column("owner_area_path", Text),
    Column("assignee_kind", Text),
    Column("assignee_code", Text),
    Column("assignee_path", Text),
    Column("step", Text),
    _timestamp("step_due_at"),
    Column("step_overdue", Boolean, nullable=False, server_default=text("false")),
    _timestamp("dispatched_at"),
    _timestamp("signed_at"),
    _timestamp("handled_at"),
    Column("supervised", Boolean, nullable=False, server_default=text("false")),
    Column("escalations", Integer, nullable=False, server_default=text("0")),
    Column("reopens", Integer, nullable=False, server_default=text("0")),
    # No foreign key: a bulk COPY would pay a lookup per row; the API checks it.
    Column("duplicate_of", BigInteger),
    Column("satisfaction", SmallInteger),
    Column("version", Integer, nullable=False, server_default=text("1")),
    extra=(
        CheckConstraint(_one_of("category", CATEGORIES), name="incident_category_check"),
        CheckConstraint(_one_of("source", SOURCES), name="incident_source_check"),
        CheckConstraint(_one_of("status", ("new", "open", "closed")), name="incident_status_check"),
        CheckConstraint("(status = 'closed') = (closed_at IS NOT NULL)", name="incident_check"),
        Index("incident_reported_grid", "reported_grid_code"),
        Index("incident_status", "status", "reported_at"),
        CheckConstraint(_one_of("state", STATES), name="incident_state_check"),
        CheckConstraint(
            "status = CASE state WHEN 'reported' THEN 'new' WHEN 'closed' THEN 'closed' "
            "WHEN 'cancelled' THEN 'closed' ELSE 'open' END",
            name="incident_state_status_check",
        ),
        CheckConstraint(_one_of("priority", PRIORITIES), name="incident_priority_check"),
        CheckConstraint(
            _one_of("owner_level", ("city", "district", "community")),
            name="incident_owner_level_check",
        ),
        CheckConstraint(
            "(owner_level IS NULL) = (owner_area_code IS NULL)", name="incident_owner_check"
        ),
        CheckConstraint(
            _one_of("assignee_kind", ("grid", "unit")), name="incident_assignee_kind_check"
        ),
        CheckConstraint(
            "(assignee_kind IS NULL) = (assignee_code IS NULL)", name="incident_assignee_check"
        ),
        CheckConstraint(_one_of("step", STEPS), name="incident_step_check"),
        CheckConstraint("satisfaction BETWEEN 1 AND 5", name="incident_satisfaction_check"),
        CheckConstraint("version >= 1", name="incident_version_check"),
        Index(
            "incident_owner",
            "owner_area_path",
            postgresql_ops={"owner_area_path": "text_pattern_ops"},
        ),
        Index("incident_assignee", "assignee_code"),
        # The deadline sweep reads only open cases with a running clock.
        Index(
            "incident_step_due", "step_due_at", postgresql_where=text(_one_of("state", OPEN_STATES))
        ),
    ),
    # A grid's incidents of a period: an index-only range (0015).
    grid_index=("grid_code", "reported_at"),
    postgresql_partition_by="RANGE (reported_at)",
)

# The history of each case, append-only: the truth the incident's lifecycle columns cache.
# No foreign key to incident (a bulk import would pay a lookup per event): events are
# written under the incident's row lock or by its insert trigger, and a trigger deletes a
# deleted incident's events. Triggers: an advisory lock before ids are drawn (ids commit in
# order) and pg_notify('wangge_case_events', <highest id>) per statement.
case_event = Table(
    "case_event",
    metadata,
    _identity(),
    Column("incident_id", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    _timestamp("at", now=True),
    Column("action", Text, nullable=False),
    Column("actor_token_id", Text),
    Column("actor_role", Text, nullable=False),
    Column("actor_area_code", Text),
    Column("from_state", Text),
    Column("to_state", Text, nullable=False),
    Column("from_owner_area_code", Text),
    Column("to_owner_area_code", Text),
    Column("assignee_kind", Text),
    Column("assignee_code", Text),
    Column("note", Text),
    Column("reason", Text),
    Column("attachments", ARRAY(Text), nullable=False, server_default=_text_default("{}")),
    Column("data", JSONB, nullable=False, server_default=_text_default("{}")),
    UniqueConstraint("incident_id", "seq", name="case_event_incident_id_seq_key"),
    CheckConstraint("seq >= 1", name="case_event_seq_check"),
    CheckConstraint(_one_of("from_state", STATES), name="case_event_from_state_check"),
    CheckConstraint(_one_of("to_state", STATES), name="case_event_to_state_check"),
)

# Time limits per category, priority and step, in minutes (defaults seeded by 0010).
case_time_limit = Table(
    "case_time_limit",
    metadata,
    Column("category", Text, primary_key=True),
    Column("priority", Text, primary_key=True),
    Column("step", Text, primary_key=True),
    Column("minutes", Integer, nullable=False),
    Column("updated_by", Text),
    _timestamp("updated_at", now=True),
    CheckConstraint(_one_of("category", CATEGORIES), name="case_time_limit_category_check"),
    CheckConstraint(_one_of("priority", PRIORITIES), name="case_time_limit_priority_check"),
    CheckConstraint(_one_of("step", STEPS), name="case_time_limit_step_check"),
    CheckConstraint("minutes > 0", name="case_time_limit_minutes_check"),
)

# Photos attached to a case (0011), keyed by the SHA-256 of their bytes: a retried upload
# stores one row. Deleted with their incident, which they reference by its full key
# (0013: a partitioned table's unique keys hold the partition key; a trigger fills
# ``incident_reported_at`` from the case, so writers name the case id only).
ATTACHMENT_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp")
case_attachment = Table(
    "case_attachment",
    metadata,
    Column("incident_id", BigInteger, primary_key=True),
    Column("sha256", Text, primary_key=True),
    Column("media_type", Text, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_by", Text),
    _timestamp("created_at", now=True),
    CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="case_attachment_sha256_check"),
    CheckConstraint(
        _one_of("media_type", ATTACHMENT_MEDIA_TYPES), name="case_attachment_media_type_check"
    ),
    CheckConstraint("bytes = octet_length(data)", name="case_attachment_bytes_check"),
    Column("incident_reported_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(
        ["incident_id", "incident_reported_at"],
        ["incident.id", "incident.reported_at"],
        ondelete="CASCADE",
        name="case_attachment_incident_id_incident_reported_at_fkey",
    ),
)

# Incident counts kept current by statement triggers on incident (0012): per area path and
# status at z = 0, per Web Mercator bin of zooms 15/17/19/21 with the sums of the points'
# coordinates (tiles draw clusters at their centroids). area_path '' is outside every area.
incident_bin = Table(
    "incident_bin",
    metadata,
    Column("z", SmallInteger, primary_key=True),
    Column("x", Integer, primary_key=True),
    Column("y", Integer, primary_key=True),
    Column("status", Text, primary_key=True),
    Column("area_path", Text(collation="C"), primary_key=True),
    Column("n", Integer, nullable=False),
    Column("sx", Double, nullable=False),
    Column("sy", Double, nullable=False),
    Index("incident_bin_area", "area_path", "status", postgresql_where=text("z = 0")),
)

# Each incident's reported_at by id, kept by statement triggers on incident (0020): a by-id
# read looks its month up first and reads one partition.
incident_month = Table(
    "incident_month",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("reported_at", DateTime(timezone=True), nullable=False),
)

#: Tables whose rows are located by a point and carry the cells of their generation.
POINT_TABLES = (unit, facility, care_household, incident)

# -- road network (pgRouting's edge table and its vertices) -------------------------------

road_import = Table(
    "road_import",
    metadata,
    _identity(always=False),
    Column("name", Text, nullable=False, server_default=_text_default("")),
    Column("filename", Text, nullable=False, server_default=_text_default("")),
    Column("layer", Text),
    Column("node_mode", Text, nullable=False),
    Column("snap_m", Double, nullable=False),
    Column("features", Integer, nullable=False, server_default=text("0")),
    Column("edges", Integer, nullable=False, server_default=text("0")),
    Column("vertices", Integer, nullable=False, server_default=text("0")),
    Column("length_m", Double, nullable=False, server_default=text("0")),
    Column("created_by", Text),
    _timestamp("created_at", now=True),
    CheckConstraint(
        _one_of("node_mode", ("vertices", "crossings", "endpoints")),
        name="road_import_node_mode_check",
    ),
    CheckConstraint("snap_m >= 0", name="road_import_snap_m_check"),
)

road_vertex = Table(
    "road_vertex",
    metadata,
    _identity(always=False),
    Column(
        "import_id", BigInteger, ForeignKey("road_import.id", ondelete="CASCADE"), nullable=False
    ),
    Column("geom", Geometry("POINT", srid=STORAGE_SRID, spatial_index=False), nullable=False),
    Index("road_vertex_geom", "geom", postgresql_using="gist"),
    Index("road_vertex_import", "import_id"),
)

road_edge = Table(
    "road_edge",
    metadata,
    _identity(always=False),
    Column(
        "import_id", BigInteger, ForeignKey("road_import.id", ondelete="CASCADE"), nullable=False
    ),
    Column("source", BigInteger, ForeignKey("road_vertex.id"), nullable=False),
    Column("target", BigInteger, ForeignKey("road_vertex.id"), nullable=False),
    # Walking metres both ways; negative would mean "no passage" to pgRouting.
    Column("cost", Double, nullable=False),
    Column("reverse_cost", Double, nullable=False),
    Column("length_m", Double, nullable=False),
    Column("name", Text, nullable=False, server_default=_text_default("")),
    Column("properties", JSONB, nullable=False, server_default=_text_default("{}")),
    Column("geom", Geometry("LINESTRING", srid=STORAGE_SRID, spatial_index=False), nullable=False),
    CheckConstraint("length_m >= 0", name="road_edge_length_m_check"),
    _valid_geometry("road_edge"),
    Index("road_edge_geom", "geom", postgresql_using="gist"),
    Index("road_edge_source", "source"),
    Index("road_edge_target", "target"),
    Index("road_edge_import", "import_id"),
)
