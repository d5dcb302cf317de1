"""Point → grid, community, district, city: one point or many."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from pydantic import TypeAdapter

from geo.coords import (
    SHIFTED_CRS,
    CoordinateError,
    check_points,
    parse_input_crs,
    to_wgs84,
    validate_point,
)
from service.bodies import json_body_doc, read_json_body
from service.crs_output import shift_point
from service.deps import ApiSettingsDep, PoolDep, PrincipalDep, get_principal, read_batcher
from service.errors import PayloadTooLargeError, UnprocessableError
from service.querymodels import parse_query, query_parameters_doc
from service.repositories.generations import resolve_generation
from service.repositories.lookup import find_chain_for_point, find_chains_for_points
from service.responses import JSON
from service.schemas.lookup import (
    BatchLookupRequest,
    BatchLookupResult,
    LookupQuery,
    LookupResult,
)

router = APIRouter(prefix="/lookup", tags=["lookup"])


def _crs(value: str, field: str = "crs") -> str:
    try:
        return parse_input_crs(value)
    except ValueError as exc:
        raise UnprocessableError(str(exc), field=field) from None


def _to_wgs84(lon: float, lat: float, crs: str) -> tuple[float, float]:
    """Return the WGS84 point to look up; GCJ-02 and BD-09 must lie in China."""
    if crs in ("EPSG:4326", "EPSG:4490"):
        return lon, lat  # a point anywhere is a fair question (the answer may be "nowhere")
    try:
        validate_point(lon, lat, crs)
    except CoordinateError as exc:
        raise UnprocessableError(str(exc), field=exc.field) from None
    x, y = to_wgs84(lon, lat, crs)
    return float(x), float(y)


@router.get(
    "",
    response_model=LookupResult,
    summary="Which grid, community, district is a point in",
    openapi_extra=query_parameters_doc(LookupQuery),
)
async def lookup_point(request: Request) -> JSON:
    """Return the chain of areas covering the point (``lon``, ``lat``).

    A point outside every area answers 200 with ``matched: []`` and a note; a point in an
    area outside your scope answers 403. On a shared edge the deepest level's area with the
    smallest code wins, so the same point always gets the same grid. Unknown parameters are
    refused rather than ignored.
    """
    # No dependencies here, on purpose: this is the hot path, and FastAPI's per-parameter
    # and dependency machinery cost more than the lookup itself (see service.querymodels).
    # The principal comes from get_principal, the function PrincipalDep runs, and the query
    # is validated by hand against LookupQuery, which still documents it in OpenAPI. Keep
    # it so unless the lookup benchmark (bench/) says otherwise.
    principal = await get_principal(request)
    q = parse_query(LookupQuery, request)
    crs = _crs(q.crs)
    lon, lat = _to_wgs84(q.lon, q.lat, crs)
    result = await find_chain_for_point(
        await read_batcher(request),
        principal=principal,
        lon=lon,
        lat=lat,
        generation=q.generation,
    )
    result["point"] = {"lon": lon, "lat": lat, "crs": "EPSG:4326", "given_crs": crs}
    if crs in SHIFTED_CRS:
        # The point looked up, back in the caller's system (service.crs_output): what a
        # GCJ-02 or BD-09 map draws the answer at.
        gx, gy = shift_point(lon, lat, crs)
        result["point"]["given"] = {"lon": gx, "lat": gy}
    return JSON(result)


def _batch_points(
    body: BatchLookupRequest, crs: str
) -> tuple[list[float], list[float], list[str | int | None]]:
    """Return the batch's WGS84 longitudes and latitudes and the caller's ids, in order."""
    lons: list[float] = []
    lats: list[float] = []
    ids: list[str | int | None] = []
    for p in body.points:
        if isinstance(p, tuple):
            lons.append(p[0])
            lats.append(p[1])
            ids.append(None)
        else:
            lons.append(p.lon)
            lats.append(p.lat)
            ids.append(p.id)
    if crs not in ("EPSG:4326", "EPSG:4490"):
        problems = check_points(np.array(lons), np.array(lats), crs=crs)
        if problems:
            first = problems[0]
            raise UnprocessableError(
                f"{len(problems)} point(s) refused; first: points.{first.index}: {first.message}",
                field=f"points.{first.index}",
                extra={
                    "errors": [
                        {"field": f"points.{p.index}", "reason": p.message} for p in problems[:100]
                    ]
                },
            )
        x, y = to_wgs84(np.array(lons), np.array(lats), crs)
        lons, lats = x.tolist(), y.tolist()
    return lons, lats, ids


_BATCH_BODY = TypeAdapter(BatchLookupRequest)


@router.post(
    "/batch",
    response_model=BatchLookupResult,
    summary="Look up many points at once",
    openapi_extra=json_body_doc(_BATCH_BODY),
)
async def lookup_batch(
    request: Request, pool: PoolDep, principal: PrincipalDep, api: ApiSettingsDep
) -> JSON:
    """Return one result per point, in input order, each with a ``status``.

    ``matched`` (down to a grid), ``partial`` (some levels), ``unmatched`` (no area) or
    ``outside_scope`` (in an area you may not see: no codes are given).
    """
    # The body is read here, after authentication, and decoded off the event loop
    # (service.bodies); its size was bounded as it arrived (service.edge.limits).
    body: BatchLookupRequest = await read_json_body(request, _BATCH_BODY)
    limit = api.max_batch_points
    if len(body.points) > limit:
        raise PayloadTooLargeError(
            f"{len(body.points)} points; at most {limit} per request", field="points"
        )
    crs = _crs(body.crs)
    generation = await resolve_generation(pool=pool, principal=principal, requested=body.generation)
    lons, lats, ids = _batch_points(body, crs)
    results = await find_chains_for_points(
        pool, principal=principal, lons=lons, lats=lats, generation=generation
    )
    summary = {"matched": 0, "partial": 0, "unmatched": 0, "outside_scope": 0}
    for item in results:
        summary[item["status"]] += 1
        if ids[item["index"]] is not None:
            item["id"] = ids[item["index"]]
    summary["total"] = len(results)
    return JSON({"generation": generation, "summary": summary, "results": results})
