"""Care coverage of the six must-visit households (sensitive personal data).

Numbers for every role in scope; details only for the roles that may read care households
(``service.specs.entity_kinds.CARE.detail_roles``), and every household that appears in a detail is
written to ``access_log`` (action ``analysis``), as a detail read through the API is.
Details are ids, kinds, cells and cadre ids: never ``head_name``, ``address`` or ``notes``.

Findings, worst first:

``household_without_cadre`` (details)
    no responsible cadre (``cadre_member_id`` empty): nobody visits;
``cadre_outside_community`` (details)
    the cadre's home community is not the household's community;
``cadre_contacts_out_of_range`` (details)
    a cadre responsible for fewer than ``min_contacts`` (default 5) or more than
    ``max_contacts`` (default 10) households, counted over all their households (the rule
    is about the cadre's load, wherever the households are); ``households_in_area`` and
    ``household_ids`` are those inside the analysed area;
``grid_care_gaps`` (everyone)
    per grid: households without a cadre and with a cadre from another community.

A cadre is a member named as some household's ``cadre_member_id``: a member responsible for
no household at all is not counted as a cadre (nothing says they should be one).
"""

from __future__ import annotations

from typing import Any, Unpack

from sqlalchemy import Connection, text

from service.analysis import (
    Scope,
    Where,
    area_in_scope,
    geometry_json,
    located,
    parse_geometry,
    ratio,
    resolve_scope,
)
from service.auth import Principal
from service.errors import UnprocessableError
from service.specs.entity_kinds import CARE

__all__ = ["DEFAULT_MIN_CONTACTS", "DEFAULT_MAX_CONTACTS", "run_care", "CARE_KINDS"]

DEFAULT_MIN_CONTACTS = 5
DEFAULT_MAX_CONTACTS = 10
CARE_KINDS = ("hardship", "dispute", "laid_off", "serious_illness", "correction", "elderly_alone")
_ORDER = {
    "household_without_cadre": 0,
    "cadre_outside_community": 1,
    "cadre_contacts_out_of_range": 2,
    "grid_care_gaps": 3,
}
# Never head_name, address or notes: they are not needed to find a gap in care.
_COLUMNS = ("id", "kind", "cadre_member_id", "geom")

_HOUSEHOLDS = """
hh AS (
    SELECT t.id, t.kind, t.cadre_member_id, t.grid_code, t.community_code, t.geom,
           m.home_community_code AS cadre_community,
           (t.cadre_member_id IS NOT NULL
            AND m.home_community_code IS DISTINCT FROM t.community_code) AS cadre_outside
    FROM {households} t LEFT JOIN member m ON m.id = t.cadre_member_id
    WHERE {in_scope}
)"""

# One scan, three groupings: per kind, per grid, and the whole area.
_COUNTS_SQL = (
    "WITH "
    + _HOUSEHOLDS
    + """,
sets AS (
    SELECT GROUPING(h.kind) AS no_kind, GROUPING(h.grid_code) AS no_grid, h.kind, h.grid_code,
           count(*) AS households,
           count(*) FILTER (WHERE h.cadre_member_id IS NULL) AS without_cadre,
           count(*) FILTER (WHERE h.cadre_outside) AS cadre_outside,
           count(DISTINCT h.cadre_member_id) AS cadres
    FROM hh h GROUP BY GROUPING SETS ((h.kind), (h.grid_code), ())
)
SELECT s.*, a.name AS grid_name, a.parent_code AS community_code,
       CASE WHEN s.without_cadre > 0 OR s.cadre_outside > 0 THEN {geometry} END AS geometry
FROM sets s
LEFT JOIN area a ON s.no_kind = 1 AND s.no_grid = 0 AND a.code = s.grid_code
     AND a.generation_low <= :g AND a.generation_high >= :g
"""
)

