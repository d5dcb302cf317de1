"""Health (public) and version."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from service import __version__
from service.deps import ConnDep, PrincipalDep
from service.repositories.generations import find_current_generation
from service.repositories.versions import find_versions
from service.responses import JSON

router = APIRouter(tags=["health"])


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    """Send people who open the bare address to the API documentation."""
    return RedirectResponse("/docs")


@router.get("/health", summary="Is the service up and its database reachable")
async def health(conn: ConnDep) -> JSON:
    """Return 200 when the database answers (no token needed).

    An unreachable database answers 503 problem+json with ``Retry-After``, as every
    endpoint does (``service.errors``).
    """
    current = await find_current_generation(conn=conn)
    return JSON(
        {"status": "ok", "database": "ok", "current_generation": current, "version": __version__}
    )


@router.get("/version", summary="Versions of the service, PostgreSQL and PostGIS")
async def version(conn: ConnDep, principal: PrincipalDep) -> JSON:
    return JSON({"wangge": __version__, **await find_versions(conn=conn)})
