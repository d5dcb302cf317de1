"""Road network: import lines as a routable pgRouting graph, and walk it from facilities.

Import (``import_network``; ``POST /network/import``, ``wangge network import``)
    Lines from a GeoPackage or GeoJSON (any CRS GDAL knows, or ``crs`` given: an EPSG
    code, GCJ-02 or BD-09) become ``road_edge`` rows between ``road_vertex`` rows. The
    topology is built in Python (:func:`geo.reach.build_topology`), not with
    ``pgr_createTopology`` (deprecated in pgRouting 3.4, and it only joins line ends):
    ends closer than ``snap_m`` (1 m) are one vertex; lines are split where two lines
    share a vertex or a line's end touches another (``node="vertices"``, as in
    OpenStreetMap), at every crossing (``"crossings"``: for drawings whose streets cross
    without a shared vertex — it also joins bridges to the streets below), or nowhere
    (``"endpoints"``). Costs are walking metres (``ST_Length`` on the spheroid), the same
    both ways. An import replaces the network unless ``append``: appended lines connect to
    stored vertices within ``snap_m`` of their ends.

Walking (``reach_along_network``)
    Each facility is snapped to its nearest edge (within :data:`SNAP_MAX_M`), then one
    ``pgr_withPointsDD`` from all facilities gives every vertex within the walk its
    distance to the nearest facility; edges are then walked in from both ends
    (:func:`geo.reach.reached_edge_parts`), so partly reached edges count for their
    reached part. The walk starts on the street: the facility's own offset from it is
    not deducted.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import shapely
from sqlalchemy import Connection, text

from geo.reach import (
    DEFAULT_FRONTAGE_M,
    NODE_MODES,
    UTMFrame,
    build_topology,
    network_reach_parts,
    reached_edge_parts,
)
from service.auth import Principal
from service.errors import ForbiddenError, UnprocessableError

__all__ = [
    "SNAP_MAX_M",
    "LINE_FORMATS",
    "pgrouting_installed",
    "network_covers",
    "network_status",
    "read_lines",
    "import_network",
    "reach_along_network",
]

#: A facility farther than this from every road is off the network (not a start).
SNAP_MAX_M = 200.0
LINE_FORMATS = {".gpkg": "GeoPackage", ".geojson": "GeoJSON", ".json": "GeoJSON"}
_NAME_COLUMNS = ("name", "NAME", "Name", "名称", "道路名称", "road_name")
_INSERT_CHUNK = 20_000


def pgrouting_installed(conn: Connection) -> bool:
    """Return whether the pgRouting extension is installed in the database."""
    return bool(
        conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgrouting')")
        ).scalar()
    )


def network_covers(conn: Connection, bbox: tuple[float, float, float, float]) -> bool:
    """Return whether some road edge lies in the lon/lat box."""
    return bool(
        conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM road_edge "
                "WHERE geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326))"
            ),
            {"x0": bbox[0], "y0": bbox[1], "x1": bbox[2], "y1": bbox[3]},
        ).scalar()
    )


def network_status(conn: Connection) -> dict[str, Any]:
    """Return what is imported: edges, vertices, length, extent, the imports."""
    row = conn.execute(
        text(
            "SELECT count(*) AS edges, coalesce(sum(length_m), 0) AS length_m, "
            "ST_Extent(geom) AS extent FROM road_edge"
        )
    ).one()
    vertices = conn.execute(text("SELECT count(*) FROM road_vertex")).scalar()
    imports = conn.execute(
        text(
            "SELECT i.id, i.name, i.filename, i.node_mode, i.snap_m, i.features, i.created_at, "
            "(SELECT count(*) FROM road_edge e WHERE e.import_id = i.id) AS edges "
            "FROM road_import i ORDER BY i.id"
        )
    ).all()
    extent = None
    if row.extent is not None:
        box = conn.execute(
            text(
                "SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM "
                "(SELECT CAST(:b AS box2d) AS b) s"
            ),
            {"b": row.extent},
        ).one()
        extent = [round(float(v), 7) for v in box]
    return {
        "pgrouting": pgrouting_installed(conn),
        "edges": int(row.edges),
        "vertices": int(vertices),
        "length_km": round(float(row.length_m) / 1000, 3),
        "bbox": extent,
        "imports": [
            {
                "id": r.id,
                "name": r.name,
                "filename": r.filename,
                "node": r.node_mode,
                "snap_m": r.snap_m,
                "features": r.features,
                "edges": r.edges,
                "created_at": r.created_at.isoformat(),
            }
            for r in imports
        ],
    }


def _to_wgs84(gdf, crs: str | None):
    """Return ``gdf`` in lon/lat WGS84 (``crs`` overrides the file's own)."""
    from geo.coords import BD09, GCJ02, parse_input_crs, to_wgs84

    china_offsets = None
    if crs is not None:
        try:
            name = parse_input_crs(crs)
        except ValueError:
            name = None
        if name in (GCJ02, BD09):
            china_offsets = name
            gdf = gdf.set_crs(4326, allow_override=True)
        elif name is not None:  # EPSG:4326 / 4490: lon/lat as they are
            gdf = gdf.set_crs(4326, allow_override=True)
        else:
            try:
                gdf = gdf.set_crs(crs, allow_override=True).to_crs(4326)
            except Exception as exc:  # pyproj.CRSError and friends
                raise UnprocessableError(f"unknown crs {crs!r}: {exc}", field="crs") from None
    elif gdf.crs is None:
        gdf = gdf.set_crs(4326)
    elif gdf.crs.to_epsg() not in (4326, 4490):
        gdf = gdf.to_crs(4326)
    else:
        gdf = gdf.set_crs(4326, allow_override=True)
    if china_offsets is not None:

        def unshift(xy: np.ndarray) -> np.ndarray:
            lon, lat = to_wgs84(xy[:, 0], xy[:, 1], china_offsets)
            return np.column_stack([lon, lat])

        gdf = gdf.set_geometry(shapely.transform(gdf.geometry.values, unshift))
    return gdf


def read_lines(
    data: bytes | Path, *, filename: str, layer: str | None = None, crs: str | None = None
):
    """Return (lines in WGS84, attribute rows as dicts, layer name) of a line file."""
    import pyogrio

    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if suffix not in LINE_FORMATS:
        raise UnprocessableError(
            f"{suffix or 'a file without extension'!r} is not accepted; road networks are "
            "GeoPackage (.gpkg) or GeoJSON (.geojson, .json)",
            field="file",
        )
    with tempfile.TemporaryDirectory(prefix="wangge-roads-") as tmp:
        if isinstance(data, Path):
            path = data
        else:
            path = Path(tmp, f"upload{suffix}")
            path.write_bytes(data)
        try:
            if layer is None and suffix == ".gpkg":
                layers = [str(n) for n, kind in pyogrio.list_layers(path) if kind is not None]
                if len(layers) > 1:
                    raise UnprocessableError(
                        f"the GeoPackage has {len(layers)} spatial layers "
                        f"({', '.join(layers)}); pass layer to choose one",
                        field="layer",
                    )
                layer = layers[0] if layers else None
            gdf = pyogrio.read_dataframe(path, layer=layer)
        except UnprocessableError:
            raise
        except Exception as exc:  # GDAL's own errors: unreadable or not this format
            raise UnprocessableError(
                f"cannot read the {LINE_FORMATS[suffix]} file: {exc}", field="file"
            ) from None
    if len(gdf) == 0:
        raise UnprocessableError("the file has no features", field="file")
    kinds = set(gdf.geometry.geom_type.dropna())
    if not kinds & {"LineString", "MultiLineString"}:
        raise UnprocessableError(
            f"a road network is lines; the file holds {', '.join(sorted(kinds)) or 'nothing'}",
            field="file",
        )
    gdf = _to_wgs84(gdf, crs)
    bounds = gdf.total_bounds
    from geo.coords import CHINA_BBOX

    if not (
        CHINA_BBOX[0] <= bounds[0] <= bounds[2] <= CHINA_BBOX[2]
        and CHINA_BBOX[1] <= bounds[1] <= bounds[3] <= CHINA_BBOX[3]
    ):
        raise UnprocessableError(
            "the lines do not lie in China once read as lon/lat; give the file's crs",
            field="crs",
        )
    columns = gdf.drop(columns=gdf.geometry.name)
    # A frame without columns writes "[]", not one empty record per line.
    attributes = (
        json.loads(columns.to_json(orient="records", date_format="iso", force_ascii=False))
        if len(columns.columns)
        else [{} for _ in range(len(gdf))]
    )
    return list(gdf.geometry.values), attributes, layer


def _insert_in_chunks(
    conn: Connection, sql: str, params: dict[str, Any], **columns: Sequence
) -> None:
    """Run ``sql`` once per :data:`_INSERT_CHUNK` rows: ``params`` with each of ``columns``
    (arrays or lists of the same length) bound as that chunk's slice."""
    rows = len(next(iter(columns.values())))
    statement = text(sql)
    for start in range(0, rows, _INSERT_CHUNK):
        chunk = slice(start, start + _INSERT_CHUNK)
        sliced = {name: _as_list(values[chunk]) for name, values in columns.items()}
        conn.execute(statement, {**params, **sliced})


def _as_list(values: Sequence) -> list:
    """Return a list of plain Python values (numpy's ``tolist``: ints and floats, not numpy's)."""
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _edge_name(attrs: dict) -> str:
    for key in _NAME_COLUMNS:
        value = attrs.get(key)
        if value not in (None, ""):
            return str(value)
    return ""


def import_network(
    conn: Connection,
    *,
    principal: Principal,
    data: bytes | Path,
    filename: str,
    layer: str | None = None,
    crs: str | None = None,
    name: str | None = None,
    append: bool = False,
    snap_m: float = 1.0,
    node: str = "vertices",
) -> dict[str, Any]:
    """Import road lines as the routable network; return a report. Admins only.

    Replaces the stored network unless ``append``. Runs in the caller's transaction.
    """
    if not principal.is_admin:
        raise ForbiddenError(
            f"importing the road network needs the admin role; you are {principal.role}",
            field="role",
        )
    if node not in NODE_MODES:
        raise UnprocessableError(f"node must be one of {', '.join(NODE_MODES)}", field="node")
    if not (isinstance(snap_m, (int, float)) and math.isfinite(snap_m) and 0 <= snap_m <= 100):
        raise UnprocessableError("snap_m must be between 0 and 100 metres", field="snap_m")
    lines, attributes, layer = read_lines(data, filename=filename, layer=layer, crs=crs)

    if not append:
        conn.execute(text("DELETE FROM road_edge"))
        conn.execute(text("DELETE FROM road_vertex"))
    x0, y0, x1, y1 = bounds = shapely.total_bounds(np.asarray(lines, dtype=object))
    frame = UTMFrame.around(shapely.box(x0, y0, x1, y1))
    existing = _stored_vertices_near(conn, bounds, snap_m) if append else None
    try:
        topo = build_topology(
            lines, snap_m=float(snap_m), node=node, existing_vertices=existing, frame=frame
        )
    except ValueError as exc:
        raise UnprocessableError(str(exc), field="file") from None
    if len(topo.edge_lonlat) == 0:
        raise UnprocessableError("no usable lines in the file", field="file")

    import_id = conn.execute(
        text(
            "INSERT INTO road_import (name, filename, layer, node_mode, snap_m, features, "
            "created_by) VALUES (:name, :filename, :layer, :node, :snap, :features, :by) "
            "RETURNING id"
        ),
        {
            "name": name or PurePosixPath(filename).stem,
            "filename": filename,
            "layer": layer,
            "node": node,
            "snap": float(snap_m),
            "features": len(lines),
            "by": principal.token_id,
        },
    ).scalar_one()

    vertex_ids, new = _store_vertices(conn, topo, import_id)
    n_new = int(new.sum())
    n_edges = _store_edges(conn, topo, attributes, vertex_ids, import_id)
    length_m = conn.execute(
        text("SELECT coalesce(sum(length_m), 0) FROM road_edge WHERE import_id = :i"),
        {"i": import_id},
    ).scalar()
    conn.execute(
        text("UPDATE road_import SET edges = :e, vertices = :v, length_m = :l WHERE id = :i"),
        {"e": n_edges, "v": n_new, "l": float(length_m), "i": import_id},
    )
    parts, largest = topo.components
    return {
        "import_id": int(import_id),
        "replaced": not append,
        "features": len(lines),
        "edges": n_edges,
        "vertices": len(vertex_ids),
        "new_vertices": n_new,
        "joined_existing_vertices": int((~new).sum()),
        "length_km": round(float(length_m) / 1000, 3),
        "components": parts,
        "largest_component_share": round(largest, 4),
        "dropped": topo.dropped,
        "node": node,
        "snap_m": float(snap_m),
        "layer": layer,
        "bbox": [round(float(v), 7) for v in (x0, y0, x1, y1)],
        "pgrouting": pgrouting_installed(conn),
    }


def _stored_vertices_near(
    conn: Connection, bounds, snap_m: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Return (ids, lon/lat) of the stored vertices an appended import may join (None: none)."""
    x0, y0, x1, y1 = bounds
    pad = max(snap_m, 1.0) / 111_320.0 * 2
    rows = conn.execute(
        text(
            "SELECT id, ST_X(geom) AS lon, ST_Y(geom) AS lat FROM road_vertex "
            "WHERE geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)"
        ),
        {"x0": x0 - pad, "y0": y0 - pad, "x1": x1 + pad, "y1": y1 + pad},
    ).all()
    if not rows:
        return None
    return (
        np.array([r.id for r in rows], dtype=np.int64),
        np.array([(r.lon, r.lat) for r in rows], dtype=float),
    )


def _store_vertices(conn: Connection, topo, import_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Insert the topology's new vertices; return every vertex's id and the mask of new ones."""
    new = topo.vertex_existing < 0
    vertex_ids = topo.vertex_existing.copy()
    n_new = int(new.sum())
    if n_new:
        ids = (
            conn.execute(
                text(
                    "SELECT nextval(pg_get_serial_sequence('road_vertex', 'id')) "
                    "FROM generate_series(1, :n)"
                ),
                {"n": n_new},
            )
            .scalars()
            .all()
        )
        vertex_ids[new] = np.asarray(ids, dtype=np.int64)
        _insert_in_chunks(
            conn,
            "INSERT INTO road_vertex (id, import_id, geom) "
            "SELECT id, :imp, ST_SetSRID(ST_MakePoint(x, y), 4326) FROM "
            "unnest(CAST(:ids AS bigint[]), CAST(:xs AS float8[]), "
            "CAST(:ys AS float8[])) AS v(id, x, y)",
            {"imp": import_id},
            ids=vertex_ids[new],
            xs=topo.vertex_lonlat[new][:, 0],
            ys=topo.vertex_lonlat[new][:, 1],
        )
    return vertex_ids, new


def _store_edges(
    conn: Connection, topo, attributes: list[dict], vertex_ids: np.ndarray, import_id: int
) -> int:
    """Insert the topology's edges (walking cost = length both ways); return how many."""
    sources = vertex_ids[topo.edge_source]
    targets = vertex_ids[topo.edge_target]
    wkbs = shapely.to_wkb(np.asarray(topo.edge_lonlat, dtype=object))
    names = [_edge_name(attributes[f]) for f in topo.edge_feature]
    props = [json.dumps(attributes[f], ensure_ascii=False, default=str) for f in topo.edge_feature]
    n_edges = len(wkbs)
    _insert_in_chunks(
        conn,
        "INSERT INTO road_edge (import_id, source, target, cost, reverse_cost, length_m, "
        "name, properties, geom) "
        "SELECT :imp, s, t, l, l, l, n, CAST(p AS jsonb), g FROM ("
        "  SELECT s, t, n, p, g, ST_Length(CAST(g AS geography)) AS l FROM ("
        "    SELECT s, t, n, p, ST_GeomFromWKB(w, 4326) AS g FROM unnest("
        "      CAST(:s AS bigint[]), CAST(:t AS bigint[]), CAST(:w AS bytea[]), "
        "      CAST(:n AS text[]), CAST(:p AS text[])) AS u(s, t, w, n, p)) a) b",
        {"imp": import_id},
        s=sources,
        t=targets,
        w=[bytes(b) for b in wkbs],
        n=names,
        p=props,
    )
    return n_edges


def _envelope_sql(bbox: tuple[float, float, float, float]) -> str:
    # Numbers formatted by Python from floats: pgRouting takes its edges as SQL text.
    x0, y0, x1, y1 = (float(v) for v in bbox)
    return f"ST_MakeEnvelope({x0:.9f}, {y0:.9f}, {x1:.9f}, {y1:.9f}, 4326)"


def reach_along_network(
    conn: Connection,
    *,
    frame: UTMFrame,
    facilities_lonlat: np.ndarray,
    walk_m: float,
    bbox: tuple[float, float, float, float],
    frontage_m: float = DEFAULT_FRONTAGE_M,
    snap_max_m: float = SNAP_MAX_M,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Return (reach polygons in ``frame`` metres, stats) of a walk of ``walk_m`` on the roads.

    ``bbox`` bounds the facilities and the edges used (grow it by the walk first).
    """
    stats: dict[str, Any] = {
        "facilities_on_network": 0,
        "facilities_off_network": int(len(facilities_lonlat)),
        "reached_vertices": 0,
        "reached_street_m": 0.0,
    }
    if len(facilities_lonlat) == 0:
        return np.empty(0, dtype=object), stats
    # Edges within the box, with room for a walk that leaves and comes back.
    pad_deg = walk_m / 111_320.0 / max(0.05, math.cos(math.radians(abs(bbox[3]))))
    edges_box = (bbox[0] - pad_deg, bbox[1] - pad_deg, bbox[2] + pad_deg, bbox[3] + pad_deg)
    env = _envelope_sql(edges_box)
    snapped = conn.execute(
        text(
            f"""
            SELECT DISTINCT ON (f.i) f.i, e.id AS edge_id,
                   ST_LineLocatePoint(e.geom, f.pt) AS fraction,
                   ST_Distance(CAST(e.geom AS geography), CAST(f.pt AS geography)) AS offset_m
            FROM (SELECT i, ST_SetSRID(ST_MakePoint(x, y), 4326) AS pt
                  FROM unnest(CAST(:xs AS float8[]), CAST(:ys AS float8[]))
                       WITH ORDINALITY AS u(x, y, i)) f
            CROSS JOIN LATERAL (
                SELECT id, geom FROM road_edge WHERE geom && {env}
                ORDER BY geom <-> f.pt LIMIT 4) e
            ORDER BY f.i, offset_m
            """
        ),
        {"xs": facilities_lonlat[:, 0].tolist(), "ys": facilities_lonlat[:, 1].tolist()},
    ).all()
    snapped = [r for r in snapped if r.offset_m <= snap_max_m]
    stats["facilities_on_network"] = len(snapped)
    stats["facilities_off_network"] = int(len(facilities_lonlat) - len(snapped))
    if not snapped:
        return np.empty(0, dtype=object), stats
    points_sql = (
        "SELECT CAST(pid AS bigint) AS pid, CAST(edge_id AS bigint) AS edge_id, "
        "CAST(fraction AS float8) AS fraction FROM (VALUES "
        + ", ".join(f"({int(r.i)}, {int(r.edge_id)}, {float(r.fraction):.12f})" for r in snapped)
        + ") AS p(pid, edge_id, fraction)"
    )
    edges_sql = f"SELECT id, source, target, cost, reverse_cost FROM road_edge WHERE geom && {env}"
    dist = {
        int(r.node): float(r.d)
        for r in conn.execute(
            text(
                "SELECT node, min(agg_cost) AS d FROM pgr_withPointsDD("
                "CAST(:edges AS text), CAST(:points AS text), CAST(:starts AS bigint[]), "
                "CAST(:walk AS float8), directed => false) WHERE node > 0 GROUP BY node"
            ),
            {
                "edges": edges_sql,
                "points": points_sql,
                "starts": [-int(r.i) for r in snapped],
                "walk": float(walk_m),
            },
        )
    }
    stats["reached_vertices"] = len(dist)
    start_edges = sorted({int(r.edge_id) for r in snapped})
    rows = conn.execute(
        text(
            "SELECT id, source, target, cost, ST_AsBinary(geom) AS wkb FROM road_edge "
            f"WHERE geom && {env} AND (source = ANY(CAST(:nodes AS bigint[])) "
            "OR target = ANY(CAST(:nodes AS bigint[])) OR id = ANY(CAST(:edges AS bigint[])))"
        ),
        {"nodes": list(dist), "edges": start_edges},
    ).all()
    if not rows:
        return np.empty(0, dtype=object), stats
    index = {int(r.id): k for k, r in enumerate(rows)}
    lines_m = frame.to_metric(shapely.from_wkb([bytes(r.wkb) for r in rows]))
    inf = math.inf
    parts = reached_edge_parts(
        list(lines_m),
        [float(r.cost) for r in rows],
        [dist.get(int(r.source), inf) for r in rows],
        [dist.get(int(r.target), inf) for r in rows],
        float(walk_m),
        starts=[(index[int(r.edge_id)], float(r.fraction)) for r in snapped],
    )
    stats["reached_street_m"] = round(float(sum(p.length for p in parts)), 1)
    return network_reach_parts(parts, frontage_m), stats
