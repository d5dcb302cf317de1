"""Service reach and facility siting, and the road network they may walk.

``GET /analysis/reach``
    The "15-minute service circle": per community, the area, care households and units
    beyond a walk of ``minutes`` from a service facility, uncovered parts as polygons,
    worst first (straight line with a detour factor, or along the imported road network
    with pgRouting).
``GET /analysis/siting`` / ``POST /analysis/siting``
    Where ``k`` new facilities reach most households (MCLP), or the fewest that reach all
    (``lscp``), on a lattice of candidates or (POST) on candidates you supply; coverage
    before and after, chosen sites as GeoJSON points.
``POST /network/import`` (admin), ``GET /network``
    Load road lines (GeoPackage, GeoJSON) as the routable network; what is loaded.

The work runs in a worker thread on the synchronous engine: the same functions as the CLI
(``wangge analysis reach|siting``, ``wangge network import``) and the report.
"""

# No ``from __future__ import annotations``: Pydantic reads the models' annotations.

from typing import Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from geo.reach import (
    DEFAULT_DETOUR,
    DEFAULT_FRONTAGE_M,
    DEFAULT_MINUTES,
    WALK_SPEED_M_PER_MIN,
)
from geo.siting import MAX_CANDIDATES
from service.analysis.network import import_network, network_status
from service.analysis.reach import (
    FACILITY_KINDS,
    MAX_DETOUR,
    MAX_FRONTAGE_M,
    MAX_MINUTES,
    MAX_SPEED,
    run_reach,
)
from service.analysis.siting import MAX_K, run_siting
from service.deps import get_principal
from service.errors import ForbiddenError, UnprocessableError
from service.querymodels import parse_query, query_parameters_doc
from service.responses import JSON

__all__ = ["router"]

router = APIRouter(tags=["analysis"])

_KINDS_DOC = (
    f"comma-separated facility kinds that serve: {', '.join(FACILITY_KINDS)} "
    "(default service_hall,service_station)"
)


class _WalkQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    area: str | None = Field(
        None, pattern=r"^[0-9]{6,18}$", description="area code inside your scope (default: yours)"
    )
    generation: int | None = Field(None, ge=1, description="default: the current generation")
    minutes: float = Field(
        DEFAULT_MINUTES, gt=0, le=MAX_MINUTES, allow_inf_nan=False, description="walking time"
    )
    speed_m_per_min: float = Field(
        WALK_SPEED_M_PER_MIN,
        gt=0,
        le=MAX_SPEED,
        allow_inf_nan=False,
        description="walking speed, metres per minute",
    )
    detour: float = Field(
        DEFAULT_DETOUR,
        ge=1,
        le=MAX_DETOUR,
        allow_inf_nan=False,
        description="straight line: walked distance ÷ straight distance",
    )
    kinds: str | None = Field(None, max_length=200, description=_KINDS_DOC)


class ReachQuery(_WalkQuery):
    network: bool | None = Field(
        None,
        description="walk the imported road network (pgRouting); default: when one is "
        "imported in the area",
    )
    frontage_m: float = Field(
        DEFAULT_FRONTAGE_M,
        ge=0,
        le=MAX_FRONTAGE_M,
        allow_inf_nan=False,
        description="network: distance from a reached street still served, metres",
    )
    rank_by: Literal["area", "households", "units"] = Field(
        "area", description="which uncovered share ranks the communities"
    )
    geometry: bool = Field(True, description="include the uncovered polygons")
    simplify_m: float = Field(
        0.0, ge=0, le=1000, allow_inf_nan=False, description="simplify polygons, metres"
    )

    def arguments(self) -> dict[str, Any]:
        values = self.model_dump()
        values["area_code"] = values.pop("area")
        values["use_network"] = values.pop("network")
        return values


class SitingQuery(_WalkQuery):
    k: int | None = Field(
        None, ge=1, le=MAX_K, description="new facilities to place (maximal covering)"
    )
    lscp: bool = Field(False, description="instead: the fewest new facilities covering all")
    spacing_m: float | None = Field(
        None,
        ge=50,
        le=50_000,
        allow_inf_nan=False,
        description="candidate lattice spacing, metres (default: automatic, ≤ 2,000 sites)",
    )
    demand: Literal["households", "units", "both"] = Field(
        "households", description="what is covered: care households, units or both"
    )

    def arguments(self) -> dict[str, Any]:
        values = self.model_dump()
        values["area_code"] = values.pop("area")
        return values


