"""Map pages: the dispatch wall, a grid officer's tablet, the planner's workload map.

``GET /pages/dispatch[?area=]``, ``GET /pages/tablet[?grid=]`` and
``GET /pages/planning[?metric=]`` answer HTML built by :mod:`maps.pages` from the layer
repository, so a page shows exactly what the caller's token may see (the token as for every
endpoint; a browser opening a page sends it as ``?access_token=``, and the page's own links
carry it on). ``GET /static/maps/{file}`` serves the pages' scripts and styles (Leaflet, its
marker-cluster plugin, the pages' runtime) from the package, publicly and cached for a year:
the pages fetch nothing from a CDN. :func:`export_page` builds the same pages for
``wangge map`` as self-contained files (data and scripts inline, no token).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gzip
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from maps.assets import STATIC_URL, static_file
from maps.geojson import bounds_of, collection, merge_bounds
from maps.pages import (
    LEVELS,
    PLANNING_METRICS,
    Page,
    add_coverage_gap_layer,
    dispatch_page,
    planning_page,
    tablet_page,
)
from maps.pages import render_page as render_html
from maps.style import zoom_for_bounds
from service.auth import Principal
from service.deps import get_principal
from service.errors import ForbiddenError, NotFoundError, UnprocessableError
from service.layers import AREA_LEVEL_LAYERS, LAYERS
from service.repositories import layers as repo
from service.routers.ogc import resolve_generation

__all__ = [
    "router",
    "PAGE_ROLES",
    "Links",
    "build_page",
    "dispatch_data",
    "tablet_data",
    "planning_data",
    "export_page",
]

router = APIRouter(tags=["pages"])

DISPATCHERS = ("city_dispatcher", "district_dispatcher", "community_dispatcher")
#: Who may open which page (scope still limits what each sees). The tablet page files cases,
#: which planners may not; a single grid has no planning view. Intake systems get no pages.
PAGE_ROLES: dict[str, frozenset[str]] = {
    "dispatch": frozenset({"admin", "planner", *DISPATCHERS, "grid_officer"}),
    "tablet": frozenset({"admin", *DISPATCHERS, "grid_officer"}),
    "planning": frozenset({"admin", "planner", *DISPATCHERS}),
}
#: Screens the pages are simplified for (pixels): the wall, and a tablet's map part.
WALL = (1920, 1080)
TABLET = (1024, 440)
MAX_AREAS = 20_000
MAX_INCIDENTS = 5_000
AREA_PROPS = ["code", "name", "level", "parent_code"]
INCIDENT_PROPS = ["category", "status", "reported_at", "address", "description", "grid_code"]
OPEN_STATUSES = ("new", "open")
#: The column of incidents that names their area at each level below the city.
INCIDENT_AREA_FILTER = {
    "district": "district_code",
    "community": "community_code",
    "grid": "grid_code",
}
WORKLOAD_SQL = """
    SELECT g.code,
           (SELECT count(*) FROM incident i WHERE i.grid_code = g.code
               AND i.reported_at >= now() - interval '90 days')::int AS incidents_90d,
           (SELECT count(*) FROM unit u WHERE u.grid_code = g.code)::int AS units,
           (SELECT count(DISTINCT m.team_role) FROM member m
               WHERE m.serving_grid_code = g.code)::int AS team_roles
    FROM unnest($1::text[]) AS g(code)
