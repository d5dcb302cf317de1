"""Create, read, update, delete and count entities, every query filtered by scope.

Generic over :class:`service.specs.entity_kinds.EntitySpec`: identifiers come from the spec
(code), values are bound parameters, and what differs between kinds is a field of the spec.
Cells are assigned by the database on write (``locate_entity`` trigger); a write whose
location falls outside the caller's area is refused and rolled back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from geo.coords import CoordinateError, to_wgs84, validate_point
from service.auth import Principal
from service.errors import ForbiddenError, NotFoundError, UnprocessableError
from service.references import check_references
from service.repositories.byid import ID_TIME_MAPS, ById
from service.repositories.filters import Where
from service.repositories.paging import fetch_page
from service.specs.entity_kinds import EntitySpec

__all__ = [
    "point_visible_sql",
    "visible_sql",
    "list_entities",
    "get_entity",
    "create_entity",
    "update_entity",
    "delete_entity",
    "count_entities",
    "count_groups",
    "convert_point",
    "covers_entity",
    "select_columns",
    "scope_params",
    "row_to_read",
]


COUNT_GROUPS = {
    "grid": "grid_code",
    "community": "community_code",
    "district": "district_code",
    "kind": "kind",
    "category": "category",
    "status": "status",
}


def point_visible_sql(alias: str = "t") -> str:
    """Return the SQL condition "the caller may see this point entity" (params
    :scope, :scope_city): its chain passes through the scope, or it lies outside every area
    and the caller works at city level."""
    path = f"{alias}.area_path"
    return (
        f"(CAST(:scope AS text) IS NULL OR {path} = :scope OR {path} LIKE :scope || '/%' "
        f"OR ({path} IS NULL AND :scope_city))"
    )


def visible_sql(spec: EntitySpec, alias: str = "t") -> str:
    """Return the SQL condition "the caller may see this row" (params :scope, :scope_city)."""
    if spec.point:
        return point_visible_sql(alias)
    # No location: in every area one of its area references is in.
    inside = "".join(
        f"OR {alias}.{path} = :scope OR {alias}.{path} LIKE :scope || '/%' "
        for path in spec.area_path_columns.values()
    )
    return f"(CAST(:scope AS text) IS NULL {inside.rstrip()})"


def scope_params(principal: Principal) -> dict[str, Any]:
    # Points outside every area belong to the city-level queue.
    city_level = principal.scope_path is not None and "/" not in principal.scope_path
    return {"scope": principal.scope_path, "scope_city": city_level}


def covers_entity(principal: Principal, path: str | None) -> bool:
    """Return whether a point entity whose chain ends at ``path`` is in the caller's area."""
    if principal.scope_path is None:
        return True
    if path is None:
        return "/" not in principal.scope_path
    return principal.covers_path(path)


def select_columns(spec: EntitySpec) -> str:
    cols = ["t.id", *(f"t.{c}" for c in spec.columns), *(f"t.{c}" for c in spec.extra_read_columns)]
    cols += ["t.created_at", "t.updated_at"]
    if spec.point:
        cols += [
            "ST_X(t.geom) AS lon",
            "ST_Y(t.geom) AS lat",
            "t.generation",
            "t.area_path",
            "t.grid_code",
            "t.community_code",
            "t.district_code",
        ]
    else:
        cols += [f"t.{path}" for path in spec.area_path_columns.values()]
    return ", ".join(cols)


def row_to_read(spec: EntitySpec, row: Any) -> dict[str, Any]:
    """Return the ``…Read`` shape of a selected row."""
    m = row._mapping
    out = {c: m[c] for c in ("id", *spec.columns, "created_at", "updated_at")}
    if spec.point:
        out["lon"] = m["lon"]
        out["lat"] = m["lat"]
        out["cells"] = {
            "generation": m["generation"],
            "grid_code": m["grid_code"],
            "community_code": m["community_code"],
            "district_code": m["district_code"],
        }
    if spec.lifecycle is not None:
        out[spec.lifecycle.closed_at] = m[spec.lifecycle.closed_at]
    if spec.keeps_reported_cell:
        out["reported"] = {
            "generation": m["reported_generation"],
            "grid_code": m["reported_grid_code"],
        }
    for column in spec.float_columns:  # numeric columns come back as Decimal
        if out[column] is not None:
            out[column] = float(out[column])
    return out


