"""The pages' basemaps: the configured providers, and the offline basemap's tiles.

``GET /tiles/basemap/{z}/{x}/{y}.png[?datum=GCJ-02|BD-09]`` (:mod:`service.routers.basemap`)
answers a raster tile of the **offline basemap** drawn (:mod:`maps.offline`) from what the
database holds: the imported road network (``road_edge``, with OpenStreetMap's ``highway``,
``railway`` and ``waterway`` tags when the import carried them: roads by class, rail, water)
and the current generation's city, districts, communities and grids with their names, as
the caller may see them (siblings of a grid officer's grid stay unseen, as everywhere).

Tiles are kept in a per-process LRU (``WANGGE_BASEMAP_CACHE_BYTES``) keyed by what they are
drawn from: the current generation and the road imports (``road_import``: an import, a
re-import or an append adds a row). A new generation or a new import therefore changes the
key, and the old tiles are never served again (they age out of the LRU); one small query per
request reads that state. Answers carry an ``ETag`` of the same (``If-None-Match`` → 304).

:func:`page_basemaps` turns :class:`service.settings.BasemapSettings` into the
:class:`maps.basemap.Basemaps` of a served page; :func:`add_page_basemaps` puts them on a
built page, rendering the offline tiles into a static file (``wangge map``, the coverage
report) that must open from disk.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import shapely

from maps.basemap import (
    OFFLINE,
    WGS84,
    Basemaps,
    add_basemaps,
    configure_basemaps,
    geojson_bounds,
    page_bounds,
    shift_geojson,
    shift_lonlat,
)
from maps.offline import (
    OSM_KINDS,
    Area,
    Label,
    Line,
    TileData,
    _lonlat,
    _world_px,
    find_font,
    query_box,
    render_tile,
    tiles_covering,
)
from maps.style import zoom_for_bounds
from service.auth import Principal
from service.db import positional
from service.repositories.areas import area_visible_sql

__all__ = [
    "BASEMAP_TILE_URL",
    "MAX_ZOOM",
    "OfflineTiles",
    "page_basemaps",
    "static_basemaps",
    "add_page_basemaps",
    "embedded_offline_tiles",
    "static_file_basemaps",
    "basemap_state",
    "offline_tile",
]

#: The offline basemap's route (under /tiles: the page session cookie is accepted there).
BASEMAP_TILE_URL = "/tiles/basemap/{z}/{x}/{y}.png"
MAX_ZOOM = 20
#: A static file embeds at most this many offline tiles (three zooms around its view, ~7 KB each).
STATIC_TILES = 160
#: Renderer version: part of every key and ETag, so a new style is never mixed with old tiles.
STYLE_VERSION = "5"
#: A GCJ-02 or BD-09 tile holds WGS84 data up to ~0.013° away: read that much more.
_DATUM_MARGIN_DEG = 0.02


# -- configuration -------------------------------------------------------------------------
def page_basemaps(settings, *, root: str = "") -> Basemaps:
    """Return the basemaps a served page offers (``settings``: BasemapSettings).

    The offline tiles are served at ``{root}/tiles/basemap/...``.
    """
    return configure_basemaps(
        settings.choices,
        offline_url=root.rstrip("/") + BASEMAP_TILE_URL,
        tianditu_key=_secret(settings.tianditu_key),
        url=settings.url,
        url_datum=settings.url_datum,
        url_name=settings.url_name,
        url_attribution=settings.url_attribution,
        url_subdomains=settings.url_subdomains,
        url_key=_secret(settings.url_key),
    )


def static_basemaps(settings) -> Basemaps:
    """Return the basemaps of a static file (keyed providers are left out when it is built)."""
    return page_basemaps(settings)


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


# -- reading what a tile draws ---------------------------------------------------------------
_STATE_SQL = (
    "SELECT (SELECT max(id) FROM generation WHERE active) AS generation, "
    "(SELECT coalesce(max(id), 0) FROM road_import) AS last_import, "
    "(SELECT count(*) FROM road_import) AS imports"
)


async def basemap_state(conn) -> str:
    """Return what the offline tiles are drawn from, as a short key: the current generation
    and the road imports (a new one of either gives new tiles)."""
    row = await conn.fetchrow(_STATE_SQL)
    return f"{STYLE_VERSION}.{row['generation']}.{row['last_import']}.{row['imports']}"


def _levels(z: int) -> list[str]:
    levels = ["city", "district"]
    if z >= 10:
        levels.append("community")
    if z >= GRID_ZOOM:
        levels.append("grid")
    return levels


#: Grids are read from this zoom; below :data:`ALL_GRIDS_ZOOM` only those at least
#: :data:`BIG_GRID_PX` wide on screen (a county's grids of several km, on the page of the grid
#: officer who works one), not a city's thousands of small ones.
GRID_ZOOM, ALL_GRIDS_ZOOM, BIG_GRID_PX = 11, 13, 64


_AREAS_SQL, _AREAS_ARGS = positional(
    f"""
    SELECT a.level, a.name,
           ST_AsBinary(ST_Simplify(ST_ClipByBox2D(ST_Boundary(a.geom), b.box), :tol)) AS lines,
           ST_X(p.pt) AS lon, ST_Y(p.pt) AS lat,
           ST_XMin(a.geom) AS x0, ST_YMin(a.geom) AS y0, ST_XMax(a.geom) AS x1,
           ST_YMax(a.geom) AS y1
      FROM area a
     CROSS JOIN (SELECT ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326) AS box) b
     CROSS JOIN LATERAL (SELECT ST_PointOnSurface(a.geom) AS pt) p
     WHERE a.generation_low <= :g AND a.generation_high >= :g
       AND a.level = ANY(CAST(:levels AS text[]))
       AND a.geom && b.box
       AND (a.level <> 'grid' OR ST_XMax(a.geom) - ST_XMin(a.geom) >= :grid_deg)
       AND {area_visible_sql("a")}
     ORDER BY a.depth, a.code
    """
)
_ROADS_SQL, _ROADS_ARGS = positional(
    """
    SELECT e.name, e.properties->>'highway' AS highway, e.properties->>'railway' AS railway,
           coalesce(e.properties->>'waterway', e.properties->>'natural') AS water,
           ST_AsBinary(ST_Simplify(ST_ClipByBox2D(e.geom, b.box), :tol)) AS line
      FROM road_edge e
     CROSS JOIN (SELECT ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326) AS box) b
     WHERE e.geom && b.box
       AND (:all_roads OR e.properties->>'highway' IN ('motorway', 'trunk', 'primary',
            'secondary') OR e.properties ? 'railway' OR e.properties ? 'waterway')
       AND (:minor_roads
            OR NOT coalesce(e.properties->>'highway' = ANY(CAST(:minor AS text[])), false))
    """
)
#: OpenStreetMap classes drawn from zoom 14 only: below it a city's footways and service roads
#: are thousands of lines nobody could tell apart (not read at all).
_MINOR = [k for k, kind in OSM_KINDS.items() if kind == "minor"]


def _kind(highway: str | None, railway: str | None, water: str | None) -> str:
    if railway:
        return "rail"
    if water:
        return "water"
    if highway:
        return OSM_KINDS.get(highway, "minor")
    return "road"  # an untagged line (a bus route, a drawn street)


async def _read_tile(
    conn, principal: Principal, z: int, x: int, y: int, datum: str, generation: int | None
) -> TileData:
    margin = 0.0 if datum == WGS84 else _DATUM_MARGIN_DEG
    x0, y0, x1, y1 = query_box(z, x, y, margin)
    # Half a screen pixel: what simplification may remove unseen.
    tol = 360.0 / (256 * 2**z) / 2
    box = {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "tol": tol}
    areas = []
    if generation is not None:
        params = {
            **box,
            "g": generation,
            "levels": _levels(z),
            "scope": principal.scope_path,
            # Degrees of longitude BIG_GRID_PX wide at this zoom (every grid from zoom 13).
            "grid_deg": 0.0 if z >= ALL_GRIDS_ZOOM else BIG_GRID_PX * 360.0 / (256 * 2**z),
        }
        areas = await conn.fetch(_AREAS_SQL, *[params[n] for n in _AREAS_ARGS])
    params = {**box, "all_roads": z >= 11, "minor_roads": z >= 14, "minor": _MINOR}
    roads = await conn.fetch(_ROADS_SQL, *[params[n] for n in _ROADS_ARGS])
    return _tile_data(areas, roads, datum, z)


def _tile_data(areas: Sequence, roads: Sequence, datum: str, z: int) -> TileData:
    """Return the rows as the renderer's features, moved to ``datum``."""
    wkb = [r["lines"] for r in areas] + [r["line"] for r in roads]
    geoms = shapely.from_wkb(wkb) if wkb else np.array([], dtype=object)
    if datum != WGS84 and len(geoms):

        def move(xy: np.ndarray) -> np.ndarray:
            lon, lat = shift_lonlat(xy[:, 0], xy[:, 1], datum)
            return np.column_stack([lon, lat])

        geoms = shapely.transform(geoms, move)
    data = TileData()
    for row, geom in zip(areas, geoms[: len(areas)], strict=True):
        rings = tuple(_parts(geom))
        if rings:
            data.areas.append(Area(row["level"], rings))
    for row, geom in zip(roads, geoms[len(areas) :], strict=True):
        kind = _kind(row["highway"], row["railway"], row["water"])
        for part in _parts(geom):
            data.lines.append(Line(part, kind, row["name"] or ""))
    if areas:
        # Each label's point and its area's box, in the tiles' datum (the box's corners moved:
        # the shift is nearly uniform over an area).
        xs = np.array([[r["lon"], r["x0"], r["x1"]] for r in areas], dtype=float)
        ys = np.array([[r["lat"], r["y0"], r["y1"]] for r in areas], dtype=float)
        lon, lat = shift_lonlat(xs.ravel(), ys.ravel(), datum)
        lon, lat = lon.reshape(xs.shape), lat.reshape(ys.shape)
        for row, lo, la in zip(areas, lon.tolist(), lat.tolist(), strict=True):
            box = (lo[1], la[1], lo[2], la[2])
            data.labels.append(Label(row["level"], row["name"], lo[0], la[0], box))
    if z >= 15:
        data.labels.extend(_road_labels(data.lines))
    return data


