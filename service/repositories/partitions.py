"""The monthly partitions of ``incident`` and its archive (migration 0013 defines the SQL).

``incident`` is partitioned by month of ``reported_at`` in Guiyang's time
(``incident_YYYY_MM``) with a DEFAULT partition (``incident_default``) for months without
their own. Months are created ahead of time (:func:`ensure_partitions`), archived into schema
``archive`` with their cases' events and photos (:func:`archive_months`) and brought back
whole (:func:`reattach_month`); each is one transaction, the caller's.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.background import pause

__all__ = [
    "list_partitions",
    "ensure_partitions",
    "keep_months_ahead",
    "archive_months",
    "reattach_month",
]

log = logging.getLogger(__name__)

#: Months a server keeps created ahead of today, and how often it looks again (a day).
MONTHS_AHEAD = 12
ENSURE_EVERY_S = 24 * 3600.0
#: How long creating a month waits for the table's lock, and when it tries again if it could not.
LOCK_TIMEOUT = "2s"
RETRY_S = 600.0

_LIST = text(
    """
    SELECT n.nspname = 'archive' AS archived, c.relname AS name,
           CASE WHEN c.relname = 'incident_default' THEN NULL
                ELSE to_char(to_date(substr(c.relname, 10), 'YYYY_MM'), 'YYYY-MM') END AS month,
           pg_get_expr(c.relpartbound, c.oid) AS bounds,
           pg_total_relation_size(c.oid) AS bytes
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND (
        (n.nspname = 'public' AND c.relispartition AND c.oid IN (
            SELECT inhrelid FROM pg_inherits WHERE inhparent = 'public.incident'::regclass))
        OR (n.nspname = 'archive' AND c.relname ~ '^incident_[0-9]{4}_[0-9]{2}$'))
    ORDER BY c.relname = 'incident_default', c.relname
    """
)


def list_partitions(conn: Connection, *, counts: bool = True) -> list[dict[str, Any]]:
    """Return every partition of ``incident`` and every archived month, oldest first (the
    default partition last): name, month, archived, bounds, bytes and (``counts``) rows."""
    parts = [dict(row._mapping) for row in conn.execute(_LIST)]
    for part in parts:
        schema = "archive" if part["archived"] else "public"
        if counts:
            part["rows"] = conn.execute(
                text(f'SELECT count(*) FROM {schema}."{part["name"]}"')
            ).scalar()
    return parts


def ensure_partitions(conn: Connection, *, months_ahead: int, since: date | None) -> list[str]:
    """Create the partitions of this month and the next ``months_ahead`` (and of every month
    from ``since``), moving the rows the default partition holds for them; return the new
    partitions' names."""
    return list(
        conn.execute(
            text("SELECT incident_ensure_partitions(:ahead, :since)"),
            {"ahead": months_ahead, "since": since},
        ).scalars()
    )


async def keep_months_ahead(
    engine: AsyncEngine,
    stop: asyncio.Event,
    *,
    months_ahead: int = MONTHS_AHEAD,
    every_seconds: float = ENSURE_EVERY_S,
    retry_seconds: float = RETRY_S,
) -> None:
    """Create this month and the next ``months_ahead`` now and once every ``every_seconds``,
    until ``stop`` is set (each server process does; creation takes an advisory
    lock, so they never collide, and costs a few milliseconds when nothing is missing).

    Creating a partition locks ``incident``: the attempt waits at most ``LOCK_TIMEOUT`` for
    readers and writers holding it (so it never queues the dispatch screens behind a long
    transaction) and tries again after ``retry_seconds``. A failure is logged, never fatal:
    rows of a month without a partition land in ``incident_default`` and move into their
    month when it is created.
    """
    while not stop.is_set():
        wait = every_seconds
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                made = (
                    (
                        await conn.execute(
                            text("SELECT incident_ensure_partitions(:ahead, NULL)"),
                            {"ahead": months_ahead},
                        )
                    )
                    .scalars()
                    .all()
                )
            if made:
                log.info("incident partitions created: %s", ", ".join(made))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next round tries again; nothing is lost meanwhile
            log.warning("could not create the coming months' incident partitions", exc_info=True)
            wait = retry_seconds
        if await pause(stop, wait):
            return


def archive_months(conn: Connection, *, before: date) -> list[str]:
    """Move every month before ``before`` (a first of a month) into schema ``archive`` with
    its cases' events and photos; return the months (``YYYY-MM``) archived."""
    return list(
        conn.execute(text("SELECT incident_archive(:before)"), {"before": before}).scalars()
    )


def reattach_month(conn: Connection, *, month: date) -> str:
    """Bring an archived month back into ``incident`` with its events and photos."""
    return conn.execute(text("SELECT incident_reattach(:month)"), {"month": month}).scalar_one()
