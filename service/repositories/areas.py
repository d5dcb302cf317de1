"""Read areas of a generation, filtered by the caller's scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import Principal
from service.errors import NotFoundError, UnprocessableError
from service.repositories.filters import Where
from service.repositories.paging import fetch_page

__all__ = [
    "area_visible_sql",
    "GeometryOptions",
    "list_areas",
    "get_area",
    "list_children",
    "list_ancestors",
    "list_area_history",
]


# An area is visible when it lies in the caller's scope or is one of the scope's ancestors
# (a grid officer sees their community's outline, not its other grids).
def area_visible_sql(alias: str = "a") -> str:
    """Return the SQL condition "the caller may see this area" (parameter :scope)."""
    path = f"{alias}.path"
    return (
        f"(CAST(:scope AS text) IS NULL OR {path} = :scope OR {path} LIKE :scope || '/%' "
        f"OR :scope LIKE {path} || '/%')"
    )


_VISIBLE = area_visible_sql("a")
_IN_GENERATION = "a.generation_low <= :g AND a.generation_high >= :g"
_COLUMNS = (
    "a.code, a.name, a.level, a.parent_code, a.path, a.generation_low, a.generation_high, "
    "a.area_m2, a.source"
)
# Metres per degree of latitude: tolerances are given in metres, geometry is in degrees.
_M_PER_DEG = 111_320.0


@dataclass(frozen=True)
class GeometryOptions:
    """Whether and how to return geometry: simplification tolerance and output SRID."""

    include: bool = False
    simplify_m: float = 0.0
    srid: int = 4326

    def sql(self) -> str:
        if not self.include:
            return "NULL AS geometry"
        geom = "a.geom"
        if self.simplify_m > 0:
            geom = f"ST_SimplifyPreserveTopology({geom}, CAST(:tol AS float8))"
        if self.srid != 4326:
            geom = f"ST_Transform({geom}, CAST(:srid AS integer))"
        digits = 7 if self.srid in (4326, 4490) else 2
        return f"ST_AsGeoJSON({geom}, {digits}) AS geometry"

    def params(self) -> dict[str, Any]:
        return {"tol": self.simplify_m / _M_PER_DEG, "srid": self.srid}


async def _check_srid(conn: AsyncConnection, srid: int) -> None:
    found = (
        await conn.execute(text("SELECT 1 FROM spatial_ref_sys WHERE srid = :s"), {"s": srid})
    ).scalar()
    if not found:
        raise UnprocessableError(f"unknown SRID {srid}", field="srid")


def _like_literal(text: str) -> str:
    """Return ``text`` as a LIKE pattern matching itself (escape character ``\\``)."""
    # Without this, a name search for "%" or "_" matched every area.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _row_to_dict(row: Any) -> dict[str, Any]:
    out = {
        "code": row.code,
        "name": row.name,
        "level": row.level,
        "parent_code": row.parent_code,
        "path": row.path.split("/"),
        "generation_low": row.generation_low,
        "generation_high": row.generation_high,
        "area_km2": round(row.area_m2 / 1e6, 4),
        "source": row.source,
    }
    geometry = getattr(row, "geometry", None)
    if geometry is not None:
        out["geometry"] = orjson.loads(geometry)
    return out


async def list_areas(
    conn: AsyncConnection,
    *,
    principal: Principal,
    generation: int,
    level: str | None = None,
    parent_code: str | None = None,
    name_contains: str | None = None,
    limit: int,
    offset: int,
    geometry: GeometryOptions = GeometryOptions(),
) -> tuple[list[dict[str, Any]], int]:
    """Return one page of visible areas (ordered by code) and the total that match."""
    if geometry.include and geometry.srid != 4326:
        await _check_srid(conn, geometry.srid)
    where = Where(
        _IN_GENERATION, _VISIBLE, g=generation, scope=principal.scope_path, **geometry.params()
    )
    where.given("a.level = :level", level=level)
    where.given("a.parent_code = :parent", parent=parent_code)
    if name_contains:
        where.add("a.name LIKE '%' || :q || '%' ESCAPE '\\'", q=_like_literal(name_contains))
    rows, total = await fetch_page(
        conn,
        columns=f"{_COLUMNS}, {geometry.sql()}",
        source="area a",
        where=where,
        order="a.code",
        limit=limit,
        offset=offset,
    )
    return [_row_to_dict(r) for r in rows], total


async def get_area(
    conn: AsyncConnection,
    *,
    principal: Principal,
    code: str,
    generation: int,
    geometry: GeometryOptions = GeometryOptions(),
) -> dict[str, Any]:
    """Return the area ``code`` in ``generation``; 404 when absent or outside the scope.

    Areas outside the caller's scope answer exactly like areas that do not exist, so a
    token cannot probe which codes exist elsewhere.
    """
    if geometry.include and geometry.srid != 4326:
        await _check_srid(conn, geometry.srid)
    sql = (
        f"SELECT {_COLUMNS}, {geometry.sql()} FROM area a "
        f"WHERE a.code = :code AND {_IN_GENERATION} AND {_VISIBLE}"
    )
    row = (
        await conn.execute(
            text(sql),
            {"code": code, "g": generation, "scope": principal.scope_path, **geometry.params()},
        )
    ).first()
    if row is None:
        raise NotFoundError(
            f"no area {code} in generation {generation} that you may see", field="code"
        )
    return _row_to_dict(row)


async def list_children(
    conn: AsyncConnection,
    *,
    principal: Principal,
    code: str,
    generation: int,
    geometry: GeometryOptions = GeometryOptions(),
) -> list[dict[str, Any]]:
    """Return the visible children of ``code`` (404 if ``code`` itself is not visible)."""
    await get_area(conn, principal=principal, code=code, generation=generation)
    items, _ = await list_areas(
        conn,
        principal=principal,
        generation=generation,
        parent_code=code,
        limit=100_000,
        offset=0,
        geometry=geometry,
    )
    return items


async def list_ancestors(
    conn: AsyncConnection, *, principal: Principal, code: str, generation: int
) -> list[dict[str, Any]]:
    """Return the ancestors of ``code``, from the top (city) down, without geometry."""
    area = await get_area(conn, principal=principal, code=code, generation=generation)
    codes = area["path"][:-1]
    if not codes:
        return []
    sql = (
        f"SELECT {_COLUMNS} FROM area a WHERE a.code = ANY(CAST(:codes AS text[])) "
        f"AND {_IN_GENERATION} ORDER BY a.depth"
    )
    rows = (await conn.execute(text(sql), {"codes": codes, "g": generation})).all()
    return [_row_to_dict(r) for r in rows]


async def list_area_history(
    conn: AsyncConnection, *, principal: Principal, code: str
) -> list[dict[str, Any]]:
    """Return every stored version of ``code`` across generations, oldest first."""
    sql = (
        f"SELECT {_COLUMNS} FROM area a WHERE a.code = :code AND {_VISIBLE} "
        "ORDER BY a.generation_low"
    )
    rows = (await conn.execute(text(sql), {"code": code, "scope": principal.scope_path})).all()
    if not rows:
        raise NotFoundError(f"no area {code} that you may see, in any generation", field="code")
    return [_row_to_dict(r) for r in rows]
