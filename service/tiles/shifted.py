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

import numpy as np
import shapely

from geo.coords import GCJ02, from_wgs84
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
    # One row of three arrays (WKB, ids, properties): a row per feature cost more in the
    # driver than the statement did.
    props = ", ".join(f"'{name}', {expr}" for name, expr in spec.tile_properties.items())
    geom = "t.geom"
    if spec.geometry == "polygon":
        geom = "ST_Simplify(t.geom, CAST(:tol AS float8), true)"
    return f"""
        SELECT array_agg(f.wkb) AS wkb, array_agg(f.fid) AS fid, array_agg(f.p) AS p FROM (
            SELECT ST_AsBinary({geom}) AS wkb, {spec.mvt_id_sql} AS fid,
                   jsonb_strip_nulls(jsonb_build_object({props})) AS p
            FROM {spec.source}
            WHERE t.geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326) AND {" AND ".join(where)}
            ORDER BY {spec.order_sql}
            LIMIT CAST(:cap AS integer)
        ) f
    """


def _cells_sql(spec: LayerSpec, bin_where: list[str]) -> str:
    return f"""
        SELECT sum(b.n) AS n, sum(b.n) FILTER (WHERE b.status <> 'closed') AS open_n,
               sum(b.sx) AS sx, sum(b.sy) AS sy
        FROM {spec.bins} b
        WHERE b.z = CAST(:bz AS smallint) AND b.x = ANY(CAST(:bxs AS integer[]))
          AND b.y BETWEEN :by0 AND :by1 AND b.n <> 0 AND {" AND ".join(bin_where)}
        GROUP BY b.x >> CAST(:shift AS integer), b.y >> CAST(:shift AS integer)
        HAVING sum(b.n) > 0
    """


_ENCODE_SQL = """
    SELECT ST_AsMVT(f.*, $4, 4096, 'geom', 'fid') FROM (
        SELECT ST_AsMVTGeom(ST_Transform(ST_GeomFromWKB(u.g, 4326), 3857),
                            ST_TileEnvelope($1, $2, $3), 4096, 64, true) AS geom,
               u.fid, u.p
        FROM unnest(CAST($5 AS bytea[]), CAST($6 AS bigint[]), CAST($7 AS jsonb[])) AS u(g, fid, p)
    ) f WHERE f.geom IS NOT NULL
"""

_ENCODE_CLUSTERS_SQL = """
    SELECT ST_AsMVT(f.*, $4, 4096, 'geom') FROM (
        SELECT ST_AsMVTGeom(ST_Transform(ST_SetSRID(ST_MakePoint(u.lon, u.lat), 4326), 3857),
                            ST_TileEnvelope($1, $2, $3), 4096, 64, true) AS geom,
               u.point_count, u.open_count
        FROM unnest(CAST($5 AS float8[]), CAST($6 AS float8[]), CAST($7 AS integer[]),
                    CAST($8 AS integer[])) AS u(lon, lat, point_count, open_count)
    ) f WHERE f.geom IS NOT NULL
"""


#: Bound of the shift's derivatives (|ds/dlon| + |ds/dlat| < 0.0078 per component in China).
_LIPSCHITZ = 0.01
_SAMPLES = np.linspace(0.0, 1.0, 5)


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
    x, y = from_wgs84(coords[:, 0], coords[:, 1], crs)
    return np.column_stack([x, y])


def _tile_index(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    lat = max(min(lat, 85.0511287798), -85.0511287798)
    tx = int((lon + 180.0) / 360.0 * n)
    ty = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return min(max(tx, 0), n - 1), min(max(ty, 0), n - 1)


async def _clusters(pool, spec, *, params, bin_where, box, z, x, y, bz, crs) -> bytes | None:
    """Return the tile's clusters, or None when it holds few enough incidents to draw."""
    bx0, by0 = _tile_index(box[0], box[3], bz)  # north-west
    bx1, by1 = _tile_index(box[2], box[1], bz)  # south-east
    d = bz - z
    params = {
        **params,
        "bz": bz,
        "shift": d - CLUSTER_SHIFT,
        "bxs": list(range(bx0, bx1 + 1)),
        "by0": by0,
        "by1": by1,
    }
    cells = await _fetch(pool, _cells_sql(spec, bin_where), params)
    n = np.array([c["n"] for c in cells], dtype=float)
    if n.sum() <= spec.cluster_above:
        return None
    lon = np.array([c["sx"] for c in cells], dtype=float) / n
    lat = np.array([c["sy"] for c in cells], dtype=float) / n
    lon, lat = from_wgs84(lon, lat, crs)
    data = await pool.fetchval(
        _ENCODE_CLUSTERS_SQL,
        z,
        x,
        y,
        spec.name,
        lon.tolist(),
        lat.tolist(),
        [int(c["n"]) for c in cells],
        [int(c["open_n"] or 0) for c in cells],
    )
    return bytes(data or b"")


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
    if bin_where is not None:
        clustered = await _clusters(
            pool,
            spec,
            params=params,
            bin_where=[_BIN_VISIBLE, *bin_where],
            box=box,
            z=z,
            x=x,
            y=y,
            bz=bz,
            crs=crs,
        )
        if clustered is not None:
            return clustered
    row = await _fetch(pool, _features_sql(spec, where), params, "fetchrow")
    if not row["wkb"]:
        return b""
    geoms = shapely.from_wkb(np.array(row["wkb"], dtype=object))
    shifted = shapely.to_wkb(shapely.transform(geoms, lambda c: _shift(c, crs)))
    data = await pool.fetchval(_ENCODE_SQL, z, x, y, spec.name, list(shifted), row["fid"], row["p"])
    return bytes(data or b"")
