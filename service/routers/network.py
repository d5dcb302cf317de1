"""The road network the reach analysis walks: ``GET /network``, ``POST /network/import`` (admin).

Road lines (GeoPackage, GeoJSON) are loaded as the routable network; the work runs in a
worker thread on the synchronous engine, the same functions as ``wangge network import``.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations.

from typing import Literal

from fastapi import APIRouter, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from service.analysis.network import import_network, network_status
from service.deps import ApiSettingsDep, PrincipalDep, SyncEngineDep
from service.edge.limits import read_upload
from service.errors import ForbiddenError
from service.inputs import NulFree
from service.responses import JSON

__all__ = ["router"]

# Tagged "analysis" too, as when these routes were served beside the reach analysis.
router = APIRouter(prefix="/network", tags=["analysis", "network"])


@router.get(
    "",
    summary="The imported road network: edges, length, extent, imports",
    response_model=dict,
)
async def network(engine: SyncEngineDep, principal: PrincipalDep) -> JSON:
    def work() -> dict:
        with engine.connect() as conn:
            return network_status(conn)

    return JSON(await run_in_threadpool(work))


@router.post(
    "/import",
    summary="Import road lines as the walking network (admin)",
    description="GeoPackage or GeoJSON of lines (`crs` overrides the file's: an EPSG code, "
    "GCJ-02 or BD-09). Ends closer than `snap_m` join; lines are split where they share a "
    "vertex or an end touches another line (`node=vertices`), at every crossing "
    "(`crossings`) or only at their ends (`endpoints`). Replaces the network unless "
    "`append`. Costs are walking metres both ways.",
    response_model=dict,
)
async def network_import(
    engine: SyncEngineDep,
    principal: PrincipalDep,
    api: ApiSettingsDep,
    file: UploadFile = File(description="GeoPackage or GeoJSON of road lines"),
    layer: NulFree | None = Form(None),
    crs: NulFree | None = Form(None),
    name: NulFree | None = Form(None, max_length=200),
    append: bool = Form(False),
    snap_m: float = Form(1.0, ge=0, le=100, allow_inf_nan=False),
    node: Literal["vertices", "crossings", "endpoints"] = Form("vertices"),
) -> JSON:
    if not principal.is_admin:
        raise ForbiddenError(
            f"importing the road network needs the admin role; you are {principal.role}",
            field="role",
        )
    data = await read_upload(file, api)

    def work() -> dict:
        with engine.begin() as conn:
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