"""
TEAM_SQL = (
    "SELECT name, team_role, phone FROM member WHERE serving_grid_code = $1 "
    "AND team_role IS NOT NULL ORDER BY team_role, name"
)


@dataclass(frozen=True)
class Links:
    """Where a page links to: the service (a served page) or nowhere (a static export)."""

    area_url: str | None = None  #: dispatch view of an area, with ``{code}``
    tablet_url: str | None = None  #: tablet page of a grid, with ``{code}``
    report_endpoint: str | None = None  #: where the tablet form POSTs incidents
    token: str | None = None  #: sent with the tablet's reports


# -- data ------------------------------------------------------------------------------------
async def _items(pool, layer: str, principal: Principal, generation: int, **kw):
    texts, matched = await repo.layer_items(
        pool, LAYERS[layer], principal=principal, generation=generation, **kw
    )
    return [orjson.loads(t) for t in texts], matched


def _area_props(level: str) -> list[str]:
    spec = LAYERS[AREA_LEVEL_LAYERS[level]]
    return AREA_PROPS + (["open_incidents"] if "open_incidents" in spec.properties else [])


def _check_code(code: str, field: str) -> str:
    if not (code.isascii() and code.isdigit() and 6 <= len(code) <= 18):
        raise UnprocessableError(f"{field} is an area code of 6 to 18 digits", field=field)
    return code


async def _find_area(
    pool, principal: Principal, generation: int, code: str, tolerance: float
) -> dict | None:
    """Return the visible area ``code`` (any level) as a Feature, or None."""
    # CJ/T 213 lengths: 6 digits for cities and districts, 12 communities, 15 grids.
    likely = {6: ["city", "district"], 12: ["community"], 15: ["grid"]}.get(len(code), [])
    for level in likely + [lv for lv in LEVELS if lv not in likely]:
        features, _ = await _items(
            pool,
            AREA_LEVEL_LAYERS[level],
            principal,
            generation,
            filters={"code": code},
            limit=1,
            properties=_area_props(level),
            tolerance_deg=tolerance,
        )
        if features:
            return features[0]
    return None


async def _ancestors(pool, principal: Principal, generation: int, area: dict) -> list[dict]:
    """Return the breadcrumb of ``area``: its ancestors from the top, then itself."""
    props = area["properties"]
    chain = [{"code": props["code"], "name": props["name"], "level": props["level"]}]
    parent, level = props.get("parent_code"), props["level"]
    while parent:
        found = None
        for upper in reversed(LEVELS[: LEVELS.index(level)]):
            # A huge tolerance: only the name is wanted, the outline shrinks to a few points.
            features, _ = await _items(
                pool,
                AREA_LEVEL_LAYERS[upper],
                principal,
                generation,
                filters={"code": parent},
                limit=1,
                properties=AREA_PROPS,
                tolerance_deg=1.0,
            )
            if features:
                found = features[0]["properties"]
                break
        if found is None:
            break
        chain.insert(0, {"code": found["code"], "name": found["name"], "level": found["level"]})
        parent, level = found.get("parent_code"), found["level"]
    return chain


async def _open_incidents(
    pool,
    principal: Principal,
    generation: int,
    *,
    tolerance: float,
    filters: dict[str, str] | None = None,
    properties: list[str] = INCIDENT_PROPS,
    **kw,
) -> tuple[list[dict], int]:
    """Return (the first open incidents, how many there are), new and open alike."""
    features: list[dict] = []
    matched = 0
    filters = filters or {}
    for status in OPEN_STATUSES:
        found, n = await _items(
            pool,
            "incidents",
            principal,
            generation,
            filters={**filters, "status": status},
            limit=max(1, MAX_INCIDENTS - len(features)),
            properties=properties,
            tolerance_deg=tolerance,
            **kw,
        )
        features += found[: MAX_INCIDENTS - len(features)]
        matched += n
    return features, matched


async def dispatch_data(
    pool, principal: Principal, generation: int, area: str | None
) -> dict[str, Any]:
    """Return the arguments of :func:`maps.pages.dispatch_page` for ``area`` (default: the
    caller's own area; an admin's: everything)."""
    if area is None:
        area = principal.area_code
    focus = None
    if area is None:
        top = "city"
        extents = [
            await repo.layer_extent(
                pool, LAYERS[AREA_LEVEL_LAYERS[lv]], principal=principal, generation=generation
            )
            for lv in LEVELS
        ]
        bbox = merge_bounds(*extents)
        if bbox is None:
            raise NotFoundError("there are no areas to show", field="area")
    else:
        coarse = await _find_area(pool, principal, generation, _check_code(area, "area"), 1e-3)
        if coarse is None:
            raise NotFoundError(f"no area {area} that you may see", field="area")
        top = coarse["properties"]["level"]
        bbox = bounds_of([coarse])
    # Half a pixel one zoom level closer than the fit: the wall can zoom in once and stay sharp.
    tolerance = repo.tolerance_for_zoom(zoom_for_bounds(bbox, *WALL) + 1)
    areas: dict[str, dict] = {}
    kept: set[str] | None = None
    for level in LEVELS[LEVELS.index(top) :]:
        if level == top and area is not None:
            focus = await _find_area(pool, principal, generation, area, tolerance)
            features = [focus] if focus else []
        else:
            features, _ = await _items(
                pool,
                AREA_LEVEL_LAYERS[level],
                principal,
                generation,
                bbox=tuple(bbox),
                limit=MAX_AREAS,
                properties=_area_props(level),
                tolerance_deg=tolerance,
            )
            if kept is not None:
                # The bbox also catches neighbours: keep the focused area's descendants only.
                features = [f for f in features if f["properties"].get("parent_code") in kept]
        areas[level] = collection(features)
        kept = {f["properties"]["code"] for f in features}
    if focus is None and area is not None:
        raise NotFoundError(f"no area {area} that you may see", field="area")

    if area is not None and top in INCIDENT_AREA_FILTER:
        incidents, matched = await _open_incidents(
            pool,
            principal,
            generation,
            tolerance=tolerance,
            filters={INCIDENT_AREA_FILTER[top]: area},
        )
    else:
        incidents, matched = await _open_incidents(
            pool,
            principal,
            generation,
            tolerance=tolerance,
            bbox=tuple(bbox),
            properties=[*INCIDENT_PROPS, "district_code"],
        )
        if area is not None:
            # A city's box also catches its neighbours' cases: keep its districts' and its
            # own queue's (outside every district).
            districts = {
                f["properties"]["code"] for f in areas.get("district", {}).get("features", [])
            }
            inside = [
                f for f in incidents if f["properties"].get("district_code") in districts | {None}
            ]
            matched -= len(incidents) - len(inside)
            incidents = inside
        for f in incidents:
            f["properties"].pop("district_code", None)
    breadcrumb = await _ancestors(pool, principal, generation, focus) if focus else []
    for fc in areas.values():
        for f in fc["features"]:
            # Used above to walk the hierarchy; the page does not need them.
            f["properties"].pop("parent_code", None)
            f["properties"].pop("level", None)
    name = focus["properties"]["name"] if focus else "all areas"
    return {
        "areas": areas,
        "incidents": collection(incidents),
        "incidents_matched": matched,
        "breadcrumb": breadcrumb,
        "focus": area,
        "title": f"Dispatch · {name}",
    }


async def tablet_data(
    pool, principal: Principal, generation: int, grid: str | None
) -> dict[str, Any]:
    """Return the arguments of :func:`maps.pages.tablet_page` for ``grid`` (default: a grid
    officer's own grid)."""
    if grid is None:
        if principal.role != "grid_officer" or principal.area_code is None:
            raise UnprocessableError("name the grid: /pages/tablet?grid=<code>", field="grid")
        grid = principal.area_code
    grid = _check_code(grid, "grid")
    found, _ = await _items(
        pool,
        "grids",
        principal,
        generation,
        filters={"code": grid},
        limit=1,
        properties=AREA_PROPS,
        tolerance_deg=1e-4,
    )
    if not found:
        # As elsewhere: a grid outside the caller's area does not exist for them.
        raise NotFoundError(f"no grid {grid} that you may see", field="grid")
    tolerance = repo.tolerance_for_zoom(zoom_for_bounds(bounds_of(found), *TABLET) + 1)
    features, _ = await _items(
        pool,
        "grids",
        principal,
        generation,
        filters={"code": grid},
        limit=1,
        properties=AREA_PROPS,
        tolerance_deg=tolerance,
    )
    team = [dict(r) for r in await pool.fetch(TEAM_SQL, grid)]
    units, _ = await _items(
        pool,
        "units",
        principal,
        generation,
        filters={"grid_code": grid},
        limit=MAX_AREAS,
        properties=["name", "kind", "address", "party_org"],
        tolerance_deg=tolerance,
    )
    incidents, _ = await _open_incidents(
        pool, principal, generation, tolerance=tolerance, filters={"grid_code": grid}
    )
    return {
        "grid": (features or found)[0],
        "team": team,
        "units": collection(units),
        "incidents": collection(incidents),
    }


async def planning_data(pool, principal: Principal, generation: int, metric: str) -> dict[str, Any]:
    """Return the arguments of :func:`maps.pages.planning_page`: every visible grid with its
    workload figures, and the outlines above them."""
    if metric not in PLANNING_METRICS:
        raise UnprocessableError(f"metric is one of {', '.join(PLANNING_METRICS)}", field="metric")
    extents = [
        await repo.layer_extent(
            pool, LAYERS[AREA_LEVEL_LAYERS[lv]], principal=principal, generation=generation
        )
        for lv in LEVELS
    ]
    bbox = merge_bounds(*extents)
    if bbox is None:
        raise NotFoundError("there are no areas to show", field="area")
    tolerance = repo.tolerance_for_zoom(zoom_for_bounds(bbox, *WALL) + 1)
    grids, _ = await _items(
        pool,
        "grids",
        principal,
        generation,
        limit=MAX_AREAS,
        properties=_area_props("grid"),
        tolerance_deg=tolerance,
    )
    # Only codes of grids the caller sees are counted, so the figures stay in scope.
    rows = await pool.fetch(WORKLOAD_SQL, [g["properties"]["code"] for g in grids])
    figures = {r["code"]: dict(r) for r in rows}
    for g in grids:
        work = figures.get(g["properties"]["code"], {})
        for key in ("incidents_90d", "units", "team_roles"):
            g["properties"][key] = work.get(key, 0)
    outlines = {}
    for level in ("city", "district", "community"):
        features, _ = await _items(
            pool,
            AREA_LEVEL_LAYERS[level],
            principal,
            generation,
            limit=MAX_AREAS,
            properties=AREA_PROPS,
            tolerance_deg=tolerance,
        )
        if features:
            outlines[level] = collection(features)
    return {"grids": collection(grids), "outlines": outlines, "metric": metric}


def _require_role(kind: str, principal: Principal) -> None:
    if principal.role not in PAGE_ROLES[kind]:
        raise ForbiddenError(
            f"the {kind} page is for {', '.join(sorted(PAGE_ROLES[kind]))}; "
            f"you are {principal.role}"
        )


def _flat(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key == "geometry":
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, str | int | float | bool) or v is None:
                    out[f"{key}_{sub}"] = v
        elif isinstance(value, list):
            out[key] = ", ".join(map(str, value))
        elif isinstance(value, str | int | float | bool) or value is None:
            out[key] = value
    return out


def _collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": i["geometry"], "properties": _flat(i)}
            for i in items
            if i.get("geometry")
        ],
    }


