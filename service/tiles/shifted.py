"""Vector tiles for GCJ-02 maps (Amap, Tencent): every vertex shifted before encoding.

A GCJ-02 front-end asks for tile z/x/y of *its* map: the Web Mercator tile of GCJ-02
coordinates. Its features are those whose shifted geometry lies in it. WGS84 geometry is
stored; the shift is non-linear and has no SQL form in PostGIS, so a tile is made in three
steps, exact per vertex with the kernel that converts the input (:mod:`geo.coords`):

1. the features are read (simplified to one pixel, as :func:`~service.repositories.layers.
   layer_tile` does) in a WGS84 box holding every point the shift puts in the tile
   (:func:`_wgs84_box`), as WKB with their id and their tile properties as one ``jsonb``
   (``ST_AsMVT`` writes a ``jsonb`` column's keys as attributes), one row of arrays;
2. all their vertices are shifted in one numpy call (``shapely.transform``);
3. the shifted WKB goes back in one statement (``unnest`` of arrays) to ``ST_AsMVTGeom`` and
   ``ST_AsMVT``, which clip to the tile and encode as for WGS84 tiles.

A layer with bins (incidents) draws clusters as its WGS84 tiles do: the bins covering the
box are counted, and past ``cluster_above`` each cell's centroid is shifted and drawn with
its counts. Measured against WGS84 tiles in ``bench/tiles_crs.py``.
BD-09 has no tiles: Baidu's maps use a tile grid of their own (BD-09 Mercator); Baidu
front-ends take GeoJSON items with ``crs=BD-09``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import shapely

from geo.coords import GCJ02, GCJ02_BBOX, KRASOVSKY_A, KRASOVSKY_EE, from_wgs84
from service.auth import Principal

# The layer's scope conditions, bins and statement runner: one definition, shared with the
# WGS84 tiles (service.repositories.layers), so both draw the same features.
from service.repositories.layers import (
    _BIN_VISIBLE,
    _bin_conditions,
    _bin_zoom,
    _fetch,
    _where,
    check_readable,
)
from service.specs.map_layers import CLUSTER_SHIFT, LayerSpec
from service.tiles.cache import SHIFT_DEG, tile_bounds

__all__ = ["TILE_CRS", "shifted_layer_tile"]

#: The coordinate systems tiles can be drawn in besides WGS84.
TILE_CRS = (GCJ02,)


def _features_sql(spec: LayerSpec, where: list[str]) -> str:
    """One row of arrays: the features' geometry (points as lon, lat; shapes as WKB), ids
    and properties (a row per feature cost more in the driver than the statement did)."""
    props = ", ".join(f"'{name}', {expr}" for name, expr in spec.tile_properties.items())
    if spec.geometry == "point":
        geom = "ST_X(t.geom) AS lon, ST_Y(t.geom) AS lat"
        agg = "array_agg(f.lon) AS lon, array_agg(f.lat) AS lat"
    else:
        geom = "ST_AsBinary(ST_Simplify(t.geom, CAST(:tol AS float8), true)) AS wkb"
        agg = "array_agg(f.wkb) AS wkb"
    return f"""
        SELECT {agg}, array_agg(f.fid) AS fid, array_agg(f.p) AS p FROM (
            SELECT {geom}, {spec.mvt_id_sql} AS fid,
                   jsonb_strip_nulls(jsonb_build_object({props})) AS p
            FROM {spec.source}
            WHERE t.geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326) AND {" AND ".join(where)}
            ORDER BY {spec.order_sql}
            LIMIT CAST(:cap AS integer)
        ) f
    """


def _binned_sql(spec: LayerSpec, where: list[str], bin_where: list[str]) -> str:
    """The cells of the bins under the box, and the features only when they are few enough
    to draw (the lateral part is skipped otherwise: its condition on the outer row is a
    one-time filter)."""
    return f"""
        WITH cells AS MATERIALIZED (
            SELECT sum(b.n) AS n, sum(b.n) FILTER (WHERE b.status <> 'closed') AS open_n,
                   sum(b.sx) AS sx, sum(b.sy) AS sy
            FROM {spec.bins} b
            WHERE b.z = CAST(:bz AS smallint) AND b.x = ANY(CAST(:bxs AS integer[]))
              AND b.y BETWEEN :by0 AND :by1 AND b.n <> 0 AND {" AND ".join(bin_where)}
            GROUP BY b.x >> CAST(:shift AS integer), b.y >> CAST(:shift AS integer)
            HAVING sum(b.n) > 0
        ), c AS (
            SELECT coalesce(sum(n), 0) AS total, array_agg(n) AS cn,
                   array_agg(coalesce(open_n, 0)) AS copen, array_agg(sx / n) AS clon,
                   array_agg(sy / n) AS clat
            FROM cells
        )
        SELECT c.total, c.cn, c.copen, c.clon, c.clat, f.*
        FROM c CROSS JOIN LATERAL (
            {_features_sql(spec, [*where, "c.total <= CAST(:above AS integer)"])}
        ) f
    """


# The shifted geometry comes back in Web Mercator, projected with the shift (numpy): no
# ST_Transform per feature.
_ENCODE_SHAPES_SQL = """
    SELECT ST_AsMVT(f.*, $4, 4096, 'geom', 'fid') FROM (
        SELECT ST_AsMVTGeom(ST_GeomFromWKB(u.g, 3857), ST_TileEnvelope($1, $2, $3),
                            4096, 64, true) AS geom, u.fid, u.p
        FROM unnest(CAST($5 AS bytea[]), CAST($6 AS bigint[]), CAST($7 AS jsonb[])) AS u(g, fid, p)
    ) f WHERE f.geom IS NOT NULL
