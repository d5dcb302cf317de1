"""1+1+1 grid teams: every grid has exactly one party-building instructor, one grid manager
and one grid police officer.

Findings, worst first:

``missing_role``
    a grid of the generation without one of the three roles (``roles``: which);
``serving_redrawn_grid``
    a team member whose ``serving_grid_code`` is no grid of the generation: the grid was
    redrawn away (a redrawn grid gets a new code) and the officer still points at the old one;
``doubled_role``
    a role filled more than once in a grid (``member_ids``);
``several_grids``
    one person registered in more than one grid.

Identity rule for "one person": the same name (trimmed, case-folded) **and** the same phone
number (digits only). Members without a phone are never merged: Chinese names repeat far too
often for a name alone to identify anyone. Only registrations inside the analysed area are
compared, so a person serving grids in two communities shows at the district level.
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

__all__ = ["TEAM_ROLES", "run_staffing", "find_team_gaps", "find_people_in_several_grids"]

TEAM_ROLES = ("party_building_instructor", "grid_manager", "grid_police")
_KIND_ORDER = {"missing_role": 0, "serving_redrawn_grid": 1, "doubled_role": 2, "several_grids": 3}

_TEAMS_SQL = """
WITH grids AS (
    SELECT a.code, a.name, a.parent_code, a.geom FROM area a
    WHERE a.depth = 3 AND a.generation_low <= :g AND a.generation_high >= :g
      AND {in_scope}
),
roles(role, ord) AS (
    VALUES ('party_building_instructor', 1), ('grid_manager', 2), ('grid_police', 3)
),
filled AS (
    SELECT g.code, r.role, r.ord, count(m.id) AS n,
           coalesce(array_agg(m.id ORDER BY m.id) FILTER (WHERE m.id IS NOT NULL),
                    '{{}}') AS ids
    FROM grids g CROSS JOIN roles r
    LEFT JOIN member m ON m.serving_grid_code = g.code AND m.team_role = r.role
    GROUP BY g.code, r.role, r.ord
),
teams AS (
    SELECT code,
           array_agg(role ORDER BY ord) FILTER (WHERE n = 0) AS missing,
           array_agg(role ORDER BY ord) FILTER (WHERE n > 1) AS doubled,
           jsonb_object_agg(role, ids) AS members,
           sum(n) AS people
    FROM filled GROUP BY code
)
SELECT g.code, g.name, g.parent_code, t.missing, t.doubled, t.members, t.people,
       CASE WHEN t.missing IS NOT NULL OR t.doubled IS NOT NULL
            THEN {geometry} END AS geometry
FROM grids g JOIN teams t ON t.code = g.code
ORDER BY g.code
"""

# Persons (name + phone digits) registered in more than one grid; geometry: their grids.
_SEVERAL_SQL = r"""
WITH team AS (
    SELECT m.id, m.name, m.team_role, m.serving_grid_code,
           CASE WHEN regexp_replace(m.phone, '\D', '', 'g') <> ''
                THEN lower(btrim(m.name)) || '|' || regexp_replace(m.phone, '\D', '', 'g')
                ELSE 'id:' || m.id END AS person
    FROM member m
    WHERE m.team_role IS NOT NULL AND ({serving_in_scope} OR {home_in_scope})
),
people AS (
    SELECT person, min(name) AS name, array_agg(id ORDER BY id) AS ids,
           array_agg(team_role ORDER BY id) AS roles,
           array_agg(serving_grid_code ORDER BY id) AS grids
    FROM team GROUP BY person HAVING count(DISTINCT serving_grid_code) > 1
)
SELECT p.name, p.ids, p.roles, p.grids, {geometry} AS geometry
FROM people p
"""

# Team members pointing at a grid that is not in the generation, with its last outline.
_REDRAWN_SQL = """
SELECT m.id, m.name, m.team_role, m.serving_grid_code, m.home_community_code,
       last.generation_high AS last_generation, {geometry} AS geometry
FROM member m
LEFT JOIN LATERAL (
    SELECT a.geom, a.generation_high FROM area a WHERE a.code = m.serving_grid_code
    ORDER BY a.generation_high DESC LIMIT 1
) last ON true
WHERE m.team_role IS NOT NULL AND ({serving_in_scope} OR {home_in_scope})
  AND NOT EXISTS (
      SELECT 1 FROM area a WHERE a.code = m.serving_grid_code AND a.depth = 3
        AND a.generation_low <= :g AND a.generation_high >= :g)
