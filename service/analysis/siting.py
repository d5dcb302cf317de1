"""Facility siting: where k new service facilities reach most households (or cover all).

Candidates are either supplied (lon/lat points inside the area, at most 2,000) or laid on a
square lattice inside the area (``spacing_m``; by default the finest spacing, not below
100 m, that gives at most 2,000 candidates able to reach some uncovered demand). Demand is
care households (default), units, or both, each weighing 1; more than 5,000 demand
points are summed into lattice cells (see :mod:`geo.siting`). Distance is the straight
line divided by the detour factor, as in the reach analysis (network distances are not
used for siting).

MCLP (``k``) chooses the k candidates that add most covered demand to what existing
facilities already cover; LSCP (``lscp``) the fewest candidates that cover all demand any
candidate can reach. Both are solved by ``spopt.locate`` with PuLP (HiGHS, else CBC).
Coverage is reported before (existing facilities) and after (existing + new), for
households and units, and the chosen sites come back as GeoJSON points with what each
adds (ordered by that).
"""

from __future__ import annotations

import math
from typing import Any, Unpack

import numpy as np
import shapely
from sqlalchemy import Connection

from geo.reach import DEFAULT_DETOUR, DEFAULT_MINUTES, WALK_SPEED_M_PER_MIN, reach_radius_m
from geo.siting import (
    MAX_CANDIDATES,
    MAX_DEMAND_POINTS,
    SitingError,
    aggregate_demand,
    candidate_lattice,
    covered_by,
    site_facilities,
)
from service.analysis import GEOJSON_DIGITS, Where, ratio, resolve_scope
from service.analysis.reach import (
    check_walk,
    load_area_frame,
    load_facilities,
    load_points,
    parse_kinds,
)
from service.errors import UnprocessableError

__all__ = ["DEMANDS", "MAX_K", "run_siting"]

DEMANDS = ("households", "units", "both")
#: More new facilities than this in one run is not a siting question any more.
MAX_K = 100
MIN_SPACING_M = 50.0


def _parse_candidates(candidates: Any, crs: str = "EPSG:4326") -> np.ndarray:
    """Return (n, 2) WGS84 lon/lat of candidates given as [[lon, lat], …] or [{"lon", "lat"}, …]."""
    from geo.coords import CoordinateError, parse_input_crs, to_wgs84, validate_point

    try:
        crs = parse_input_crs(crs)
    except ValueError as exc:
        raise UnprocessableError(str(exc), field="crs") from None

    if not isinstance(candidates, (list, tuple)):
        raise UnprocessableError("candidates is a list of [lon, lat] points", field="candidates")
    if not candidates:
        raise UnprocessableError("candidates is empty", field="candidates")
    if len(candidates) > MAX_CANDIDATES:
        raise UnprocessableError(
            f"{len(candidates):,} candidates; at most {MAX_CANDIDATES:,} are accepted",
            field="candidates",
        )
    out = np.empty((len(candidates), 2))
    for i, c in enumerate(candidates):
        try:
            if isinstance(c, dict):
                lon, lat = float(c["lon"]), float(c["lat"])
            else:
                lon, lat = (float(v) for v in c)
            validate_point(lon, lat, crs)
        except CoordinateError as exc:
            raise UnprocessableError(f"candidates[{i}]: {exc}", field=f"candidates[{i}]") from None
        except (KeyError, TypeError, ValueError):
            raise UnprocessableError(
                f"candidates[{i}] is not a [lon, lat] point", field=f"candidates[{i}]"
            ) from None
        out[i] = lon, lat
    lon, lat = to_wgs84(out[:, 0], out[:, 1], crs)
    return np.column_stack([lon, lat])


def _feature(item: dict[str, Any]) -> dict[str, Any]:
    """Return a chosen site (an item) as a GeoJSON Feature."""
    properties = {key: value for key, value in item.items() if key != "geometry"}
    return {"type": "Feature", "geometry": item["geometry"], "properties": properties}


