"""Read what the live map pages need beyond the cases API: where the case stream stands,
the time limits their clocks run on, and an area's path.

Runs on the asyncpg pool, as the pages' other reads do. Nothing here is scoped: the event id
and the time limits are no one's data, and the area is one the caller was already shown.
"""

from __future__ import annotations

__all__ = ["find_latest_case_event_id", "list_time_limit_minutes", "find_area_path"]

_LATEST_SQL = "SELECT coalesce(max(id), 0) FROM case_event"
_LIMITS_SQL = "SELECT category, priority, step, minutes FROM case_time_limit"
_PATH_SQL = (
    "SELECT path FROM area WHERE code = $1 AND generation_low <= $2 AND generation_high >= $2 "
    "LIMIT 1"
)


async def find_latest_case_event_id(*, pool) -> int:
    """Return the id of the newest case event (0: none yet): a page's data is as of it."""
    return await pool.fetchval(_LATEST_SQL)


async def list_time_limit_minutes(*, pool) -> dict[str, int]:
    """Return every time limit as ``"category|priority|step" -> minutes``."""
    rows = await pool.fetch(_LIMITS_SQL)
    return {f"{r['category']}|{r['priority']}|{r['step']}": r["minutes"] for r in rows}


async def find_area_path(*, pool, code: str, generation: int) -> str | None:
    """Return the materialised path of area ``code`` in ``generation`` (None: no such)."""
    return await pool.fetchval(_PATH_SQL, code, generation)
