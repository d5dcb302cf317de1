"""Make a write safe to retry with an ``Idempotency-Key`` header.

The key is claimed by inserting it in the write's own transaction. A concurrent request with
the same key blocks on that insert until the first commits, then replays the stored response;
if the first rolls back, the second proceeds. The same key with a different body is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import Principal
from service.errors import UnprocessableError

__all__ = ["request_fingerprint", "run_idempotent", "MAX_KEY_LENGTH"]

MAX_KEY_LENGTH = 200


def request_fingerprint(method: str, path: str, body: Any) -> bytes:
    """Return the SHA-256 of a request's method, path and canonical JSON body."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).digest()


async def run_idempotent(
    conn: AsyncConnection,
    *,
    principal: Principal,
    key: str | None,
    fingerprint: bytes,
    work: Callable[[], Awaitable[tuple[int, Any]]],
) -> tuple[int, Any, bool]:
    """Return (status, body, replayed): run ``work`` once per key, replay it afterwards."""
    if key is None:
        status, body = await work()
        return status, body, False
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise UnprocessableError(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters",
            field="Idempotency-Key",
        )
    claimed = (
        await conn.execute(
            text(
                "INSERT INTO idempotency_key (token_id, key, request_sha256) "
                "VALUES (:t, :k, :h) ON CONFLICT DO NOTHING RETURNING 1"
            ),
            {"t": principal.token_id, "k": key, "h": fingerprint},
        )
    ).scalar()
    if claimed:
        status, body = await work()
        await conn.execute(
            text(
                "UPDATE idempotency_key SET status = :s, response = CAST(:r AS jsonb) "
                "WHERE token_id = :t AND key = :k"
            ),
            {"s": status, "r": orjson.dumps(body).decode(), "t": principal.token_id, "k": key},
        )
        return status, body, False
    row = (
        await conn.execute(
            text(
                "SELECT request_sha256, status, response FROM idempotency_key "
                "WHERE token_id = :t AND key = :k"
            ),
            {"t": principal.token_id, "k": key},
        )
    ).first()
    if bytes(row.request_sha256) != fingerprint:
        raise UnprocessableError(
            "this Idempotency-Key was used with a different request body; use a new key",
            field="Idempotency-Key",
        )
    return row.status, row.response, True