def _parts(geom) -> list[np.ndarray]:
    if geom is None or shapely.is_empty(geom):
        return []
    return [
        shapely.get_coordinates(part)
        for part in shapely.get_parts(geom)
        if shapely.get_num_coordinates(part) >= 2
    ]


def _road_labels(lines: Sequence[Line]) -> list[Label]:
    """Return one label per street name, at the middle of its longest piece in the tile."""
    best: dict[str, tuple[float, np.ndarray]] = {}
    for line in lines:
        if not line.name or line.kind in ("rail", "water") or len(line.xy) < 2:
            continue
        seg = np.hypot(*np.diff(line.xy, axis=0).T)
        length = float(seg.sum())
        if length > best.get(line.name, (0.0, None))[0]:
            best[line.name] = (length, line.xy)
    labels = []
    for name, (_, xy) in best.items():
        mid = xy[len(xy) // 2] if len(xy) > 2 else xy.mean(axis=0)
        labels.append(Label("road", name, float(mid[0]), float(mid[1])))
    return labels


# -- the cache ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tile:
    """A rendered tile: PNG bytes and their ETag."""

    data: bytes
    etag: str
    state: str  #: what it was drawn from (:func:`basemap_state`)


class OfflineTiles:
    """Renders the offline basemap's tiles and keeps the recent ones (LRU, bounded in bytes)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, font: str | None = None):
        self.max_bytes = max_bytes
        self.font = find_font(font)
        self._entries: OrderedDict[tuple, Tile] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def _get(self, key: tuple) -> Tile | None:
        tile = self._entries.get(key)
        if tile is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
        return tile

    def _put(self, key: tuple, tile: Tile) -> None:
        if self.max_bytes <= 0 or len(tile.data) > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old.data)
        self._entries[key] = tile
        self._bytes += len(tile.data)
        while self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= len(dropped.data)

    async def tile(
        self, conn, principal: Principal, z: int, x: int, y: int, datum: str = WGS84
    ) -> Tile:
        """Return tile ``z/x/y`` as ``principal`` may see it, from the cache or drawn now."""
        state = await basemap_state(conn)
        key = (state, principal.scope_path, datum, z, x, y)
        tile = self._get(key)
        if tile is not None:
            return tile
        generation = int(state.split(".")[1]) if state.split(".")[1] != "None" else None
        data = await _read_tile(conn, principal, z, x, y, datum, generation)
        png = await asyncio.to_thread(render_tile, z, x, y, data, font=self.font)
        etag = hashlib.sha256(repr(key).encode()).hexdigest()[:20]
        tile = Tile(png, f'"{etag}"', state)
        self._put(key, tile)
        return tile


async def offline_tile(
    tiles: OfflineTiles, conn, principal: Principal, z: int, x: int, y: int, datum: str
) -> Tile:
    """Return one offline tile (the route's work)."""
    return await tiles.tile(conn, principal, z, x, y, datum)


# -- pages ---------------------------------------------------------------------------------
def _static_tiles(bounds: Sequence[float]) -> list[tuple[int, int, int]]:
    """Return the tiles a static file embeds: at the zoom it opens at on a laptop screen and
    one out, the view around ``bounds`` (half its size again on each side, and at least a
    1920 x 1080 screen centred on it: a narrow area opens on a wide screen); one zoom in, the
    data's box and a 1920 x 1200 view centred on it (a taller frame, the report's, opens
    between the two: at zoom z + 0.5 the page draws z + 1 tiles at 0.71); two zooms in, the
    data's own box; whole zooms while they fit in
    :data:`STATIC_TILES`."""
    z = math.floor(zoom_for_bounds(bounds, 1280, 800))
    out: list[tuple[int, int, int]] = []
    for zoom, box in (
        (z, _view_around(bounds, z, 1920, 1080, grow=True)),
        (z + 1, _view_around(bounds, z + 1, 1920, 1200)),
        (z - 1, _view_around(bounds, z - 1, 1920, 1080, grow=True)),
        (z + 2, bounds),
    ):
        if not 0 <= zoom <= 18:
            continue
        tiles = tiles_covering(box, [zoom], STATIC_TILES - len(out))
        if tiles:
            out.extend(tiles)
    return out


def _view_around(
    bounds: Sequence[float], z: int, width: float, height: float, *, grow: bool = False
) -> list[float]:
    """Return the lon/lat box of ``bounds`` and a ``width`` x ``height`` px view centred on it
    at zoom ``z`` (``grow``: and half the data's size again on each side)."""
    (x0, x1), (y1, y0) = _world_px(
        np.array([bounds[0], bounds[2]]), np.array([bounds[1], bounds[3]]), z
    )
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    k = 1.0 if grow else 0.5
    half_w, half_h = max(k * (x1 - x0), width / 2), max(k * (y1 - y0), height / 2)
    west, north = _lonlat(cx - half_w, cy - half_h, z)
    east, south = _lonlat(cx + half_w, cy + half_h, z)
    return [west, south, east, north]


async def embedded_offline_tiles(
    conn, principal: Principal, bounds: Sequence[float], datum: str = WGS84
) -> dict[str, str]:
    """Return the offline tiles of a static file's view, ``"z/x/y"`` → ``data:`` URI: up to
    four zooms around the zoom that fits ``bounds`` (in ``datum``; :func:`_static_tiles`)."""
    tiles = OfflineTiles(max_bytes=0)
    out: dict[str, str] = {}
    for z, x, y in _static_tiles(bounds):
        tile = await tiles.tile(conn, principal, z, x, y, datum)
        out[f"{z}/{x}/{y}"] = "data:image/png;base64," + base64.b64encode(tile.data).decode()
    return out


async def add_page_basemaps(
    page,
    basemaps: Basemaps,
    *,
    conn,
    principal: Principal,
    static: bool,
) -> None:
    """Put ``basemaps`` on a built page (its overlays already in ``basemaps.datum``).

    A served page fetches its tiles; a static file (``static``) gets the offline tiles of its
    view rendered into it (:func:`embedded_offline_tiles`) and no keyed provider.
    """
    if static:
        embedded = None
        bounds = page_bounds(page.map)
        if basemaps.offline is not None and bounds is not None:
            embedded = await embedded_offline_tiles(conn, principal, bounds, basemaps.datum)
        basemaps = basemaps.for_static_file(embedded)
    elif basemaps.offline is not None:
        # The tiles' address names what they are drawn from: the browser keeps them while it
        # holds, and a page opened after boundaries or roads changed asks for new ones.
        state = await basemap_state(conn)
        basemaps = Basemaps(
            tuple(_versioned(c, state) if c.key == OFFLINE else c for c in basemaps.choices)
        )
    add_basemaps(page.map, basemaps, getattr(page, "t", str))


def _versioned(choice, state: str):
    source = choice.sources[0]
    url = source.url + ("&" if "?" in source.url else "?") + f"v={state}"
    return replace(choice, sources=(replace(source, url=url),))


def static_file_basemaps(url: str, principal: Principal, shown: Any, settings=None) -> Basemaps:
    """Return the basemaps of a static file showing the GeoJSON in ``shown`` (WGS84), e.g. the
    coverage report's map: ``WANGGE_BASEMAP``'s keyless choices and the offline basemap's
    tiles of that view, read from the database at ``url`` as ``principal`` sees it.

    The file's overlays must be shifted to the result's ``datum``
    (:func:`maps.basemap.shift_geojson`).
    """
    from service.db import make_pg_pool
    from service.settings import BasemapSettings

    basemaps = static_basemaps(settings or BasemapSettings())
    bounds = geojson_bounds(shift_geojson(shown, basemaps.datum))
    if bounds is None:
        return basemaps.for_static_file(None)

    async def work() -> dict[str, str]:
        pool = await make_pg_pool(url, size=1)
        try:
            return await embedded_offline_tiles(pool, principal, bounds, basemaps.datum)
        finally:
            await pool.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return basemaps.for_static_file(asyncio.run(work()))
    # Called where an event loop runs already (a notebook, a browser-driving test): the
    # tiles are read on a loop of their own in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return basemaps.for_static_file(pool.submit(asyncio.run, work()).result())


def describe(basemaps: Basemaps) -> list[dict[str, Any]]:
    """Return the choices without their URLs (for logs and diagnostics: no key in them)."""
    return [{"key": c.key, "name": c.name, "datum": c.datum} for c in basemaps.choices]
