"""One page of a listing and how many rows match in all, in one query."""

from __future__ import annotations

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.repositories.filters import Where

__all__ = ["fetch_page"]


async def fetch_page(
    conn: AsyncConnection,
    *,
    columns: str,
    source: str,
    where: Where,
    order: str,
    limit: int,
    offset: int,
) -> tuple[list[Row], int]:
    """Return the rows ``SELECT columns FROM source WHERE where ORDER BY order`` of the page
    at ``offset``, and how many match in all.

    The total comes with the page (``count(*) OVER ()``, column ``total``); only a page past
    the end, which has no row to carry it, counts again.
    """
    condition = where.sql()
    params = {**where.params, "limit": limit, "offset": offset}
    sql = (
        f"SELECT {columns}, count(*) OVER () AS total FROM {source} "
        f"WHERE {condition} ORDER BY {order} LIMIT :limit OFFSET :offset"
    )
    rows = (await conn.execute(text(sql), params)).all()
    if rows or not offset:
        return rows, rows[0].total if rows else 0
    count_sql = f"SELECT count(*) FROM {source} WHERE {condition}"
    return rows, (await conn.execute(text(count_sql), params)).scalar()
