"""Tokens: only admins create and revoke them, only their hashes are stored, and a revocation
reaches every worker within the token cache's lifetime."""

from __future__ import annotations

import hashlib
import time

import pytest
from sqlalchemy import text

from service.db import make_engine
from tests.conftest import auth, make_tokens

GRID = "990101001001001"


def _app_client(url: str, **api):
    """Return a test client of an app of its own (a second worker) with these API settings."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import APISettings, DatabaseSettings, Settings

    settings = Settings(db=DatabaseSettings(DATABASE_URL=url), api=APISettings(**api))
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def tokens(tiny_db_url):
    from service.auth import create_token

    tokens = make_tokens(
        tiny_db_url,
        {
            "admin": ("admin", None),
            "planner": ("planner", "990100"),
            "city": ("city_dispatcher", "990100"),
            "district": ("district_dispatcher", "990101"),
            "community": ("community_dispatcher", "990101001001"),
            "grid": ("grid_officer", GRID),
        },
    )
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        tokens["intake"] = create_token(
            conn, name="12319", role="intake", area_code="990100", source="hotline_12319"
        )
    engine.dispose()
    return tokens


def _token_id(token: str) -> str:
    return token.split("_")[1]


def test_only_admins_create_or_revoke_tokens(tiny_client, tokens):
    victim = auth(tokens["grid"])
    body = {"name": "x", "role": "grid_officer", "area_code": GRID}
    for role in ("planner", "city", "district", "community", "grid", "intake"):
        h = auth(tokens[role])
        created = tiny_client.post("/tokens", json=body, headers=h)
        assert created.status_code == 403 and "admin" in created.json()["detail"], role
        revoked = tiny_client.delete(f"/tokens/{_token_id(tokens['grid'])}", headers=h)
        assert revoked.status_code == 403 and "admin" in revoked.json()["detail"], role
        # Not even their own token.
        own = tiny_client.delete(f"/tokens/{_token_id(tokens[role])}", headers=h)
        assert own.status_code == 403, role
        assert tiny_client.get("/me", headers=h).status_code == 200, role
    assert tiny_client.get("/me", headers=victim).json()["role"] == "grid_officer"
    # The admin can; a second revocation finds no active token.
    token_id = _token_id(tokens["grid"])
    admin = auth(tokens["admin"])
    assert tiny_client.delete(f"/tokens/{token_id}", headers=admin).status_code == 204
    assert tiny_client.get("/me", headers=victim).status_code == 401
    again = tiny_client.delete(f"/tokens/{token_id}", headers=admin)
    assert again.status_code == 404 and again.json()["field"] == "token_id"


def test_tokens_are_stored_only_as_hashes(tiny_client, tokens, tiny_db_url):
    admin = auth(tokens["admin"])
    r = tiny_client.post(
        "/tokens",
        json={"name": "hotline", "role": "intake", "area_code": "990100", "source": "patrol"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    prefix, token_id, secret = token.split("_", 2)
    assert prefix == "wg" and len(secret) >= 40
    # Use it, so that everything a request may write is written: a keyed write, a read.
    me = tiny_client.get("/me", headers=auth(token)).json()
    assert me == {"token_id": token_id, "name": "hotline", "role": "intake", "area_code": "990100"}
    filed = tiny_client.post(
        "/incidents",
        json={"category": "water", "lon": 106.005, "lat": 26.015},
        headers={**auth(token), "Idempotency-Key": "k-1"},
    )
    assert filed.status_code == 201, filed.text

    engine = make_engine(tiny_db_url)
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT secret_sha256, to_jsonb(t)::text AS everything FROM api_token t "
                "WHERE id = :id"
            ),
            {"id": token_id},
        ).one()
        assert bytes(row.secret_sha256) == hashlib.sha256(secret.encode()).digest()
        # No table holds the secret, as text or as bytes (bytea renders as hex).
        tables = (
            conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                )
            )
            .scalars()
            .all()
        )
        assert "api_token" in tables and "idempotency_key" in tables
        found = {
            table: conn.execute(
                text(
                    f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, :s) > 0 '
                    "OR strpos(t::text, :hex) > 0"
                ),
                {"s": secret, "hex": secret.encode().hex()},
            ).scalar()
            for table in tables
        }
    engine.dispose()
    assert secret not in row.everything
    assert {t: n for t, n in found.items() if n} == {}


def test_revocation_reaches_other_workers_when_their_token_cache_expires(tiny_db_url, tokens):
    ttl = 3.0
    grid, admin = auth(tokens["grid"]), auth(tokens["admin"])
    with (
        _app_client(tiny_db_url, token_cache_seconds=ttl) as revoker,
        _app_client(tiny_db_url, token_cache_seconds=ttl) as cached,
        _app_client(tiny_db_url, token_cache_seconds=0) as uncached,
    ):
        for worker in (revoker, cached, uncached):
            assert worker.get("/me", headers=grid).status_code == 200
        cached_at = time.monotonic()
        r = revoker.delete(f"/tokens/{_token_id(tokens['grid'])}", headers=admin)
        assert r.status_code == 204
        # The worker that revoked forgets the token at once; so does one without a cache.
        assert revoker.get("/me", headers=grid).status_code == 401
        assert uncached.get("/me", headers=grid).status_code == 401
        # Another worker trusts its cache until the TTL runs out: the documented delay.
        still = cached.get("/me", headers=grid)
        assert time.monotonic() - cached_at < ttl, "too slow to observe the cache's window"
        assert still.status_code == 200
        time.sleep(max(0.0, cached_at + ttl + 0.3 - time.monotonic()))
        gone = cached.get("/me", headers=grid)
        assert gone.status_code == 401
        assert "revoked" in gone.json()["detail"]
