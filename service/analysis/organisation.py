"""Party organisation coverage of stationed units ("no place without an organisation").

Findings, worst first:

``grid_without_party_branch``
    a grid where no unit has a party branch (``party_org`` branch, general_branch or
    committee); a grid with no unit at all counts too (``units`` = 0);
``large_unit_without_co_building``
    a unit with ``staff`` ≥ ``min_staff`` (default 50) and no co-building agreement;
``units_without_party_org``
    per community (``level`` community) and per grid (``level`` grid): how many units have
    no party organisation (``party_org`` = none), and their share.
"""

from __future__ import annotations

from typing import Any, Unpack

from sqlalchemy import Connection, text

from service.analysis import (
    Where,
    area_in_scope,
    geometry_json,
    located,
    parse_geometry,
    ratio,
    resolve_scope,
)
from service.errors import UnprocessableError

__all__ = ["DEFAULT_MIN_STAFF", "BRANCH_ORGS", "run_organisation"]

DEFAULT_MIN_STAFF = 50
#: Party organisations that count as a branch (a party group alone does not).
BRANCH_ORGS = ("branch", "general_branch", "committee")
_ORDER = {"grid_without_party_branch": 0, "large_unit_without_co_building": 1}
_UNIT_COLUMNS = ("id", "name", "kind", "party_org", "staff", "co_building", "geom")

# Per grid (every grid of the generation in scope, with or without units) and per community.
_COVERAGE_SQL = """
WITH u AS (
    SELECT t.grid_code, t.community_code, t.party_org
    FROM {units} t WHERE {in_scope_units}
),
per_grid AS (
    SELECT grid_code, count(*) AS units,
           count(*) FILTER (WHERE party_org = 'none') AS without_org,
           count(*) FILTER (WHERE party_org = ANY(CAST(:branch AS text[]))) AS branches
    FROM u GROUP BY grid_code
),
areas AS (
    SELECT a.code, a.name, a.level, a.parent_code, a.geom FROM area a
    WHERE a.depth IN (2, 3) AND a.generation_low <= :g AND a.generation_high >= :g
      AND {in_scope_areas}
),
per_community AS (
    SELECT community_code, count(*) AS units,
           count(*) FILTER (WHERE party_org = 'none') AS without_org,
           count(*) FILTER (WHERE party_org = ANY(CAST(:branch AS text[]))) AS branches
    FROM u GROUP BY community_code
)
SELECT a.code, a.name, a.level, a.parent_code,
       coalesce(g.units, c.units, 0) AS units,
       coalesce(g.without_org, c.without_org, 0) AS without_org,
       coalesce(g.branches, c.branches, 0) AS branches,
       CASE WHEN coalesce(g.without_org, c.without_org, 0) > 0
              OR (a.level = 'grid' AND coalesce(g.branches, 0) = 0)
            THEN {geometry} END AS geometry
FROM areas a
LEFT JOIN per_grid g ON a.level = 'grid' AND g.grid_code = a.code
LEFT JOIN per_community c ON a.level = 'community' AND c.community_code = a.code
ORDER BY a.code
"""

_TOTALS_SQL = """
SELECT count(*) AS units,
       count(*) FILTER (WHERE t.party_org = 'none') AS without_org,
       count(*) FILTER (WHERE t.party_org = ANY(CAST(:branch AS text[]))) AS with_branch,
       count(*) FILTER (WHERE t.grid_code IS NULL) AS outside_grids,
       count(*) FILTER (WHERE t.staff >= :min_staff) AS large
FROM {units} t WHERE {in_scope_units}
"""

_LARGE_SQL = """
SELECT t.id, t.name, t.kind, t.party_org, t.staff, t.grid_code, t.community_code,
       {geometry} AS geometry
FROM {units} t
WHERE t.staff >= :min_staff AND NOT t.co_building AND {in_scope_units}
ORDER BY t.staff DESC, t.id
"""


