"""Write boundary generations: create, load areas into the pending one, activate.

Writes only ever touch the *pending* (inactive) generation: once a generation is active its
boundaries are history and are never rewritten (MapIt's rule). Functions take a synchronous
SQLAlchemy connection and never commit; the caller owns the transaction (the API runs them
through ``AsyncConnection.run_sync``). Statements are built on the declared tables
(:mod:`service.tables`); the one that picks areas by code prefixes stays SQL, which says it
more plainly.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from geoalchemy2.shape import from_shape
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from geo.areas import LEVELS, AreaRecord
from geo.crs import STORAGE_SRID
from service.errors import ConflictError, NotFoundError, UnprocessableError
from service.tables import POINT_TABLES, area, generation

__all__ = [
    "WriteSummary",
    "current_generation",
    "pending_generation",
    "create_generation",
    "write_areas",
    "retire_areas",
    "activate_generation",
    "levels_in_generation",
    "remap_entities",
]


@dataclass
class WriteSummary:
    """What :func:`write_areas` did."""

    generation: int
    inserted: int = 0
    replaced: int = 0
    unchanged: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "generation": self.generation,
            "inserted": self.inserted,
            "replaced": self.replaced,
            "unchanged": self.unchanged,
        }


def _valid_in(table: Table, generation_id: int):
    """Return the condition "the row's version is valid in ``generation_id``"."""
    return and_(table.c.generation_low <= generation_id, table.c.generation_high >= generation_id)


def current_generation(conn: Connection) -> int | None:
    """Return the id of the current generation (the newest active one), or None."""
    return conn.execute(select(func.max(generation.c.id)).where(generation.c.active)).scalar()


def pending_generation(conn: Connection) -> int | None:
    """Return the id of the generation waiting to be activated, or None."""
    return conn.execute(select(generation.c.id).where(~generation.c.active)).scalar()


def create_generation(conn: Connection, *, description: str, carry_over: bool = True) -> int:
    """Return the id of a new pending generation; current areas are carried into it.

    With ``carry_over`` every area of the current generation stays valid in the new one
    until it is replaced or retired, so an import of only some areas leaves the others.
    """
    if pending_generation(conn) is not None:
        raise ConflictError(
            "a generation is already pending; activate it or load into it", field="generation"
        )
    current = current_generation(conn)
    new_id = conn.execute(
        insert(generation).values(description=description).returning(generation.c.id)
    ).scalar_one()
    if carry_over and current is not None:
        conn.execute(
            update(area).where(area.c.generation_high == current).values(generation_high=new_id)
        )
    return new_id


def _require_pending(conn: Connection, generation_id: int) -> None:
    row = conn.execute(select(generation.c.active).where(generation.c.id == generation_id)).first()
    if row is None:
        raise NotFoundError(f"generation {generation_id} does not exist", field="generation")
    if row.active:
        raise ConflictError(
            f"generation {generation_id} is active; boundaries of an active generation are "
            "history and cannot change. Create a new generation.",
            field="generation",
        )


def levels_in_generation(conn: Connection, generation_id: int) -> dict[str, str]:
    """Return code → level of every area valid in ``generation_id``."""
    rows = conn.execute(select(area.c.code, area.c.level).where(_valid_in(area, generation_id)))
    return {r.code: r.level for r in rows}


def write_areas(
    conn: Connection, *, generation_id: int, records: list[AreaRecord], source: str = ""
) -> WriteSummary:
    """Load ``records`` into the pending generation and return what changed.

    An area identical to the one already valid there is left alone; a changed area that
    was carried over ends its old version in the previous generation and gets a new row.
    Written in a fixed number of statements whatever the number of areas (a province's
    36,000 areas took two round trips each, minutes on a busy server).
    """
    _require_pending(conn, generation_id)
    summary = WriteSummary(generation=generation_id)
    ordered = sorted(records, key=lambda r: (LEVELS.index(r.level), r.code))
    # One version per code and generation: of repeated codes the last record wins, as it
    # did when each record replaced the one written before it.
    last = {r.code: i for i, r in enumerate(ordered)}
    summary.replaced += len(ordered) - len(last)
    ordered = [r for i, r in enumerate(ordered) if last[r.code] == i]
    codes = [r.code for r in ordered]
    parents = sorted({r.parent_code for r in ordered if r.parent_code is not None})
    stored_paths = dict(
        conn.execute(
            select(area.c.code, area.c.path).where(
                area.c.code == any_(bindparam("codes", type_=ARRAY(Text))),
                _valid_in(area, generation_id),
            ),
            {"codes": parents},
        ).all()
    )
    paths: dict[str, str] = {}
    for record in ordered:
        if record.parent_code is None:
            paths[record.code] = record.code
            continue
        parent_path = paths.get(record.parent_code) or stored_paths.get(record.parent_code)
        if parent_path is None:
            raise UnprocessableError(
                f"area {record.code}: parent {record.parent_code} is not in generation "
                f"{generation_id}",
                field="parent_code",
            )
        paths[record.code] = f"{parent_path}/{record.code}"
    ewkb = {r.code: from_shape(r.geom, srid=STORAGE_SRID, extended=True) for r in ordered}

    existing = conn.execute(
        select(
            area.c.id,
            area.c.code,
            area.c.generation_low,
            area.c.name,
            area.c.level,
            area.c.parent_code,
            area.c.path,
        ).where(
            area.c.code == any_(bindparam("codes", type_=ARRAY(Text))),
            _valid_in(area, generation_id),
        ),
        {"codes": codes},
    ).all()
    same_geom: dict[int, bool] = {}
    if existing:
        same_geom = dict(
            conn.execute(
                text(
                    "SELECT a.id, ST_Equals(a.geom, ST_GeomFromEWKB(u.wkb)) FROM "
                    "unnest(CAST(:ids AS bigint[]), CAST(:wkbs AS bytea[])) AS u(id, wkb) "
                    "JOIN area a ON a.id = u.id"
                ),
                {
                    "ids": [e.id for e in existing],
                    "wkbs": [bytes(ewkb[e.code].data) for e in existing],
                },
            ).all()
        )
    by_code = {r.code: r for r in ordered}
    unchanged: set[str] = set()
    drop_ids: list[int] = []
    end_ids: list[int] = []
    for e in existing:
        record = by_code[e.code]
        same = (
            same_geom[e.id]
            and e.name == record.name
            and e.level == record.level
            and e.parent_code == record.parent_code
            and e.path == paths[e.code]
        )
        if same:
            unchanged.add(e.code)
        else:
            # A version begun in this generation is deleted; an older one ends before it.
            (drop_ids if e.generation_low == generation_id else end_ids).append(e.id)
    summary.unchanged += len(unchanged)
    summary.replaced += len(drop_ids) + len(end_ids)
    summary.inserted += len(ordered) - len(existing)
    if drop_ids:
        conn.execute(
            delete(area).where(area.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))),
            {"ids": drop_ids},
        )
    if end_ids:
        conn.execute(
            update(area)
            .where(area.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
            .values(generation_high=_previous_generation(conn, generation_id)),
            {"ids": end_ids},
        )
    rows = [
        {
            "code": r.code,
            "name": r.name,
            "level": r.level,
            "depth": LEVELS.index(r.level),
            "parent_code": r.parent_code,
            "path": paths[r.code],
            "geom_in": ewkb[r.code],
            "properties_in": orjson.dumps(r.properties).decode(),
        }
        for r in ordered
        if r.code not in unchanged
    ]
    if rows:
        # One executemany: psycopg sends the rows in a pipeline, not a round trip each.
        conn.execute(
            insert(area).values(
                code=bindparam("code"),
                name=bindparam("name"),
                level=bindparam("level"),
                depth=bindparam("depth"),
                parent_code=bindparam("parent_code"),
                path=bindparam("path"),
                generation_low=generation_id,
                generation_high=generation_id,
                geom=func.ST_Multi(bindparam("geom_in", type_=area.c.geom.type)),
                source=source,
                properties=cast(bindparam("properties_in", type_=Text), JSONB),
            ),
            rows,
        )
    return summary


def _previous_generation(conn: Connection, generation_id: int) -> int:
    """Return the generation before ``generation_id``: the newest older one. Ids may have
    gaps (a generation created in a transaction that rolled back still used its id), so
    ``generation_id - 1`` need not exist."""
    return conn.execute(
        text("SELECT max(id) FROM generation WHERE id < :g"), {"g": generation_id}
    ).scalar_one()


def _end_version(conn: Connection, *, area_id: int, low: int, generation_id: int) -> None:
    """End an area version before the pending ``generation_id``: a version that began in
    it is deleted, an older one now ends in the previous generation."""
    if low == generation_id:
        conn.execute(delete(area).where(area.c.id == area_id))
    else:
        conn.execute(
            update(area)
            .where(area.c.id == area_id)
            .values(generation_high=_previous_generation(conn, generation_id))
        )


def retire_areas(conn: Connection, *, generation_id: int, codes: list[str]) -> int:
    """End ``codes`` and their descendants before ``generation_id``; return how many."""
    _require_pending(conn, generation_id)
    rows = conn.execute(
        text(
            "SELECT id, generation_low FROM area a WHERE a.generation_low <= :g "
            "AND a.generation_high >= :g "
            "AND EXISTS (SELECT 1 FROM unnest(CAST(:codes AS text[])) c "
            "WHERE a.code = c OR a.path LIKE '%' || c || '/%')"
        ),
        {"g": generation_id, "codes": list(codes)},
    ).all()
    for row in rows:
        _end_version(conn, area_id=row.id, low=row.generation_low, generation_id=generation_id)
    return len(rows)


def remap_entities(conn: Connection, *, generation_id: int) -> dict[str, int]:
    """Re-map every point entity to its cells in ``generation_id``; return rows per table.

    Incidents keep the cell they were reported in (``reported_*`` columns) for ever; an open
    case's current cell follows the boundaries, and so do its owner and grid team (with a
    ``redraw`` event: :mod:`service.dispatch.redraw`); a closed or cancelled case keeps the
    cells it was handled in.
    """
    from service.bulk import remap_table
    from service.dispatch.redraw import OPEN_CASES, follow_redrawn_boundaries

    counts = {
        table.name: remap_table(
            conn, table.name, generation_id, OPEN_CASES if table.name == "incident" else "true"
        )
        for table in POINT_TABLES
    }
    follow_redrawn_boundaries(conn, generation_id=generation_id)
    return counts


def activate_generation(conn: Connection, *, generation_id: int) -> dict[str, int]:
    """Make the pending ``generation_id`` current, after checking every parent is in it.

    Returns how many entities of each table were re-mapped to the new boundaries.
    """
    _require_pending(conn, generation_id)
    child, parent = area.alias("a"), area.alias("p")
    orphan = conn.execute(
        select(child.c.code, child.c.parent_code)
        .where(
            _valid_in(child, generation_id),
            child.c.parent_code.is_not(None),
            ~exists().where(parent.c.code == child.c.parent_code, _valid_in(parent, generation_id)),
        )
        .limit(1)
    ).first()
    if orphan is not None:
        raise UnprocessableError(
            f"area {orphan.code} has no parent {orphan.parent_code} in generation {generation_id}",
            field="generation",
        )
    empty = conn.execute(select(~exists().where(_valid_in(area, generation_id)))).scalar()
    if empty:
        raise UnprocessableError(f"generation {generation_id} has no areas", field="generation")
    conn.execute(
        update(generation)
        .where(generation.c.id == generation_id)
        .values(active=True, activated_at=func.now())
    )
    # A generation is loaded in bulk just before this; fresh statistics keep the lookup
    # plans on their indexes from the first request.
    conn.execute(text("ANALYZE area"))
    conn.execute(text("ANALYZE area_part"))
    # Every boundary may have moved: map servers drop all their cached tiles (on commit).
    conn.execute(text("""SELECT pg_notify('wangge_changes', '{"all": true}')"""))
    return remap_entities(conn, generation_id=generation_id)


def _jsonb(value: dict):
    """Return ``value`` as a jsonb expression, serialised by orjson like the service's other
    JSON (the column type's own serialiser, ``json.dumps``, writes NaN, which jsonb refuses)."""
    return cast(literal(orjson.dumps(value).decode()), JSONB)