ORDER BY m.serving_grid_code, m.id
"""


def find_team_gaps(
    conn: Connection, *, scope: Scope, geometry: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return (summary numbers, findings) of missing and doubled roles per grid."""
    sql = _TEAMS_SQL.format(in_scope=area_in_scope("a"), geometry=geometry_json("g.geom", geometry))
    rows = conn.execute(text(sql), scope.params()).all()
    items: list[dict[str, Any]] = []
    missing_by_role = dict.fromkeys(TEAM_ROLES, 0)
    doubled_by_role = dict.fromkeys(TEAM_ROLES, 0)
    complete = 0
    for r in rows:
        if not r.missing and not r.doubled:
            complete += 1
            continue
        base = {
            "grid_code": r.code,
            "grid_name": r.name,
            "community_code": r.parent_code,
        }
        geom = parse_geometry(r.geometry)
        if r.missing:
            for role in r.missing:
                missing_by_role[role] += 1
            items.append(
                {
                    "kind": "missing_role",
                    **base,
                    "roles": list(r.missing),
                    "count": len(r.missing),
                    "team": {k: v for k, v in r.members.items() if v},
                    "geometry": geom,
                }
            )
        for role in r.doubled or ():
            doubled_by_role[role] += 1
            items.append(
                {
                    "kind": "doubled_role",
                    **base,
                    "role": role,
                    "count": len(r.members[role]),
                    "member_ids": r.members[role],
                    "geometry": geom,
                }
            )
    summary = {
        "grids": len(rows),
        "complete_teams": complete,
        "grids_missing_role": sum(1 for i in items if i["kind"] == "missing_role"),
        "missing_by_role": missing_by_role,
        "grids_with_doubled_role": len(
            {i["grid_code"] for i in items if i["kind"] == "doubled_role"}
        ),
        "doubled_by_role": doubled_by_role,
        "team_members": int(sum(r.people for r in rows)),
    }
    return summary, items


def find_people_in_several_grids(
    conn: Connection, *, scope: Scope, geometry: bool = True
) -> list[dict[str, Any]]:
    """Return one finding per person (name + phone) registered in more than one grid."""
    sql = _SEVERAL_SQL.format(
        serving_in_scope=area_in_scope("m", "serving_path"),
        home_in_scope=area_in_scope("m", "home_path"),
        geometry=geometry_json(
            "(SELECT ST_Collect(a.geom) FROM area a WHERE a.code = ANY(p.grids) "
            "AND a.generation_low <= :g AND a.generation_high >= :g)",
            geometry,
        ),
    )
    items = []
    for r in conn.execute(text(sql), scope.params()):
        grids = sorted(set(r.grids))
        items.append(
            {
                "kind": "several_grids",
                "name": r.name,
                "member_ids": list(r.ids),
                "roles": list(r.roles),
                "grid_codes": grids,
                "count": len(grids),
                "geometry": parse_geometry(r.geometry),
            }
        )
    return items


def find_members_on_redrawn_grids(
    conn: Connection, *, scope: Scope, geometry: bool = True
) -> list[dict[str, Any]]:
    """Return team members whose serving grid is not a grid of the generation."""
    sql = _REDRAWN_SQL.format(
        serving_in_scope=area_in_scope("m", "serving_path"),
        home_in_scope=area_in_scope("m", "home_path"),
        geometry=geometry_json("last.geom", geometry),
    )
    return [
        {
            "kind": "serving_redrawn_grid",
            "member_id": r.id,
            "name": r.name,
            "role": r.team_role,
            "serving_grid_code": r.serving_grid_code,
            "community_code": r.home_community_code,
            "last_generation": r.last_generation,
            "count": 1,
            # The outline the grid last had: where the officer still thinks they serve.
            "geometry": parse_geometry(r.geometry),
        }
        for r in conn.execute(text(sql), scope.params())
    ]


def _rank_key(item: dict[str, Any]) -> tuple:
    code = (
        item.get("grid_code") or item.get("serving_grid_code") or min(item.get("grid_codes", [""]))
    )
    return (_KIND_ORDER[item["kind"]], -item["count"], code, item.get("role") or "")


def run_staffing(
    conn: Connection, *, geometry: bool = True, **where: Unpack[Where]
) -> dict[str, Any]:
    """Return the 1+1+1 team check of the area: summary numbers and ranked findings."""
    scope = resolve_scope(conn, **where)
    summary, items = find_team_gaps(conn, scope=scope, geometry=geometry)
    several = find_people_in_several_grids(conn, scope=scope, geometry=geometry)
    redrawn = find_members_on_redrawn_grids(conn, scope=scope, geometry=geometry)
    items.extend(several)
    items.extend(redrawn)
    items.sort(key=_rank_key)
    summary["people_in_several_grids"] = len(several)
    summary["members_on_redrawn_grids"] = len(redrawn)
    summary["findings"] = len(items)
    return {
        "area": scope.as_dict(),
        "parameters": {"identity": "same name and same phone digits"},
        "summary": summary,
        "items": items,
    }
