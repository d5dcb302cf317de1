"""Boundary plans: drafts of an area's grids, their edits, the diff against today, publishing.

A plan (``boundary_plan``, migration 0019) is a named copy of the grids of one community or
county as they were in its base generation. Its grids live in ``boundary_plan_grid``: ``key``
names a grid within the plan (a base grid's key is its code), ``code`` is the base code while
the grid is unchanged and NULL once an edit redrew it (it gets a new code when published).
Every edit is one row of ``boundary_plan_edit`` (who, when, the request, the keys removed and
added) and adds one to the plan's ``version``, the ETag an edit's ``If-Match`` must name.

Functions take a synchronous SQLAlchemy connection and never commit: the caller owns the
transaction (the API runs them in a worker thread on ``engine.begin()``). The geometry is
pure shapely (:mod:`geo.planedit`); here it is read and written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import geopandas as gpd
import orjson
import shapely
import shapely.geometry
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, text

from geo import planedit
from geo.areas import AreaRecord, as_multipolygon
from geo.crs import STORAGE_SRID
from geo.partition import order_west_east_north_south
from geo.planedit import EditResult, PlanEditError, PlanGrid
from geo.population import LocalFrame
from service.dispatch.redraw import OPEN_CASES
from service.errors import (
    ConflictError,
    NotFoundError,
    PreconditionFailedError,
    PreconditionRequiredError,
    UnprocessableError,
)
from service.preconditions import IfMatch, describe, if_match_holds
from service.repositories import boundaries

__all__ = [
    "PLAN_GRID_COLUMNS",
    "AREA_PATH_SQL",
    "PlanGrid",
    "create_plan_from_area",
    "create_plan_from_grids",
    "read_plan_grids",
    "get_plan",
    "get_plan_in",
    "list_plans",
    "EDIT_OPS",
    "edit_plan",
    "list_plan_edits",
    "discard_plan",
    "read_plan_communities",
    "write_plan_grids",
    "diff_plan",
    "publish_plan",
]

#: The columns of :func:`read_plan_grids`' frame, geometry last.
PLAN_GRID_COLUMNS = ("key", "code", "parent_code", "name", "geometry")

_AREA_SQL = text(
    "SELECT code, name, level, path FROM area WHERE code = :code "
    "AND generation_low <= :g AND generation_high >= :g"
)
_CURRENT_SQL = text("SELECT max(id) FROM generation WHERE active")
#: The materialised path of an area code (its newest version): where a plan lies, for scope.
AREA_PATH_SQL = text(
    "SELECT path FROM area WHERE code = :code ORDER BY generation_high DESC LIMIT 1"
)


def _current_generation(conn: Connection) -> int:
    current = conn.execute(_CURRENT_SQL).scalar()
    if current is None:
        raise NotFoundError("no boundaries have been activated yet", field="generation")
    return current


def _plan_area(conn: Connection, area_code: str, generation_id: int):
    row = conn.execute(_AREA_SQL, {"code": area_code, "g": generation_id}).first()
    if row is None:
        raise NotFoundError(f"no area {area_code} in generation {generation_id}", field="area_code")
    if row.level not in ("district", "community"):
        raise UnprocessableError(
            f"a plan covers the grids of a community or a county (district); {area_code} is "
            f"a {row.level}",
            field="area_code",
        )
    return row


def _insert_plan(
    conn: Connection,
    *,
    name: str,
    area_code: str,
    area_level: str,
    base_generation: int,
    created_by: str,
    created_by_name: str,
) -> int:
    return conn.execute(
        text(
            "INSERT INTO boundary_plan (name, area_code, area_level, base_generation, "
            "created_by, created_by_name) VALUES (:name, :area_code, :area_level, :g, "
            ":created_by, :created_by_name) RETURNING id"
        ),
        {
            "name": name,
            "area_code": area_code,
            "area_level": area_level,
            "g": base_generation,
            "created_by": created_by,
            "created_by_name": created_by_name,
        },
    ).scalar_one()


def create_plan_from_area(
    conn: Connection, *, name: str, area_code: str, created_by: str, created_by_name: str = ""
) -> int:
    """Return the id of a new draft holding a copy of the current grids of ``area_code``.

    ``area_code`` is a community or a county (district) of the current generation; each grid
    keeps its code (and is its own key) until an edit redraws it. 404 if there is no such
    area, 422 if it is another level or has no grids.
    """
    generation_id = _current_generation(conn)
    row = _plan_area(conn, area_code, generation_id)
    plan_id = _insert_plan(
        conn,
        name=name,
        area_code=area_code,
        area_level=row.level,
        base_generation=generation_id,
        created_by=created_by,
        created_by_name=created_by_name,
    )
    copied = conn.execute(
        text(
            "INSERT INTO boundary_plan_grid (plan_id, key, code, parent_code, name, geom) "
            "SELECT :plan, a.code, a.code, a.parent_code, a.name, a.geom FROM area a "
            "WHERE a.depth = 3 AND a.path LIKE :prefix "
            "AND a.generation_low <= :g AND a.generation_high >= :g"
        ),
        {"plan": plan_id, "prefix": row.path + "/%", "g": generation_id},
    ).rowcount
    if copied == 0:
        raise UnprocessableError(f"area {area_code} has no grids to plan", field="area_code")
    return plan_id


def create_plan_from_grids(
    conn: Connection,
    *,
    name: str,
    area_code: str,
    created_by: str,
    grids: gpd.GeoDataFrame,
    created_by_name: str = "",
) -> int:
    """Return the id of a new draft of ``area_code`` holding ``grids`` (e.g. a proposal).

    ``grids`` has columns ``parent_code``, ``name``, ``geometry`` (EPSG:4326) and optionally
    ``key`` and ``code`` (a code only where the grid equals that base grid). Grids without a
    key are keyed ``n1``, ``n2``, ... The base generation is the current one. The grids are
    stored as given: check them with :func:`geo.planedit.check_partition` first.
    """
    generation_id = _current_generation(conn)
    row = _plan_area(conn, area_code, generation_id)
    if grids.crs is not None and grids.crs.to_epsg() != STORAGE_SRID:
        grids = grids.to_crs(STORAGE_SRID)
    plan_id = _insert_plan(
        conn,
        name=name,
        area_code=area_code,
        area_level=row.level,
        base_generation=generation_id,
        created_by=created_by,
        created_by_name=created_by_name,
    )
    n = 0
    rows = []
    for rec in grids.itertuples(index=False):
        key = getattr(rec, "key", None)
        if not key:
            n += 1
            key = f"n{n}"
        code = getattr(rec, "code", None)
        rows.append(
            {
                "plan": plan_id,
                "key": str(key),
                "code": code if isinstance(code, str) and code else None,
                "parent_code": rec.parent_code,
                "name": rec.name,
                "wkb": shapely.to_wkb(rec.geometry),
            }
        )
    if not rows:
        raise UnprocessableError("a plan needs at least one grid", field="grids")
    write_plan_grids(conn, rows)
    conn.execute(
        text("UPDATE boundary_plan SET next_key = :n WHERE id = :plan"),
        {"n": n + 1, "plan": plan_id},
    )
    return plan_id


_INSERT_GRID = text(
    "INSERT INTO boundary_plan_grid (plan_id, key, code, parent_code, name, geom) "
    "VALUES (:plan, :key, :code, :parent_code, :name, "
    f"ST_Multi(ST_SetSRID(ST_GeomFromWKB(:wkb), {STORAGE_SRID})))"
)


def write_plan_grids(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert plan grids: dicts with ``plan``, ``key``, ``code``, ``parent_code``, ``name``
    and ``wkb`` (a Polygon or MultiPolygon in EPSG:4326). One executemany."""
    if rows:
        conn.execute(_INSERT_GRID, rows)


