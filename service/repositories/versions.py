"""Read the versions of the database server, PostGIS and the schema."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["find_versions"]

_VERSIONS_SQL = text(
    "SELECT current_setting('server_version') AS pg, postgis_lib_version() AS postgis, "
    "(SELECT version_num FROM alembic_version) AS schema"
)


async def find_versions(*, conn: AsyncConnection) -> dict[str, str]:
    """Return ``{"postgresql", "postgis", "schema"}``: server, PostGIS and Alembic revision."""
    row = (await conn.execute(_VERSIONS_SQL)).first()
    return {"postgresql": row.pg, "postgis": row.postgis, "schema": row.schema}
