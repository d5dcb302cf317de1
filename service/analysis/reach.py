"""15-minute service reach: the share of each community beyond a walk of N minutes.

For each community in the analysed area (or the grid itself, for a grid officer) the
result gives its area, care households and units farther than ``minutes`` of walking
from a service facility, with the uncovered part as a polygon, ranked worst first.

Distance
    *straight line* (default without a road network): a disc of radius
    ``minutes × speed_m_per_min / detour`` around each facility (15 × 80 / 1.3 = 923 m).
    *network* (default when a road network imported with ``wangge network import`` or
    ``POST /network/import`` crosses the area, and pgRouting is installed): walking
    distance along the roads, ``minutes × speed_m_per_min`` metres (no detour factor),
    from each facility snapped to its nearest road (within 200 m), computed with
    pgRouting's ``pgr_withPointsDD``; the reach is the reached street parts buffered by
    ``frontage_m`` (50 m). Where the imported network has no streets, nothing is reached.
    See :mod:`geo.reach` for why a buffer and not a concave hull.

Facilities anywhere near the area count, also those in a neighbouring community or beyond
the caller's scope: a 15-minute walk does not stop at a boundary. Their positions are
used, never returned. Care households are sensitive: the result holds counts only.

Areas are measured in the UTM zone of the analysed area's centroid (EPSG:32648 for
Guiyang). Counts agree with the polygons: a household is beyond reach when no reach
polygon covers it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Unpack

import numpy as np
import orjson
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, text

from geo.reach import (
    DEFAULT_DETOUR,
    DEFAULT_FRONTAGE_M,
    DEFAULT_MINUTES,
    WALK_SPEED_M_PER_MIN,
    UTMFrame,
    Zone,
    disc_reach_parts,
    measure_reach,
    reach_radius_m,
)
from service.analysis import GEOJSON_DIGITS, Scope, Where, area_in_scope, ratio, resolve_scope
from service.errors import UnprocessableError

__all__ = [
    "FACILITY_KINDS",
    "DEFAULT_KINDS",
    "RANK_BY",
    "AreaFrame",
    "load_area_frame",
    "load_facilities",
    "load_points",
    "check_walk",
    "parse_kinds",
    "geojson",
    "run_reach",
]

FACILITY_KINDS = ("service_hall", "service_station", "party_member_station")
#: The "one hall, five stations" deliver services; party member stations are where
#: members report for duty, so they are left out unless asked for.
DEFAULT_KINDS = ("service_hall", "service_station")
RANK_BY = ("area", "households", "units")
_M_PER_DEG = 111_320.0
# Sanity bounds of the walk parameters (clear 422s instead of absurd work).
MAX_MINUTES = 240.0
MAX_SPEED = 1_000.0
MAX_DETOUR = 5.0
MAX_FRONTAGE_M = 500.0


@dataclass
class AreaFrame:
    """The analysed area in metres: its zones (communities), outline and bounding box."""

    scope: Scope
    frame: UTMFrame
    zones: list[Zone]
    zone_levels: list[str]
    outline_m: BaseGeometry
    bbox: tuple[float, float, float, float]

    def expanded_bbox(self, metres: float) -> tuple[float, float, float, float]:
        """Return the lon/lat bounding box grown by ``metres`` on every side."""
        x0, y0, x1, y1 = self.bbox
        dlat = metres / _M_PER_DEG
        dlon = metres / (_M_PER_DEG * max(0.05, math.cos(math.radians(max(abs(y0), abs(y1))))))
        return (x0 - dlon, y0 - dlat, x1 + dlon, y1 + dlat)


def check_walk(
    *, minutes: float, speed_m_per_min: float, detour: float, frontage_m: float | None = None
) -> None:
    """Refuse walk parameters out of their bounds (422 naming the field)."""
    checks = [
        ("minutes", minutes, 0.0, MAX_MINUTES, False),
        ("speed_m_per_min", speed_m_per_min, 0.0, MAX_SPEED, False),
        ("detour", detour, 1.0, MAX_DETOUR, True),
    ]
    if frontage_m is not None:
        checks.append(("frontage_m", frontage_m, 0.0, MAX_FRONTAGE_M, True))
    for name, value, low, high, low_ok in checks:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        ok = ok and (value >= low if low_ok else value > low) and value <= high
        if not ok:
            bound = f">= {low:g}" if low_ok else f"> {low:g}"
            raise UnprocessableError(
                f"{name} must be a number {bound} and <= {high:g}, got {value!r}", field=name
            )


def parse_kinds(kinds: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """Return the facility kinds to count (default :data:`DEFAULT_KINDS`); 422 on unknown."""
    if kinds is None:
        return DEFAULT_KINDS
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    out = tuple(dict.fromkeys(kinds))
    bad = [k for k in out if k not in FACILITY_KINDS]
    if bad or not out:
        raise UnprocessableError(
            f"unknown facility kind {bad[0]!r}; one or more of {', '.join(FACILITY_KINDS)}"
            if bad
            else "give at least one facility kind",
            field="kinds",
        )
    return out


def load_area_frame(conn: Connection, scope: Scope) -> AreaFrame:
    """Return the zones of ``scope``: its communities, or the grid itself for a grid.

    A community analyses itself; a district without communities has no zones.
    """
    params = scope.params()
    if scope.level in ("community", "grid"):
        where = "a.code = :code"
        params["code"] = scope.area_code
    else:
        where = f"a.level = 'community' AND {area_in_scope()}"
    rows = conn.execute(
        text(
            "SELECT a.code, a.name, a.level, ST_AsBinary(a.geom) AS wkb FROM area a "
            f"WHERE a.generation_low <= :g AND a.generation_high >= :g AND {where} "
            "ORDER BY a.code"
        ),
        params,
    ).all()
    if rows:
        geoms = shapely.from_wkb([bytes(r.wkb) for r in rows])
        lonlat_outline = shapely.union_all(shapely.envelope(geoms))
    else:
        # No communities: frame and box of the area itself, so siting can still run.
        outline = _scope_outline(conn, scope)
        geoms = np.empty(0, dtype=object)
        lonlat_outline = outline
    frame = UTMFrame.around(lonlat_outline)
    geoms_m = frame.to_metric(geoms) if len(geoms) else []
    zones = [Zone(r.code, r.name, g) for r, g in zip(rows, geoms_m, strict=True)]
    if rows:
        outline_m = shapely.union_all(np.asarray(list(geoms_m), dtype=object))
        bbox = tuple(float(v) for v in shapely.total_bounds(geoms))
    else:
        outline_m = frame.to_metric(lonlat_outline)
        bbox = tuple(float(v) for v in lonlat_outline.bounds)
    return AreaFrame(scope, frame, zones, [r.level for r in rows], outline_m, bbox)


def _scope_outline(conn: Connection, scope: Scope) -> BaseGeometry:
    if scope.area_code is not None:
        sql = (
            "SELECT ST_AsBinary(geom) FROM area WHERE code = :code AND generation_low <= :g "
            "AND generation_high >= :g"
        )
        params = {"code": scope.area_code, "g": scope.generation}
    else:
        sql = (
            "SELECT ST_AsBinary(ST_Union(geom)) FROM area WHERE depth = 0 "
            "AND generation_low <= :g AND generation_high >= :g"
        )
        params = {"g": scope.generation}
    wkb = conn.execute(text(sql), params).scalar()
    if wkb is None:
        raise UnprocessableError("the area has no boundary to analyse", field="area")
    return shapely.from_wkb(bytes(wkb))


def load_facilities(
    conn: Connection, bbox: tuple[float, float, float, float], kinds: tuple[str, ...]
) -> np.ndarray:
    """Return the (n, 2) lon/lat of facilities of ``kinds`` in ``bbox`` (any scope)."""
    rows = conn.execute(
        text(
            "SELECT ST_X(geom) AS lon, ST_Y(geom) AS lat FROM facility "
            "WHERE kind = ANY(CAST(:kinds AS text[])) "
            "AND geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326) ORDER BY id"
        ),
        {"kinds": list(kinds), "x0": bbox[0], "y0": bbox[1], "x1": bbox[2], "y1": bbox[3]},
    ).all()
    return np.array([(r.lon, r.lat) for r in rows], dtype=float).reshape(-1, 2)


#: Point tables counted by the analyses (fixed identifiers, never from a request).
POINT_TABLES = {"households": "care_household", "units": "unit"}


def load_points(conn: Connection, area: AreaFrame, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (x_m, y_m) of the ``kind`` points ("households", "units") in the area's box.

    Positions only: no names or other details of care households leave the database.
    """
    table = POINT_TABLES[kind]
    x0, y0, x1, y1 = area.bbox
    rows = conn.execute(
        text(
            f"SELECT ST_X(geom) AS lon, ST_Y(geom) AS lat FROM {table} "
            "WHERE geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)"
        ),
        {"x0": x0, "y0": y0, "x1": x1, "y1": y1},
    ).all()
    lon = np.array([r.lon for r in rows], dtype=float)
    lat = np.array([r.lat for r in rows], dtype=float)
    return area.frame.forward(lon, lat)