def run_organisation(
    conn: Connection,
    *,
    min_staff: int = DEFAULT_MIN_STAFF,
    geometry: bool = True,
    **where: Unpack[Where],
) -> dict[str, Any]:
    """Return party-organisation and co-building coverage of units, ranked findings."""
    if not isinstance(min_staff, int) or min_staff < 1:
        raise UnprocessableError("min_staff must be a whole number ≥ 1", field="min_staff")
    scope = resolve_scope(conn, **where)
    units = located("unit", _UNIT_COLUMNS, scope=scope)
    params = {**scope.params(), "branch": list(BRANCH_ORGS), "min_staff": min_staff}
    coverage = conn.execute(
        text(
            _COVERAGE_SQL.format(
                units=units,
                in_scope_units=area_in_scope("t", "area_path"),
                in_scope_areas=area_in_scope("a"),
                geometry=geometry_json("a.geom", geometry),
            )
        ),
        params,
    ).all()
    large = conn.execute(
        text(
            _LARGE_SQL.format(
                units=units,
                in_scope_units=area_in_scope("t", "area_path"),
                geometry=geometry_json("t.geom", geometry),
            )
        ),
        params,
    ).all()

    grids = [r for r in coverage if r.level == "grid"]
    communities = [r for r in coverage if r.level == "community"]
    items, shares = _coverage_findings(coverage)
    items.extend(_large_unit_finding(r) for r in large)
    # Grids without a branch: those with most unorganised units first; large units: by staff.
    items.sort(
        key=lambda i: (
            _ORDER[i["kind"]],
            -(i.get("without_org") or i.get("staff") or 0),
            i.get("code") or "",
        )
    )
    # Shares: communities before grids, most unorganised units first.
    shares.sort(key=lambda i: (i["level"] != "community", -i["without_org"], i["code"]))
    items.extend(shares)

    totals = conn.execute(
        text(_TOTALS_SQL.format(units=units, in_scope_units=area_in_scope("t", "area_path"))),
        params,
    ).one()
    summary = {
        "units": totals.units,
        "units_without_org": totals.without_org,
        "share_without_org": ratio(totals.without_org, totals.units),
        "units_with_branch": totals.with_branch,
        "units_outside_grids": totals.outside_grids,
        "grids": len(grids),
        "grids_without_party_branch": sum(
            1 for i in items if i["kind"] == "grid_without_party_branch"
        ),
        "grids_without_units": sum(1 for r in grids if r.units == 0),
        "communities": len(communities),
        "communities_with_units_without_org": sum(1 for r in communities if r.without_org),
        "large_units": totals.large,
        "large_units_without_co_building": len(large),
    }
    return {
        "area": scope.as_dict(),
        "parameters": {"min_staff": min_staff, "branch_orgs": list(BRANCH_ORGS)},
        "summary": summary,
        "items": items,
    }


def _coverage_findings(coverage) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the findings of the per-area coverage rows: grids without a party branch, and
    the areas with units without a party organisation (their shares)."""
    without_branch: list[dict[str, Any]] = []
    shares: list[dict[str, Any]] = []
    for r in coverage:
        finding = {
            "code": r.code,
            "name": r.name,
            "level": r.level,
            "parent_code": r.parent_code,
            "units": r.units,
            "without_org": r.without_org,
            "share_without_org": ratio(r.without_org, r.units),
            "branches": r.branches,
            "geometry": parse_geometry(r.geometry),
        }
        if r.level == "grid" and r.branches == 0:
            without_branch.append({"kind": "grid_without_party_branch", **finding})
        if r.without_org:
            shares.append({"kind": "units_without_party_org", **finding})
    return without_branch, shares


def _large_unit_finding(r) -> dict[str, Any]:
    """Return the finding of a large unit without co-building."""
    return {
        "kind": "large_unit_without_co_building",
        "unit_id": r.id,
        "name": r.name,
        "unit_kind": r.kind,
        "staff": r.staff,
        "party_org": r.party_org,
        "grid_code": r.grid_code,
        "community_code": r.community_code,
        "geometry": parse_geometry(r.geometry),
    }