_CADRES_SQL = (
    "WITH "
    + _HOUSEHOLDS
    + """,
cadres AS (
    SELECT h.cadre_member_id AS id, count(*) AS in_area, array_agg(h.id ORDER BY h.id) AS ids,
           ST_Collect(h.geom) AS geom
    FROM hh h WHERE h.cadre_member_id IS NOT NULL GROUP BY h.cadre_member_id
),
totals AS (
    SELECT x.cadre_member_id AS id, count(*) AS n
    FROM care_household x JOIN cadres c ON c.id = x.cadre_member_id
    GROUP BY x.cadre_member_id
)
SELECT c.id, t.n AS households, c.in_area, c.ids, m.home_community_code,
       {geometry} AS geometry
FROM cadres c JOIN totals t ON t.id = c.id LEFT JOIN member m ON m.id = c.id
WHERE t.n < :min_contacts OR t.n > :max_contacts
ORDER BY greatest(:min_contacts - t.n, t.n - :max_contacts) DESC, c.id
"""
)

_DETAILS_SQL = (
    "WITH "
    + _HOUSEHOLDS
    + """
SELECT h.id, h.kind, h.cadre_member_id, h.grid_code, h.community_code, h.cadre_community,
       {geometry} AS geometry
FROM hh h WHERE h.cadre_member_id IS NULL OR h.cadre_outside
ORDER BY h.grid_code NULLS LAST, h.id
"""
)


def _log_detail_reads(conn: Connection, principal: Principal, ids: set[int]) -> None:
    """Write one access_log row per household shown in detail (PIPL: record access)."""
    if not ids:
        return
    conn.execute(
        text(
            "INSERT INTO access_log (token_id, role, action, entity, entity_id) "
            "SELECT :token, :role, 'analysis', :entity, unnest(CAST(:ids AS bigint[]))"
        ),
        {
            "token": principal.token_id,
            "role": principal.role,
            "entity": CARE.table,
            "ids": sorted(ids),
        },
    )


def _details(
    conn: Connection, *, scope: Scope, households: str, params: dict, geometry: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[int]]:
    """Return (household findings, cadre findings, household ids shown)."""
    fmt = {"households": households, "in_scope": area_in_scope("t", "area_path")}
    rows = conn.execute(
        text(_DETAILS_SQL.format(**fmt, geometry=geometry_json("h.geom", geometry))), params
    ).all()
    shown: set[int] = set()
    found: list[dict[str, Any]] = []
    for r in rows:
        shown.add(r.id)
        item = {
            "kind": "household_without_cadre"
            if r.cadre_member_id is None
            else "cadre_outside_community",
            "household_id": r.id,
            "household_kind": r.kind,
            "grid_code": r.grid_code,
            "community_code": r.community_code,
        }
        if r.cadre_member_id is not None:
            item["cadre_member_id"] = r.cadre_member_id
            item["cadre_home_community_code"] = r.cadre_community
        item["geometry"] = parse_geometry(r.geometry)
        found.append(item)
    cadres = []
    for r in conn.execute(
        text(_CADRES_SQL.format(**fmt, geometry=geometry_json("c.geom", geometry))), params
    ):
        shown.update(r.ids)
        cadres.append(
            {
                "kind": "cadre_contacts_out_of_range",
                "cadre_member_id": r.id,
                "cadre_home_community_code": r.home_community_code,
                "households": r.households,
                "bound": "below" if r.households < params["min_contacts"] else "above",
                "households_in_area": r.in_area,
                "household_ids": list(r.ids),
                "geometry": parse_geometry(r.geometry),
            }
        )
    return found, cadres, shown


def _grid_gaps(r) -> dict[str, Any]:
    """Return the finding of a grid with households without a cadre or cared for from
    another community."""
    return {
        "kind": "grid_care_gaps",
        "grid_code": r.grid_code,
        "grid_name": r.grid_name,
        "community_code": r.community_code,
        "households": r.households,
        "without_cadre": r.without_cadre,
        "share_without_cadre": ratio(r.without_cadre, r.households),
        "cadre_outside_community": r.cadre_outside,
        "geometry": parse_geometry(r.geometry),
    }


