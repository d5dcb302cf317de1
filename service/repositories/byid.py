"""One row of a table partitioned by month, by id, in one partition.

``incident`` is partitioned by month of ``reported_at`` (migration 0013) and its key is
``(id, reported_at)``: a statement naming the id alone cannot prune, it probes the key index
of every month (and PostgreSQL 15 locks and opens each). ``incident_month`` (0020, kept by
triggers) maps each id to its ``reported_at``, which is never updated: a by-id statement
looks the time up first (:meth:`ById.look_up`, one probe of one small index) and names it
too (:meth:`ById.sql`), so it reads one partition under custom plans (pruned when planned)
and under generic ones (pruned as the executor starts: the hot pool's statements).

An id the map lacks is read by id alone: the map is a shortcut, never the truth.

On the hot pool (generic plans) a statement can also name the month by a sub-select of the map
(:meth:`ById.of_map`): no round trip of its own, the partition chosen as the statement runs
(the sub-select is an init plan; run-time pruning). A custom plan cannot prune on it when
planned (it plans every month, then runs one), so SQLAlchemy's statements look the month up
first. An inline statement finds no row for an id the map lacks: its caller asks again with
:meth:`ById.look_up`.

Used by the entity reads and writes (:mod:`service.repositories.entities`, on SQLAlchemy)
and by every single-case operation of dispatch (:mod:`service.dispatch.cases`, on SQLAlchemy
and on the hot pool's raw asyncpg connections).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text

__all__ = ["ID_TIME_MAPS", "ById"]

#: Tables partitioned by a time column → (the table mapping each id to that time, the
#: column). A by-id statement on such a table names the row's time as well.
ID_TIME_MAPS = {"incident": ("incident_month", "reported_at")}

_SQL = {table: f"SELECT {c} FROM {m} WHERE id = $1" for table, (m, c) in ID_TIME_MAPS.items()}
_TEXT = {
    table: text(f"SELECT {c} FROM {m} WHERE id = :id") for table, (m, c) in ID_TIME_MAPS.items()
}


class ById:
    """The condition selecting one row of ``table`` by id (:meth:`sql`, parameters ``:id``
    and, when the row's time is known, ``:id_at``) and its parameters (:attr:`params`)."""

    __slots__ = ("table", "id", "at", "inline")

    def __init__(self, table: str, entity_id: int, at: datetime | None = None):
        self.table, self.id, self.at = table, entity_id, at
        self.inline = False

    @classmethod
    def of_map(cls, table: str, entity_id: int) -> ById:
        """Return the condition naming the row's time by a sub-select of the table's id map
        (:attr:`inline`; a table without a map: by id alone). For generic plans; no row for
        an id the map lacks (ask again with :meth:`look_up`)."""
        by_id = cls(table, entity_id)
        by_id.inline = table in ID_TIME_MAPS
        return by_id

    @classmethod
    async def look_up(cls, conn, table: str, entity_id: int) -> ById:
        """Return the condition for ``entity_id``, its time read from the table's id map on
        ``conn``: a SQLAlchemy ``AsyncConnection`` or a raw asyncpg connection (the hot pool).
        A table without a map, or an id the map lacks, is read by id alone."""
        if table not in ID_TIME_MAPS:
            return cls(table, entity_id)
        if not hasattr(conn, "fetchval"):
            # SQLAlchemy's: its asyncpg connection runs the look-up (a prepared statement of
            # its own), without SQLAlchemy's execution path, which cost 3x the look-up's time
            # (the value never changes: the transaction SQLAlchemy may have begun or not yet
            # makes no difference).
            driver = (await conn.get_raw_connection()).driver_connection
            if not hasattr(driver, "fetchval"):  # another driver
                at = (await conn.execute(_TEXT[table], {"id": entity_id})).scalar()
                return cls(table, entity_id, at)
            conn = driver
        return cls(table, entity_id, await conn.fetchval(_SQL[table], entity_id))

    @property
    def params(self) -> dict[str, Any]:
        """``id``, and ``id_at`` when the row's time is known."""
        return {"id": self.id} if self.at is None else {"id": self.id, "id_at": self.at}

    def sql(self, alias: str | None = "t") -> str:
        """Return ``alias.id = :id`` and ``alias.<time> = :id_at`` when the time is known (or
        ``= (SELECT <time> FROM <map> WHERE id = :id)`` when :attr:`inline`)."""
        prefix = f"{alias}." if alias else ""
        cond = f"{prefix}id = :id"
        if self.at is not None:
            cond += f" AND {prefix}{ID_TIME_MAPS[self.table][1]} = :id_at"
        elif self.inline:
            months, column = ID_TIME_MAPS[self.table]
            cond += f" AND {prefix}{column} = (SELECT m.{column} FROM {months} m WHERE m.id = :id)"
        return cond
