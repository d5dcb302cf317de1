"""Partition topology: do the children of every parent area tile it?

For each parent in the analysed area (city → districts, district → communities, community →
grids) the findings are, worst first:

``gap`` / ``overlap`` / ``outside``
    a piece of the parent no child covers; a piece two siblings both cover (``codes``: the
    pair); a piece of a child beyond its parent (``codes``: the child). Each is a polygon
    with its area in m² (and mean width, 2·area/perimeter, which tells a thin seam from a
    missing block);
``multipart``
    a child made of several disjoint polygons (``part_areas_m2``, largest first;
    ``area_m2`` is what lies apart from the largest part);
``sliver``
    a gap, overlap or outside piece (``of``) smaller than ``min_sliver_m2`` (default 100 m²).

How it is computed, and why so
------------------------------
Boundaries are stored as planar lon/lat polygons and the partitions are exact in that
plane: children split a parent's long straight edge at new vertices that lie on the
lon/lat-straight line. A lon/lat-straight edge bends in any projection, so

* the set operations (union, difference, intersection) run in the stored lon/lat plane,
  where an exact partition leaves nothing but floating-point dust (~1e-16 deg²). Pieces
  whose planar area is below ``NOISE_M2`` (converted to deg²) are that dust and dropped;
* areas are only *measured* in a projected CRS: the UTM zone of the parent's centroid
  (EPSG:32600 + zone north of the equator, 32700 + zone south, zone = ⌊(lon + 180)/6⌋ + 1;
  Guiyang is EPSG:32648). Even measuring needs care: a dust triangle spanning a 13 km edge
  has ~0 area in lon/lat but ~10,000 m² once its three vertices are transformed, as the
  transformed long edge is a chord of the curve the other two edges follow. So each
  piece is ``ST_Segmentize``d to ``SEGMENT_DEG`` (1e-4°, about 10 m) before
  ``ST_Transform``: a 10 m chord departs from the projected curve by micrometres.

Cost: one ``ST_Union`` and one ``ST_Difference`` per parent; the pairwise overlap search and
the per-child outside test run only for parents whose children's areas do not add up
(Σ child areas − union area) or whose union reaches beyond the parent.
"""

from __future__ import annotations

from typing import Any, Unpack

from sqlalchemy import Connection, text

from service.analysis import (
    Scope,
    Where,
    area_in_scope,
    geometry_json,
    parse_geometry,
    resolve_scope,
)
from service.errors import UnprocessableError

__all__ = [
    "DEFAULT_MIN_SLIVER_M2",
    "NOISE_M2",
    "SEGMENT_DEG",
    "find_partition_defects",
    "find_multipart_children",
    "run_topology",
]

DEFAULT_MIN_SLIVER_M2 = 100.0
#: Pieces smaller than this (a 10 cm square) are floating-point dust of exact partitions.
NOISE_M2 = 0.01
#: Square metres per square degree at the equator: converts NOISE_M2 into planar deg²
#: (conservative: a square degree shrinks by cos(latitude) away from the equator).
_M2_PER_DEG2 = 111_320.0**2
#: Densification before projecting a piece to measure it (degrees, about 10 m).
SEGMENT_DEG = 1e-4
_ORDER = {"gap": 0, "overlap": 0, "outside": 0, "multipart": 1, "sliver": 2}

# Parents in scope (with the EPSG code of the UTM zone of their centroid) and their children.
_PARENTS = """
parents AS (
    SELECT p.code, p.name, p.level, p.geom, p.area_m2,
           (CASE WHEN ST_Y(c.pt) >= 0 THEN 32600 ELSE 32700 END)
             + least(60, greatest(1, floor((ST_X(c.pt) + 180) / 6)::int + 1)) AS utm
    FROM area p CROSS JOIN LATERAL (SELECT ST_Centroid(p.geom) AS pt) c
    WHERE p.depth < 3 AND p.generation_low <= :g AND p.generation_high >= :g
      AND {in_scope}
),
kids AS (
    SELECT k.code, k.parent_code, k.geom
    FROM area k JOIN parents p ON p.code = k.parent_code
    WHERE k.generation_low <= :g AND k.generation_high >= :g
)"""

# Measured in the parent's UTM zone after densifying (see the module docstring).
_MEASURE = "ST_Transform(ST_Segmentize({geom}, CAST(:seg AS float8)), {srid})"