def coverage_gaps(conn, principal: Principal) -> list[dict[str, Any]]:
    """Return the planning page's gap layers from the coverage analyses (synchronous).

    Where service is out of reach, grids missing a team role, workload outliers and
    partition defects: each a FeatureCollection with the numbers behind it.
    """
    from service.analysis import run_staffing, run_topology, run_workload
    from service.analysis.reach import run_reach

    reach = run_reach(conn, principal=principal, simplify_m=20)
    staffing = run_staffing(conn, principal=principal)
    workload = run_workload(conn, principal=principal)
    topology = run_topology(conn, principal=principal)
    return [
        {
            "name": "Beyond a 15-minute walk",
            "data": _collection([i for i in reach["items"] if i.get("uncovered_area_m2")]),
            "color": "#6a3d9a",
            "popup_fields": [
                ("name", "Community"),
                ("uncovered_share", "Share of area"),
                ("households_uncovered", "Households beyond"),
                ("units_uncovered", "Units beyond"),
            ],
        },
        {
            "name": "Grids missing a team role",
            "data": _collection([i for i in staffing["items"] if i.get("kind") == "missing_role"]),
            "color": "#e31a1c",
            "popup_fields": [("grid_code", "Grid"), ("roles", "Missing")],
        },
        {
            "name": "Workload outliers",
            "data": _collection([i for i in workload["items"] if i.get("outlier")]),
            "color": "#ff7f00",
            "popup_fields": [
                ("grid_code", "Grid"),
                ("open", "Open"),
                ("overdue", "Overdue"),
                ("incidents", "Incidents"),
            ],
        },
        {
            "name": "Partition defects",
            "data": _collection(topology["items"]),
            "color": "#000000",
            "popup_fields": [("kind", "Defect"), ("parent_code", "Parent")],
        },
    ]


