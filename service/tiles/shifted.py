"""Vector tiles for GCJ-02 maps (Amap, Tencent): every vertex shifted before encoding.

A GCJ-02 front-end asks for tile z/x/y of *its* map: the Web Mercator tile of GCJ-02
coordinates. Its features are those whose shifted geometry lies in it. WGS84 geometry is
stored, and PostGIS has no transform for GCJ-02 (PROJ does not know it), so the shift is
:func:`geo.coords.wgs84_to_gcj02`'s formula written out in SQL (:func:`_gcj02_sql`; equal to
the numpy kernel to < 1e-12°, tests/service/test_crs_output.py) and a tile is one
statement, as a WGS84 tile is:

1. the features are read (simplified to one pixel, as :func:`~service.repositories.layers.
   layer_tile` does) in a WGS84 box holding every point the shift puts in the tile
   (:func:`_wgs84_box`);
2. points are shifted; polygons are dumped to points, shifted and put back together ring by
   ring (the same vertices, each moved);
3. ``ST_AsMVTGeom`` and ``ST_AsMVT`` clip and encode as for WGS84 tiles.

A layer with bins (incidents) draws clusters as its WGS84 tiles do: the bins covering the
box are counted, and past ``cluster_above`` each cell's centroid is shifted and drawn with
its counts. Measured against WGS84 tiles in ``bench/tiles_crs.py`` (shifting the features'
WKB with the numpy kernel and encoding it in a second statement ran at 0.35–0.5x of WGS84
tiles for grids: the second round trip and the WKB both ways cost more than the arithmetic).
BD-09 has no tiles: Baidu's maps use a tile grid of their own (BD-09 Mercator); Baidu
front-ends take GeoJSON items with ``crs=BD-09``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from geo.coords import GCJ02_BBOX, KRASOVSKY_A, KRASOVSKY_EE, from_wgs84
from service.auth import Principal

# The layer's scope conditions, bins and statement runner: one definition, shared with the
# WGS84 tiles (service.repositories.layers), so both draw the same features.
from service.repositories.layers import (
    CELL_CENTROID,
    CELL_COUNTS,
    TILE_ENVELOPE,
    _clustering,
    _fetch,
    _where,
    bin_params,
    check_readable,
    clustered_sql,
    tile_properties,
)
from service.specs.map_layers import LayerSpec
from service.tiles.cache import SHIFT_DEG, tile_bounds
from service.tiles.query import TILE_CRS

__all__ = ["TILE_CRS", "shifted_layer_tile"]


# --- points: the shift written in SQL, one statement as for WGS84 tiles -----------------


def _num(value: float) -> str:
    return repr(float(value))  # the double itself: 17 significant digits


def _gcj02_sql(inner: str) -> tuple[str, str, str]:
    """Return SQL (GCJ-02 lon, GCJ-02 lat, FROM clause aliased ``k``) of the rows of
    ``inner``, whose WGS84 columns are ``lon`` and ``lat``.

    :func:`geo.coords.wgs84_to_gcj02`'s formula written out in SQL (the numpy kernel derives
    five of its sines by angle identities: the two agree to < 1e-12°, which
    tests/service/test_crs_output.py checks); a point is a few microseconds of arithmetic,
    so a tile of points stays one statement. Outside :data:`geo.coords.GCJ02_BBOX` points
    are left as they are, as the kernel leaves them.
    """
    pi = math.pi
    x, y = "(k0.lon - 105.0)", "(k0.lat - 35.0)"

    def sin(arg: str, k: float) -> str:
        return f"sin({arg} * {_num(k * pi)})"

    waves = f"20.0 * {sin(x, 6.0)} + 20.0 * {sin(x, 2.0)}"
    dlat = (
        f"(-100.0 + 2.0 * {x} + 3.0 * {y} + 0.2 * {y} * {y} + 0.1 * {x} * {y} "
        f"+ 0.2 * sqrt(abs({x})) + ({waves} + 20.0 * {sin(y, 1.0)} + 40.0 * {sin(y, 1 / 3)} "
        f"+ 160.0 * {sin(y, 1 / 12)} + 320.0 * {sin(y, 1 / 30)}) * {_num(2 / 3)})"
    )
    dlon = (
        f"(300.0 + {x} + 2.0 * {y} + 0.1 * {x} * {x} + 0.1 * {x} * {y} "
        f"+ 0.1 * sqrt(abs({x})) + ({waves} + 20.0 * {sin(x, 1.0)} + 40.0 * {sin(x, 1 / 3)} "
        f"+ 150.0 * {sin(x, 1 / 12)} + 300.0 * {sin(x, 1 / 30)}) * {_num(2 / 3)})"
    )
    a, ee = _num(KRASOVSKY_A), _num(KRASOVSKY_EE)
    magic = f"(1.0 - {ee} * k.s2)"
    lon = f"k.lon + k.dlon_m * 180.0 / ({a} / sqrt({magic}) * sqrt(1.0 - k.s2) * {_num(pi)})"
    lat = (
        f"k.lat + k.dlat_m * 180.0 / (({a} * (1.0 - {ee})) / ({magic} * sqrt({magic})) "
        f"* {_num(pi)})"
    )
    x0, y0, x1, y1 = (_num(v) for v in GCJ02_BBOX)
    inside = f"k.lon BETWEEN {x0} AND {x1} AND k.lat BETWEEN {y0} AND {y1}"
    # OFFSET 0 keeps the subquery: its columns are computed once a row, not per use.
    source = f"""(SELECT k0.*, {dlat} AS dlat_m, {dlon} AS dlon_m,
                         power(sin(k0.lat * {_num(pi / 180.0)}), 2) AS s2
                  FROM ({inner}) k0 OFFSET 0) k"""
    return (
        f"CASE WHEN {inside} THEN {lon} ELSE k.lon END",
        f"CASE WHEN {inside} THEN {lat} ELSE k.lat END",
        source,
    )


def _gcj02_point_sql(inner: str, others: str) -> str:
    """Return the MVT geometry (``geom``) and ``others`` of the rows of ``inner`` (WGS84
    columns ``lon``, ``lat``) shifted to GCJ-02 in SQL (:func:`_gcj02_sql`)."""
    lon, lat, source = _gcj02_sql(inner)
    return f"""
        SELECT ST_AsMVTGeom(ST_Transform(ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326), 3857),
                            {TILE_ENVELOPE}, 4096, 64, true) AS geom,
               {others}
        FROM {source}
    """


def _points_tile_sql(spec: LayerSpec, where: list[str]) -> str:
    props, names = tile_properties(spec, "k")
    inner = f"""
        SELECT ST_X(t.geom) AS lon, ST_Y(t.geom) AS lat, {spec.mvt_id_sql} AS fid, {props}
        FROM {spec.source}
        WHERE t.geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326) AND {" AND ".join(where)}
        ORDER BY {spec.order_sql}
        LIMIT CAST(:cap AS integer)
    """
    return f"""
        WITH feats AS ({_gcj02_point_sql(inner, "k.fid, " + names)})
        SELECT ST_AsMVT(feats.*, '{spec.name}', 4096, 'geom', 'fid') FROM feats
        WHERE feats.geom IS NOT NULL
    """


def _shapes_tile_sql(spec: LayerSpec, where: list[str]) -> str:
    """A tile of polygons shifted vertex by vertex in SQL: each simplified shape's points
    dumped, shifted (:func:`_gcj02_sql`) and put back together ring by ring, part by part,
    then clipped and encoded as the WGS84 tiles are; one statement."""
    props, names = tile_properties(spec, "s")
    lon, lat, source = _gcj02_sql("SELECT p.fid, p.path, p.lon, p.lat FROM pts p")
    return f"""
        WITH src AS (
            SELECT {spec.mvt_id_sql} AS fid, {props},
                   ST_Multi(ST_Simplify(t.geom, CAST(:tol AS float8), true)) AS g
            FROM {spec.source}
            WHERE t.geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)
              AND {" AND ".join(where)}
            ORDER BY {spec.order_sql}
            LIMIT CAST(:cap AS integer)
        ), pts AS (
            SELECT s.fid, d.path, ST_X(d.geom) AS lon, ST_Y(d.geom) AS lat
            FROM src s, LATERAL ST_DumpPoints(s.g) d
        ), shifted AS (
            SELECT k.fid, k.path, {lon} AS x, {lat} AS y FROM {source}
        ), rings AS (
            SELECT fid, path[1] AS part, path[2] AS ring,
                   ST_MakeLine(array_agg(ST_MakePoint(x, y) ORDER BY path[3])) AS line
            FROM shifted GROUP BY fid, path[1], path[2]
        ), parts AS (
            SELECT fid, part,
                   ST_MakePolygon((array_agg(line) FILTER (WHERE ring = 1))[1],
                                  coalesce(array_agg(line ORDER BY ring) FILTER (WHERE ring > 1),
                                           CAST('{{}}' AS geometry[]))) AS polygon
            FROM rings GROUP BY fid, part
        ), shapes AS (
            SELECT fid, ST_SetSRID(ST_Collect(polygon ORDER BY part), 4326) AS g
            FROM parts GROUP BY fid
        ), feats AS (
            SELECT ST_AsMVTGeom(ST_Transform(g.g, 3857),
                                {TILE_ENVELOPE}, 4096, 64, true) AS geom,
                   s.fid, {names}
            FROM shapes g JOIN src s USING (fid)
        )
        SELECT ST_AsMVT(feats.*, '{spec.name}', 4096, 'geom', 'fid') FROM feats
        WHERE feats.geom IS NOT NULL
    """


def _clustered_points_tile_sql(spec: LayerSpec, where: list[str], bin_where: list[str]) -> str:
    # The WGS84 tiles' clusters (service.repositories.layers.clustered_sql), each cell's
    # centroid shifted.
    lon, lat = CELL_CENTROID
    cells = f"""
        SELECT CAST({lon} AS float8) AS lon, CAST({lat} AS float8) AS lat, {CELL_COUNTS}
        FROM cells k
    """
    clusters = f"""
            SELECT ST_AsMVT(c.*, '{spec.name}', 4096, 'geom') FROM (
                {_gcj02_point_sql(cells, "k.point_count, k.open_count")}
            ) c WHERE c.geom IS NOT NULL"""
    return clustered_sql(spec, bin_where, clusters=clusters, rows=_points_tile_sql(spec, where))


#: Bound of the shift's derivatives (|ds/dlon| + |ds/dlat| < 0.0078 per component in China).
_LIPSCHITZ = 0.01
_SAMPLES = np.linspace(0.0, 1.0, 5)


@lru_cache(maxsize=16384)  # a pure function of the tile's address, as its envelope is
def _wgs84_box(z: int, x: int, y: int, crs: str) -> tuple[float, float, float, float]:
    """Return a WGS84 box holding every point whose shift lies in tile z/x/y.

    A point p lands at q = p + s(p). The shift s is sampled once (5 x 5 points of the tile,
    one kernel call): between samples h apart, and between s(q) and s(p) (|p - q| = |s| <
    SHIFT_DEG), it varies by less than the derivative bound times that distance, which pads
    the box. (Cheaper than converting the tile's edges back, an iteration per point; where
    the formula stops applying, at GCJ02_BBOX's edges, there is no data.)
    """
    x0, y0, x1, y1 = tile_bounds(z, x, y)
    lon, lat = np.meshgrid(x0 + (x1 - x0) * _SAMPLES, y0 + (y1 - y0) * _SAMPLES)
    glon, glat = from_wgs84(lon, lat, crs)
    slon, slat = glon - lon, glat - lat
    h = max(x1 - x0, y1 - y0) / (len(_SAMPLES) - 1)
    pad = _LIPSCHITZ * (h / 2 + SHIFT_DEG) + 1e-9
    return (
        x0 - float(slon.max()) - pad,
        y0 - float(slat.max()) - pad,
        x1 - float(slon.min()) + pad,
        y1 - float(slat.min()) + pad,
    )


def _tile_index(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    lat = max(min(lat, 85.0511287798), -85.0511287798)
    tx = int((lon + 180.0) / 360.0 * n)
    ty = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return min(max(tx, 0), n - 1), min(max(ty, 0), n - 1)


def _bins(box, bz: int) -> tuple[int, int, int, int]:
    """Return the bins (x0, y0, x1, y1) of zoom ``bz`` covering the WGS84 ``box``."""
    bx0, by0 = _tile_index(box[0], box[3], bz)  # north-west
    bx1, by1 = _tile_index(box[2], box[1], bz)  # south-east
    return bx0, by0, bx1, by1


async def shifted_layer_tile(
    pool,
    spec: LayerSpec,
    *,
    principal: Principal,
    generation: int | None,
    z: int,
    x: int,
    y: int,
    crs: str,
    filters: dict[str, str] | None = None,
) -> bytes:
    """Return the MVT bytes of tile z/x/y of a ``crs`` (GCJ-02) map of one layer.

    The same features, properties, simplification, cap and clusters as
    :func:`~service.repositories.layers.layer_tile`, each vertex shifted into ``crs``.
    """
    check_readable(spec, principal)
    if z < spec.min_zoom:
        return b""
    filters = filters or {}
    where, params = _where(spec, principal, generation, filters)
    box = _wgs84_box(z, x, y, crs)
    params.update(
        x0=box[0],
        y0=box[1],
        x1=box[2],
        y1=box[3],
        cap=spec.max_features_per_tile,
        tol=360.0 / (4096 * 2**z),
    )
    clustering = _clustering(spec, z, filters)
    if clustering is not None:
        bz, bin_where = clustering
        params.update(bin_params(spec, z, bz, _bins(box, bz)))
        sql = _clustered_points_tile_sql(spec, where, bin_where)
    elif spec.geometry == "point":
        sql = _points_tile_sql(spec, where)
    else:
        sql = _shapes_tile_sql(spec, where)
    params.update(z=z, x=x, y=y)
    return bytes(await _fetch(pool, sql, params, "fetchval") or b"")
