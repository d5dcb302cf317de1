"""Store and read the photos of a case (table ``case_attachment``), keyed by their SHA-256.

Neither function checks scope: the router finds the case through
:func:`service.dispatch.cases.get_case` first (404 for a case the caller does not see).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.errors import NotFoundError

__all__ = ["store_attachment", "get_attachment"]

# The case's month given (its reported_at): the foreign key's check reads that partition
# only; without it, a trigger (migration 0013) reads the case by id in every month.
_STORE = text(
    "INSERT INTO case_attachment "
    "(incident_id, incident_reported_at, sha256, media_type, bytes, data, created_by) "
    "VALUES (:case_id, :reported_at, :sha256, :media_type, :bytes, :data, :created_by) "
    "ON CONFLICT (incident_id, sha256) DO NOTHING RETURNING 1"
)
_GET = text(
    "SELECT media_type, data FROM case_attachment WHERE incident_id = :case_id AND sha256 = :sha256"
)


async def store_attachment(
    conn: AsyncConnection,
    *,
    case_id: int,
    sha256: str,
    media_type: str,
    data: bytes,
    created_by: str | None,
    reported_at: datetime | None = None,
) -> bool:
    """Return whether the photo was stored now (False: the case already had these bytes).
    ``reported_at``: the case's (None: read from the case)."""
    params = {
        "case_id": case_id,
        "reported_at": reported_at,
        "sha256": sha256,
        "media_type": media_type,
        "bytes": len(data),
        "data": data,
        "created_by": created_by,
    }
    return (await conn.execute(_STORE, params)).scalar() is not None


async def get_attachment(conn: AsyncConnection, *, case_id: int, sha256: str) -> tuple[str, bytes]:
    """Return (media type, bytes) of a photo of the case (404 when it has none such)."""
    row = (await conn.execute(_GET, {"case_id": case_id, "sha256": sha256})).first()
    if row is None:
        raise NotFoundError(f"case {case_id} has no attachment {sha256}", field="sha256")
    return row.media_type, bytes(row.data)
