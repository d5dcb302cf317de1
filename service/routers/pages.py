"""Map pages: the dispatch wall, a grid officer's tablet, the planner's workload map.

``GET /pages/dispatch[?area=]``, ``GET /pages/tablet[?grid=]`` and
``GET /pages/planning[?metric=]`` answer the HTML of :func:`service.pages.page_html`, so a
page shows exactly what the caller's token may see (the token as for every endpoint). A
browser opens a page with ``?access_token=<token>``: the page exchanges it for a session
cookie and redirects (303) to its address without the token, and the cookie authenticates
the page, its links and its report form from then on (:mod:`service.edge.sessions`).
``GET /static/maps/{file}`` serves the pages' scripts and styles (Leaflet, its marker-cluster
plugin, the pages' runtime) from the package, publicly and cached for a year: the pages
fetch nothing from a CDN. ``wangge map`` writes the same pages as files
(:func:`service.pages.export_page`).

The served pages are live (:mod:`maps.live`): the dispatch page reads and acts on
``/cases`` and follows ``/cases/stream`` with the same cookie, and asks
``GET /pages/grid-team?grid=`` for a case's grid team; the tablet registers the service
worker ``GET /pages/sw.js`` (public; its scope, ``/pages/``, covers the pages) so it opens
and keeps working offline.
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import Engine

from maps.assets import STATIC_URL, static_file
from maps.i18n import LANGUAGES, negotiate_language
from maps.pages import PLANNING_METRICS
from service.auth import Principal
from service.basemap import page_basemaps
from service.deps import PoolDep, PrincipalDep, SyncEngineDep, start_page_session
from service.edge.sessions import csrf_token, session_redirect
from service.errors import NotFoundError, UnprocessableError
from service.gap_cache import GapCache
from service.pages import Links, grid_team, page_html, require_page_role
from service.repositories.generations import resolve_generation
from service.responses import JSON

__all__ = ["router"]

router = APIRouter(tags=["pages"])

#: The tablet's service worker: under /pages, so its scope covers the pages.
SERVICE_WORKER = "/pages/sw.js"
#: Cases per page the live pages read (at most the service's largest page).
LIVE_PAGE_SIZE = 500


# -- pages ----------------------------------------------------------------------------------
def _served_links(request: Request) -> Links:
    root = request.scope.get("root_path", "").rstrip("/")
    # Links carry no token: a browser holds the page session cookie (service.edge.sessions);
    # a page opened with a header token gets that header from whatever sends it.
    session = getattr(request.state, "page_session", None)
    return Links(
        area_url=f"{root}/pages/dispatch?area={{code}}",
        tablet_url=f"{root}/pages/tablet?grid={{code}}",
        report_endpoint=f"{root}/incidents",
        csrf_token=csrf_token(session) if session else None,
        cases_url=f"{root}/cases",
        stream_url=f"{root}/cases/stream",
        team_url=f"{root}/pages/grid-team?grid={{code}}",
        service_worker=f"{root}{SERVICE_WORKER}",
        page_size=min(LIVE_PAGE_SIZE, request.app.state.settings.api.max_page_size),
    )


def _html(request: Request, html: str) -> Response:
    body = html.encode("utf-8")
    headers = {
        # The page holds the caller's data and token: never stored, never sent as a referrer.
        "Cache-Control": "private, no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding, Accept-Language, Authorization, X-API-Key, Cookie",
    }
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)


@dataclass(frozen=True)
class _PageServer:
    """Answers pages for one request: its principal, its connections, its links."""

    request: Request
    principal: Principal
    pool: Any
    engine: Engine

    async def __call__(self, kind: str, lang: str | None = None, **params) -> Response:
        if "access_token" in self.request.query_params:
            # The token leaves the address bar: exchanged once for the page session cookie,
            # then the same page without it (checked first: no cookie for a refused role).
            require_page_role(kind, self.principal)
            session = await start_page_session(self.request, self.principal)
            seconds = self.request.app.state.settings.api.session_seconds
            return session_redirect(self.request, session, seconds=seconds)
        root = self.request.scope.get("root_path", "").rstrip("/")
        html = await page_html(
            kind,
            pool=self.pool,
            engine=self.engine,
            principal=self.principal,
            links=_served_links(self.request),
            static_url=root + STATIC_URL,
            gap_cache=_gap_cache(self.request) if kind == "planning" else None,
            lang=_language(self.request, lang),
            basemaps=page_basemaps(self.request.app.state.settings.basemap, root=root),
            **params,
        )
        return _html(self.request, html)


def _language(request: Request, lang: str | None) -> str:
    """Return the page's language: ``?lang=``, else ``Accept-Language``, else Chinese."""
    try:
        return negotiate_language(
            query=lang, accept_language=request.headers.get("accept-language")
        )
    except ValueError as e:  # pragma: no cover - the query's pattern refuses it first
        raise UnprocessableError(str(e), field="lang") from e


