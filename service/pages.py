"""The map pages (dispatch wall, grid officer's tablet, planner's workload map) as a principal
may see them: their data, the coverage gaps drawn on them, their HTML.

:func:`page_html` is the one path from a request to a page: the router
(:mod:`service.routers.pages`) serves its answer, and :func:`export_page` writes it as a
self-contained file for ``wangge map``. The data come from the layer repository, so a page
shows exactly what the principal's token may see; :mod:`maps.pages` draws them (this
module reads, it does not draw).

Served pages also get their live parts (:mod:`maps.live`): the dispatch page a case queue
fed by ``/cases`` and ``/cases/stream``, the tablet "my cases" and an offline queue.
:func:`grid_team` answers the dispatch page's question "who is this case's grid team?".

:func:`dispatch_data`, :func:`tablet_data` and :func:`planning_data` return the keyword
arguments of :func:`maps.pages.dispatch_page`, :func:`~maps.pages.tablet_page` and
:func:`~maps.pages.planning_page`; :func:`coverage_gaps` runs the analyses whose gaps the
planning page draws (the layers of :data:`maps.gaps.MAP_GAP_LAYERS`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import orjson

from maps.assets import STATIC_URL
from maps.basemap import WGS84, Basemaps, shift_geojson
from maps.gaps import GAP_LAYERS, MAP_GAP_LAYERS, add_gap_layers
from maps.geojson import bounds_of, collection, merge_bounds
from maps.i18n import DEFAULT_LANGUAGE
from maps.live import add_dispatch_queue, add_tablet_desk
from maps.pages import (
    LEVELS,
    PLANNING_METRICS,
    Page,
    dispatch_page,
    planning_page,
    render_page,
    tablet_page,
)
from maps.plandraft import add_plan_draft
from maps.style import zoom_for_bounds
from service.auth import DISPATCHER_ROLES, Principal
from service.basemap import add_page_basemaps
from service.dispatch.lifecycle import ACTIONS
from service.errors import ForbiddenError, NotFoundError, UnprocessableError
from service.repositories import grids as grid_repo
from service.repositories import layers as repo
from service.repositories import live as live_repo
from service.repositories.generations import resolve_generation
from service.specs.map_layers import AREA_LEVEL_LAYERS, LAYERS

__all__ = [
    "PAGE_ROLES",
    "Links",
    "require_page_role",
    "dispatch_data",
    "tablet_data",
    "planning_data",
    "grid_team",
    "coverage_gaps",
    "build_page",
    "page_html",
    "export_page",
]

#: Who may open which page (scope still limits what each sees). The tablet page files cases,
#: which planners may not; a single grid has no planning view. Intake systems get no pages.
PAGE_ROLES: dict[str, frozenset[str]] = {
    "dispatch": frozenset({"admin", "planner", *DISPATCHER_ROLES, "grid_officer"}),
    "tablet": frozenset({"admin", *DISPATCHER_ROLES, "grid_officer"}),
    "planning": frozenset({"admin", "planner", *DISPATCHER_ROLES}),
}
#: Screens the pages are simplified for (pixels): the wall, and a tablet's map part.
WALL = (1920, 1080)
TABLET = (1024, 440)
MAX_AREAS = 20_000
#: Open incidents a page embeds at most (the page says how many there are in all, counted
#: from the counters kept on write): a city's backlog of 50,000 would be megabytes of
#: GeoJSON, and the vector tiles draw all of them (clustered where they crowd).
MAX_INCIDENTS = 2_000
AREA_PROPS = ["code", "name", "level", "parent_code"]
INCIDENT_PROPS = ["category", "status", "reported_at", "address", "description", "grid_code"]
UNIT_PROPS = ["name", "kind", "address", "party_org"]
OPEN_STATUSES = ("new", "open")
#: The column of incidents that names their area at each level below the city.
INCIDENT_AREA_FILTER = {
    "district": "district_code",
    "community": "community_code",
    "grid": "grid_code",
}
#: Where to look first for an area code, by its length (CJ/T 213: 6 digits for cities and
#: districts, 12 for communities, 15 for grids).
LIKELY_LEVELS = {6: ["city", "district"], 12: ["community"], 15: ["grid"]}


@dataclass(frozen=True)
class Links:
    """Where a page links to: the service (a served page) or nowhere (a static export)."""

    area_url: str | None = None  #: dispatch view of an area, with ``{code}``
    tablet_url: str | None = None  #: tablet page of a grid, with ``{code}``
    report_endpoint: str | None = None  #: where the tablet form POSTs incidents
    csrf_token: str | None = None  #: sent with the pages' writes (their page session's)
    #: The live parts (:mod:`maps.live`; none in a static export): the cases API, its
    #: stream, a grid's team (with ``{code}``), the tablet's service worker.
    cases_url: str | None = None
    stream_url: str | None = None
    team_url: str | None = None
    service_worker: str | None = None
    page_size: int = 500  #: cases per ``GET /cases`` page the live pages ask for


#: What the dispatch page's buttons may send: every action people take, with its fields
#: (their words are the page's, in its language: maps.live.DISPATCH_TEXT).
LIVE_ACTIONS = {
    name: {"requires": list(a.requires), "accepts": list(a.accepts)}
    for name, a in ACTIONS.items()
    if a.api
}


def require_page_role(kind: str, principal: Principal) -> None:
    """Refuse an unknown page (404) and a role the page is not for (403)."""
    if kind not in PAGE_ROLES:
        raise NotFoundError(f"no page {kind!r}; pages: {', '.join(PAGE_ROLES)}", field="page")
    if principal.role not in PAGE_ROLES[kind]:
        raise ForbiddenError(
            f"the {kind} page is for {', '.join(sorted(PAGE_ROLES[kind]))}; "
            f"you are {principal.role}"
        )


# -- reading what the principal sees -----------------------------------------------------------
@dataclass(frozen=True)
class _View:
    """What ``principal`` may see of one generation: every read of the pages goes here."""

    pool: Any
    principal: Principal
    generation: int

    async def items(self, layer: str, **kw) -> tuple[list[dict], int]:
        """Return (features, how many match) of ``layer``; ``kw`` as for ``layer_items``."""
        texts, matched = await repo.layer_items(
            self.pool, LAYERS[layer], principal=self.principal, generation=self.generation, **kw
        )
        return [orjson.loads(t) for t in texts], matched

    async def areas(self, level: str, **kw) -> list[dict]:
        """Return the areas of ``level`` (features); ``kw`` as for ``layer_items``."""
        features, _ = await self.items(AREA_LEVEL_LAYERS[level], **kw)
        return features

    async def area(
        self, level: str, code: str, *, tolerance: float, properties: list[str] = AREA_PROPS
    ) -> dict | None:
        """Return the area ``code`` of ``level`` (a feature), or None."""
        found = await self.areas(
            level, filters={"code": code}, limit=1, properties=properties, tolerance_deg=tolerance
        )
        return found[0] if found else None

    async def open_count(self, level: str | None = None, code: str | None = None) -> int:
        """Return how many open incidents the principal sees (in area ``code`` of ``level``)."""
        return await repo.count_binned(
            self.pool,
            LAYERS["incidents"],
            principal=self.principal,
            statuses=OPEN_STATUSES,
            level=level,
            code=code,
        )

    async def extent(self) -> list[float]:
        """Return the box of every area the principal sees (404 when there is none)."""
        extents = [
            await repo.layer_extent(
                self.pool,
                LAYERS[AREA_LEVEL_LAYERS[level]],
                principal=self.principal,
                generation=self.generation,
            )
            for level in LEVELS
        ]
        bbox = merge_bounds(*extents)
        if bbox is None:
            raise NotFoundError("there are no areas to show", field="area")
        return bbox


def _tolerance(bbox: list[float], screen: tuple[int, int]) -> float:
    """Return the simplification for ``bbox`` on ``screen``: half a pixel one zoom level
    closer than the fit, so the map can zoom in once and stay sharp."""
    return repo.tolerance_for_zoom(zoom_for_bounds(bbox, *screen) + 1)


def _area_props(level: str) -> list[str]:
    spec = LAYERS[AREA_LEVEL_LAYERS[level]]
    return AREA_PROPS + (["open_incidents"] if "open_incidents" in spec.properties else [])


def _check_code(code: str, field: str) -> str:
    if not (code.isascii() and code.isdigit() and 6 <= len(code) <= 18):
        raise UnprocessableError(f"{field} is an area code of 6 to 18 digits", field=field)
    return code


async def _find_area(view: _View, code: str, tolerance: float) -> dict | None:
    """Return the visible area ``code`` (any level) as a Feature, or None."""
    likely = LIKELY_LEVELS.get(len(code), [])
    for level in likely + [lv for lv in LEVELS if lv not in likely]:
        found = await view.area(level, code, tolerance=tolerance, properties=_area_props(level))
        if found:
            return found
    return None


def _crumb(props: dict[str, Any]) -> dict[str, Any]:
    return {"code": props["code"], "name": props["name"], "level": props["level"]}


async def _ancestors(view: _View, area: dict) -> list[dict]:
    """Return the breadcrumb of ``area``: its ancestors from the top, then itself."""
    props = area["properties"]
    chain = [_crumb(props)]
    parent, level = props.get("parent_code"), props["level"]
    while parent:
        found = None
        for upper in reversed(LEVELS[: LEVELS.index(level)]):
            # A huge tolerance: only the name is wanted, the outline shrinks to a few points.
            found = await view.area(upper, parent, tolerance=1.0)
            if found:
                break
        if found is None:
            break
        props = found["properties"]
        chain.insert(0, _crumb(props))
        parent, level = props.get("parent_code"), props["level"]
    return chain


async def _open_incidents(
    view: _View,
    *,
    tolerance: float,
    filters: dict[str, str] | None = None,
    properties: list[str] = INCIDENT_PROPS,
    **kw,
) -> list[dict]:
    """Return the newest :data:`MAX_INCIDENTS` open incidents, new ones first (not counted
    here: :meth:`_View.open_count` reads the counters). Newest first is what a dispatcher
    looks at, and the plan that reads only about as many rows as it returns (by status and
    time, the index ``incident_status``), whatever the year of cases holds."""
    features: list[dict] = []
    filters = filters or {}
    for status in OPEN_STATUSES:
        if len(features) >= MAX_INCIDENTS:
            break
        found, _ = await view.items(
            "incidents",
            filters={**filters, "status": status},
            limit=MAX_INCIDENTS - len(features),
            properties=properties,
            tolerance_deg=tolerance,
            count=False,
            newest_first=True,
            **kw,
        )
        features += found
    return features


# -- the dispatch page -----------------------------------------------------------------------
async def _dispatch_areas(
    view: _View, top: str, area: str | None, bbox: list[float], tolerance: float
) -> tuple[dict[str, dict], dict | None]:
    """Return the areas by level from ``top`` down (the focus's descendants only), and the
    focused area (None without one)."""
    areas: dict[str, dict] = {}
    focus = None
    kept: set[str] | None = None
    for level in LEVELS[LEVELS.index(top) :]:
        if level == top and area is not None:
            focus = await _find_area(view, area, tolerance)
            features = [focus] if focus else []
        else:
            features = await view.areas(
                level,
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
    return areas, focus


async def _dispatch_incidents(
    view: _View,
    top: str,
    area: str | None,
    bbox: list[float],
    tolerance: float,
    areas: dict[str, dict],
) -> tuple[list[dict], int]:
    """Return (the first open incidents of the dispatch page, how many there are)."""
    if area is not None and top in INCIDENT_AREA_FILTER:
        incidents = await _open_incidents(
            view, tolerance=tolerance, filters={INCIDENT_AREA_FILTER[top]: area}
        )
        return incidents, await view.open_count(top, area)
    incidents = await _open_incidents(
        view, tolerance=tolerance, bbox=tuple(bbox), properties=[*INCIDENT_PROPS, "district_code"]
    )
    if area is not None:
        # A city's box also catches its neighbours' cases: keep its districts' and its
        # own queue's (outside every district).
        districts = {f["properties"]["code"] for f in areas.get("district", {}).get("features", [])}
        incidents = [
            f for f in incidents if f["properties"].get("district_code") in districts | {None}
        ]
    for f in incidents:
        f["properties"].pop("district_code", None)
    return incidents, await view.open_count(top if area else None, area)


async def dispatch_data(
    *, pool, principal: Principal, generation: int, area: str | None = None
) -> dict[str, Any]:
    """Return the arguments of :func:`maps.pages.dispatch_page` for ``area`` (default: the
    caller's own area; an admin's: everything)."""
    view = _View(pool, principal, generation)
    if area is None:
        area = principal.area_code
    if area is None:
        top, bbox = "city", await view.extent()
    else:
        coarse = await _find_area(view, _check_code(area, "area"), 1e-3)
        if coarse is None:
            raise NotFoundError(f"no area {area} that you may see", field="area")
        top, bbox = coarse["properties"]["level"], bounds_of([coarse])
    tolerance = _tolerance(bbox, WALL)
    areas, focus = await _dispatch_areas(view, top, area, bbox, tolerance)
    if focus is None and area is not None:
        raise NotFoundError(f"no area {area} that you may see", field="area")
    incidents, matched = await _dispatch_incidents(view, top, area, bbox, tolerance, areas)
    breadcrumb = await _ancestors(view, focus) if focus else []
    for fc in areas.values():
        for f in fc["features"]:
            # Used above to walk the hierarchy; the page does not need them.
            f["properties"].pop("parent_code", None)
            f["properties"].pop("level", None)
    # The title ("Dispatch · <the focused area>") is the page builder's, in the page's language.
    return {
        "areas": areas,
        "incidents": collection(incidents),
        "incidents_matched": matched,
        "breadcrumb": breadcrumb,
        "focus": area,
    }


# -- the tablet and planning pages -----------------------------------------------------------
async def tablet_data(
    *, pool, principal: Principal, generation: int, grid: str | None = None
) -> dict[str, Any]:
    """Return the arguments of :func:`maps.pages.tablet_page` for ``grid`` (default: a grid
    officer's own grid)."""
    view = _View(pool, principal, generation)
    if grid is None:
        if principal.role != "grid_officer" or principal.area_code is None:
            raise UnprocessableError("name the grid: /pages/tablet?grid=<code>", field="grid")
        grid = principal.area_code
    grid = _check_code(grid, "grid")
    found = await view.area("grid", grid, tolerance=1e-4)
    if found is None:
        # As elsewhere: a grid outside the caller's area does not exist for them.
        raise NotFoundError(f"no grid {grid} that you may see", field="grid")
    tolerance = _tolerance(bounds_of([found]), TABLET)
    feature = await view.area("grid", grid, tolerance=tolerance)
    units, _ = await view.items(
        "units",
        filters={"grid_code": grid},
        limit=MAX_AREAS,
        properties=UNIT_PROPS,
        tolerance_deg=tolerance,
    )
    incidents = await _open_incidents(view, tolerance=tolerance, filters={"grid_code": grid})
    return {
        "grid": feature or found,
        "team": await grid_repo.list_grid_team(pool=pool, grid_code=grid),
        "units": collection(units),
        "incidents": collection(incidents),
    }


async def planning_data(
    *,
    pool,
    principal: Principal,
    generation: int,
    metric: str = "incidents_90d",
    incidents_90d: Awaitable[dict[str, int] | None] | None = None,
) -> dict[str, Any]:
    """Return the arguments of :func:`maps.pages.planning_page`: every visible grid with its
    workload figures, and the outlines above them.

    ``incidents_90d``: the grids' incidents of the last 90 days by code, awaited after the
    other reads (the page's workload analysis counts them, run beside these reads: counting
    them twice read a season of cases twice, 0.5 s at a year of 1 M); None, or an awaitable
    giving None: counted here.
    """
    if metric not in PLANNING_METRICS:
        raise UnprocessableError(f"metric is one of {', '.join(PLANNING_METRICS)}", field="metric")
    view = _View(pool, principal, generation)
    tolerance = _tolerance(await view.extent(), WALL)
    grids = await view.areas(
        "grid", limit=MAX_AREAS, properties=_area_props("grid"), tolerance_deg=tolerance
    )
    codes = [g["properties"]["code"] for g in grids]
    # Only codes of grids the caller sees are counted, so the figures stay in scope.
    figures = await grid_repo.count_grid_workload(
        pool=pool, grid_codes=codes, recent=incidents_90d is None
    )
    outlines = {}
    for level in ("city", "district", "community"):
        features = await view.areas(
            level, limit=MAX_AREAS, properties=AREA_PROPS, tolerance_deg=tolerance
        )
        if features:
            outlines[level] = collection(features)
    recent = await incidents_90d if incidents_90d is not None else None
    if incidents_90d is not None and recent is None:
        figures = await grid_repo.count_grid_workload(pool=pool, grid_codes=codes)
    for g in grids:
        code = g["properties"]["code"]
        work = figures.get(code, {})
        for key in ("incidents_90d", "units", "team_roles"):
            g["properties"][key] = work.get(key, 0)
        if recent is not None:
            g["properties"]["incidents_90d"] = recent.get(code, 0)
    return {"grids": collection(grids), "outlines": outlines, "metric": metric}


async def grid_team(
    *, pool, principal: Principal, generation: int, grid: str
) -> list[dict[str, Any]]:
    """Return the 1+1+1 team of a grid the principal sees (the dispatch page shows it beside
    a case); 404 for a grid outside the caller's area."""
    require_page_role("dispatch", principal)
    view = _View(pool, principal, generation)
    # A huge tolerance: only whether the grid is visible matters, not its outline.
    if await view.area("grid", _check_code(grid, "grid"), tolerance=1.0) is None:
        raise NotFoundError(f"no grid {grid} that you may see", field="grid")
    return await grid_repo.list_grid_team(pool=pool, grid_code=grid)


async def _add_live_queue(
    page: Page, *, pool, principal: Principal, generation: int, links: Links, area: str | None
) -> None:
    # Read first: the page's cases (fetched by the browser) are as of this event or later,
    # and the stream resumes after it, so nothing falls between the two.
    last_event_id = await live_repo.find_latest_case_event_id(pool=pool)
    area_path = None
    if area is not None:
        area_path = await live_repo.find_area_path(pool=pool, code=area, generation=generation)
    add_dispatch_queue(
        page,
        cases_url=links.cases_url,
        stream_url=links.stream_url,
        team_url=links.team_url,
        csrf_token=links.csrf_token,
        actions=LIVE_ACTIONS,
        time_limits=await live_repo.list_time_limit_minutes(pool=pool),
        last_event_id=last_event_id,
        area=area,
        area_path=area_path,
        page_size=links.page_size,
    )


#: The analyses whose gaps the planning page draws (:data:`maps.gaps.MAP_GAP_LAYERS`).
GAP_ANALYSES = tuple(dict.fromkeys(GAP_LAYERS[layer].analysis for layer in MAP_GAP_LAYERS))


def coverage_gaps(
    *, conn, principal: Principal, cache=None, names: tuple[str, ...] = GAP_ANALYSES
) -> dict[str, dict[str, Any]]:
    """Return the results of the analyses whose gaps the planning page draws, by name
    (synchronous: ``conn`` is a SQLAlchemy connection).

    The analyses are those feeding :data:`maps.gaps.MAP_GAP_LAYERS` (``names``: some of
    them): where service is out of reach, grids missing a team role, workload outliers and
    partition defects. With a ``cache`` (:class:`service.gap_cache.GapCache`), results still
    true are reused.
    """
    from service.analysis import ANALYSES
    from service.analysis.reach import run_reach

    def run(name: str) -> dict[str, Any]:
        if name == "reach":
            return run_reach(conn, principal=principal, simplify_m=20)
        return ANALYSES[name](conn, principal=principal)

    names = list(names)
    if cache is not None:
        return cache.analyses(conn, principal, run, names)
    return {name: run(name) for name in names}


# -- the page --------------------------------------------------------------------------------
async def build_page(
    kind: str,
    *,
    pool,
    principal: Principal,
    generation: int,
    links: Links,
    area: str | None = None,
    grid: str | None = None,
    metric: str | None = None,
    gaps: dict[str, dict[str, Any]] | Awaitable[dict[str, dict[str, Any]]] | None = None,
    lang: str = DEFAULT_LANGUAGE,
    basemaps: Basemaps | None = None,
    static: bool = False,
) -> Page:
    """Return the ``kind`` page (dispatch, tablet, planning) as the principal may see it.

    Parameters
    ----------
    kind : {"dispatch", "tablet", "planning"}
    pool : asyncpg.Pool
        The hot read pool.
    principal : Principal
        Whose page it is: role and scope.
    generation : int
        The boundary generation to draw.
    links : Links
        Where the page's links and form point (none for a static export).
    area, grid, metric : str, optional
        The dispatch page's area, the tablet page's grid, the planning page's colour metric.
    gaps : dict, optional
        The planning page's coverage analyses (:func:`coverage_gaps`), drawn as its gaps;
        or an awaitable of them, running while the page reads its data.
    lang : str
        The page's language (:data:`maps.i18n.LANGUAGES`; :func:`maps.i18n.negotiate_language`
        picks it for a request).
    basemaps : maps.basemap.Basemaps, optional
        The street basemaps (:func:`service.basemap.page_basemaps`); the page's data are
        shifted to their datum (GCJ-02, BD-09) before they are drawn.
    static : bool
        A static file: the offline basemap's tiles are rendered into it, keyed providers
        left out.
    """
    require_page_role(kind, principal)
    common = {"pool": pool, "principal": principal, "generation": generation}
    datum = basemaps.datum if basemaps is not None else WGS84
    page = await _build_page(kind, common, links, area, grid, metric, gaps, lang, datum)
    if basemaps is not None:
        await add_page_basemaps(page, basemaps, conn=pool, principal=principal, static=static)
    return page


async def _build_page(kind, common, links, area, grid, metric, gaps, lang, datum) -> Page:
    principal = common["principal"]
    if kind == "dispatch":
        data = shift_geojson(await dispatch_data(**common, area=area), datum)
        tablet_url = links.tablet_url if principal.role in PAGE_ROLES["tablet"] else None
        page = dispatch_page(**data, area_url=links.area_url, tablet_url=tablet_url, lang=lang)
        if links.cases_url:
            # Without an area asked for, the queue is the caller's whole scope (a city's
            # includes the cases outside every area); with one, the cases lying in it.
            await _add_live_queue(page, **common, links=links, area=area)
        return page
    if kind == "tablet":
        data = shift_geojson(await tablet_data(**common, grid=grid), datum)
        page = tablet_page(
            **data, report_endpoint=links.report_endpoint, csrf_token=links.csrf_token, lang=lang
        )
        if links.cases_url:
            code = data["grid"]["properties"]["code"]
            add_tablet_desk(
                page,
                grid=code,
                cases_url=links.cases_url,
                stream_url=links.stream_url,
                csrf_token=links.csrf_token,
                service_worker=links.service_worker,
                # The grid's officer signs for and feeds back its cases (an admin may too).
                handler=principal.role == "admin"
                or (principal.role == "grid_officer" and principal.area_code == code),
                page_size=links.page_size,
            )
        return page
    recent = _recent_incidents(gaps) if inspect.isawaitable(gaps) else None
    data = await planning_data(**common, metric=metric or "incidents_90d", incidents_90d=recent)
    data = shift_geojson(data, datum)
    page = planning_page(**data, area_url=links.area_url, lang=lang)
    if inspect.isawaitable(gaps):
        gaps = await gaps
    add_gap_layers(page, shift_geojson(gaps or {}, datum))
    return page


async def _recent_incidents(gaps: Awaitable[dict[str, dict[str, Any]]]) -> dict[str, int] | None:
    """Return the grids' incidents of the last 90 days by code, from the workload analysis
    of ``gaps`` (its default period), or None when it is not among them."""
    workload = (await gaps).get("workload")
    if workload is None:
        return None
    return {item["grid_code"]: item["incidents"] for item in workload["items"]}


def _gap_in_transaction(engine, principal: Principal, cache, name: str) -> dict[str, Any]:
    with engine.begin() as conn:
        return coverage_gaps(conn=conn, principal=principal, cache=cache, names=(name,))[name]


def _coverage_gaps_beside(engine, principal: Principal, cache) -> asyncio.Future:
    """Start the planning page's analyses, each in a worker thread and a transaction of its
    own, and return the future of their results by name (the page's reads go on meanwhile:
    a first visit waits for the slowest analysis, not for their sum and the reads)."""
    future = asyncio.ensure_future(
        asyncio.gather(
            *(
                asyncio.to_thread(_gap_in_transaction, engine, principal, cache, name)
                for name in GAP_ANALYSES
            )
        )
    )
    # A page that fails before awaiting them leaves them to finish: not an error to log.
    future.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def by_name() -> dict[str, dict[str, Any]]:
        return dict(zip(GAP_ANALYSES, await future, strict=True))

    results = asyncio.ensure_future(by_name())
    results.add_done_callback(lambda f: f.cancelled() or f.exception())
    return results


async def page_html(
    kind: str,
    *,
    pool,
    engine,
    principal: Principal,
    links: Links,
    assets: str = "link",
    static_url: str = STATIC_URL,
    area: str | None = None,
    grid: str | None = None,
    metric: str | None = None,
    gap_cache=None,
    lang: str = DEFAULT_LANGUAGE,
    basemaps: Basemaps | None = None,
    plan: int | None = None,
) -> str:
    """Return the ``kind`` page as one HTML document, on the current generation.

    Parameters
    ----------
    kind : {"dispatch", "tablet", "planning"}
    pool : asyncpg.Pool
        The hot read pool.
    engine : sqlalchemy.Engine
        The synchronous engine the planning page's coverage analyses run on (in a worker
        thread); unused by the other pages.
    principal, links, area, grid, metric, lang, basemaps
        As for :func:`build_page` (a file gets the offline basemap's tiles inline).
    gap_cache : service.gap_cache.GapCache, optional
        Keeps the planning page's analyses until what they read changes.
    plan : int, optional
        The planning page draws this boundary draft beside the current grids, with its
        metrics (:func:`service.planning.view.plan_draft_view`; planners and admins).
    assets, static_url
        As for :func:`maps.pages.render_page`: linked from ``static_url`` (served) or
        inline (a file).
    """
    # Checked first: the planning page's analyses are not run for someone refused anyway.
    require_page_role(kind, principal)
    gaps = None
    if kind == "planning":
        gaps = _coverage_gaps_beside(engine, principal, gap_cache)
    draft = None
    if kind == "planning" and plan is not None:
        from service.planning.view import plan_draft_view

        draft = await asyncio.to_thread(plan_draft_view, engine, principal, plan)
    async with _page_reads(pool) as conn:
        generation = await resolve_generation(pool=conn, principal=principal, requested=None)
        page = await build_page(
            kind,
            pool=conn,
            principal=principal,
            generation=generation,
            links=links,
            area=area,
            grid=grid,
            metric=metric,
            gaps=gaps,
            lang=lang,
            basemaps=basemaps,
            static=assets == "inline",
        )
    if draft is not None:
        datum = basemaps.datum if basemaps is not None else WGS84
        add_plan_draft(page, **shift_geojson(draft, datum))
    return render_page(page, assets=assets, static_url=static_url)


@contextlib.asynccontextmanager
async def _page_reads(pool):
    """Yield one connection of the hot pool for a page's reads: one read-only snapshot (its
    counts and its features agree), each statement planned for its values.

    The hot pool's statements are prepared, and PostgreSQL switches a prepared statement to
    a generic plan once that looks no dearer. For a page that is wrong: a generic plan
    guesses a bbox matches one row and walks the spatial index over a city's year of cases
    (19 s at 1 M incidents where the plan for the values takes 0.1 s). A page's dozen
    statements are worth planning each time.
    """
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        yield conn


# -- static export ---------------------------------------------------------------------------
async def _export(url: str, principal: Principal, kind: str, link_base: str | None, **params):
    from service.db import make_engine, make_pg_pool

    base = link_base.rstrip("/") if link_base else None
    links = Links(
        area_url=f"{base}/pages/dispatch?area={{code}}" if base else None,
        tablet_url=f"{base}/pages/tablet?grid={{code}}" if base else None,
    )
    from service.basemap import static_basemaps
    from service.settings import BasemapSettings

    # The basemaps of WANGGE_BASEMAP (keyed providers are left out of a file).
    basemaps = static_basemaps(BasemapSettings())
    pool = await make_pg_pool(url, size=2)
    engine = make_engine(url) if kind == "planning" else None
    try:
        return await page_html(
            kind,
            pool=pool,
            engine=engine,
            principal=principal,
            links=links,
            assets="inline",
            basemaps=basemaps,
            **params,
        )
    finally:
        if engine is not None:
            engine.dispose()
        await pool.close()


def export_page(
    url: str,
    principal: Principal,
    kind: str,
    *,
    area: str | None = None,
    grid: str | None = None,
    metric: str | None = None,
    link_base: str | None = None,
    lang: str = DEFAULT_LANGUAGE,
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
    lang : str
        The file's language (:data:`maps.i18n.LANGUAGES`).
    """
    work = _export(url, principal, kind, link_base, area=area, grid=grid, metric=metric, lang=lang)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    # Called from a thread that runs an event loop already (a notebook, a test driving a
    # browser): the export gets a loop of its own in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()