class SitingBody(SitingQuery):
    candidates: list[tuple[float, float]] | None = Field(
        None,
        max_length=MAX_CANDIDATES,
        description="candidate sites [[lon, lat], …] inside the area (default: a lattice)",
    )
    crs: str = Field(
        "EPSG:4326",
        max_length=40,
        description="of the candidates: EPSG:4326, EPSG:4490, GCJ-02 or BD-09",
    )

    def arguments(self) -> dict[str, Any]:
        values = super().arguments()
        values["candidates_crs"] = values.pop("crs")
        if values["candidates"] is not None:
            values["candidates"] = [list(c) for c in values["candidates"]]
        return values


async def _run(request: Request, fn, arguments: dict[str, Any]) -> JSON:
    principal = await get_principal(request)

    def work() -> dict:
        with request.app.state.sync_engine.connect() as conn:
            return fn(conn, principal=principal, **arguments)

    return JSON(await run_in_threadpool(work))


@router.get(
    "/analysis/reach",
    summary="15-minute service circle: who and what lies beyond a walk to a facility",
    description="Per community in the area: area, care households (counts only) and units "
    "farther than `minutes` × `speed_m_per_min` of walking from a service facility, with "
    "the uncovered part as a polygon, worst first. Straight line ÷ `detour` by default; "
    "along the imported road network (pgRouting `pgr_withPointsDD`, reached streets "
    "buffered by `frontage_m`) when one is imported here or `network=true`. Areas in m² "
    "in the UTM zone of the area's centroid.",
    openapi_extra=query_parameters_doc(ReachQuery),
    response_model=dict,
)
async def reach(request: Request) -> JSON:
    q = parse_query(ReachQuery, request)
    return await _run(request, run_reach, q.arguments())


_SITING_DESCRIPTION = (
    "Maximal covering (`k`: the k new facilities adding most covered demand) or set "
    "covering (`lscp=true`: the fewest covering all demand some candidate reaches), solved "
    "by spopt with HiGHS. Existing facilities stay; coverage = within `minutes` × "
    "`speed_m_per_min` ÷ `detour` (straight line). Candidates on a lattice inside the area "
    "(at most 2,000); more than 5,000 demand points are aggregated to a lattice."
)


@router.get(
    "/analysis/siting",
    summary="Where k new facilities reach most households (MCLP), or the fewest for all",
    description=_SITING_DESCRIPTION,
    openapi_extra=query_parameters_doc(SitingQuery),
    response_model=dict,
)
async def siting(request: Request) -> JSON:
    q = parse_query(SitingQuery, request)
    return await _run(request, run_siting, q.arguments())


@router.post(
    "/analysis/siting",
    summary="Siting on candidate sites you supply",
    description=_SITING_DESCRIPTION + " The body takes the query's parameters and "
    "`candidates`: [[lon, lat], …] inside the area.",
    response_model=dict,
)
async def siting_post(request: Request, body: SitingBody) -> JSON:
    return await _run(request, run_siting, body.arguments())


@router.get(
    "/network",
    summary="The imported road network: edges, length, extent, imports",
    tags=["network"],
    response_model=dict,
)
async def network(request: Request) -> JSON:
    await get_principal(request)

    def work() -> dict:
        with request.app.state.sync_engine.connect() as conn:
            return network_status(conn)

    return JSON(await run_in_threadpool(work))


@router.post(
    "/network/import",
    summary="Import road lines as the walking network (admin)",
    description="GeoPackage or GeoJSON of lines (`crs` overrides the file's: an EPSG code, "
    "GCJ-02 or BD-09). Ends closer than `snap_m` join; lines are split where they share a "
    "vertex or an end touches another line (`node=vertices`), at every crossing "
    "(`crossings`) or only at their ends (`endpoints`). Replaces the network unless "
    "`append`. Costs are walking metres both ways.",
    tags=["network"],
    response_model=dict,
)
async def network_import(
    request: Request,
    file: UploadFile = File(description="GeoPackage or GeoJSON of road lines"),
    layer: str | None = Form(None),
    crs: str | None = Form(None),
    name: str | None = Form(None, max_length=200),
    append: bool = Form(False),
    snap_m: float = Form(1.0, ge=0, le=100, allow_inf_nan=False),
    node: Literal["vertices", "crossings", "endpoints"] = Form("vertices"),
) -> JSON:
    principal = await get_principal(request)
    if not principal.is_admin:
        raise ForbiddenError(
            f"importing the road network needs the admin role; you are {principal.role}",
            field="role",
        )
    limit = request.app.state.settings.api.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise UnprocessableError(f"the file exceeds {limit} bytes", field="file")

    def work() -> dict:
        with request.app.state.sync_engine.begin() as conn:
            return import_network(
                conn,
                principal=principal,
                data=data,
                filename=file.filename or "upload",
                layer=layer,
                crs=crs,
                name=name,
                append=append,
                snap_m=snap_m,
                node=node,
            )

    return JSON(await run_in_threadpool(work), status_code=201)
