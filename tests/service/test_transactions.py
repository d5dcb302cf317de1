"""A write is acknowledged only once it is committed.

A commit can fail after the handler has returned (a deferred constraint, a serialisation
failure, the database going away): the client must then hear an error, never a 2xx for a
write that was not stored.
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from service.deps import WriteConnDep
from service.responses import JSON
from tests.conftest import _client


def test_a_commit_that_fails_is_not_acknowledged(tiny_db_url):
    from service.db import make_engine

    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE commit_probe (k integer, "
            "CONSTRAINT commit_probe_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)"
        )

    router = APIRouter()

    @router.post("/_probe/{k}")
    async def probe(k: int, conn: WriteConnDep) -> JSON:
        # Two equal rows: accepted by the statement, refused by the deferred check at commit.
        await conn.execute(text("INSERT INTO commit_probe VALUES (:k), (:k)"), {"k": k})
        return JSON({"written": k}, status_code=201)

    with _client(tiny_db_url) as client:
        client.app.include_router(router)
        r = client.post("/_probe/1")
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM commit_probe").scalar() == 0
    engine.dispose()