def geojson(geom: BaseGeometry | None, frame: UTMFrame, simplify_m: float = 0.0) -> dict | None:
    """Return the lon/lat GeoJSON dict of a metric geometry (None when empty)."""
    if geom is None or geom.is_empty:
        return None
    if simplify_m > 0:
        geom = shapely.simplify(geom, simplify_m, preserve_topology=True)
    lonlat = frame.to_lonlat(geom)
    lonlat = shapely.transform(lonlat, lambda c: np.round(c, GEOJSON_DIGITS))
    return orjson.loads(shapely.to_geojson(lonlat))


def _use_network(
    conn: Connection, use_network: bool | None, bbox: tuple[float, float, float, float]
) -> bool:
    from service.analysis.network import network_covers, pgrouting_installed

    if use_network is False:
        return False
    covers = network_covers(conn, bbox)
    if use_network is None:
        return covers and pgrouting_installed(conn)
    if not pgrouting_installed(conn):
        raise UnprocessableError(
            "network reach needs pgRouting, which is not installed on the database server",
            field="network",
        )
    if not covers:
        raise UnprocessableError(
            "no road network has been imported in this area (POST /network/import)",
            field="network",
        )
    return True


def _counts(c: dict) -> dict[str, Any]:
    return {
        "total": c["total"],
        "uncovered": c["uncovered"],
        "uncovered_share": ratio(c["uncovered"], c["total"]),
    }