def _gap_cache(request: Request) -> GapCache | None:
    """Return the process's cache of the planning page's analyses (made on first use, fed
    by the tile cache's change listener), or None without a tile cache."""
    state = request.app.state
    cache = getattr(state, "gap_cache", None)
    if cache is None:
        tiles = getattr(state, "tile_cache", None)
        if tiles is None:
            return None
        cache = state.gap_cache = GapCache(tiles)
    return cache


def _page_server(
    request: Request, principal: PrincipalDep, pool: PoolDep, engine: SyncEngineDep
) -> _PageServer:
    return _PageServer(request, principal, pool, engine)


PageServerDep = Annotated[_PageServer, Depends(_page_server)]

AreaCode = Annotated[str | None, Query(pattern=r"^[0-9]{6,18}$", description="an area code")]
GridCode = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9]{6,18}$",
        description="the grid; required unless the token is a grid officer's (default: "
        "the officer's own grid; otherwise 422 naming `grid`)",
    ),
]
Metric = Literal[tuple(PLANNING_METRICS)]
Language = Annotated[
    Literal[LANGUAGES] | None,
    Query(
        description="the page's language (default: the best of `Accept-Language`, else "
        "Simplified Chinese)"
    ),
]

#: Every page route answers HTML.
_page_route = functools.partial(
    router.get,
    response_class=Response,
    responses={200: {"content": {"text/html": {}}, "description": "the page"}},
)


@_page_route(
    "/pages/dispatch",
    summary="Dispatch wall map of your area",
    description="Boundaries by level, grids coloured by open incidents, clustered open "
    "incidents, drill-down links (`?area=<code>` focuses on an area) and a breadcrumb. "
    "Open it in a browser with `?access_token=<token>`.",
)
async def dispatch(serve: PageServerDep, area: AreaCode = None, lang: Language = None) -> Response:
    return await serve("dispatch", area=area, lang=lang)


@_page_route(
    "/pages/tablet",
    summary="A grid officer's tablet page",
    description="One grid (default: a grid officer's own): boundary, 1+1+1 team, units, "
    "open incidents, and a form that files a case at the device's position.",
)
async def tablet(serve: PageServerDep, grid: GridCode = None, lang: Language = None) -> Response:
    return await serve("tablet", grid=grid, lang=lang)


@_page_route(
    "/pages/planning",
    summary="Planning map: workload of every grid",
    description="Open incidents, incidents in the last 90 days, stationed units and team "
    "completeness per grid; `metric` picks the colour: "
    + ", ".join(f"`{m}`" for m in PLANNING_METRICS)
    + ". With `plan` (planners and admins): that boundary draft beside the current grids, "
    "coloured by population deviation, with its metrics against today's.",
)
async def planning(
    serve: PageServerDep,
    metric: Metric = "incidents_90d",
    lang: Language = None,
    plan: Annotated[int | None, Query(ge=1, le=2**62, description="a boundary draft")] = None,
) -> Response:
    return await serve("planning", metric=metric, lang=lang, plan=plan)


@router.get(
    "/pages/grid-team",
    summary="The 1+1+1 team of a grid (for the dispatch page)",
    description="Name, team role and phone of each member serving the grid; 404 for a "
    "grid outside your area. Opened by the dispatch page beside a case.",
    responses={200: {"description": "the team, by role"}},
)
async def team(
    principal: PrincipalDep,
    pool: PoolDep,
    grid: Annotated[str, Query(pattern=r"^[0-9]{6,18}$", description="the grid's code")],
) -> JSON:
    generation = await resolve_generation(pool=pool, principal=principal, requested=None)
    members = await grid_team(pool=pool, principal=principal, generation=generation, grid=grid)
    return JSON(members, headers={"Cache-Control": "private, no-store"})


@router.get(SERVICE_WORKER, include_in_schema=False)
async def service_worker() -> Response:
    """The tablet's service worker: public (it holds no data), revalidated on every check."""
    file = static_file("wangge/sw.js")
    return Response(
        file.data,
        media_type=file.media_type,
        # Its scope is its folder, /pages/ (under any root path): no Service-Worker-Allowed.
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# -- the pages' scripts and styles -----------------------------------------------------------
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