def _cadres_out_of_range(conn: Connection, fmt: dict, params: dict) -> tuple[int, int]:
    """Return how many cadres care for fewer than ``min_contacts`` and more than
    ``max_contacts`` households: counted for everyone, who they are is a detail."""
    row = conn.execute(
        text(
            "SELECT count(*) FILTER (WHERE households < :min_contacts) AS below, "
            "count(*) FILTER (WHERE households > :max_contacts) AS above FROM ("
            + _CADRES_SQL.format(**fmt, geometry="NULL")
            + ") s"
        ),
        params,
    ).one()
    return row.below, row.above


def run_care(
    conn: Connection,
    *,
    min_contacts: int = DEFAULT_MIN_CONTACTS,
    max_contacts: int = DEFAULT_MAX_CONTACTS,
    geometry: bool = True,
    details: bool = True,
    **where: Unpack[Where],
) -> dict[str, Any]:
    """Return care coverage: counts for everyone, details (logged) for the detail roles.

    Writes to ``access_log`` when details are returned: run it in a transaction.
    ``details=False`` asks for counts only, whatever the role (nothing is then logged):
    for callers that would not show the details anyway, such as file exports.
    """
    if not isinstance(min_contacts, int) or min_contacts < 0:
        raise UnprocessableError("min_contacts must be a whole number ≥ 0", field="min_contacts")
    if not isinstance(max_contacts, int) or max_contacts < min_contacts:
        raise UnprocessableError(
            f"max_contacts must be a whole number ≥ min_contacts ({min_contacts})",
            field="max_contacts",
        )
    scope = resolve_scope(conn, **where)
    principal = where["principal"]
    details = details and principal.role in CARE.detail_roles
    households = located("care_household", _COLUMNS, scope=scope)
    params = {**scope.params(), "min_contacts": min_contacts, "max_contacts": max_contacts}
    fmt = {"households": households, "in_scope": area_in_scope("t", "area_path")}
    counts = conn.execute(
        text(_COUNTS_SQL.format(**fmt, geometry=geometry_json("a.geom", geometry))), params
    ).all()
    total = next((r for r in counts if r.no_kind and r.no_grid), None)
    by_kind = {
        r.kind: {
            "households": r.households,
            "without_cadre": r.without_cadre,
            "cadre_outside_community": r.cadre_outside,
        }
        for r in counts
        if not r.no_kind
    }
    grid_rows = [r for r in counts if r.no_kind and not r.no_grid and r.grid_code is not None]
    items = [_grid_gaps(r) for r in grid_rows if r.without_cadre or r.cadre_outside]
    if details:
        households_found, cadres, shown = _details(
            conn, scope=scope, households=households, params=params, geometry=geometry
        )
        below = sum(1 for c in cadres if c["bound"] == "below")
        above = len(cadres) - below
    else:
        below, above = _cadres_out_of_range(conn, fmt, params)
    summary = {
        "households": total.households if total else 0,
        "without_cadre": total.without_cadre if total else 0,
        "share_without_cadre": ratio(total.without_cadre, total.households) if total else None,
        "cadre_outside_community": total.cadre_outside if total else 0,
        "by_kind": {k: by_kind[k] for k in CARE_KINDS if k in by_kind},
        "cadres": total.cadres if total else 0,
        "cadres_below_min": below,
        "cadres_above_max": above,
        "grids_with_gaps": len(items),
        "details": details,
    }
    if details:
        items = households_found + cadres + items
        _log_detail_reads(conn, principal, shown)
        summary["households_shown"] = len(shown)
    items.sort(
        key=lambda i: (
            _ORDER[i["kind"]],
            -(i.get("without_cadre") or 0),
            -(i.get("cadre_outside_community") or 0) if i["kind"] == "grid_care_gaps" else 0,
        )
    )
    return {
        "area": scope.as_dict(),
        "parameters": {
            "min_contacts": min_contacts,
            "max_contacts": max_contacts,
            "details": "ids, kinds, cells and cadre ids only"
            if details
            else f"counts only for a {principal.role}",
        },
        "summary": summary,
        "items": items,
    }