def convert_point(lon: float | None, lat: float | None, crs: str) -> tuple[float, float]:
    """Return WGS84 (lon, lat) of a point given in ``crs``; 422 naming the field if bad."""
    if lon is None or lat is None:
        raise UnprocessableError("give both lon and lat", field="lon" if lon is None else "lat")
    try:
        validate_point(lon, lat, crs)
        x, y = to_wgs84(lon, lat, crs)
    except CoordinateError as exc:
        raise UnprocessableError(str(exc), field=exc.field) from None
    except ValueError as exc:  # unknown crs
        raise UnprocessableError(str(exc), field="crs") from None
    return float(x), float(y)


def _require_role(spec: EntitySpec, principal: Principal, roles: frozenset[str], verb: str) -> None:
    if principal.role not in roles:
        raise ForbiddenError(f"a {principal.role} may not {verb} {spec.name}", field="role")


def _require_details(spec: EntitySpec, principal: Principal) -> None:
    if spec.sensitive and principal.role not in spec.detail_roles:
        raise ForbiddenError(
            f"{spec.name} are sensitive personal data: a {principal.role} sees counts only "
            f"(GET /{spec.name}/counts)",
            field="role",
        )


async def _log_reads(conn: AsyncConnection, spec: EntitySpec, principal: Principal, ids, action):
    if not spec.sensitive or not ids:
        return
    await conn.execute(
        text(
            "INSERT INTO access_log (token_id, role, action, entity, entity_id) "
            "SELECT :token, :role, :action, :entity, unnest(CAST(:ids AS bigint[]))"
        ),
        {
            "token": principal.token_id,
            "role": principal.role,
            "action": action,
            "entity": spec.table,
            "ids": list(ids),
        },
    )


