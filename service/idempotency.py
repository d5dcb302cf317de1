"""Make a write safe to retry with an ``Idempotency-Key`` header.

The key is claimed by inserting it in the write's own transaction. A concurrent request with
the same key blocks on that insert until the first commits, then replays the stored response;
if the first rolls back, the second proceeds. The same key with a different body is refused.

Three front doors to the same three statements: :func:`run_idempotent` on a SQLAlchemy
async connection (entity writes, Open311), :func:`run_idempotent_sync` on a synchronous one
in a worker thread (plan edits, whose geometry work must not hold the event loop:
:mod:`service.routers.plans`) and :func:`run_idempotent_pg` on a raw asyncpg connection
inside the caller's transaction (case actions, which run on the hot pool:
:mod:`service.dispatch.cases`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import Principal
from service.db import positional
from service.errors import UnprocessableError

__all__ = [
    "request_fingerprint",
    "check_key",
    "run_idempotent",
    "run_idempotent_sync",
    "run_idempotent_pg",
    "MAX_KEY_LENGTH",
]

MAX_KEY_LENGTH = 200

_CLAIM = (
    "INSERT INTO idempotency_key (token_id, key, request_sha256) "
    "VALUES (:t, :k, :h) ON CONFLICT DO NOTHING RETURNING 1"
)
_STORE = (
    "UPDATE idempotency_key SET status = :s, response = CAST(:r AS jsonb) "
    "WHERE token_id = :t AND key = :k"
)
_STORED = (
    "SELECT request_sha256, status, response FROM idempotency_key WHERE token_id = :t AND key = :k"
)


def request_fingerprint(method: str, path: str, body: Any) -> bytes:
    """Return the SHA-256 of a request's method, path and canonical JSON body."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).digest()


def check_key(key: str) -> None:
    """Refuse (422) a key that is empty, too long or not printable."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise UnprocessableError(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters",
            field="Idempotency-Key",
        )


def _same_request(stored: bytes, fingerprint: bytes) -> None:
    if bytes(stored) != fingerprint:
        raise UnprocessableError(
            "this Idempotency-Key was used with a different request body; use a new key",
            field="Idempotency-Key",
        )


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
    check_key(key)
    ids = {"t": principal.token_id, "k": key}
    claimed = (await conn.execute(text(_CLAIM), {**ids, "h": fingerprint})).scalar()
    if claimed:
        status, body = await work()
        await conn.execute(text(_STORE), {**ids, "s": status, "r": orjson.dumps(body).decode()})
        return status, body, False
    row = (await conn.execute(text(_STORED), ids)).first()
    _same_request(row.request_sha256, fingerprint)
    return row.status, row.response, True


def run_idempotent_sync(
    conn: Connection,
    *,
    principal: Principal,
    key: str | None,
    fingerprint: bytes,
    work: Callable[[], tuple[int, Any]],
) -> tuple[int, Any, bool]:
    """As :func:`run_idempotent`, on a synchronous connection in the caller's transaction;
    ``work`` is a plain function, and its body is stored as orjson renders a response
    (numpy numbers included)."""
    if key is None:
        return (*work(), False)
    check_key(key)
    ids = {"t": principal.token_id, "k": key}
    if conn.execute(text(_CLAIM), {**ids, "h": fingerprint}).scalar():
        status, body = work()
        stored = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        conn.execute(text(_STORE), {**ids, "s": status, "r": stored.decode()})
        return status, body, False
    row = conn.execute(text(_STORED), ids).first()
    _same_request(row.request_sha256, fingerprint)
    return row.status, row.response, True


_CLAIM_PG, _STORE_PG, _STORED_PG = (positional(sql) for sql in (_CLAIM, _STORE, _STORED))


def _args(statement: tuple[str, tuple[str, ...]], **params: Any) -> list[Any]:
    return [params[name] for name in statement[1]]


async def run_idempotent_pg(
    conn,
    *,
    principal: Principal,
    key: str,
    fingerprint: bytes,
    work: Callable[[], Awaitable[tuple[int, Any]]],
) -> tuple[int, Any, bool]:
    """As :func:`run_idempotent`, on a raw asyncpg connection the caller holds in a
    transaction (the claim, the work and the stored answer commit or roll back together)."""
    check_key(key)
    ids = {"t": principal.token_id, "k": key}
    claimed = await conn.fetchval(_CLAIM_PG[0], *_args(_CLAIM_PG, **ids, h=fingerprint))
    if claimed:
        status, body = await work()
        await conn.execute(
            _STORE_PG[0], *_args(_STORE_PG, **ids, s=status, r=orjson.dumps(body).decode())
        )
        return status, body, False
    row = await conn.fetchrow(_STORED_PG[0], *_args(_STORED_PG, **ids))
    _same_request(row["request_sha256"], fingerprint)
    return row["status"], orjson.loads(row["response"]), True