def read_plan_grids(
    conn: Connection, plan_id: int, keys: list[str] | None = None
) -> gpd.GeoDataFrame:
    """Return the plan's grids (or those of ``keys``) as a GeoDataFrame in EPSG:4326.

    Columns: ``key``, ``code`` (None once redrawn), ``parent_code``, ``name``, ``geometry``
    (MultiPolygon), ordered by key. An unknown plan gives an empty frame.
    """
    sql = (
        "SELECT key, code, parent_code, name, ST_AsBinary(geom) AS wkb "
        "FROM boundary_plan_grid WHERE plan_id = :plan"
    )
    params: dict[str, Any] = {"plan": plan_id}
    if keys is not None:
        sql += " AND key = ANY(CAST(:keys AS text[]))"
        params["keys"] = list(keys)
    rows = conn.execute(text(sql + " ORDER BY key"), params).all()
    return gpd.GeoDataFrame(
        {
            "key": [r.key for r in rows],
            "code": [r.code for r in rows],
            "parent_code": [r.parent_code for r in rows],
            "name": [r.name for r in rows],
        },
        geometry=shapely.from_wkb([bytes(r.wkb) for r in rows]) if rows else [],
        crs=f"EPSG:{STORAGE_SRID}",
    )


_PLAN_COLUMNS = (
    "p.id, p.name, p.area_code, p.area_level, p.base_generation, p.status, p.version, "
    "p.created_by, p.created_by_name, p.created_at, p.updated_at, p.published_generation, "
    "p.published_at, (SELECT count(*) FROM boundary_plan_grid g WHERE g.plan_id = p.id) "
    "AS grids, (SELECT max(id) FROM generation WHERE active) AS current_generation, "
    "(SELECT a.path FROM area a WHERE a.code = p.area_code "
    "ORDER BY a.generation_high DESC LIMIT 1) AS area_path"
)


