"""Health (public) and version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import text

from service import __version__
from service.deps import ConnDep, PrincipalDep
from service.responses import JSON

router = APIRouter(tags=["health"])


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    """Send people who open the bare address to the API documentation."""
    return RedirectResponse("/docs")


@router.get("/health", summary="Is the service up and its database reachable")
async def health(request: Request) -> JSON:
    """Return 200 when the database answers, 503 otherwise (no token needed)."""
    try:
        async with request.app.state.engine.connect() as conn:
            current = (
                await conn.execute(text("SELECT max(id) FROM generation WHERE active"))
            ).scalar()
    except Exception:
        return JSON(
            {"status": "unavailable", "database": "unreachable", "version": __version__},
            status_code=503,
        )
    return JSON(
        {"status": "ok", "database": "ok", "current_generation": current, "version": __version__}
    )


@router.get("/version", summary="Versions of the service, PostgreSQL and PostGIS")
async def version(conn: ConnDep, principal: PrincipalDep) -> JSON:
    row = (
        await conn.execute(
            text(
                "SELECT current_setting('server_version') AS pg, postgis_lib_version() AS postgis, "
                "(SELECT version_num FROM alembic_version) AS schema"
            )
        )
    ).first()
    return JSON(
        {"wangge": __version__, "postgresql": row.pg, "postgis": row.postgis, "schema": row.schema}
    )
