"""SQLAlchemy Core tables of the wangge schema (the migrations create them)."""

from __future__ import annotations

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from geo.crs import STORAGE_SRID

metadata = MetaData()

#: Area levels from the top down; the index is the level's depth.
LEVELS = ("city", "district", "community", "grid")
LEVEL_DEPTH = {name: depth for depth, name in enumerate(LEVELS)}

generation = Table(
    "generation",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("description", Text, nullable=False),
    Column("active", Boolean, nullable=False, server_default="false"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("activated_at", DateTime(timezone=True)),
)

area = Table(
    "area",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("level", Text, nullable=False),
    Column("depth", SmallInteger, nullable=False),
    Column("parent_code", Text),
    Column("path", Text, nullable=False),
    Column("generation_low", Integer, ForeignKey("generation.id"), nullable=False),
    Column("generation_high", Integer, ForeignKey("generation.id"), nullable=False),
    Column(
        "geom", Geometry("MULTIPOLYGON", srid=STORAGE_SRID, spatial_index=False), nullable=False
    ),
    Column("area_m2", BigInteger, nullable=False),
    Column("source", Text, nullable=False, server_default=""),
    Column("properties", JSONB, nullable=False, server_default="{}"),
)

area_part = Table(
    "area_part",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("area_id", BigInteger, ForeignKey("area.id", ondelete="CASCADE"), nullable=False),
    Column("code", Text, nullable=False),
    Column("depth", SmallInteger, nullable=False),
    Column("generation_low", Integer, nullable=False),
    Column("generation_high", Integer, nullable=False),
    Column("geom", Geometry("POLYGON", srid=STORAGE_SRID, spatial_index=False), nullable=False),
)

api_token = Table(
    "api_token",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("area_code", Text),
    Column("secret_sha256", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)
