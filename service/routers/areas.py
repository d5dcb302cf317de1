"""The boundary hierarchy: list, one area, children, ancestors, history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from service.deps import ApiSettingsDep, ConnDep, PoolDep, PrincipalDep, page, page_limit
from service.inputs import GenerationNumber, Offset
from service.repositories import areas as repo
from service.repositories.generations import resolve_generation
from service.schemas.areas import AreaList, AreaRead, Level

router = APIRouter(prefix="/areas", tags=["areas"])

Code = Annotated[
    str,
    Path(pattern=r"^[0-9]{6,18}$", description="area code (digits)", examples=["520102"]),
]
Generation = Annotated[
    GenerationNumber | None, Query(description="default: the current generation")
]
WithGeometry = Annotated[bool, Query(description="include the boundary as GeoJSON")]
SimplifyM = Annotated[
    float,
    Query(ge=0, le=10_000, allow_inf_nan=False, description="simplification tolerance, metres"),
]
Srid = Annotated[int, Query(ge=1, le=999_999, description="EPSG code of the output geometry")]


def _geometry(include: bool, simplify_m: float, srid: int) -> repo.GeometryOptions:
    return repo.GeometryOptions(include=include, simplify_m=simplify_m, srid=srid)


@router.get("", response_model=AreaList, summary="List areas by level, parent or name")
async def list_areas(
    request: Request,
    conn: ConnDep,
    pool: PoolDep,
    principal: PrincipalDep,
    api: ApiSettingsDep,
    level: Annotated[Level | None, Query()] = None,
    parent: Annotated[str | None, Query(pattern=r"^[0-9]{6,18}$")] = None,
    q: Annotated[str | None, Query(max_length=100, description="name contains")] = None,
    generation: Generation = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[Offset, Query()] = 0,
    geometry: WithGeometry = False,
    simplify_m: SimplifyM = 0.0,
    srid: Srid = 4326,
) -> dict:
    """Return the areas you may see, ordered by code, one page at a time."""
    limit = page_limit(api, limit)
    gen = await resolve_generation(pool=pool, principal=principal, requested=generation)
    items, total = await repo.list_areas(
        conn,
        principal=principal,
        generation=gen,
        level=level,
        parent_code=parent,
        name_contains=q,
        limit=limit,
        offset=offset,
        geometry=_geometry(geometry, simplify_m, srid),
    )
    return page(request, items, total, limit=limit, offset=offset, generation=gen)


@router.get("/{code}", response_model=AreaRead, summary="One area by code")
async def get_area(
    conn: ConnDep,
    pool: PoolDep,
    principal: PrincipalDep,
    code: Code,
    generation: Generation = None,
    geometry: WithGeometry = True,
    simplify_m: SimplifyM = 0.0,
    srid: Srid = 4326,
) -> dict:
    """Return the area with its boundary (simplified and reprojected on request)."""
    gen = await resolve_generation(pool=pool, principal=principal, requested=generation)
    options = _geometry(geometry, simplify_m, srid)
    return await repo.get_area(
        conn, principal=principal, code=code, generation=gen, geometry=options
    )


@router.get("/{code}/children", response_model=list[AreaRead], summary="An area's children")
async def list_children(
    conn: ConnDep,
    pool: PoolDep,
    principal: PrincipalDep,
    code: Code,
    generation: Generation = None,
    geometry: WithGeometry = False,
    simplify_m: SimplifyM = 0.0,
    srid: Srid = 4326,
) -> list[dict]:
    gen = await resolve_generation(pool=pool, principal=principal, requested=generation)
    options = _geometry(geometry, simplify_m, srid)
    return await repo.list_children(
        conn, principal=principal, code=code, generation=gen, geometry=options
    )


@router.get("/{code}/ancestors", response_model=list[AreaRead], summary="An area's ancestors")
async def list_ancestors(
    conn: ConnDep, pool: PoolDep, principal: PrincipalDep, code: Code, generation: Generation = None
) -> list[dict]:
    """Return the ancestors from the city down (the area itself excluded)."""
    gen = await resolve_generation(pool=pool, principal=principal, requested=generation)
    return await repo.list_ancestors(conn, principal=principal, code=code, generation=gen)


@router.get("/{code}/history", response_model=list[AreaRead], summary="Every version of an area")
async def list_history(conn: ConnDep, principal: PrincipalDep, code: Code) -> list[dict]:
    """Return each stored version of the area with the generations it was valid in."""
    return await repo.list_area_history(conn, principal=principal, code=code)