def run_reach(
    conn: Connection,
    *,
    minutes: float = DEFAULT_MINUTES,
    speed_m_per_min: float = WALK_SPEED_M_PER_MIN,
    detour: float = DEFAULT_DETOUR,
    use_network: bool | None = None,
    kinds: str | tuple[str, ...] | None = None,
    frontage_m: float = DEFAULT_FRONTAGE_M,
    rank_by: str = "area",
    geometry: bool = True,
    simplify_m: float = 0.0,
    **where: Unpack[Where],
) -> dict[str, Any]:
    """Return the service reach of the area: summary and communities ranked worst first.

    Parameters
    ----------
    conn
        A synchronous connection (nothing is written).
    **where
        ``principal``, ``area_code``, ``generation`` (:class:`~service.analysis.Where`).
    minutes, speed_m_per_min, detour
        The walk: ``minutes`` at ``speed_m_per_min``; straight-line distances are divided
        by ``detour``.
    use_network
        None: along the road network when one is imported here (and pgRouting is
        installed), else straight line; True: network (422 if there is none); False:
        straight line.
    kinds
        Facility kinds that serve (default service halls and service stations).
    frontage_m
        Network reach: how far from a reached street one is still served.
    rank_by
        "area" (default), "households" or "units": which uncovered share ranks first.
    geometry, simplify_m
        Whether to return the uncovered polygons, and a simplification tolerance.

    Returns
    -------
    dict
        ``area``, ``parameters``, ``summary`` (totals over the communities: areas in m²,
        households and units with their uncovered counts and shares) and ``items``: one
        per community, worst first, each with ``geometry`` (the uncovered part,
        GeoJSON in EPSG:4326, or None when fully covered).
    """
    check_walk(
        minutes=minutes, speed_m_per_min=speed_m_per_min, detour=detour, frontage_m=frontage_m
    )
    kinds = parse_kinds(kinds)
    if rank_by not in RANK_BY:
        raise UnprocessableError(
            f"rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}", field="rank_by"
        )
    if not (math.isfinite(simplify_m) and 0 <= simplify_m <= 1000):
        raise UnprocessableError("simplify_m must be between 0 and 1000", field="simplify_m")
    scope = resolve_scope(conn, **where)
    area = load_area_frame(conn, scope)
    network = _use_network(conn, use_network, area.expanded_bbox(0.0)) if area.zones else False

    parameters: dict[str, Any] = {
        "minutes": minutes,
        "speed_m_per_min": speed_m_per_min,
        "distance": "network" if network else "straight_line",
        "facility_kinds": list(kinds),
        "area_crs": f"EPSG:{area.frame.epsg}",
        "rank_by": rank_by,
    }
    summary: dict[str, Any] = {}
    if network:
        from service.analysis.network import reach_along_network

        walk_m = minutes * speed_m_per_min
        facilities = load_facilities(conn, area.expanded_bbox(walk_m), kinds)
        parts, stats = reach_along_network(
            conn,
            frame=area.frame,
            facilities_lonlat=facilities,
            walk_m=walk_m,
            bbox=area.expanded_bbox(walk_m),
            frontage_m=frontage_m,
        )
        parameters.update(walk_m=walk_m, frontage_m=frontage_m, engine="pgr_withPointsDD")
        summary["network"] = stats
    else:
        radius = reach_radius_m(minutes, speed_m_per_min, detour)
        facilities = load_facilities(conn, area.expanded_bbox(radius), kinds)
        fx, fy = area.frame.forward(facilities[:, 0], facilities[:, 1])
        parts = disc_reach_parts(fx, fy, radius)
        parameters.update(detour=detour, radius_m=round(radius, 1))

    points = {kind: load_points(conn, area, kind) for kind in POINT_TABLES}
    measured = measure_reach(area.zones, parts, points)
    simplify = simplify_m if geometry else None
    items = _ranked_items(measured, area, rank_by=rank_by, simplify_m=simplify)
    summary = {**_totals(items, facilities=int(len(facilities))), **summary}
    if not items:
        summary["note"] = "the area has no communities to analyse"
    return {"area": scope.as_dict(), "parameters": parameters, "summary": summary, "items": items}