_PARENT_ROWS_SQL = (
    "WITH "
    + _PARENTS
    + """
SELECT p.code, p.name, p.level, p.utm, p.area_m2, count(k.code) AS children
FROM parents p LEFT JOIN kids k ON k.parent_code = p.code
GROUP BY p.code, p.name, p.level, p.utm, p.area_m2
ORDER BY p.code
"""
)

_DEFECTS_SQL = (
    "WITH "
    + _PARENTS
    + """,
cover AS (
    SELECT parent_code, ST_Union(geom) AS u, sum(ST_Area(geom)) AS sum_a
    FROM kids GROUP BY parent_code
),
checked AS (
    SELECT p.code, p.utm, p.geom, ST_Difference(p.geom, c.u) AS gap,
           ST_Area(ST_Difference(c.u, p.geom)) > :noise AS reaches_out,
           c.sum_a - ST_Area(c.u) > :noise AS overlapping
    FROM parents p JOIN cover c ON c.parent_code = p.code
),
pieces AS (
    SELECT 'gap' AS defect, ch.code AS parent_code, ch.utm, NULL::text[] AS codes, d.geom
    FROM checked ch CROSS JOIN LATERAL ST_Dump(ST_CollectionExtract(ch.gap, 3)) d
    UNION ALL
    SELECT 'outside', ch.code, ch.utm, ARRAY[k.code], d.geom
    FROM checked ch JOIN kids k ON k.parent_code = ch.code
    CROSS JOIN LATERAL ST_Dump(ST_CollectionExtract(ST_Difference(k.geom, ch.geom), 3)) d
    WHERE ch.reaches_out
    UNION ALL
    SELECT 'overlap', ch.code, ch.utm, ARRAY[a.code, b.code], d.geom
    FROM checked ch
    JOIN kids a ON a.parent_code = ch.code
    JOIN kids b ON b.parent_code = ch.code AND a.code < b.code AND a.geom && b.geom
    CROSS JOIN LATERAL ST_Dump(ST_CollectionExtract(ST_Intersection(a.geom, b.geom), 3)) d
    WHERE ch.overlapping AND ST_Relate(a.geom, b.geom, 'T********')
),
real AS (
    SELECT pc.*, {measure} AS m FROM pieces pc WHERE ST_Area(pc.geom) > :noise
)
SELECT r.defect, r.parent_code, r.utm,
       CASE WHEN r.defect = 'gap' THEN
           ARRAY(SELECT k.code FROM kids k WHERE k.parent_code = r.parent_code
                 AND k.geom && r.geom AND ST_Intersects(k.geom, r.geom) ORDER BY k.code)
       ELSE r.codes END AS codes,
       ST_Area(r.m) AS area_m2, ST_Perimeter(r.m) AS perimeter_m,
       {geometry} AS geometry
FROM real r
"""
)

_MULTIPART_SQL = (
    "WITH "
    + _PARENTS
    + """
SELECT k.code, k.parent_code, p.utm,
       array_agg(ST_Area({measure}) ORDER BY ST_Area(d.geom) DESC) AS part_areas,
       {geometry} AS geometry
FROM kids k JOIN parents p ON p.code = k.parent_code
CROSS JOIN LATERAL ST_Dump(k.geom) d
WHERE ST_NumGeometries(k.geom) > 1
GROUP BY k.code, k.parent_code, p.utm, k.geom
"""
)


def find_partition_defects(
    conn: Connection, *, scope: Scope, min_sliver_m2: float, geometry: bool = True
) -> list[dict[str, Any]]:
    """Return gap, overlap, outside and sliver pieces of every parent in scope."""
    sql = _DEFECTS_SQL.format(
        in_scope=area_in_scope("p"),
        measure=_MEASURE.format(geom="pc.geom", srid="pc.utm"),
        geometry=geometry_json("r.geom", geometry),
    )
    params = {**scope.params(), "noise": NOISE_M2 / _M2_PER_DEG2, "seg": SEGMENT_DEG}
    items = []
    for r in conn.execute(text(sql), params):
        if r.area_m2 < NOISE_M2:
            continue
        item: dict[str, Any] = {
            "kind": r.defect if r.area_m2 >= min_sliver_m2 else "sliver",
            "parent_code": r.parent_code,
            "codes": list(r.codes or []),
            "area_m2": round(r.area_m2, 2),
            "mean_width_m": round(2 * r.area_m2 / r.perimeter_m, 3) if r.perimeter_m else 0.0,
            "utm_epsg": r.utm,
            "geometry": parse_geometry(r.geometry),
        }
        if item["kind"] == "sliver":
            item["of"] = r.defect
        items.append(item)
    return items