async def build_page(
    pool,
    principal: Principal,
    generation: int,
    kind: str,
    *,
    links: Links,
    area: str | None = None,
    grid: str | None = None,
    metric: str | None = None,
    gaps: list[dict[str, Any]] | None = None,
) -> Page:
    """Return the ``kind`` page (dispatch, tablet, planning) as the principal may see it.

    Parameters
    ----------
    pool : asyncpg.Pool
        The hot read pool.
    principal : Principal
        Whose page it is: role and scope.
    generation : int
        The boundary generation to draw.
    kind : {"dispatch", "tablet", "planning"}
    links : Links
        Where the page's links and form point (none for a static export).
    area, grid, metric : str, optional
        The dispatch page's area, the tablet page's grid, the planning page's colour metric.
    """
    if kind not in PAGE_ROLES:
        raise NotFoundError(f"no page {kind!r}; pages: {', '.join(PAGE_ROLES)}", field="page")
    _require_role(kind, principal)
    if kind == "dispatch":
        data = await dispatch_data(pool, principal, generation, area)
        tablet_url = links.tablet_url if principal.role in PAGE_ROLES["tablet"] else None
        return dispatch_page(**data, area_url=links.area_url, tablet_url=tablet_url)
    if kind == "tablet":
        data = await tablet_data(pool, principal, generation, grid)
        return tablet_page(**data, report_endpoint=links.report_endpoint, token=links.token)
    data = await planning_data(pool, principal, generation, metric or "incidents_90d")
    page = planning_page(**data, area_url=links.area_url)
    for gap in gaps or []:
        if gap["data"]["features"]:
            add_coverage_gap_layer(
                page,
                gap["data"],
                name=gap["name"],
                color=gap["color"],
                popup_fields=gap["popup_fields"],
            )
    return page