def _plan_dict(row) -> dict[str, Any]:
    d = dict(row._mapping)
    d["base_is_current"] = d.pop("current_generation") == d["base_generation"]
    return d


def get_plan(conn: Connection, plan_id: int, *, for_update: bool = False) -> dict[str, Any]:
    """Return one plan's row (with ``grids``, its count, and ``base_is_current``); 404 if none.

    ``for_update`` locks the row until the transaction ends (edits and publishing).
    """
    if for_update:
        conn.execute(text("SELECT 1 FROM boundary_plan WHERE id = :id FOR UPDATE"), {"id": plan_id})
    row = conn.execute(
        text(f"SELECT {_PLAN_COLUMNS} FROM boundary_plan p WHERE p.id = :id"), {"id": plan_id}
    ).first()
    if row is None:
        raise NotFoundError(f"no plan {plan_id}", field="plan_id")
    return _plan_dict(row)


def get_plan_in(
    conn: Connection, plan_id: int, covers: Callable[[str], bool], *, for_update: bool = False
) -> dict[str, Any]:
    """Return the plan if its area passes ``covers`` (the caller's scope, e.g.
    ``Principal.covers_path``); a plan outside it is a 404 as if it did not exist, like every
    other thing outside one's scope."""
    try:
        plan = get_plan(conn, plan_id, for_update=for_update)
    except NotFoundError:
        plan = None
    if plan is None or plan["area_path"] is None or not covers(plan["area_path"]):
        raise NotFoundError(f"no plan {plan_id} that you may see", field="plan_id")
    return plan


def list_plans(conn: Connection, *, area_codes: list[str] | None = None) -> list[dict[str, Any]]:
    """Return every plan, newest first (only those of ``area_codes`` when given)."""
    sql = f"SELECT {_PLAN_COLUMNS} FROM boundary_plan p"
    params: dict[str, Any] = {}
    if area_codes is not None:
        sql += " WHERE p.area_code = ANY(CAST(:codes AS text[]))"
        params["codes"] = list(area_codes)
    return [_plan_dict(r) for r in conn.execute(text(sql + " ORDER BY p.id DESC"), params)]


# -- edits ----------------------------------------------------------------------------------

#: The edits a plan takes (``op`` of a request): what each needs is in schemas/plans.py.
EDIT_OPS = ("split_line", "split_parts", "merge", "move_edge", "reassign", "replace_all")


def _require_version(plan: dict[str, Any], expected: IfMatch, *, required: bool) -> None:
    if expected is None:
        if required:
            raise PreconditionRequiredError(
                f'send If-Match: "{plan["version"]}" (the plan\'s ETag) with an edit, so that '
                "an edit made meanwhile by someone else is never overwritten",
                field="If-Match",
            )
        return
    if not if_match_holds(expected, plan["version"]):
        raise PreconditionFailedError(
            f"plan {plan['id']} is at version {plan['version']}, If-Match names "
            f"{describe(expected)}: it changed since you read it; "
            "read it again and redo the edit",
            field="If-Match",
            extra={"version": plan["version"]},
        )


def _require_draft(plan: dict[str, Any]) -> None:
    if plan["status"] != "draft":
        raise ConflictError(
            f"plan {plan['id']} is {plan['status']}; only a draft can change",
            field="plan_id",
        )


def _grids_of(frame: gpd.GeoDataFrame) -> list[PlanGrid]:
    return [
        PlanGrid(
            r.key,
            r.parent_code,
            r.name,
            _polygon(r.geometry),
            code=r.code if isinstance(r.code, str) else None,  # pandas reads NULL as NaN
        )
        for r in frame.itertuples(index=False)
    ]


def _polygon(geom):
    """Return a one-part MultiPolygon as its Polygon (edits work on Polygons)."""
    if geom.geom_type == "MultiPolygon" and len(geom.geoms) == 1:
        return geom.geoms[0]
    return geom


def _load(conn: Connection, plan_id: int, keys: list[str]) -> list[PlanGrid]:
    if len(set(keys)) != len(keys):
        raise UnprocessableError("a grid is named twice", field="keys")
    grids = {g.key: g for g in _grids_of(read_plan_grids(conn, plan_id, keys))}
    missing = [k for k in keys if k not in grids]
    if missing:
        raise UnprocessableError(
            f"plan {plan_id} has no grid {', '.join(missing)}",
            field="keys",
            extra={"reason": "unknown_grid"},
        )
    return [grids[k] for k in keys]