"""

_ENCODE_POINTS_SQL = """
    SELECT ST_AsMVT(f.*, $4, 4096, 'geom', 'fid') FROM (
        SELECT ST_AsMVTGeom(ST_SetSRID(ST_MakePoint(u.x, u.y), 3857), ST_TileEnvelope($1, $2, $3),
                            4096, 64, true) AS geom, u.fid, u.p
        FROM unnest(CAST($5 AS float8[]), CAST($6 AS float8[]), CAST($7 AS bigint[]),
                    CAST($8 AS jsonb[])) AS u(x, y, fid, p)
    ) f WHERE f.geom IS NOT NULL
"""

_ENCODE_CLUSTERS_SQL = """
    SELECT ST_AsMVT(f.*, $4, 4096, 'geom') FROM (
        SELECT ST_AsMVTGeom(ST_SetSRID(ST_MakePoint(u.x, u.y), 3857), ST_TileEnvelope($1, $2, $3),
                            4096, 64, true) AS geom,
               u.point_count, u.open_count
        FROM unnest(CAST($5 AS float8[]), CAST($6 AS float8[]), CAST($7 AS integer[]),
                    CAST($8 AS integer[])) AS u(x, y, point_count, open_count)
    ) f WHERE f.geom IS NOT NULL
"""

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
                            ST_TileEnvelope(CAST(:z AS integer), CAST(:x AS integer),
                                            CAST(:y AS integer)), 4096, 64, true) AS geom,
               {others}
        FROM {source}
    """


def _points_tile_sql(spec: LayerSpec, where: list[str]) -> str:
    props = ", ".join(f'{expr} AS "{name}"' for name, expr in spec.tile_properties.items())
    names = ", ".join(f'k."{name}"' for name in spec.tile_properties)
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


def _clustered_points_tile_sql(spec: LayerSpec, where: list[str], bin_where: list[str]) -> str:
    # As service.repositories.layers' clustered tiles: past cluster_above, one point per
    # cell at the centroid of its incidents (shifted), with their counts.
    cells = """
        SELECT CAST(k.sx / k.n AS float8) AS lon, CAST(k.sy / k.n AS float8) AS lat,
               CAST(k.n AS integer) AS point_count,
               CAST(coalesce(k.open_n, 0) AS integer) AS open_count
        FROM cells k
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
        THEN (
            SELECT ST_AsMVT(c.*, '{spec.name}', 4096, 'geom') FROM (
                {_gcj02_point_sql(cells, "k.point_count, k.open_count")}
            ) c WHERE c.geom IS NOT NULL
        )
        ELSE ({_points_tile_sql(spec, where)}) END
    """


#: Web Mercator's sphere (EPSG:3857), as PostGIS projects to it.
_R = 6378137.0