async def list_entities(
    conn: AsyncConnection,
    spec: EntitySpec,
    *,
    principal: Principal,
    filters: dict[str, Any],
    grid: str | None = None,
    community: str | None = None,
    district: str | None = None,
    unassigned: bool | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    """Return a page of visible entities (ordered by id) and how many match in all."""
    _require_details(spec, principal)
    where = Where(visible_sql(spec), **scope_params(principal))
    for column, value in filters.items():
        if column not in spec.filters:
            raise UnprocessableError(f"cannot filter {spec.name} by {column}", field=column)
        where.given(f"t.{column} = :f_{column}", **{f"f_{column}": value})
    if spec.point:
        where.equal(grid_code=grid, community_code=community, district_code=district)
        if unassigned is not None:
            where.add("t.grid_code IS NULL" if unassigned else "t.grid_code IS NOT NULL")
        if bbox is not None:
            where.add(
                "t.geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)",
                x0=bbox[0],
                y0=bbox[1],
                x1=bbox[2],
                y1=bbox[3],
            )
    elif grid is not None:
        # No location: ?grid= selects by the reference to a grid (members: the grid served).
        column = next(c for c, r in spec.references.items() if r.level == "grid")
        where.add(f"t.{column} = :grid", grid=grid)
    if spec.time_column is not None:
        where.given(f"t.{spec.time_column} >= :since", since=since)
        where.given(f"t.{spec.time_column} < :until", until=until)
    rows, total = await fetch_page(
        conn,
        columns=select_columns(spec),
        source=f"{spec.table} t",
        where=where,
        order="t.id",
        limit=limit,
        offset=offset,
    )
    items = [row_to_read(spec, r) for r in rows]
    await _log_reads(conn, spec, principal, [i["id"] for i in items], "list")
    return items, total


async def _fetch_visible(
    conn, spec: EntitySpec, principal: Principal, entity_id: int, by_id: ById | None = None
):
    by_id = by_id or await ById.look_up(conn, spec.table, entity_id)
    row = (
        await conn.execute(
            text(
                f"SELECT {select_columns(spec)} FROM {spec.table} t WHERE {by_id.sql()} "
                f"AND {visible_sql(spec)}"
            ),
            {**by_id.params, **scope_params(principal)},
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no {spec.label} {entity_id} that you may see", field="id")
    return row


async def get_entity(
    conn: AsyncConnection, spec: EntitySpec, *, principal: Principal, entity_id: int
) -> dict[str, Any]:
    """Return one visible entity (404 when absent or outside the scope)."""
    _require_details(spec, principal)
    row = await _fetch_visible(conn, spec, principal, entity_id)
    await _log_reads(conn, spec, principal, [entity_id], "read")
    return row_to_read(spec, row)


def _check_rules(spec: EntitySpec, row: Mapping[str, Any]) -> None:
    """Refuse a row that breaks one of the spec's rules across columns."""
    for rule in spec.rules:
        broken = rule(row)
        if broken is not None:
            field, reason = broken
            raise UnprocessableError(reason, field=field)


async def _read_back_in_scope(
    conn: AsyncConnection, spec: EntitySpec, principal: Principal, by_id: ById
) -> Any:
    """Return the row as written (its cells assigned by the database); refuse (403) one the
    write moved outside the principal's area."""
    row = (
        await conn.execute(
            text(f"SELECT {select_columns(spec)} FROM {spec.table} t WHERE {by_id.sql()}"),
            by_id.params,
        )
    ).first()
    m = row._mapping
    paths = spec.area_path_columns
    if spec.point:
        ok = covers_entity(principal, m["area_path"])
    else:
        ok = principal.scope_path is None or any(
            m[p] is not None and principal.covers_path(m[p]) for p in paths.values()
        )
    if not ok:
        raise ForbiddenError(
            f"the {spec.label} would lie outside your area {principal.area_code}; "
            "nothing was written",
            field="lon,lat" if spec.point else next(iter(paths)),
        )
    return row


def _values(spec: EntitySpec, data: BaseModel, *, exclude_unset: bool) -> dict[str, Any]:
    raw = data.model_dump(exclude_unset=exclude_unset)
    # Lists (of URLs) are stored as their JSON form, text; the rest as Python values.
    as_json = data.model_dump(mode="json", exclude_unset=exclude_unset)
    return {k: as_json[k] if isinstance(raw[k], list) else raw[k] for k in spec.columns if k in raw}


async def create_entity(
    conn: AsyncConnection,
    spec: EntitySpec,
    *,
    principal: Principal,
    data: BaseModel,
    forced: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a new entity, mapped to its cells; return it as read back.

    The spec's forced values and ``forced`` win over the body's (an intake token's source
    is its own). Columns left empty take the table's default (``reported_at``: now).
    """
    _require_role(spec, principal, spec.write_roles, "create")
    values = {
        **_values(spec, data, exclude_unset=False),
        **spec.forced_values(principal),
        **(forced or {}),
    }
    values = {k: v for k, v in values.items() if v is not None}
    if spec.lifecycle is not None:
        values.pop(spec.lifecycle.column, None)  # a new entity starts in the initial status
    if spec.intake_source is not None and values.get(spec.intake_source) is None:
        raise UnprocessableError(f"say where the {spec.label} came from", field=spec.intake_source)
    await check_references(conn, spec, principal, values)
    _check_rules(spec, values)
    cols = list(values)
    params = dict(values)
    if spec.point:
        params["lon"], params["lat"] = convert_point(data.lon, data.lat, data.crs)
        cols_sql = ", ".join([*cols, "geom", "created_by"])
        vals_sql = ", ".join(
            [*(f":{c}" for c in cols), "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)", ":token"]
        )
    else:
        cols_sql = ", ".join([*cols, "created_by"])
        vals_sql = ", ".join([*(f":{c}" for c in cols), ":token"])
    params["token"] = principal.token_id
    # The new row's time comes back with its id: the read back names its month.
    timed = spec.table in ID_TIME_MAPS
    returning = f"id, {spec.time_column}" if timed else "id"
    new = (
        await conn.execute(
            text(
                f"INSERT INTO {spec.table} ({cols_sql}) VALUES ({vals_sql}) RETURNING {returning}"
            ),
            params,
        )
    ).one()
    by_id = ById(spec.table, new[0], new[1] if timed else None)
    row = await _read_back_in_scope(conn, spec, principal, by_id)
    return row_to_read(spec, row)


async def update_entity(
    conn: AsyncConnection,
    spec: EntitySpec,
    *,
    principal: Principal,
    entity_id: int,
    patch: BaseModel,
) -> dict[str, Any]:
    """Change the fields given in ``patch``; a moved entity is re-mapped to its cells."""
    _require_role(spec, principal, spec.change_roles, "change")
    by_id = await ById.look_up(conn, spec.table, entity_id)
    current = await _fetch_visible(conn, spec, principal, entity_id, by_id)
    values = _values(spec, patch, exclude_unset=True)
    # References must name something in scope; a change's replaced values too.
    await check_references(conn, spec, principal, values, current=current._mapping)
    # Rules span columns: they judge the row as the change would leave it.
    _check_rules(spec, {**current._mapping, **values})
    sets = [f"{c} = :{c}" for c in values]
    params: dict[str, Any] = {**values, **by_id.params}
    fields_set = patch.model_fields_set
    if spec.point and ({"lon", "lat"} & fields_set):
        params["lon"], params["lat"] = convert_point(patch.lon, patch.lat, patch.crs)
        sets.append("geom = ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)")
    for column in spec.required_columns:
        if column in values and values[column] is None:
            raise UnprocessableError(f"{column} cannot be empty", field=column)
    lifecycle = spec.lifecycle
    if lifecycle is not None and lifecycle.column in values:
        # Entering the closed status stamps the time once; leaving it clears the stamp.
        stamp = lifecycle.closed_at
        sets.append(
            f"{stamp} = CASE WHEN :{lifecycle.column} = CAST(:closed_status AS text) "
            f"THEN coalesce({stamp}, now()) END"
        )
        params["closed_status"] = lifecycle.closed
    if not sets:
        return row_to_read(spec, current)
    sets.append("updated_at = now()")
    await conn.execute(
        text(f"UPDATE {spec.table} SET {', '.join(sets)} WHERE {by_id.sql(None)}"), params
    )
    row = await _read_back_in_scope(conn, spec, principal, by_id)
    await _log_reads(conn, spec, principal, [entity_id], "update")
    return row_to_read(spec, row)


async def delete_entity(
    conn: AsyncConnection, spec: EntitySpec, *, principal: Principal, entity_id: int
) -> None:
    """Delete a visible entity (dispatchers and admins only)."""
    _require_role(spec, principal, spec.delete_roles, "delete")
    by_id = await ById.look_up(conn, spec.table, entity_id)
    await _fetch_visible(conn, spec, principal, entity_id, by_id)
    await conn.execute(text(f"DELETE FROM {spec.table} WHERE {by_id.sql(None)}"), by_id.params)
    await _log_reads(conn, spec, principal, [entity_id], "delete")


def count_groups(spec: EntitySpec) -> tuple[str, ...]:
    """Return what ``spec``'s entities can be counted by: cells if located, its own columns."""
    return tuple(
        key
        for key, column in COUNT_GROUPS.items()
        if (spec.point and column.endswith("_code")) or column in spec.columns
    )


async def count_entities(
    conn: AsyncConnection, spec: EntitySpec, *, principal: Principal, by: list[str]
) -> list[dict[str, Any]]:
    """Return counts of visible entities grouped by ``by`` (grid, community, kind, ...)."""
    columns = []
    groups = count_groups(spec)
    for key in by:
        if key not in groups:
            raise UnprocessableError(f"cannot group {spec.name} by {key}", field="by")
        columns.append((key, COUNT_GROUPS[key]))
    select = ", ".join(f"t.{c} AS {k}" for k, c in columns)
    group = ", ".join(f"t.{c}" for _, c in columns)
    sql = (
        f"SELECT {select + ', ' if select else ''}count(*) AS count FROM {spec.table} t "
        f"WHERE {visible_sql(spec)}"
    )
    if group:
        sql += f" GROUP BY {group} ORDER BY {group}"
    rows = (await conn.execute(text(sql), scope_params(principal))).all()
    return [dict(r._mapping) for r in rows]