def _ranked_items(
    measured: list[dict], area, *, rank_by: str, simplify_m: float | None
) -> list[dict[str, Any]]:
    """Return one item per measured community, worst first by ``rank_by``'s uncovered share
    (then uncovered area, then code); with the uncovered part's GeoJSON unless
    ``simplify_m`` is None."""
    items = []
    for m, level in zip(measured, area.zone_levels, strict=True):
        uncovered = m["uncovered_m"]
        items.append(
            {
                "code": m["code"],
                "name": m["name"],
                "level": level,
                "area_m2": round(m["area_m2"], 1),
                "uncovered_area_m2": round(m["uncovered_area_m2"], 1),
                "uncovered_share": ratio(m["uncovered_area_m2"], m["area_m2"]) or 0.0,
                "households": _counts(m["counts"]["households"]),
                "units": _counts(m["counts"]["units"]),
                "geometry": None
                if simplify_m is None
                else geojson(uncovered, area.frame, simplify_m),
            }
        )

    def share(item: dict) -> float:
        if rank_by == "area":
            return item["uncovered_share"]
        return item[rank_by]["uncovered_share"] or 0.0

    items.sort(key=lambda i: (-share(i), -i["uncovered_area_m2"], i["code"]))
    for rank, item in enumerate(items, 1):
        item["rank"] = rank
    return items


def _totals(items: list[dict[str, Any]], *, facilities: int) -> dict[str, Any]:
    """Return the reach summary over the communities: areas, households and units."""
    area_total = sum(i["area_m2"] for i in items)
    area_un = sum(i["uncovered_area_m2"] for i in items)
    return {
        "communities": len(items),
        "fully_covered": sum(1 for i in items if i["uncovered_area_m2"] == 0),
        "facilities": facilities,
        "area_m2": round(area_total, 1),
        "uncovered_area_m2": round(area_un, 1),
        "uncovered_share": ratio(area_un, area_total) or 0.0,
        **{
            kind: {
                "total": sum(i[kind]["total"] for i in items),
                "uncovered": sum(i[kind]["uncovered"] for i in items),
                "uncovered_share": ratio(
                    sum(i[kind]["uncovered"] for i in items), sum(i[kind]["total"] for i in items)
                ),
            }
            for kind in POINT_TABLES
        },
    }