def find_multipart_children(
    conn: Connection, *, scope: Scope, geometry: bool = True
) -> list[dict[str, Any]]:
    """Return children (of parents in scope) made of more than one polygon."""
    sql = _MULTIPART_SQL.format(
        in_scope=area_in_scope("p"),
        measure=_MEASURE.format(geom="d.geom", srid="p.utm"),
        geometry=geometry_json("k.geom", geometry),
    )
    items = []
    for r in conn.execute(text(sql), {**scope.params(), "seg": SEGMENT_DEG}):
        parts = [round(a, 2) for a in r.part_areas]
        items.append(
            {
                "kind": "multipart",
                "parent_code": r.parent_code,
                "codes": [r.code],
                "parts": len(parts),
                "part_areas_m2": parts,
                # What lies apart from the main body: the size of the problem.
                "area_m2": round(sum(parts[1:]), 2),
                "utm_epsg": r.utm,
                "geometry": parse_geometry(r.geometry),
            }
        )
    return items


def _per_parent(parents, items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return each parent's defects summed up: areas of gaps, overlaps and outside pieces,
    counts of slivers and multipart children."""
    per_parent: dict[str, dict[str, Any]] = {}
    for p in parents:
        per_parent[p.code] = {
            "code": p.code,
            "name": p.name,
            "level": p.level,
            "children": p.children,
            "utm_epsg": p.utm,
            "gap_m2": 0.0,
            "overlap_m2": 0.0,
            "outside_m2": 0.0,
            "slivers": 0,
            "multipart": 0,
        }
    for i in items:
        row = per_parent[i["parent_code"]]
        if i["kind"] in ("gap", "overlap", "outside"):
            row[f"{i['kind']}_m2"] = round(row[f"{i['kind']}_m2"] + i["area_m2"], 2)
        elif i["kind"] == "sliver":
            row["slivers"] += 1
        else:
            row["multipart"] += 1
    return per_parent


def run_topology(
    conn: Connection,
    *,
    min_sliver_m2: float = DEFAULT_MIN_SLIVER_M2,
    geometry: bool = True,
    **where: Unpack[Where],
) -> dict[str, Any]:
    """Return, per parent area in scope, whether its children tile it, with ranked defects."""
    if not min_sliver_m2 >= 0 or min_sliver_m2 == float("inf"):
        raise UnprocessableError("min_sliver_m2 must be a finite number ≥ 0", field="min_sliver_m2")
    scope = resolve_scope(conn, **where)
    parents = conn.execute(
        text(_PARENT_ROWS_SQL.format(in_scope=area_in_scope("p"))), scope.params()
    ).all()
    items = find_partition_defects(
        conn, scope=scope, min_sliver_m2=min_sliver_m2, geometry=geometry
    )
    items += find_multipart_children(conn, scope=scope, geometry=geometry)
    items.sort(key=lambda i: (_ORDER[i["kind"]], -i["area_m2"], i["parent_code"], i["codes"]))

    per_parent = _per_parent(parents, items)
    defective = [
        r
        for r in per_parent.values()
        if r["gap_m2"] or r["overlap_m2"] or r["outside_m2"] or r["slivers"] or r["multipart"]
    ]

    def total(kind: str) -> dict[str, Any]:
        found = [i for i in items if i["kind"] == kind]
        return {"count": len(found), "area_m2": round(sum(i["area_m2"] for i in found), 2)}

    divided = [r for r in per_parent.values() if r["children"]]
    summary = {
        "parents_checked": len(divided),
        "parents_tiled": len(divided) - len(defective),
        "parents_with_defects": len(defective),
        # Parents without any child (e.g. a county not yet cut into communities): nothing to
        # tile, listed rather than reported as one big gap.
        "undivided": [r["code"] for r in per_parent.values() if not r["children"]],
        "gaps": total("gap"),
        "overlaps": total("overlap"),
        "outside": total("outside"),
        "slivers": total("sliver"),
        "multipart": total("multipart"),
        "by_parent": sorted(
            defective,
            key=lambda r: (-(r["gap_m2"] + r["overlap_m2"] + r["outside_m2"]), r["code"]),
        ),
    }
    return {
        "area": scope.as_dict(),
        "parameters": {
            "min_sliver_m2": min_sliver_m2,
            "noise_m2": NOISE_M2,
            "measured_in": "UTM zone of each parent's centroid (EPSG:326xx north, 327xx south), "
            f"pieces densified to {SEGMENT_DEG}° before projecting; "
            "set operations in the stored lon/lat plane",
        },
        "summary": summary,
        "items": items,
    }