def _shift_to_mercator(lon: np.ndarray, lat: np.ndarray, crs: str) -> tuple[np.ndarray, ...]:
    """Return Web Mercator x, y of WGS84 points shifted into ``crs`` (the kernel, then the
    spherical Mercator formulas PostGIS's ST_Transform applies)."""
    glon, glat = from_wgs84(lon, lat, crs)
    x = np.radians(glon) * _R
    y = np.log(np.tan(np.pi / 4.0 + np.radians(glat) / 2.0)) * _R
    return x, y


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


def _shift(coords: np.ndarray, crs: str) -> np.ndarray:
    return np.column_stack(_shift_to_mercator(coords[:, 0], coords[:, 1], crs))


def _tile_index(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    lat = max(min(lat, 85.0511287798), -85.0511287798)
    tx = int((lon + 180.0) / 360.0 * n)
    ty = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return min(max(tx, 0), n - 1), min(max(ty, 0), n - 1)


def _bin_params(box, z: int, bz: int, above: int) -> dict[str, Any]:
    bx0, by0 = _tile_index(box[0], box[3], bz)  # north-west
    bx1, by1 = _tile_index(box[2], box[1], bz)  # south-east
    d = bz - z
    return {
        "bz": bz,
        "shift": d - CLUSTER_SHIFT,
        "bxs": list(range(bx0, bx1 + 1)),
        "by0": by0,
        "by1": by1,
        "above": above,
    }


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
    where, params = _where(spec, principal, generation)
    for i, (name, value) in enumerate(filters.items()):
        where.append(f"CAST({spec.properties[name]} AS text) = :f{i}")
        params[f"f{i}"] = str(value)
    box = _wgs84_box(z, x, y, crs)
    params.update(
        x0=box[0],
        y0=box[1],
        x1=box[2],
        y1=box[3],
        cap=spec.max_features_per_tile,
        tol=360.0 / (4096 * 2**z),
    )
    bz = _bin_zoom(z) if spec.bins else None
    bin_where = _bin_conditions(spec, filters) if bz is not None else None
    if spec.geometry == "point" and crs == GCJ02:
        # One statement, the shift in SQL (_gcj02_point_sql).
        if bin_where is not None:
            params.update(_bin_params(box, z, bz, spec.cluster_above))
            sql = _clustered_points_tile_sql(spec, where, [_BIN_VISIBLE, *bin_where])
        else:
            sql = _points_tile_sql(spec, where)
        params.update(z=z, x=x, y=y)
        return bytes(await _fetch(pool, sql, params, "fetchval") or b"")
    async with pool.acquire() as conn:  # both statements on one connection
        if bin_where is not None:
            params.update(_bin_params(box, z, bz, spec.cluster_above))
            sql = _binned_sql(spec, where, [_BIN_VISIBLE, *bin_where])
            row = await _fetch(conn, sql, params, "fetchrow")
            if row["total"] > spec.cluster_above:
                x_m, y_m = _shift_to_mercator(
                    np.array(row["clon"], dtype=float), np.array(row["clat"], dtype=float), crs
                )
                data = await conn.fetchval(
                    _ENCODE_CLUSTERS_SQL,
                    z,
                    x,
                    y,
                    spec.name,
                    x_m.tolist(),
                    y_m.tolist(),
                    row["cn"],
                    row["copen"],
                )
                return bytes(data or b"")
        else:
            row = await _fetch(conn, _features_sql(spec, where), params, "fetchrow")
        if not row["fid"]:
            return b""
        if spec.geometry == "point":
            x_m, y_m = _shift_to_mercator(
                np.array(row["lon"], dtype=float), np.array(row["lat"], dtype=float), crs
            )
            args = (x_m.tolist(), y_m.tolist(), row["fid"], row["p"])
            sql = _ENCODE_POINTS_SQL
        else:
            geoms = shapely.from_wkb(np.array(row["wkb"], dtype=object))
            shifted = shapely.to_wkb(shapely.transform(geoms, lambda c: _shift(c, crs)))
            args = (list(shifted), row["fid"], row["p"])
            sql = _ENCODE_SHAPES_SQL
        data = await conn.fetchval(sql, z, x, y, spec.name, *args)
    return bytes(data or b"")