def read_plan_communities(conn: Connection, plan: dict[str, Any]) -> dict[str, Any]:
    """Return {code: geometry} of the communities of the plan's area in its base generation."""
    rows = conn.execute(
        text(
            "SELECT c.code, ST_AsBinary(c.geom) AS wkb FROM area c JOIN area p "
            "ON p.code = :code AND p.generation_low <= :g AND p.generation_high >= :g "
            "WHERE c.depth = 2 AND (c.code = p.code OR c.path LIKE p.path || '/%') "
            "AND c.generation_low <= :g AND c.generation_high >= :g"
        ),
        {"code": plan["area_code"], "g": plan["base_generation"]},
    ).all()
    return {r.code: shapely.from_wkb(bytes(r.wkb)) for r in rows}


def _base_grids(conn: Connection, plan: dict[str, Any]) -> list[PlanGrid]:
    """Return the grids of the plan's area in its base generation."""
    rows = conn.execute(
        text(
            f"SELECT c.code, c.name, ST_AsBinary(c.geom) AS wkb, c.parent_code "
            f"FROM ({_CURRENT_GRIDS}) c"
        ),
        {"area": plan["area_code"], "g": plan["base_generation"]},
    ).all()
    return [
        PlanGrid(
            r.code, r.parent_code, r.name, _polygon(shapely.from_wkb(bytes(r.wkb))), code=r.code
        )
        for r in rows
    ]


def _run_edit(conn: Connection, plan: dict[str, Any], edit: dict[str, Any]) -> EditResult:
    op = edit["op"]
    plan_id = plan["id"]
    if op == "split_line":
        (grid,) = _load(conn, plan_id, [edit["key"]])
        return planedit.split_by_line(grid, edit["line"], names=edit.get("names"))
    if op == "split_parts":
        (grid,) = _load(conn, plan_id, [edit["key"]])
        return planedit.split_into(grid, edit["parts"], seed=edit.get("seed", 0))
    if op == "merge":
        return planedit.merge_grids(_load(conn, plan_id, edit["keys"]), name=edit.get("name"))
    if op == "move_edge":
        a, b = _load(conn, plan_id, edit["keys"])
        return planedit.move_edge(a, b, edit["line"])
    if op == "reassign":
        source, target = _load(conn, plan_id, [edit["from_key"], edit["to_key"]])
        return planedit.reassign_territory(source, target, edit["region"])
    if op == "replace_all":
        old = _grids_of(read_plan_grids(conn, plan_id))
        return planedit.replace_all(
            old,
            edit["features"],
            communities=read_plan_communities(conn, plan),
            base=_base_grids(conn, plan),
        )
    raise UnprocessableError(f"unknown edit {op!r}; one of {', '.join(EDIT_OPS)}", field="op")


#: The input of each edit a refusal names when the geometry does not say which one: the
#: line, parts, region or features that would make a bad grid.
_EDIT_INPUT = {
    "split_line": "line",
    "split_parts": "parts",
    "merge": "keys",
    "move_edge": "line",
    "reassign": "region",
    "replace_all": "features",
}
#: Refusals about which grids an edit names rather than the shape it draws.
_KEY_REASONS = {"crosses_community": "keys", "not_adjacent": "keys", "unknown_grid": "keys"}


def _field_at_fault(
    edit: dict[str, Any], exc: PlanEditError, payload: dict[str, Any] | None
) -> str:
    """Name the request's input at fault (never ``op``): ``file`` for an uploaded set."""
    if payload is not None and "file" in payload:
        return "file"
    if exc.field:
        return exc.field
    op = edit["op"]
    if op in ("merge", "move_edge") and exc.reason in _KEY_REASONS:
        return "keys"
    if op == "reassign" and exc.reason in _KEY_REASONS:
        return "to_key"
    return _EDIT_INPUT.get(op, "op")