def run_siting(
    conn: Connection,
    *,
    k: int | None = None,
    lscp: bool = False,
    candidates: list | None = None,
    candidates_crs: str = "EPSG:4326",
    spacing_m: float | None = None,
    minutes: float = DEFAULT_MINUTES,
    speed_m_per_min: float = WALK_SPEED_M_PER_MIN,
    detour: float = DEFAULT_DETOUR,
    demand: str = "households",
    kinds: str | tuple[str, ...] | None = None,
    **where: Unpack[Where],
) -> dict[str, Any]:
    """Return the sites for new facilities in the area and the coverage they bring.

    Parameters
    ----------
    conn, **where
        As for :func:`service.analysis.reach.run_reach` (404 outside the caller's scope).
    k, lscp
        Exactly one: ``k`` new facilities maximising covered demand (MCLP, 1 ≤ k ≤ 100),
        or ``lscp=True`` for the fewest covering all reachable demand.
    candidates
        Candidate sites as [[lon, lat], …] inside the area (at most 2,000); default a
        lattice.
    candidates_crs
        CRS of the candidates: EPSG:4326 (default), EPSG:4490, GCJ-02 or BD-09.
    spacing_m
        Lattice spacing (≥ 50 m; default automatic). Ignored with ``candidates``.
    minutes, speed_m_per_min, detour
        The walk: coverage radius = minutes × speed / detour.
    demand
        "households" (care households, default), "units", or "both" (each weighs 1).
    kinds
        Kinds of existing facility that already serve (default halls and stations).

    Returns
    -------
    dict
        ``area``, ``parameters``, ``summary`` (coverage before and after, for the demand
        and for households and units), ``items`` (the chosen sites, best first, each with
        a Point ``geometry``) and ``sites`` (the same as a GeoJSON FeatureCollection).
    """
    _check_options(k=k, lscp=lscp, spacing_m=spacing_m, demand=demand)
    check_walk(minutes=minutes, speed_m_per_min=speed_m_per_min, detour=detour)
    kinds = parse_kinds(kinds)
    supplied = _parse_candidates(candidates, candidates_crs) if candidates is not None else None

    scope = resolve_scope(conn, **where)
    area = load_area_frame(conn, scope)
    radius = reach_radius_m(minutes, speed_m_per_min, detour)
    frame = area.frame
    outline = area.outline_m
    shapely.prepare(outline)

    counted = {kind: _points_inside(conn, area, kind) for kind in ("households", "units")}
    existing = load_facilities(conn, area.expanded_bbox(radius), kinds)
    ex, ey = frame.forward(existing[:, 0], existing[:, 1])

    kinds_in_demand = ("households", "units") if demand == "both" else (demand,)
    dx = np.concatenate([counted[kd][0] for kd in kinds_in_demand])
    dy = np.concatenate([counted[kd][1] for kd in kinds_in_demand])
    model_x, model_y, model_w, cell_m = aggregate_demand(
        dx, dy, np.ones(len(dx)), max_points=MAX_DEMAND_POINTS
    )

    if supplied is not None:
        cx, cy = _supplied_in_area(supplied, frame, outline, scope.area_code)
        spacing_used, source = None, "supplied"
    else:
        uncovered = ~covered_by(model_x, model_y, ex, ey, radius)
        near = (model_x[uncovered], model_y[uncovered], radius)
        cx, cy, spacing_used = _lattice(outline, spacing_m=spacing_m, near=near)
        source = "lattice"

    try:
        result = site_facilities(
            model_x,
            model_y,
            model_w,
            cx,
            cy,
            radius,
            k=None if lscp else int(k),
            lscp=lscp,
            existing_x=ex,
            existing_y=ey,
        )
    except SitingError as exc:
        raise UnprocessableError(str(exc), field=exc.field or "k") from None

    chosen_x, chosen_y = cx[result.chosen], cy[result.chosen]
    items = _site_items(result, area, chosen_x, chosen_y)
    chosen = (np.concatenate([ex, chosen_x]), np.concatenate([ey, chosen_y]))
    coverage = {
        kind: _coverage(points, (ex, ey), chosen, radius) for kind, points in counted.items()
    }
    summary = {
        **_result_summary(result, demand=demand),
        "existing_facilities": int(len(existing)),
        "candidates": int(len(cx)),
        "demand_points": int(len(model_x)),
        "model": result.model,
        **coverage,
    }
    if result.note:
        summary["note"] = result.note
    parameters = {
        "k": k,
        "lscp": lscp,
        "minutes": minutes,
        "speed_m_per_min": speed_m_per_min,
        "detour": detour,
        "radius_m": round(radius, 1),
        "distance": "straight_line",
        "demand": demand,
        "facility_kinds": list(kinds),
        "candidates": source,
        "spacing_m": None if spacing_used is None else round(spacing_used, 1),
        "demand_cell_m": None if cell_m is None else round(cell_m, 1),
        "solver": result.solver,
        "area_crs": f"EPSG:{frame.epsg}",
    }
    return {
        "area": scope.as_dict(),
        "parameters": parameters,
        "summary": summary,
        "items": items,
        "sites": {"type": "FeatureCollection", "features": [_feature(it) for it in items]},
    }


