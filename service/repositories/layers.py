"""Read layers: GeoJSON features (paged, filtered, simplified) and Mapbox vector tiles.

Runs on the asyncpg pool (the hot paths of a map screen), with SQL built from the layer's
declaration: identifiers come from :mod:`service.specs.map_layers`, values are bound parameters.
GeoJSON is assembled in PostgreSQL, one text per feature, so Python only joins strings.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from geo.coords import EPSG_4326, SHIFTED_CRS
from service.auth import Principal
from service.crs_output import shift_geojson
from service.db import positional
from service.errors import ForbiddenError, NotFoundError, UnprocessableError
from service.inputs import parse_row_id
from service.repositories.areas import area_visible_sql
from service.repositories.entities import point_visible_sql, scope_params
from service.specs.entity_kinds import INCIDENTS
from service.specs.map_layers import CLUSTER_SHIFT, INCIDENT_BIN_ZOOMS, LayerSpec

__all__ = [
    "check_readable",
    "layer_items",
    "layer_item",
    "layer_extent",
    "layer_tile",
    "count_binned",
    "tolerance_for_zoom",
    "digits_for_tolerance",
]


#: ``numberMatched`` of an items page is counted up to this many features past the page: the
#: count's cost stays about that of a page, whatever the layer holds (bench.scale).
COUNT_AHEAD = 1_000


def check_readable(spec: LayerSpec, principal: Principal) -> None:
    """Refuse sensitive layers to roles that may only count them."""
    if spec.detail_roles is not None and principal.role not in spec.detail_roles:
        raise ForbiddenError(
            f"the {spec.name} layer holds sensitive personal data; a {principal.role} sees "
            f"counts only",
            field="collectionId",
        )


def tolerance_for_zoom(z: float) -> float:
    """Return one screen pixel at zoom ``z``, in degrees (a 256-pixel tile grid).

    Detail finer than a pixel cannot be seen, only downloaded (tippecanoe simplifies to a
    pixel too).
    """
    return 360.0 / (256 * 2**z)


def digits_for_tolerance(tolerance_deg: float) -> int:
    """Return how many decimals keep coordinates finer than the simplification tolerance."""
    if tolerance_deg <= 0:
        return 7
    # 10^-digits <= tolerance: rounding moves a vertex by at most half the tolerance.
    return max(1, min(7, math.ceil(-math.log10(tolerance_deg))))


def _where(
    spec: LayerSpec,
    principal: Principal,
    generation: int | None,
    filters: dict[str, str] | None = None,
) -> tuple[list, dict]:
    """Return the conditions (on ``t``) and parameters of the features the caller sees, with
    ``filters`` (property: value, compared as text)."""
    # The same scope rules as the areas and entities APIs, from the same definitions.
    params: dict[str, Any] = scope_params(principal)
    if spec.kind == "area":
        where = [
            "t.level = :level",
            "t.generation_low <= :g",
            "t.generation_high >= :g",
            area_visible_sql("t"),
        ]
        params.update(level=spec.level, g=generation)
    else:
        where = [point_visible_sql("t")]
    for i, (name, value) in enumerate((filters or {}).items()):
        where.append(f"CAST({spec.properties[name]} AS text) = :f{i}")
        params[f"f{i}"] = str(value)
    return where, params


def _feature_sql(spec: LayerSpec, props: list[str], geom: str, crs: str = EPSG_4326) -> str:
    # Text concatenation and row_to_json give compact JSON (json_build_object pads with
    # spaces): on a tablet's connection every byte counts.
    cols = ", ".join(f'{spec.properties[p]} AS "{p}"' for p in props)
    # Shifted output (GCJ-02, BD-09): the geometry leaves as WKB beside a feature whose
    # geometry is null, and is shifted in Python by the input's kernels (service.crs_output).
    geometry = "'null'" if crs in SHIFTED_CRS else f"ST_AsGeoJSON({geom}, :digits)"
    shifted = f", ST_AsBinary({geom}) AS wkb" if crs in SHIFTED_CRS else ""
    return (
        """'{"type":"Feature","id":' || to_json("""
        f"{spec.id_sql})::text || ',\"geometry\":' || {geometry} || "
        f"',\"properties\":' || row_to_json((SELECT p FROM (SELECT {cols}) p))::text || '}}'"
        f" AS feature{shifted}"
    )


def _with_geometry(rows, crs: str, digits: int) -> list[str]:
    """Return the features' texts, with their geometry shifted into ``crs`` if it is."""
    if crs not in SHIFTED_CRS:
        return [r["feature"] for r in rows]
    geoms = shift_geojson([r["wkb"] for r in rows], crs, digits)
    # The id comes before the geometry and is JSON-escaped: the first match is the geometry.
    return [
        r["feature"].replace('"geometry":null', '"geometry":' + g, 1)
        for r, g in zip(rows, geoms, strict=True)
    ]


def _geom_expr(spec: LayerSpec, tolerance_deg: float) -> str:
    if spec.geometry == "polygon" and tolerance_deg > 0:
        # ST_Simplify keeping collapsed rings (as the tiles do): a quarter of the cost of
        # ST_SimplifyPreserveTopology for the same picture at this scale.
        return "ST_Simplify(t.geom, CAST(:tol AS float8), true)"
    return "t.geom"


def _select_props(spec: LayerSpec, properties: list[str] | None) -> list[str]:
    if properties is None:
        return list(spec.default_properties or spec.properties)
    unknown = [p for p in properties if p not in spec.properties]
    if unknown:
        raise UnprocessableError(
            f"unknown property {unknown[0]!r}; {spec.name} has {', '.join(spec.properties)}",
            field="properties",
        )
    return properties


@lru_cache(maxsize=512)
def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    return positional(sql)


async def _fetch(pool, sql: str, params: dict[str, Any], method: str = "fetch"):
    # One round trip: the hot pool's sessions carry the statement timeout already.
    text_sql, names = _positional(sql)
    return await getattr(pool, method)(text_sql, *[params[n] for n in names])


async def _fetch_custom(pool, sql: str, params: dict[str, Any]):
    """Run ``sql`` planned for its values (a custom plan), in a transaction of its own.

    The hot pool plans generically (``plan_cache_mode = force_generic_plan``: a plan made
    once serves every value). A page of a point layer in a box cannot be planned well
    without the box: the generic plan found every match in it and sorted them (a city's
    core at a province's volume: 69,000 rows, 1.9 s for a page of 1,000), where the
    custom plan walks the id order and stops at the page (bench.scale: items).
    """
    text_sql, names = _positional(sql)
    args = [params[n] for n in names]
    if not hasattr(pool, "acquire"):  # a connection (a page's reads): its holder plans
        return await pool.fetch(text_sql, *args)

    async def custom(hot_pool):
        async with hot_pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            return await conn.fetch(text_sql, *args)

    # A replica's reads (service.replicas) run it where they fall back to the primary.
    run = getattr(pool, "run", None)
    return await (run(custom) if run else custom(pool))


async def layer_items(
    pool,
    spec: LayerSpec,
    *,
    principal: Principal,
    generation: int | None,
    bbox: tuple[float, float, float, float] | None = None,
    filters: dict[str, str] | None = None,
    datetime_range: tuple[Any, Any] | None = None,
    limit: int,
    offset: int = 0,
    properties: list[str] | None = None,
    tolerance_deg: float = 0.0,
    count: bool = True,
    crs: str = EPSG_4326,
    lat_first: bool = False,
    newest_first: bool = False,
) -> tuple[list[str], int | None]:
    """Return (GeoJSON feature texts, number matched) of one page of a layer.

    The number matched is exact when the matches end within :data:`COUNT_AHEAD` features
    after this page, and None past that (not counted: OGC API Features lets a server leave
    ``numberMatched`` out; the page is then full and more follow).

    ``crs``: the coordinate system of the features (a canonical name of
    :mod:`geo.coords`); ``lat_first``: latitude first (an EPSG URI's axis order).

    ``count=False``: the number matched is not counted (it is the number returned): a page
    of the first features of 50,000 need not find all 50,000 (count them from the layer's
    bins instead, :func:`count_binned`).

    ``newest_first``: the layer's newest features first (by its time, then id, both
    descending) instead of by id. The pages' first open incidents: read newest first along
    the (status, time) index, a page of 2,000 reads about 2,000 rows; by id, the plan walked
    the id index of every partition and tested each of a year's cases (2.5 s at 1 M).
    """
    check_readable(spec, principal)
    props = _select_props(spec, properties)
    where, params = _where(spec, principal, generation, filters)
    if bbox is not None:
        where.append("t.geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)")
        params.update(x0=bbox[0], y0=bbox[1], x1=bbox[2], y1=bbox[3])
    if datetime_range is not None and spec.datetime_sql:
        start, end = datetime_range
        if start is not None:
            where.append(f"{spec.datetime_sql} >= :t0")
            params["t0"] = start
        if end is not None:
            where.append(f"{spec.datetime_sql} <= :t1")
            params["t1"] = end
    params.update(
        limit=limit, offset=offset, digits=digits_for_tolerance(tolerance_deg), tol=tolerance_deg
    )
    geom = _geom_expr(spec, tolerance_deg)
    if lat_first:
        geom = f"ST_FlipCoordinates({geom})"
    rows_sql = f"FROM {spec.source} WHERE {' AND '.join(where)}"
    order = spec.order_sql
    if newest_first and spec.datetime_sql:
        order = f"{spec.datetime_sql} DESC, {spec.order_sql} DESC"
    # Counted at most this far (an uncorrelated subquery: run once): counting every match
    # (count(*) OVER ()) cost as much as the matches, not the page.
    params["bound"] = bound = offset + limit + COUNT_AHEAD
    bounded = f"(SELECT count(*) FROM (SELECT 1 {rows_sql} LIMIT :bound) c)"
    sql = (
        f"SELECT {_feature_sql(spec, props, geom, crs)}, {bounded if count else '0'} AS matched "
        f"{rows_sql} ORDER BY {order} LIMIT :limit OFFSET :offset"
    )
    # Point layers grow with the cases: their pages are planned for the box and filters asked.
    fetch = _fetch if spec.kind == "area" else _fetch_custom
    rows = await fetch(pool, sql, params)
    if not count:
        return _with_geometry(rows, crs, params["digits"]), len(rows)
    if rows:
        matched = rows[0]["matched"]
    elif offset:
        matched = await _fetch(pool, f"SELECT {bounded}", params, "fetchval")
    else:
        return [], 0
    return _with_geometry(rows, crs, params["digits"]), None if matched >= bound else matched


async def layer_item(
    pool,
    spec: LayerSpec,
    *,
    principal: Principal,
    generation: int | None,
    feature_id: str,
    crs: str = EPSG_4326,
    lat_first: bool = False,
) -> str:
    """Return one feature's GeoJSON text (404 when absent or outside the scope), in ``crs``
    (latitude first if ``lat_first``)."""
    check_readable(spec, principal)
    where, params = _where(spec, principal, generation)
    if spec.kind == "area":
        where.append("t.code = :fid")
        params["fid"] = feature_id
    else:
        row_id = parse_row_id(feature_id)
        if row_id is None:  # no row has an id that is not a bigint
            raise NotFoundError(f"no feature {feature_id} in {spec.name}", field="featureId")
        where.append("t.id = :fid")
        params["fid"] = row_id
    params["digits"] = 7
    geom = "ST_FlipCoordinates(t.geom)" if lat_first else "t.geom"
    sql = (
        f"SELECT {_feature_sql(spec, list(spec.properties), geom, crs)} FROM {spec.source} "
        f"WHERE {' AND '.join(where)}"
    )
    row = await _fetch(pool, sql, params, "fetchrow")
    if row is None:
        raise NotFoundError(
            f"no feature {feature_id} in {spec.name} that you may see", field="featureId"
        )
    return _with_geometry([row], crs, 7)[0]


async def layer_extent(
    pool, spec: LayerSpec, *, principal: Principal, generation: int | None
) -> list[float] | None:
    """Return the [minx, miny, maxx, maxy] of what the caller may see of a layer."""
    where, params = _where(spec, principal, generation)
    sql = (
        f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
        f"ST_Extent(t.geom) AS e FROM {spec.source} WHERE {' AND '.join(where)}) s"
    )
    row = await _fetch(pool, sql, params, "fetchrow")
    if row is None or row[0] is None:
        return None
    return [round(float(v), 6) for v in row]


def _tile_pixel_sql(lon: str, lat: str) -> tuple[str, str]:
    """Return SQL of the tile pixel (x, y; 4096 a side, y down) of the point (lon, lat).

    Web Mercator by its formula (parameters :world, the map's side in pixels at the tile's
    zoom, and :px0, :py0, the tile's corner): what ``ST_AsMVTGeom(ST_Transform(p, 3857), ...)``
    gives a point (checked in tests/service/test_incident_volume.py), at a tenth of its cost
    (a tile of 1,000 clusters: 11 ms of 15 went to transforming and clipping points one by
    one, each twice).
    """
    phi = f"radians(least(greatest({lat}, -85.0511), 85.0511))"
    return (
        f"round(({lon} + 180) / 360 * CAST(:world AS float8) - CAST(:px0 AS float8))",
        f"round((0.5 - ln(tan(pi() / 4 + {phi} / 2)) / (2 * pi())) * CAST(:world AS float8) "
        "- CAST(:py0 AS float8))",
    )


#: A point's pixel kept in a tile: within its 64-pixel buffer (as ST_AsMVTGeom clips).
_IN_BUFFER = "p.px BETWEEN -64 AND 4160 AND p.py BETWEEN -64 AND 4160"


#: The tile's Web Mercator envelope (parameters :z, :x, :y).
TILE_ENVELOPE = "ST_TileEnvelope(CAST(:z AS integer), CAST(:x AS integer), CAST(:y AS integer))"


def tile_properties(spec: LayerSpec, alias: str) -> tuple[str, str]:
    """Return SQL of the layer's tile properties: their expressions named (on ``t``), and
    the names as columns of ``alias``."""
    props = ", ".join(f'{expr} AS "{name}"' for name, expr in spec.tile_properties.items())
    return props, ", ".join(f'{alias}."{name}"' for name in spec.tile_properties)


def _tile_sql(spec: LayerSpec, where: list[str]) -> str:
    props, names = tile_properties(spec, "p")
    env = f"""
        WITH env AS (
            SELECT {TILE_ENVELOPE} AS m
        ), env4326 AS (
            SELECT m, ST_Transform(m, 4326) AS g FROM env
        )"""
    if spec.geometry == "point":
        px, py = _tile_pixel_sql("ST_X(t.geom)", "ST_Y(t.geom)")
        return f"""{env}, feats AS (
            SELECT {px} AS px, {py} AS py, {spec.mvt_id_sql} AS fid, {props}
            FROM {spec.source}, env4326 e
            WHERE t.geom && e.g AND {" AND ".join(where)}
            ORDER BY {spec.order_sql}
            LIMIT CAST(:cap AS integer)
        )
        SELECT ST_AsMVT(f.*, '{spec.name}', 4096, 'geom', 'fid') FROM (
            SELECT ST_MakePoint(p.px, p.py) AS geom, p.fid, {names}
            FROM feats p WHERE {_IN_BUFFER}
        ) f
        """
    geom = "t.geom"
    if spec.geometry == "polygon":
        geom = "ST_Simplify(t.geom, CAST(:tol AS float8), true)"
    return f"""{env}, feats AS (
            SELECT ST_AsMVTGeom(ST_Transform({geom}, 3857), e.m, 4096, 64, true) AS geom,
                   {spec.mvt_id_sql} AS fid, {props}
            FROM {spec.source}, env4326 e
            WHERE t.geom && e.g AND {" AND ".join(where)}
            ORDER BY {spec.order_sql}
            LIMIT CAST(:cap AS integer)
        )
        SELECT ST_AsMVT(feats.*, '{spec.name}', 4096, 'geom', 'fid') FROM feats
        WHERE feats.geom IS NOT NULL
    """


#: Where an incident's cell codes sit in its area path (city/district/community/grid).
_PATH_PART = {"district_code": 2, "community_code": 3, "grid_code": 4}
#: The caller's scope on a bin: as :func:`point_visible_sql` on the incidents themselves
#: (a bin's path is '' outside every area).
_BIN_VISIBLE = (
    "(CAST(:scope AS text) IS NULL OR b.area_path = :scope OR b.area_path LIKE :scope || '/%' "
    "OR (b.area_path = '' AND :scope_city))"
)


def _clustering(spec: LayerSpec, z: int, filters: dict[str, str]) -> tuple[int, list[str]] | None:
    """Return (zoom of the bins, conditions on them: the caller's scope and ``filters``) of a
    tile at zoom ``z`` of a layer with bins, or None when it is drawn from the rows, capped: no
    bins fine enough, or a filter the bins do not hold (a category)."""
    bz = _bin_zoom(z) if spec.bins else None
    if bz is None:
        return None
    out = [_BIN_VISIBLE]
    for i, name in enumerate(filters):
        if name == INCIDENTS.lifecycle.column:
            out.append(f"b.status = :f{i}")
        elif name in _PATH_PART:
            out.append(f"split_part(b.area_path, '/', {_PATH_PART[name]}) = :f{i}")
        else:
            return None
    return bz, out


#: The part of an area path naming the area of each level.
_LEVEL_PART = {"city": 1, "district": 2, "community": 3, "grid": 4}


async def count_binned(
    pool,
    spec: LayerSpec,
    *,
    principal: Principal,
    statuses: tuple[str, ...],
    level: str | None = None,
    code: str | None = None,
) -> int:
    """Return how many of the layer's features the caller sees with one of ``statuses``
    (in the area ``code`` of ``level``, when given), from the counters kept on write.

    A city's count holds its own queue too: the incidents outside every area.
    """
    where = ["b.z = 0", _BIN_VISIBLE, "b.status = ANY(CAST(:statuses AS text[]))"]
    params: dict[str, Any] = {**scope_params(principal), "statuses": list(statuses)}
    if code is not None:
        inside = f"split_part(b.area_path, '/', {_LEVEL_PART[level]}) = :code"
        where.append(f"({inside} OR b.area_path = '')" if level == "city" else inside)
        params["code"] = code
    sql = f"SELECT coalesce(sum(b.n), 0) FROM {spec.bins} b WHERE {' AND '.join(where)}"
    return int(await _fetch(pool, sql, params, "fetchval"))


def _bin_zoom(z: int) -> int | None:
    """Return the zoom of the bins a tile at zoom ``z`` clusters (None: none fine enough)."""
    return next((bz for bz in INCIDENT_BIN_ZOOMS if bz >= z + CLUSTER_SHIFT), None)


#: A cluster's counts, from a row ``k`` of ``cells`` (:func:`clustered_sql`).
CELL_COUNTS = (
    "CAST(k.n AS integer) AS point_count, CAST(coalesce(k.open_n, 0) AS integer) AS open_count"
)
#: A cluster's place: the centroid of its incidents, from a row ``k`` of ``cells``.
CELL_CENTROID = ("k.sx / k.n", "k.sy / k.n")


def clustered_sql(spec: LayerSpec, bin_where: list[str], *, clusters: str, rows: str) -> str:
    """Return the statement of a tile of a layer with bins, in whatever tile grid.

    The tile's incidents are counted from their bins (``cells``: 32 x 32 cells, whatever
    the table holds; parameters from :func:`bin_params`): more than ``cluster_above``, and
    the tile is ``clusters``, an MVT drawn from ``cells k`` (one point a cell at
    :data:`CELL_CENTROID` with :data:`CELL_COUNTS`); otherwise ``rows``, the statement
    drawing the incidents themselves. CASE evaluates only the branch it takes. One
    definition for WGS84 tiles (:func:`layer_tile`) and GCJ-02 ones
    (:mod:`service.tiles.shifted`), which differ only in where they put a point.
    """
    return f"""
        WITH cells AS (
            SELECT b.x >> CAST(:shift AS integer) AS cx, b.y >> CAST(:shift AS integer) AS cy,
                   sum(b.n) AS n, sum(b.n) FILTER (WHERE b.status <> 'closed') AS open_n,
                   sum(b.sx) AS sx, sum(b.sy) AS sy
            FROM {spec.bins} b
            WHERE b.z = CAST(:bz AS smallint) AND b.x = ANY(CAST(:bxs AS integer[]))
              AND b.y BETWEEN :by0 AND :by1 AND b.n <> 0 AND {" AND ".join(bin_where)}
            GROUP BY 1, 2
            HAVING sum(b.n) > 0
        )
        SELECT CASE WHEN (SELECT coalesce(sum(n), 0) FROM cells) > CAST(:above AS integer)
        THEN ({clusters})
        ELSE ({rows}) END
    """


def bin_params(spec: LayerSpec, z: int, bz: int, bins: tuple[int, int, int, int]) -> dict[str, Any]:
    """Return the parameters of :func:`clustered_sql` for a tile at zoom ``z`` reading the
    bins ``bins`` (x0, y0, x1, y1, inclusive) of zoom ``bz``."""
    bx0, by0, bx1, by1 = bins
    return {
        "bz": bz,
        "shift": bz - z - CLUSTER_SHIFT,
        # Each column of bins one range of the key (z, x, y): a range of x would read the
        # whole strip of the map above and below the tile.
        "bxs": list(range(bx0, bx1 + 1)),
        "by0": by0,
        "by1": by1,
        "above": spec.cluster_above,
    }


def _clustered_tile_sql(spec: LayerSpec, where: list[str], bin_where: list[str]) -> str:
    # Clusters placed by their pixel in the tile (_tile_pixel_sql), kept within its buffer.
    px, py = _tile_pixel_sql(*CELL_CENTROID)
    clusters = f"""
            SELECT ST_AsMVT(c.*, '{spec.name}', 4096, 'geom') FROM (
                SELECT ST_MakePoint(p.px, p.py) AS geom, p.point_count, p.open_count
                FROM (SELECT {px} AS px, {py} AS py, {CELL_COUNTS} FROM cells k) p
                WHERE {_IN_BUFFER}
            ) c"""
    return clustered_sql(spec, bin_where, clusters=clusters, rows=_tile_sql(spec, where))


async def layer_tile(
    pool,
    spec: LayerSpec,
    *,
    principal: Principal,
    generation: int | None,
    z: int,
    x: int,
    y: int,
    filters: dict[str, str] | None = None,
) -> bytes:
    """Return the MVT bytes of one layer's tile (empty below the layer's minimum zoom).

    A layer with bins (incidents) draws a tile holding more than ``spec.cluster_above`` of
    them as clusters (:data:`~service.specs.map_layers.CLUSTER_PROPERTIES`), counted from the
    bins kept on write; filters the bins do not hold (a category) draw the incidents, capped.
    """
    check_readable(spec, principal)
    if z < spec.min_zoom:
        return b""
    filters = filters or {}
    where, params = _where(spec, principal, generation, filters)
    # One pixel of a 4096 extent: finer detail is lost in quantisation anyway.
    params.update(z=z, x=x, y=y, cap=spec.max_features_per_tile, tol=360.0 / (4096 * 2**z))
    # The map's side and the tile's corner in pixels of a 4096 extent (points' pixels).
    params.update(world=4096.0 * 2**z, px0=4096.0 * x, py0=4096.0 * y)
    clustering = _clustering(spec, z, filters)
    if clustering is not None:
        bz, bin_where = clustering
        d = bz - z  # the tile's bins: 2^d x 2^d of them
        params.update(
            bin_params(spec, z, bz, (x << d, y << d, ((x + 1) << d) - 1, ((y + 1) << d) - 1))
        )
        sql = _clustered_tile_sql(spec, where, bin_where)
    else:
        sql = _tile_sql(spec, where)
    data = await _fetch(pool, sql, params, "fetchval")
    return bytes(data or b"")