# -- HTTP ------------------------------------------------------------------------------------
def _request_token(request: Request) -> str | None:
    """Return the token the request authenticated with (as :func:`get_principal` read it)."""
    headers = request.headers
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip()
    scheme, _, value = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("access_token")


def _served_links(request: Request) -> Links:
    root = request.scope.get("root_path", "").rstrip("/")
    # Pages opened with ?access_token= pass it on in their links; header clients keep theirs.
    carry = ""
    if "access_token" in request.query_params:
        carry = "&access_token=" + quote(request.query_params["access_token"], safe="")
    return Links(
        area_url=f"{root}/pages/dispatch?area={{code}}{carry}",
        tablet_url=f"{root}/pages/tablet?grid={{code}}{carry}",
        report_endpoint=f"{root}/incidents",
        token=_request_token(request),
    )


def _html(request: Request, html: str) -> Response:
    body = html.encode("utf-8")
    headers = {
        # The page holds the caller's data and token: never stored, never sent as a referrer.
        "Cache-Control": "private, no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding, Authorization, X-API-Key",
    }
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)


async def _serve(request: Request, kind: str, **params) -> Response:
    principal = await get_principal(request)
    _require_role(kind, principal)
    generation = await resolve_generation(request, principal, None)
    if kind == "planning":
        from starlette.concurrency import run_in_threadpool

        def work():
            with request.app.state.sync_engine.begin() as conn:
                return coverage_gaps(conn, principal)

        params["gaps"] = await run_in_threadpool(work)
    page = await build_page(
        request.app.state.pg_pool,
        principal,
        generation,
        kind,
        links=_served_links(request),
        **params,
    )
    root = request.scope.get("root_path", "").rstrip("/")
    return _html(request, render_html(page, assets="link", static_url=root + STATIC_URL))


HTML_RESPONSES = {200: {"content": {"text/html": {}}, "description": "the page"}}


