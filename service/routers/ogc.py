"""OGC API – Features, Part 1 (Core, GeoJSON, OpenAPI 3.0) over the map layers.

GDAL's OAPIF driver and QGIS read these as they are (token as ``Authorization: Bearer``,
``X-API-Key`` or ``access_token=``). The items endpoint is also the project's GeoJSON layer:
it adds ``zoom`` / ``simplify_m`` (simplified geometry, fewer digits: payload matters on a
tablet), ``properties`` (a selection) and ``generation`` to the standard parameters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from geo.coords import CRS_URIS, EPSG_4326
from service.crs_output import bbox_to_wgs84, content_crs, output_crs
from service.deps import PoolDep, PrincipalDep, layer_or_404, parse_generation
from service.errors import UnprocessableError
from service.inputs import moment_problem
from service.repositories import layers as repo
from service.repositories.generations import resolve_generation
from service.responses import JSON
from service.specs.map_layers import LAYERS, LayerSpec

router = APIRouter(prefix="/ogc", tags=["ogc-features"])

GEOJSON = "application/geo+json"

# An unknown collection is 404 (as OGC API – Features says); the enum tells clients the names.
CollectionId = Annotated[
    str, Path(description="a map layer", json_schema_extra={"enum": list(LAYERS)})
]
FeatureId = Annotated[str, Path(description="the feature's id (digits, or an area code)")]
_FEATURE = {"type": "object", "required": ["type"], "properties": {"type": {"const": "Feature"}}}
_FEATURES = {
    "type": "object",
    "required": ["type", "features"],
    "properties": {"type": {"const": "FeatureCollection"}, "features": {"type": "array"}},
}
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]
STANDARD_PARAMS = {
    "limit",
    "offset",
    "bbox",
    "bbox-crs",
    "crs",
    "datetime",
    "f",
    "properties",
    "zoom",
    "simplify_m",
    "generation",
    "access_token",
}


def _crs_param(raw: str | None, field: str) -> tuple[str, bool]:
    """Return (canonical crs, latitude first) of a ``crs`` or ``bbox-crs`` parameter.

    An EPSG URI or URN (``http://www.opengis.net/def/crs/EPSG/0/4490``) means the EPSG axis
    order, latitude first, as OGC API – Features Part 2 says; CRS84, short names
    (``EPSG:4490``, ``GCJ-02``) and the GCJ-02/BD-09 URNs mean longitude first, as GeoJSON.
    """
    name = output_crs(raw, field=field)
    upper = (raw or "").upper()
    lat_first = "/DEF/CRS/EPSG/" in upper or "URN:OGC:DEF:CRS:EPSG:" in upper
    return name, lat_first


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def parse_bbox(raw: str | None) -> tuple[float, float, float, float] | None:
    """Return a validated lon/lat bbox, or refuse it naming what is wrong."""
    if raw is None:
        return None
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        raise UnprocessableError("bbox is minLon,minLat,maxLon,maxLat", field="bbox") from None
    if len(values) == 6:  # 3D bboxes are allowed by the standard; heights are ignored
        values = [values[0], values[1], values[3], values[4]]
    if len(values) != 4 or any(v != v or abs(v) == float("inf") for v in values):
        raise UnprocessableError("bbox is four finite numbers", field="bbox")
    x0, y0, x1, y1 = values
    if not (-180 <= x0 <= 180 and -180 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise UnprocessableError(
            "bbox must lie within lon [-180, 180], lat [-90, 90] with minLat <= maxLat",
            field="bbox",
        )
    if x0 > x1:
        raise UnprocessableError("bbox crossing the antimeridian is not supported", field="bbox")
    return x0, y0, x1, y1


def _parse_datetime(raw: str | None) -> tuple[Any, Any] | None:
    if raw is None:
        return None

    def one(text: str):
        if text in ("", ".."):
            return None
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise UnprocessableError(
                f"not an RFC 3339 date-time: {text!r}", field="datetime"
            ) from None
        wrong = moment_problem(value)
        if wrong is not None:
            raise UnprocessableError(f"datetime {text!r} {wrong}", field="datetime")
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    if "/" in raw:
        start, end = raw.split("/", 1)
        return one(start), one(end)
    moment = one(raw)
    return moment, moment


def _collection(request: Request, spec: LayerSpec, extent: list[float] | None) -> dict:
    base = _base(request)
    out: dict[str, Any] = {
        "id": spec.name,
        "title": spec.title,
        "description": spec.description,
        "itemType": "feature",
        "crs": list(CRS_URIS.values()),
        "storageCrs": CRS84,
        "links": [
            {
                "href": f"{base}/ogc/collections/{spec.name}",
                "rel": "self",
                "type": "application/json",
                "title": spec.title,
            },
            {
                "href": f"{base}/ogc/collections/{spec.name}/items",
                "rel": "items",
                "type": GEOJSON,
                "title": f"{spec.title} (GeoJSON)",
            },
            {
                "href": f"{base}/tiles/{spec.name}.json",
                "rel": "describedby",
                "type": "application/json",
                "title": "TileJSON of the vector tiles",
            },
        ],
    }
    if extent:
        out["extent"] = {"spatial": {"bbox": [extent], "crs": CRS84}}
    return out


@router.get("", summary="OGC API – Features landing page")
async def landing(request: Request, principal: PrincipalDep) -> JSON:
    base = _base(request)
    return JSON(
        {
            "title": "wangge map layers",
            "description": "Boundaries, incidents, units and facilities of your area",
            "links": [
                {"href": f"{base}/ogc", "rel": "self", "type": "application/json"},
                {
                    "href": f"{base}/openapi.json",
                    "rel": "service-desc",
                    "type": "application/vnd.oai.openapi+json;version=3.0",
                },
                {"href": f"{base}/docs", "rel": "service-doc", "type": "text/html"},
                {
                    "href": f"{base}/ogc/conformance",
                    "rel": "conformance",
                    "type": "application/json",
                },
                {"href": f"{base}/ogc/collections", "rel": "data", "type": "application/json"},
            ],
        }
    )


@router.get("/conformance", summary="OGC API – Features conformance classes")
async def conformance(principal: PrincipalDep) -> JSON:
    return JSON({"conformsTo": CONFORMANCE})


@router.get("/collections", summary="The layers you may read")
async def collections(request: Request, principal: PrincipalDep, pool: PoolDep) -> JSON:
    generation = await resolve_generation(pool=pool, principal=principal, requested=None)
    out = []
    for spec in LAYERS.values():
        if spec.detail_roles is not None and principal.role not in spec.detail_roles:
            continue
        extent = await repo.layer_extent(pool, spec, principal=principal, generation=generation)
        out.append(_collection(request, spec, extent))
    base = _base(request)
    return JSON(
        {
            "collections": out,
            "links": [
                {"href": f"{base}/ogc/collections", "rel": "self", "type": "application/json"}
            ],
        }
    )


@router.get("/collections/{collection_id}", summary="One layer")
async def collection(
    request: Request, collection_id: CollectionId, principal: PrincipalDep, pool: PoolDep
) -> JSON:
    spec = layer_or_404(collection_id)
    repo.check_readable(spec, principal)
    generation = await resolve_generation(pool=pool, principal=principal, requested=None)
    extent = await repo.layer_extent(pool, spec, principal=principal, generation=generation)
    return JSON(_collection(request, spec, extent))


def _number(raw: str | None, field: str, lo: float, hi: float, *, default=None, kind=float):
    """Return the parameter as a ``kind`` (int or float) within [lo, hi], or ``default``."""
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise UnprocessableError(f"{field} is {what}", field=field) from None
    if not lo <= value <= hi:
        raise UnprocessableError(f"{field} must be between {lo} and {hi}", field=field)
    return value


def _items_query(q, spec: LayerSpec) -> dict[str, Any]:
    """Return the validated arguments of ``layer_items`` from the items query string."""
    for key in q:
        if key not in STANDARD_PARAMS and key not in spec.filters:
            raise UnprocessableError(
                f"unknown parameter {key!r}; {spec.name} filters on {', '.join(spec.filters)}",
                field=key,
            )
    if q.get("f") not in (None, "json", "geojson"):
        raise UnprocessableError("f must be json", field="f")
    crs, lat_first = _crs_param(q.get("crs"), "crs")
    bbox_crs, bbox_lat_first = _crs_param(q.get("bbox-crs"), "bbox-crs")
    bbox = q.get("bbox")
    if bbox is not None and bbox_lat_first:
        values = bbox.split(",")
        half = len(values) // 2
        # minLat,minLon[,h],maxLat,maxLon[,h]: swap each corner's first two
        for i in (0, half):
            if len(values) >= i + 2:
                values[i], values[i + 1] = values[i + 1], values[i]
        bbox = ",".join(values)
    box = parse_bbox(bbox)
    if box is not None:
        box = bbox_to_wgs84(box, bbox_crs)
    limit = _number(q.get("limit"), "limit", 1, 10_000, default=100, kind=int)
    offset = _number(q.get("offset"), "offset", 0, 10_000_000, default=0, kind=int)
    zoom = _number(q.get("zoom"), "zoom", 0, 24)
    simplify_m = _number(q.get("simplify_m"), "simplify_m", 0, 100_000)
    tolerance = 0.0
    if zoom is not None:
        tolerance = repo.tolerance_for_zoom(zoom)
    elif simplify_m:
        tolerance = simplify_m / 111_320.0
    properties = [p for p in q["properties"].split(",") if p] if "properties" in q else None
    return {
        "limit": limit,
        "offset": offset,
        "properties": properties,
        "tolerance_deg": tolerance,
        "bbox": box,
        "crs": crs,
        "lat_first": lat_first,
    }


def _page_links(url, *, offset: int, limit: int, returned: int, matched: int | None) -> list[dict]:
    """Return the self, next and previous links of one page of items (``matched`` None:
    not counted, more than this page)."""
    links = [{"href": str(url), "rel": "self", "type": GEOJSON}]
    if matched is None or offset + returned < matched:
        links.append(
            {
                "href": str(url.include_query_params(offset=offset + limit, limit=limit)),
                "rel": "next",
                "type": GEOJSON,
            }
        )
    if offset:
        links.append(
            {
                "href": str(url.include_query_params(offset=max(0, offset - limit), limit=limit)),
                "rel": "prev",
                "type": GEOJSON,
            }
        )
    return links


@router.get(
    "/collections/{collection_id}/items",
    summary="Features of a layer (GeoJSON), paged",
    description="Standard: `limit` (≤ 10000), `offset`, `bbox`, `datetime` (incidents), "
    "property filters (`?status=open`). Extensions: `zoom` or `simplify_m` (simplify for "
    "the map's scale), `properties=a,b` (a selection), `generation`. `crs` (Part 2): "
    "CRS84 (default), EPSG:4490, GCJ-02 or BD-09 (Amap/Tencent, Baidu: shifted on the "
    "server, exact to 1e-6°), as a URI of the collection's `crs` list or a short name; "
    "`bbox-crs` the same for `bbox`. EPSG URIs mean latitude first.",
    response_class=Response,
    responses={200: {"description": "a page", "content": {GEOJSON: {"schema": _FEATURES}}}},
)
async def items(
    request: Request, collection_id: CollectionId, principal: PrincipalDep, pool: PoolDep
) -> Response:
    spec = layer_or_404(collection_id)
    q = request.query_params
    paging = _items_query(q, spec)
    generation = await resolve_generation(
        pool=pool, principal=principal, requested=parse_generation(q.get("generation"))
    )
    features, matched = await repo.layer_items(
        pool,
        spec,
        principal=principal,
        generation=generation,
        filters={k: q[k] for k in spec.filters if k in q},
        datetime_range=_parse_datetime(q.get("datetime")),
        **paging,
    )
    links = _page_links(
        request.url,
        offset=paging["offset"],
        limit=paging["limit"],
        returned=len(features),
        matched=matched,
    )
    # numberMatched is left out when not counted (many matches: see repo.COUNT_AHEAD), as
    # OGC API Features allows; the next link says more follow.
    head = orjson.dumps(
        {
            "type": "FeatureCollection",
            **({} if matched is None else {"numberMatched": matched}),
            "numberReturned": len(features),
            "timeStamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "links": links,
        }
    )
    body = head[:-1] + b',"features":[' + ",".join(features).encode() + b"]}"
    return _compressed(request, body, paging["crs"])


def _compressed(request: Request, body: bytes, crs: str = EPSG_4326) -> Response:
    """Return GeoJSON, gzipped when the client accepts it (a tablet's network pays per byte)."""
    headers = {"Vary": "Accept-Encoding", **content_crs(crs)}
    if len(body) > 1024 and "gzip" in request.headers.get("accept-encoding", ""):
        import gzip

        return Response(
            gzip.compress(body, 5),
            media_type=GEOJSON,
            headers={"Content-Encoding": "gzip", **headers},
        )
    return Response(body, media_type=GEOJSON, headers=headers)


@router.get(
    "/collections/{collection_id}/items/{feature_id}",
    summary="One feature",
    response_class=Response,
    responses={200: {"description": "the feature", "content": {GEOJSON: {"schema": _FEATURE}}}},
)
async def item(
    request: Request,
    collection_id: CollectionId,
    feature_id: FeatureId,
    principal: PrincipalDep,
    pool: PoolDep,
) -> Response:
    spec = layer_or_404(collection_id)
    crs, lat_first = _crs_param(request.query_params.get("crs"), "crs")
    generation = await resolve_generation(
        pool=pool,
        principal=principal,
        requested=parse_generation(request.query_params.get("generation")),
    )
    feature = await repo.layer_item(
        pool,
        spec,
        principal=principal,
        generation=generation,
        feature_id=feature_id,
        crs=crs,
        lat_first=lat_first,
    )
    base = _base(request)
    links = (
        ',"links":[{"href":"'
        + f"{base}/ogc/collections/{spec.name}/items/{feature_id}"
        + '","rel":"self","type":"application/geo+json"},{"href":"'
        + f"{base}/ogc/collections/{spec.name}"
        + '","rel":"collection",'
        '"type":"application/json"}]}'
    )
    return Response(feature[:-1] + links, media_type=GEOJSON, headers=content_crs(crs))