def edit_plan(
    conn: Connection,
    *,
    plan_id: int,
    if_match: IfMatch,
    edit: dict[str, Any],
    actor: str,
    actor_name: str = "",
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Apply one edit to a draft and return what changed.

    ``edit`` is the request (``op`` and its fields; ``replace_all`` takes ``features``:
    dicts with ``geometry`` and optionally ``name``, ``parent_code``, ``code``). Locks the
    plan, checks ``if_match`` against its version (428 without one, 412 when stale), runs
    the edit (:mod:`geo.planedit`; a refusal is a 422 naming its ``reason``), replaces the
    grids it removed by those it added, records the edit (``payload``: what to log, the
    request by default) and adds one to the version; an edit that changes nothing keeps the
    version and is not logged. Reads and writes only the grids the
    edit touches (``replace_all`` excepted).

    Returns ``version``, ``removed`` (keys) and ``added`` (:class:`~geo.planedit.PlanGrid`
    with their keys).
    """
    plan = _begin_edit(conn, plan_id, if_match, required=True)
    try:
        result = _run_edit(conn, plan, edit)
    except PlanEditError as exc:
        uploaded = payload.get("file") if payload is not None else None
        raise UnprocessableError(
            exc.message if uploaded is None else f"{uploaded}: {exc.message}",
            field=_field_at_fault(edit, exc, payload),
            extra={"reason": exc.reason, "keys": exc.keys or None},
        ) from None
    if not result.removed and not result.added:
        # Nothing changes (e.g. the same set uploaded again): the version stays, so nobody
        # else's If-Match goes stale, and nothing is logged.
        return {"version": plan["version"], "removed": [], "added": []}
    next_key = conn.execute(
        text("SELECT next_key FROM boundary_plan WHERE id = :id"), {"id": plan_id}
    ).scalar_one()
    added: list[PlanGrid] = []
    for g in result.added:
        if g.key is None:
            g = PlanGrid(f"n{next_key}", g.parent_code, g.name, g.geom, code=None)
            next_key += 1
        added.append(g)
    if result.removed:
        conn.execute(
            text("DELETE FROM boundary_plan_grid WHERE plan_id = :plan AND key = ANY(:keys)"),
            {"plan": plan_id, "keys": list(result.removed)},
        )
    write_plan_grids(
        conn,
        [
            {
                "plan": plan_id,
                "key": g.key,
                "code": g.code,
                "parent_code": g.parent_code,
                "name": g.name,
                "wkb": shapely.to_wkb(g.geom),
            }
            for g in added
        ],
    )
    version = _end_edit(
        conn,
        plan,
        op=edit["op"],
        actor=actor,
        actor_name=actor_name,
        removed=result.removed,
        added=[g.key for g in added],
        payload=edit if payload is None else payload,
        sets={"next_key": next_key},
    )
    return {"version": version, "removed": list(result.removed), "added": added}


def _begin_edit(
    conn: Connection, plan_id: int, if_match: IfMatch, *, required: bool
) -> dict[str, Any]:
    """Return the plan locked for a change (edit, discard, publish): a draft, at the version
    ``if_match`` names (428 when ``required`` and absent, 412 when stale; 409 not a draft)."""
    plan = get_plan(conn, plan_id, for_update=True)
    _require_draft(plan)
    _require_version(plan, if_match, required=required)
    return plan


def _end_edit(
    conn: Connection,
    plan: dict[str, Any],
    *,
    op: str,
    actor: str,
    actor_name: str,
    payload: dict[str, Any],
    removed: Sequence[str] = (),
    added: Sequence[str] = (),
    sets: dict[str, Any] | None = None,
    now: tuple[str, ...] = (),
) -> int:
    """Add one to the plan's version with ``sets`` (column → value) and the columns of
    ``now`` set to now(), log the change as that version, and return it."""
    version = plan["version"] + 1
    sets = dict(sets or {})
    assignments = "".join(f", {column} = :{column}" for column in sets)
    assignments += "".join(f", {column} = now()" for column in now)
    conn.execute(
        text(
            f"UPDATE boundary_plan SET version = :version, updated_at = now(){assignments} "
            "WHERE id = :plan_id"
        ),
        {**sets, "version": version, "plan_id": plan["id"]},
    )
    conn.execute(
        text(
            "INSERT INTO boundary_plan_edit (plan_id, version, op, actor, actor_name, removed, "
            "added, payload) VALUES (:plan, :v, :op, :actor, :actor_name, :removed, :added, "
            "CAST(:payload AS jsonb))"
        ),
        {
            "plan": plan["id"],
            "v": version,
            "op": op,
            "actor": actor,
            "actor_name": actor_name,
            "removed": list(removed),
            "added": list(added),
            "payload": orjson.dumps(payload, default=_jsonable).decode(),
        },
    )
    return version


def _jsonable(value):
    if isinstance(value, BaseGeometry):
        return shapely.geometry.mapping(value)
    raise TypeError(type(value).__name__)


def list_plan_edits(conn: Connection, plan_id: int) -> list[dict[str, Any]]:
    """Return the plan's edits, oldest first: version, op, who, when, keys removed and added,
    and the request."""
    rows = conn.execute(
        text(
            "SELECT version, op, actor, actor_name, at, removed, added, payload "
            "FROM boundary_plan_edit WHERE plan_id = :plan ORDER BY version"
        ),
        {"plan": plan_id},
    ).all()
    return [dict(r._mapping) for r in rows]


def discard_plan(
    conn: Connection, *, plan_id: int, if_match: IfMatch, actor: str, actor_name: str = ""
) -> int:
    """Mark a draft discarded (its grids and history stay readable); return its version."""
    plan = _begin_edit(conn, plan_id, if_match, required=False)
    return _end_edit(
        conn,
        plan,
        op="discard",
        actor=actor,
        actor_name=actor_name,
        payload={},
        sets={"status": "discarded"},
    )


# -- diff and publish -----------------------------------------------------------------------

_CURRENT_GRIDS = """
    SELECT a.code, a.name, a.parent_code, a.geom, a.area_m2 FROM area a
    JOIN area p ON p.code = :area AND p.generation_low <= :g AND p.generation_high >= :g
    WHERE a.depth = 3 AND a.path LIKE p.path || '/%'
      AND a.generation_low <= :g AND a.generation_high >= :g
"""
#: What a publish re-maps, per table: every row, but of incidents only the open cases
#: (closed ones keep the cells they were handled in; every incident keeps its reported cell).
_MOVING = {
    "unit": "true",
    "facility": "true",
    "care_household": "true",
    "incident": "t." + OPEN_CASES,
}
#: Tables whose moving rows are listed by id (care households are counted only: who may
#: see them in detail is narrower than who plans).
_LISTED = ("unit", "facility")


def _codes(conn: Connection, plan_id: int, generation_id: int, area_code: str):
    """Return (current grid codes of the area, codes the plan keeps, keys it adds)."""
    current = set(
        conn.execute(
            text(f"SELECT code FROM ({_CURRENT_GRIDS}) c"),
            {"area": area_code, "g": generation_id},
        ).scalars()
    )
    # A code is kept only by the grid it names, unchanged (as publish_plan decides).
    rows = conn.execute(
        text(
            f"SELECT g.key, g.code, c.code IS NOT NULL "
            f"AND ST_Area(ST_SymDifference(c.geom, g.geom)::geography) <= :tol AS same "
            f"FROM boundary_plan_grid g LEFT JOIN ({_CURRENT_GRIDS}) c ON c.code = g.code "
            f"WHERE g.plan_id = :plan"
        ),
        {
            "plan": plan_id,
            "area": area_code,
            "g": generation_id,
            "tol": planedit.DEFAULT_TOLERANCE.area_m2,
        },
    ).all()
    kept = {r.code for r in rows if r.same}
    added = sorted(r.key for r in rows if not r.same)
    return current, kept, added


def diff_plan(conn: Connection, *, plan_id: int) -> dict[str, Any]:
    """Return what publishing the plan would change against the current generation.

    ``unchanged`` codes; ``retired`` codes (current grids the plan redraws or drops) and
    ``added`` keys (grids that would get new codes); ``transfers``: territory from each
    retired grid to each new one (m²; ``same_grid``: the new one is the same grid redrawn,
    keeping its key, as after ``move_edge`` or ``reassign``), ``redrawn_m2`` their sum and
    ``moved_m2`` the territory that changes grid (transfers not ``same_grid``: a reassigned
    block, but all of a split or merged grid); ``entities``: per table, how many rows would
    move from which retired grid to which new key (units and facilities by id; open cases
    only for incidents; ``same_grid`` as for territory); ``staff``: team members and grid officers'
    tokens whose grid would be retired.
    """
    plan = get_plan(conn, plan_id)
    g = conn.execute(_CURRENT_SQL).scalar()
    current, kept, added = _codes(conn, plan_id, g, plan["area_code"])
    retired = sorted(current - kept)
    params = {"plan": plan_id, "area": plan["area_code"], "g": g, "retired": retired}
    transfers = [
        dict(r._mapping)
        for r in conn.execute(
            text(
                f"SELECT c.code AS from_code, n.key AS to_key, "
                f"round(ST_Area(ST_Intersection(c.geom, n.geom)::geography)) AS area_m2 "
                f"FROM ({_CURRENT_GRIDS}) c JOIN boundary_plan_grid n ON n.plan_id = :plan "
                f"AND ST_Intersects(c.geom, n.geom) "
                f"WHERE c.code = ANY(:retired) AND (n.code IS NULL OR n.code <> c.code) "
                f"ORDER BY 1, 2"
            ),
            params,
        )
    ]
    transfers = [
        {**t, "same_grid": t["to_key"] == t["from_code"]}
        for t in transfers
        if t["area_m2"] and t["area_m2"] >= 1
    ]
    entities: dict[str, Any] = {}
    for table, condition in _MOVING.items():
        ids = ", array_agg(t.id ORDER BY t.id) AS ids" if table in _LISTED else ""
        rows = conn.execute(
            text(
                f"SELECT t.grid_code AS from_code, n.key AS to_key, count(*) AS n{ids} "
                f"FROM {table} t LEFT JOIN LATERAL (SELECT key FROM boundary_plan_grid n "
                f"WHERE n.plan_id = :plan AND ST_Covers(n.geom, t.geom) ORDER BY key LIMIT 1) n "
                f"ON true WHERE t.generation = :g AND t.grid_code = ANY(:retired) "
                f"AND {condition} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            params,
        ).all()
        moves = [{**r._mapping, "same_grid": r.to_key == r.from_code} for r in rows]
        entities[table] = {"total": sum(m["n"] for m in moves), "moves": moves}
    members = [
        dict(r._mapping)
        for r in conn.execute(
            text(
                "SELECT id, name, team_role, serving_grid_code AS grid_code FROM member "
                "WHERE serving_grid_code = ANY(:retired) ORDER BY serving_grid_code, id"
            ),
            params,
        )
    ]
    tokens = [
        dict(r._mapping)
        for r in conn.execute(
            text(
                "SELECT id, name, area_code AS grid_code FROM api_token "
                "WHERE role = 'grid_officer' AND area_code = ANY(:retired) "
                "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
                "ORDER BY area_code, id"
            ),
            params,
        )
    ]
    return {
        "plan_id": plan_id,
        "version": plan["version"],
        "generation": g,
        "base_generation": plan["base_generation"],
        "base_is_current": plan["base_is_current"],
        "unchanged": sorted(kept),
        "retired": retired,
        "added": added,
        "transfers": transfers,
        "moved_m2": sum(t["area_m2"] for t in transfers if not t["same_grid"]),
        "redrawn_m2": sum(t["area_m2"] for t in transfers),
        "entities": entities,
        "staff": {"members": members, "grid_officers": tokens},
    }


def _new_codes(conn: Connection, grids: list[PlanGrid]) -> dict[str, str]:
    """Return key → new code of ``grids``: per community, the next sequence numbers never
    used there in any generation, numbered west→east, north→south."""
    out: dict[str, str] = {}
    by_parent: dict[str, list[PlanGrid]] = {}
    for g in grids:
        by_parent.setdefault(g.parent_code, []).append(g)
    for parent, members in sorted(by_parent.items()):
        used = conn.execute(
            text(
                "SELECT max(CAST(right(code, 3) AS integer)) FROM area "
                "WHERE depth = 3 AND parent_code = :p AND code LIKE :p || '___'"
            ),
            {"p": parent},
        ).scalar()
        start = (used or 0) + 1
        if start + len(members) - 1 > 999:
            raise UnprocessableError(
                f"community {parent} has no sequence numbers left for {len(members)} new "
                f"grids (grid codes end in 3 digits; {start - 1} are used)",
                field="plan_id",
            )
        order = order_west_east_north_south([m.geom for m in members])
        for i, j in enumerate(order):
            out[members[j].key] = f"{parent}{start + i:03d}"
    return out


def _unchanged_or_redrawn(
    grids: list[PlanGrid], current: dict[str, Any], outline
) -> list[PlanGrid]:
    """Return ``grids`` with the code dropped from any grid that is not its current grid
    (same code, geometry within the area tolerance): such a grid is published as new."""
    frame = LocalFrame.around(outline)
    m2_per_deg2 = frame.m_per_deg_lon * frame.m_per_deg_lat
    tol = planedit.DEFAULT_TOLERANCE.area_m2
    out = []
    seen: set[str] = set()
    for g in grids:
        base = current.get(g.code) if g.code is not None else None
        if g.code is not None and (
            base is None
            or g.code in seen
            or shapely.symmetric_difference(base, g.geom).area * m2_per_deg2 > tol
        ):
            g = PlanGrid(g.key, g.parent_code, g.name, g.geom, code=None)
        if g.code is not None:
            seen.add(g.code)
        out.append(g)
    return out


def publish_plan(
    conn: Connection, *, plan_id: int, if_match: IfMatch, actor: str, actor_name: str = ""
) -> dict[str, Any]:
    """Publish a draft as the next boundary generation, in the caller's transaction.

    Refuses (nothing written; the current generation untouched) when the plan is not a
    draft or has changed since ``if_match`` (409/412), when its base generation is no
    longer current or another generation is pending (409), or when its grids do not tile
    the area's current grids, nest in their communities and stay single polygons (422 with
    the ``reason``). Then: new grids get new codes (the community's next sequence numbers),
    unchanged grids keep theirs, the retired grids end in the current generation, the new
    generation is activated (entities re-mapped, open cases follow: :func:`service.
    repositories.boundaries.activate_generation`) and the plan is marked published.
    """
    plan = _begin_edit(conn, plan_id, if_match, required=False)
    # One generation change at a time: this waits for any transaction that is creating or
    # activating a generation (another publish, an import) to end, and holds off others
    # until this one ends; so the base check below reads what is really current. Without
    # it, a publish that checked its base while another was being published went on to
    # write on top of the other's generation. Reads of the table are not blocked.
    conn.execute(text("LOCK TABLE generation IN SHARE ROW EXCLUSIVE MODE"))
    current = _current_generation(conn)
    if plan["base_generation"] != current:
        raise ConflictError(
            f"plan {plan_id} was drawn on generation {plan['base_generation']}, but generation "
            f"{current} is current now: its grids may have changed since. Start a new draft "
            "from the current grids.",
            field="base_generation",
            extra={"base_generation": plan["base_generation"], "current_generation": current},
        )
    if boundaries.pending_generation(conn) is not None:
        raise ConflictError(
            "a generation is pending (loaded but not activated); activate or finish it first",
            field="generation",
        )
    grids = _grids_of(read_plan_grids(conn, plan_id))
    base_rows = conn.execute(
        text(f"SELECT code, ST_AsBinary(geom) AS wkb FROM ({_CURRENT_GRIDS}) c"),
        {"area": plan["area_code"], "g": current},
    ).all()
    current_geoms = {r.code: shapely.from_wkb(bytes(r.wkb)) for r in base_rows}
    outline = shapely.union_all(list(current_geoms.values()))
    current_codes = set(current_geoms)
    grids = _unchanged_or_redrawn(grids, current_geoms, outline)
    kept = {g.code for g in grids if g.code is not None}
    fresh = [g for g in grids if g.code is None]
    names = dict(
        conn.execute(
            text(f"SELECT code, name FROM ({_CURRENT_GRIDS}) c"),
            {"area": plan["area_code"], "g": current},
        ).all()
    )
    renamed = [g for g in grids if g.code is not None and g.name != names.get(g.code)]
    retired = sorted(current_codes - kept)
    # The grids the plan changes must tile exactly the territory of the grids it retires,
    # nest in their communities and be single polygons, no slivers: with the kept grids
    # untouched, the area stays a partition. Defects of grids the plan does not touch
    # (an overlap in today's data) are the topology analysis's to report, not a reason to
    # refuse a plan that leaves them as they are.
    try:
        for g in fresh:
            if g.geom.geom_type != "Polygon":
                raise PlanEditError("multipart", f"grid {g.key} has several parts", keys=[g.key])
        if fresh or retired:
            planedit.check_replacement(
                [PlanGrid(c, "", c, current_geoms[c], code=c) for c in retired],
                fresh,
                communities=read_plan_communities(conn, plan),
            )
    except PlanEditError as exc:
        raise UnprocessableError(
            f"plan {plan_id} is not a valid partition of {plan['area_code']}: {exc.message}",
            field="plan_id",
            extra={"reason": exc.reason, "keys": exc.keys or None},
        ) from None
    if not fresh and not retired and not renamed:
        raise UnprocessableError(
            f"plan {plan_id} changes nothing: its grids are today's; nothing to publish",
            field="plan_id",
        )
    codes = _new_codes(conn, fresh)
    generation_id = boundaries.create_generation(
        conn, description=f"plan {plan_id}: {plan['name']}", carry_over=True
    )
    if retired:
        boundaries.retire_areas(conn, generation_id=generation_id, codes=retired)
    # New grids with their new codes; kept grids renamed in the plan, under their codes.
    records = [
        AreaRecord(codes[g.key], g.name, "grid", g.parent_code, as_multipolygon(g.geom))
        for g in fresh
    ] + [
        AreaRecord(g.code, g.name, "grid", g.parent_code, as_multipolygon(current_geoms[g.code]))
        for g in renamed
    ]
    if records:
        boundaries.write_areas(
            conn, generation_id=generation_id, records=records, source=f"plan:{plan_id}"
        )
    remapped = boundaries.activate_generation(conn, generation_id=generation_id)
    for key, code in codes.items():
        conn.execute(
            text("UPDATE boundary_plan_grid SET code = :code WHERE plan_id = :plan AND key = :key"),
            {"code": code, "plan": plan_id, "key": key},
        )
    version = _end_edit(
        conn,
        plan,
        op="publish",
        actor=actor,
        actor_name=actor_name,
        payload={"generation": generation_id, "codes": codes, "retired": retired},
        sets={"status": "published", "published_generation": generation_id},
        now=("published_at",),
    )
    return {
        "plan_id": plan_id,
        "version": version,
        "generation": generation_id,
        "codes": codes,
        "kept": sorted(kept),
        "retired": retired,
        "remapped": remapped,
    }
