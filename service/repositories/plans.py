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

from typing import Any

import geopandas as gpd
import shapely
from sqlalchemy import Connection, text

from geo.crs import STORAGE_SRID
from service.errors import NotFoundError, UnprocessableError

__all__ = [
    "PLAN_GRID_COLUMNS",
    "create_plan_from_area",
    "create_plan_from_grids",
    "read_plan_grids",
    "get_plan",
    "list_plans",
]

#: The columns of :func:`read_plan_grids`' frame, geometry last.
PLAN_GRID_COLUMNS = ("key", "code", "parent_code", "name", "geometry")

_AREA_SQL = text(
    "SELECT code, name, level, path FROM area WHERE code = :code "
    "AND generation_low <= :g AND generation_high >= :g"
)
_CURRENT_SQL = text("SELECT max(id) FROM generation WHERE active")


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
    "AS grids, (SELECT max(id) FROM generation WHERE active) AS current_generation"
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


def list_plans(conn: Connection, *, area_codes: list[str] | None = None) -> list[dict[str, Any]]:
    """Return every plan, newest first (only those of ``area_codes`` when given)."""
    sql = f"SELECT {_PLAN_COLUMNS} FROM boundary_plan p"
    params: dict[str, Any] = {}
    if area_codes is not None:
        sql += " WHERE p.area_code = ANY(CAST(:codes AS text[]))"
        params["codes"] = list(area_codes)
    return [_plan_dict(r) for r in conn.execute(text(sql + " ORDER BY p.id DESC"), params)]
