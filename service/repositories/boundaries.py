"""Write boundary generations: create, load areas into the pending one, activate.

Writes only ever touch the *pending* (inactive) generation: once a generation is active its
boundaries are history and are never rewritten (MapIt's rule). Functions take a synchronous
SQLAlchemy connection and never commit; the caller owns the transaction (the API runs them
through ``AsyncConnection.run_sync``).
"""

from __future__ import annotations

from dataclasses import dataclass

import shapely
from sqlalchemy import Connection, text

from geo.areas import LEVELS, AreaRecord
from service.errors import ConflictError, NotFoundError, UnprocessableError

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


def current_generation(conn: Connection) -> int | None:
    """Return the id of the current generation (the newest active one), or None."""
    return conn.execute(text("SELECT max(id) FROM generation WHERE active")).scalar()


def pending_generation(conn: Connection) -> int | None:
    """Return the id of the generation waiting to be activated, or None."""
    return conn.execute(text("SELECT id FROM generation WHERE NOT active")).scalar()


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
        text("INSERT INTO generation (description) VALUES (:d) RETURNING id"), {"d": description}
    ).scalar_one()
    if carry_over and current is not None:
        conn.execute(
            text("UPDATE area SET generation_high = :new WHERE generation_high = :cur"),
            {"new": new_id, "cur": current},
        )
    return new_id


def _require_pending(conn: Connection, generation_id: int) -> None:
    row = conn.execute(
        text("SELECT active FROM generation WHERE id = :g"), {"g": generation_id}
    ).first()
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
    rows = conn.execute(
        text("SELECT code, level FROM area WHERE generation_low <= :g AND generation_high >= :g"),
        {"g": generation_id},
    )
    return {r.code: r.level for r in rows}


def write_areas(
    conn: Connection, *, generation_id: int, records: list[AreaRecord], source: str = ""
) -> WriteSummary:
    """Load ``records`` into the pending generation and return what changed.

    An area identical to the one already valid there is left alone; a changed area that
    was carried over ends its old version in the previous generation and gets a new row.
    """
    _require_pending(conn, generation_id)
    summary = WriteSummary(generation=generation_id)
    paths: dict[str, str] = {}
    for record in sorted(records, key=lambda r: (LEVELS.index(r.level), r.code)):
        if record.parent_code is None:
            path = record.code
        else:
            parent_path = (
                paths.get(record.parent_code)
                or conn.execute(
                    text(
                        "SELECT path FROM area WHERE code = :c "
                        "AND generation_low <= :g AND generation_high >= :g"
                    ),
                    {"c": record.parent_code, "g": generation_id},
                ).scalar()
            )
            if parent_path is None:
                raise UnprocessableError(
                    f"area {record.code}: parent {record.parent_code} is not in generation "
                    f"{generation_id}",
                    field="parent_code",
                )
            path = f"{parent_path}/{record.code}"
        paths[record.code] = path
        params = {
            "code": record.code,
            "name": record.name,
            "level": record.level,
            "depth": LEVELS.index(record.level),
            "parent": record.parent_code,
            "path": path,
            "g": generation_id,
            "wkb": shapely.to_wkb(record.geom),
            "source": source,
            "props": _json(record.properties),
        }
        existing = conn.execute(
            text(
                "SELECT id, generation_low, name, level, parent_code, path, "
                "ST_Equals(geom, ST_GeomFromWKB(:wkb, 4326)) AS same_geom "
                "FROM area WHERE code = :code "
                "AND generation_low <= :g AND generation_high >= :g"
            ),
            params,
        ).first()
        if existing is not None:
            same = (
                existing.same_geom
                and existing.name == record.name
                and existing.level == record.level
                and existing.parent_code == record.parent_code
                and existing.path == path
            )
            if same:
                summary.unchanged += 1
                continue
            if existing.generation_low == generation_id:
                conn.execute(text("DELETE FROM area WHERE id = :id"), {"id": existing.id})
            else:
                conn.execute(
                    text("UPDATE area SET generation_high = :g - 1 WHERE id = :id"),
                    {"g": generation_id, "id": existing.id},
                )
            summary.replaced += 1
        else:
            summary.inserted += 1
        conn.execute(
            text(
                "INSERT INTO area (code, name, level, depth, parent_code, path, generation_low, "
                "generation_high, geom, source, properties) VALUES (:code, :name, :level, :depth, "
                ":parent, :path, :g, :g, ST_Multi(ST_GeomFromWKB(:wkb, 4326)), :source, "
                "CAST(:props AS jsonb))"
            ),
            params,
        )
    return summary


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
        if row.generation_low == generation_id:
            conn.execute(text("DELETE FROM area WHERE id = :id"), {"id": row.id})
        else:
            conn.execute(
                text("UPDATE area SET generation_high = :g - 1 WHERE id = :id"),
                {"g": generation_id, "id": row.id},
            )
    return len(rows)


POINT_TABLES = ("unit", "facility", "care_household", "incident")


def remap_entities(conn: Connection, *, generation_id: int) -> dict[str, int]:
    """Re-map every point entity to its cells in ``generation_id``; return rows per table.

    Incidents keep the cell they were reported in (``reported_*`` columns) for ever; their
    current cell follows the boundaries, so an open case goes to today's grid team.
    """
    from service.bulk import remap_table

    return {table: remap_table(conn, table, generation_id) for table in POINT_TABLES}


def activate_generation(conn: Connection, *, generation_id: int) -> dict[str, int]:
    """Make the pending ``generation_id`` current, after checking every parent is in it.

    Returns how many entities of each table were re-mapped to the new boundaries.
    """
    _require_pending(conn, generation_id)
    orphan = conn.execute(
        text(
            "SELECT a.code, a.parent_code FROM area a WHERE a.generation_low <= :g "
            "AND a.generation_high >= :g AND a.parent_code IS NOT NULL AND NOT EXISTS ("
            "SELECT 1 FROM area p WHERE p.code = a.parent_code "
            "AND p.generation_low <= :g AND p.generation_high >= :g) LIMIT 1"
        ),
        {"g": generation_id},
    ).first()
    if orphan is not None:
        raise UnprocessableError(
            f"area {orphan.code} has no parent {orphan.parent_code} in generation {generation_id}",
            field="generation",
        )
    empty = conn.execute(
        text(
            "SELECT NOT EXISTS (SELECT 1 FROM area WHERE generation_low <= :g "
            "AND generation_high >= :g)"
        ),
        {"g": generation_id},
    ).scalar()
    if empty:
        raise UnprocessableError(f"generation {generation_id} has no areas", field="generation")
    conn.execute(
        text("UPDATE generation SET active = true, activated_at = now() WHERE id = :g"),
        {"g": generation_id},
    )
    # A generation is loaded in bulk just before this; fresh statistics keep the lookup
    # plans on their indexes from the first request.
    conn.execute(text("ANALYZE area"))
    conn.execute(text("ANALYZE area_part"))
    # Every boundary may have moved: map servers drop all their cached tiles (on commit).
    conn.execute(text("""SELECT pg_notify('wangge_changes', '{"all": true}')"""))
    return remap_entities(conn, generation_id=generation_id)


def _json(value: dict) -> str:
    import orjson

    return orjson.dumps(value).decode()