@router.get(
    "/pages/dispatch",
    summary="Dispatch wall map of your area",
    description="Boundaries by level, grids coloured by open incidents, clustered open "
    "incidents, drill-down links (`?area=<code>` focuses on an area) and a breadcrumb. "
    "Open it in a browser with `?access_token=<token>`.",
    response_class=Response,
    responses=HTML_RESPONSES,
)
async def dispatch(request: Request, area: str | None = None) -> Response:
    return await _serve(request, "dispatch", area=area)


@router.get(
    "/pages/tablet",
    summary="A grid officer's tablet page",
    description="One grid (default: a grid officer's own): boundary, 1+1+1 team, units, "
    "open incidents, and a form that files a case at the device's position.",
    response_class=Response,
    responses=HTML_RESPONSES,
)
async def tablet(request: Request, grid: str | None = None) -> Response:
    return await _serve(request, "tablet", grid=grid)


@router.get(
    "/pages/planning",
    summary="Planning map: workload of every grid",
    description="Open incidents, incidents in the last 90 days, stationed units and team "
    "completeness per grid; `metric` picks the colour: "
    + ", ".join(f"`{m}`" for m in PLANNING_METRICS),
    response_class=Response,
    responses=HTML_RESPONSES,
)
async def planning(request: Request, metric: str = "incidents_90d") -> Response:
    return await _serve(request, "planning", metric=metric)


@functools.cache
def _gzipped(path: str) -> bytes:
    return gzip.compress(static_file(path).data, compresslevel=9)


@router.get(STATIC_URL + "/{path:path}", include_in_schema=False)
async def static(request: Request, path: str) -> Response:
    file = static_file(path)
    if file is None:
        raise NotFoundError(f"no file {path}", field="path")
    etag = f'"{file.digest}"'
    # A URL with the file's hash never changes content, so browsers may keep it for a year.
    versioned = request.query_params.get("v") == file.digest
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable" if versioned else "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    data = file.data
    if file.media_type.startswith("text/") and "gzip" in request.headers.get("accept-encoding", ""):
        data = _gzipped(path)
        headers["Content-Encoding"] = "gzip"
    return Response(data, media_type=file.media_type, headers=headers)


# -- static export ---------------------------------------------------------------------------
async def _export(url: str, principal: Principal, kind: str, link_base: str | None, **params):
    from service.db import make_pg_pool

    pool = await make_pg_pool(url, size=2)
    try:
        generation = await pool.fetchval("SELECT max(id) FROM generation WHERE active")
        if generation is None:
            raise NotFoundError("no boundaries have been activated yet", field="generation")
        base = link_base.rstrip("/") if link_base else None
        links = Links(
            area_url=f"{base}/pages/dispatch?area={{code}}" if base else None,
            tablet_url=f"{base}/pages/tablet?grid={{code}}" if base else None,
        )
        if kind == "planning":
            from service.db import make_engine

            engine = make_engine(url)
            try:
                with engine.begin() as conn:
                    params["gaps"] = coverage_gaps(conn, principal)
            finally:
                engine.dispose()
        page = await build_page(pool, principal, generation, kind, links=links, **params)
    finally:
        await pool.close()
    return render_html(page, assets="inline")


def export_page(
    url: str,
    principal: Principal,
    kind: str,
    *,
    area: str | None = None,
    grid: str | None = None,
    metric: str | None = None,
    link_base: str | None = None,
) -> str:
    """Return the ``kind`` page as one self-contained HTML file (for ``wangge map``).

    Data, scripts, styles and images are inline, so the file opens offline from disk; it
    holds no token, so its report form is disabled, and its drill-down links point to the
    service at ``link_base`` (none without it).

    Parameters
    ----------
    url : str
        Database URL.
    principal : Principal
        Whose view to export (the CLI's is an admin's).
    kind : {"dispatch", "tablet", "planning"}
    area, grid, metric : str, optional
        As for the served pages.
    link_base : str, optional
        e.g. ``https://wangge.example``: make drill-down links open the served pages there.
    """
    work = _export(url, principal, kind, link_base, area=area, grid=grid, metric=metric)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    # Called from a thread that runs an event loop already (a notebook, a test driving a
    # browser): the export gets a loop of its own in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()