def _check_options(*, k: Any, lscp: bool, spacing_m: Any, demand: str) -> None:
    """Refuse (422, naming the parameter) a siting question that cannot be asked."""
    if lscp and k is not None:
        raise UnprocessableError("give k (maximal covering) or lscp, not both", field="lscp")
    if not lscp and k is None:
        raise UnprocessableError(
            "give k, the number of new facilities (or lscp for the fewest covering all)",
            field="k",
        )
    if k is not None and (isinstance(k, bool) or int(k) != k or not 1 <= k <= MAX_K):
        raise UnprocessableError(f"k must be an integer from 1 to {MAX_K}, got {k!r}", field="k")
    if spacing_m is not None and not (
        isinstance(spacing_m, (int, float))
        and math.isfinite(spacing_m)
        and MIN_SPACING_M <= spacing_m <= 50_000
    ):
        raise UnprocessableError(
            f"spacing_m must be between {MIN_SPACING_M:g} and 50000 metres", field="spacing_m"
        )
    if demand not in DEMANDS:
        raise UnprocessableError(
            f"demand must be one of {', '.join(DEMANDS)}, got {demand!r}", field="demand"
        )


def _points_inside(conn: Connection, area, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the metric x, y of the ``kind`` points (households, units) inside the area
    (its communities; the area itself when it has none)."""
    x, y = load_points(conn, area, kind)
    outline = area.outline_m
    inside = shapely.contains_xy(outline, x, y) | shapely.intersects_xy(outline, x, y)
    return x[inside], y[inside]


def _lattice(outline, *, spacing_m: float | None, near) -> tuple[np.ndarray, np.ndarray, float]:
    """Return candidates on a lattice inside ``outline`` near the uncovered demand, and the
    spacing used (422 naming the parameter when no lattice fits)."""
    try:
        return candidate_lattice(
            outline, spacing_m=spacing_m, max_candidates=MAX_CANDIDATES, near=near
        )
    except SitingError as exc:
        raise UnprocessableError(str(exc), field=exc.field or "spacing_m") from None


def _result_summary(result, *, demand: str) -> dict[str, Any]:
    """Return the solved model's figures: method, sites, demand covered before and after."""
    return {
        "method": result.method,
        "new_sites": len(result.chosen),
        "demand": demand,
        "demand_total": round(result.total, 3),
        "covered_before": round(result.covered_before, 3),
        "covered_after": round(result.covered_after, 3),
        "share_before": ratio(result.covered_before, result.total),
        "share_after": ratio(result.covered_after, result.total),
        "added": round(result.covered_after - result.covered_before, 3),
        "unreachable": round(result.unreachable, 3),
    }


def _supplied_in_area(
    supplied: np.ndarray, frame, outline, area_code: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the supplied candidates in the area's metric frame; refuse one outside it."""
    cx, cy = frame.forward(supplied[:, 0], supplied[:, 1])
    inside = shapely.intersects_xy(outline, cx, cy)
    if not inside.all():
        i = int(np.flatnonzero(~inside)[0])
        raise UnprocessableError(
            f"candidates[{i}] lies outside area {area_code or 'in scope'}",
            field=f"candidates[{i}]",
        )
    return cx, cy


def _site_items(result, area, x: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    """Return the chosen sites (metric ``x``, ``y``), best first, with what each adds."""
    lon, lat = area.frame.inverse(x, y)
    zone_of = _zone_codes(area, x, y)
    return [
        {
            "rank": rank + 1,
            "candidate": int(i),
            "community_code": zone_of[rank],
            "adds": round(float(g), 3),
            "adds_share": ratio(float(g), result.total),
            "geometry": {
                "type": "Point",
                "coordinates": [
                    round(float(lon[rank]), GEOJSON_DIGITS),
                    round(float(lat[rank]), GEOJSON_DIGITS),
                ],
            },
        }
        for rank, (i, g) in enumerate(zip(result.chosen, result.gains, strict=True))
    ]


def _coverage(points, before, after, radius: float) -> dict[str, Any]:
    """Return how many of ``points`` (x, y) facilities at ``before`` and at ``after`` reach."""
    x, y = points
    covered_before = int(covered_by(x, y, *before, radius).sum())
    covered_after = int(covered_by(x, y, *after, radius).sum())
    return {
        "total": int(len(x)),
        "covered_before": covered_before,
        "covered_after": covered_after,
        "share_before": ratio(covered_before, len(x)),
        "share_after": ratio(covered_after, len(x)),
    }


def _zone_codes(area, x: np.ndarray, y: np.ndarray) -> list[str | None]:
    from geo.reach import assign_points_to_zones

    idx = assign_points_to_zones([z.geom_m for z in area.zones], x, y)
    return [area.zones[i].code if i >= 0 else None for i in idx]
