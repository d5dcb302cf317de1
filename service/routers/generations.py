"""Boundary generations: list; create, load, retire and activate (admin)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool

from geo.areas import parse_area_features
from service.bodies import json_body_doc, read_json_body
from service.deps import AdminDep, ConnDep, PrincipalDep, SyncEngineDep, WriteConnDep
from service.errors import UnprocessableError
from service.inputs import NUL_REASON, GenerationNumber, find_nul
from service.repositories import boundaries
from service.repositories.generations import list_generations
from service.schemas.areas import (
    AreaFeatureCollection,
    AreaImportResult,
    GenerationCreate,
    GenerationRead,
)

router = APIRouter(prefix="/generations", tags=["generations"])

GenerationId = Annotated[GenerationNumber, Path()]


class RetireRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    codes: list[Annotated[str, Field(pattern=r"^[0-9]{6,18}$")]] = Field(min_length=1)


@router.get("", response_model=list[GenerationRead], summary="All boundary generations")
async def get_generations(conn: ConnDep, principal: PrincipalDep) -> list[dict]:
    return await list_generations(conn=conn)


@router.post("", status_code=201, summary="Create a pending generation (admin)")
async def create_generation(
    conn: WriteConnDep, admin: AdminDep, body: GenerationCreate
) -> dict[str, int]:
    """Create the generation new boundaries are loaded into; it stays inactive until activated."""
    new_id = await conn.run_sync(
        lambda c: boundaries.create_generation(
            c, description=body.description, carry_over=body.carry_over
        )
    )
    return {"id": new_id}


_COLLECTION = TypeAdapter(dict[str, Any])


@router.post(
    "/{generation_id}/areas",
    response_model=AreaImportResult,
    summary="Load areas into a pending generation (admin)",
    # Read as any JSON object; checked feature by feature (geo.areas.parse_area_features).
    openapi_extra=json_body_doc(
        TypeAdapter(AreaFeatureCollection), "GeoJSON FeatureCollection of areas"
    ),
)
async def import_areas(
    request: Request, admin: AdminDep, generation_id: GenerationId
) -> dict[str, int]:
    """Load a FeatureCollection of areas, all or nothing.

    Each feature needs ``code``, ``name``, ``level`` and (below city) ``parent_code``
    properties and a valid Polygon/MultiPolygon in EPSG:4326 or EPSG:4490. Any bad
    feature refuses the whole collection with a 422 listing every problem (row, field,
    reason); nothing is written.
    """
    # A city's boundaries are megabytes of JSON and geometry: read after authentication,
    # decoded and parsed in worker threads (service.bodies), and the transaction opens once
    # the body is in, so a slow upload holds no connection.
    collection = await read_json_body(request, _COLLECTION)
    nul = await anyio.to_thread.run_sync(find_nul, collection)
    if nul is not None:
        raise UnprocessableError(f"{nul}: {NUL_REASON}; nothing was imported", field=nul)
    async with request.app.state.engine.begin() as conn:
        known = await conn.run_sync(lambda c: boundaries.levels_in_generation(c, generation_id))
        records, problems = await anyio.to_thread.run_sync(
            lambda: parse_area_features(collection, known_parents=known)
        )
        if problems:
            first = problems[0]
            raise UnprocessableError(
                f"{len(problems)} problem(s); first: feature {first.index} {first.field}: "
                f"{first.reason}. Nothing was imported.",
                field=first.field,
                extra={"errors": [p.as_dict() for p in problems]},
            )
        summary = await conn.run_sync(
            lambda c: boundaries.write_areas(
                c, generation_id=generation_id, records=records, source="api"
            )
        )
    return summary.as_dict()


@router.post("/{generation_id}/retire", summary="End areas (and their children) (admin)")
async def retire_areas(
    conn: WriteConnDep, admin: AdminDep, generation_id: GenerationId, body: RetireRequest
) -> dict[str, int]:
    n = await conn.run_sync(
        lambda c: boundaries.retire_areas(c, generation_id=generation_id, codes=body.codes)
    )
    return {"retired": n}


@router.post("/{generation_id}/activate", summary="Make a pending generation current (admin)")
async def activate(engine: SyncEngineDep, admin: AdminDep, generation_id: GenerationId) -> dict:
    """Switch lookups and listings to this generation in one step; history stays queryable.

    Every unit, facility, care household and incident is re-mapped to the new cells in the
    same transaction; incidents keep the cell they were reported in.
    """

    def work() -> dict[str, int]:
        with engine.begin() as conn:
            return boundaries.activate_generation(conn, generation_id=generation_id)

    remapped = await run_in_threadpool(work)
    return {"id": generation_id, "active": True, "current": True, "remapped": remapped}
