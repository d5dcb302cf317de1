"""The service's edge (issue 10 items 6, 7, 10): tokens kept out of logs and address bars,
page session cookies and CSRF, failed-authentication limits, body sizes refused before
parsing, CPU-heavy parsing off the event loop, CORS."""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
import time
from contextlib import contextmanager

import anyio.to_thread
import httpx
import pytest

from service.edge.limits import AuthFailureLimiter, TooManyFailuresError
from service.edge.redaction import RedactTokens, redact
from service.edge.sessions import COOKIE, COOKIE_PATHS, csrf_token, parse_session
from tests.conftest import auth, make_tokens

CITY = "990100"
NW = "990101001001001"
IN_NW = (106.005, 26.015)
TOKEN_SPECS = {
    "admin": ("admin", None),
    "city": ("city_dispatcher", CITY),
    "district": ("district_dispatcher", "990101"),
    "officer": ("grid_officer", NW),
    "planner": ("planner", CITY),
}


def _settings(url: str, **api):
    from service.settings import APISettings, DatabaseSettings, Settings

    return Settings(
        db=DatabaseSettings(DATABASE_URL=url),
        api=APISettings(**{"token_cache_seconds": 0, **api}),
    )


def _app(url: str, **api):
    from service.app import create_app

    return create_app(_settings(url, **api))


@contextmanager
def _client(url: str, *, base_url: str = "http://testserver", **api):
    from fastapi.testclient import TestClient

    with TestClient(
        _app(url, **api), base_url=base_url, raise_server_exceptions=False, follow_redirects=False
    ) as client:
        yield client


@pytest.fixture
def tokens(tiny_db_url):
    return make_tokens(tiny_db_url, TOKEN_SPECS)


def _problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status
    return body


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- item 6: tokens kept out of the logs -----------------------------------------------------
def test_redact_keeps_the_token_id_only():
    secret = "s3cr3t-_Value"
    assert redact(f"GET /tiles/x.mvt?access_token=wg_ab12_{secret}&z=1") == (
        "GET /tiles/x.mvt?access_token=wg_ab12_***&z=1"
    )
    assert redact(f"/open311/v2/requests.json?API_KEY=wg_ab12_{secret}") == (
        "/open311/v2/requests.json?API_KEY=wg_ab12_***"
    )
    # Percent-encoded, or not a token at all: nothing of the value is kept but its id.
    assert redact(f"/x?access_token=wg%5Fab12%5F{secret}") == "/x?access_token=wg_ab12_***"
    assert redact("/x?api_key=hunter2&b=2") == "/x?api_key=***&b=2"
    # Anywhere else in a message (a header echoed, a traceback).
    assert redact(f"Bearer wg_ab12_{secret} refused") == "Bearer wg_ab12_*** refused"
    assert redact("GET /areas?q=wg 200") == "GET /areas?q=wg 200"


def test_wangge_log_records_are_redacted(tiny_db_url, caplog):
    _app(tiny_db_url)  # installs the filters
    with caplog.at_level(logging.INFO):
        logging.getLogger("wangge").warning("refused %s", "wg_ab12_topsecret")
        logging.getLogger("wangge.tiles").info("token wg_cd34_topsecret in %s", "a message")
    assert [r.getMessage() for r in caplog.records[-2:]] == [
        "refused wg_ab12_***",
        "token wg_cd34_*** in a message",
    ]
    assert "topsecret" not in caplog.text
    for name in ("uvicorn.access", "uvicorn.error", "wangge", "wangge.tiles"):
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, RedactTokens) for f in filters) == 1, name


@contextmanager
def _live_server(url: str, *, log_level: str = "warning", access_log: bool = False, **api):
    """A uvicorn server in a thread (as tests.conftest.LiveServer), with these settings."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        _app(url, **api), host="127.0.0.1", port=port, log_level=log_level, access_log=access_log
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "live server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_access_log_shows_token_ids_never_secrets(tiny_db_url, tokens):
    from uvicorn.logging import AccessFormatter

    token = tokens["city"]
    token_id, secret = token.split("_", 2)[1:]
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    keep = Keep()
    keep.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    access = logging.getLogger("uvicorn.access")
    with _live_server(tiny_db_url, log_level="info", access_log=True) as base:
        access.addHandler(keep)
        try:
            with httpx.Client(base_url=base, timeout=20) as http:
                assert http.get("/areas", params={"access_token": token}).status_code == 200
                http.get("/open311/v2/services.json", params={"api_key": token})
                http.get(f"/generations?access_token={token.replace('_', '%5F')}")
            deadline = time.monotonic() + 5
            while len(lines) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            access.removeHandler(keep)
    assert len(lines) >= 3, lines
    assert all(secret not in line for line in lines), lines
    assert f"GET /areas?access_token=wg_{token_id}_*** HTTP/1.1" in lines[0]
    assert f"api_key=wg_{token_id}_***" in lines[1]
    assert f"access_token=wg_{token_id}_***" in lines[2]


# -- item 6: a page's ?access_token= exchanged for a session cookie --------------------------
def _use_cookie(client, value: str) -> None:
    """Make ``value`` the client's only session cookie (sent on every path)."""
    client.cookies.clear()
    client.cookies.set(COOKIE, value)


def _set_cookies(r) -> list[str]:
    return r.headers.get_list("set-cookie")


def test_a_page_exchanges_its_query_token_for_a_session_cookie(tiny_db_url, tokens):
    token = tokens["city"]
    with _client(tiny_db_url) as client:
        r = client.get("/pages/dispatch", params={"area": "990101", "access_token": token})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/pages/dispatch?area=990101"
        assert r.headers["cache-control"] == "no-store"
        cookies = _set_cookies(r)
        assert sorted(re.search(r"Path=([^;]+)", c).group(1) for c in cookies) == sorted(
            COOKIE_PATHS
        )
        for cookie in cookies:
            flags = {f.strip().split("=")[0].lower() for f in cookie.split(";")[1:]}
            assert {"httponly", "samesite", "max-age", "path"} <= flags, cookie
            assert "secure" not in flags  # plain http: a Secure cookie would never come back
            assert "samesite=strict" in cookie.lower()
            assert f"Max-Age={12 * 3600}" in cookie
        value = cookies[0].split(";")[0].split("=", 1)[1]
        session = parse_session(value)
        assert session is not None and session.token_id == token.split("_")[1]
        assert token.split("_", 2)[2] not in value  # not the secret
        assert token not in r.text and token not in r.headers["location"]

        # The clean address now opens with the cookie alone; its links carry no token.
        page = client.get("/pages/dispatch", params={"area": "990101"})
        assert page.status_code == 200, page.text
        assert token not in page.text and "access_token" not in page.text
        assert "Cookie" in page.headers["vary"]
        # The cookie is for the pages, tiles and reports: nothing else accepts it.
        assert client.get("/areas").status_code == 401
        z, x, y = _tile_of(*IN_NW, 14)
        assert client.get(f"/tiles/grids/{z}/{x}/{y}.mvt").status_code in (200, 204)


def test_the_cookie_is_secure_over_tls(tiny_db_url, tokens):
    with _client(tiny_db_url, base_url="https://testserver") as client:
        r = client.get("/pages/dispatch", params={"access_token": tokens["city"]})
        assert r.status_code == 303
        assert all("; secure" in c.lower() for c in _set_cookies(r))


def test_no_cookie_for_a_token_the_page_refuses(tiny_db_url, tokens):
    with _client(tiny_db_url) as client:
        r = client.get("/pages/tablet", params={"grid": NW, "access_token": tokens["planner"]})
        _problem(r, 403)
        assert not _set_cookies(r)
        r = client.get("/pages/dispatch", params={"access_token": "wg_nope_nope"})
        _problem(r, 401)
        assert not _set_cookies(r)


def test_forged_expired_and_revoked_sessions_are_refused(tiny_db_url, tokens):
    from service.auth import revoke_token
    from service.db import make_engine

    with _client(tiny_db_url) as client:
        client.get("/pages/dispatch", params={"access_token": tokens["city"]})
        value = client.cookies.get(COOKIE, path="/pages")
        session = parse_session(value)
        assert client.get("/pages/dispatch").status_code == 200
        # Another token's id, a later expiry, a changed signature: all refused.
        district_id = tokens["district"].split("_")[1]
        for forged in (
            value.replace(session.token_id, district_id, 1),
            f"{session.token_id}.{session.expires + 3600}.{session.signature}",
            value[:-2] + ("AA" if not value.endswith("AA") else "BB"),
            "garbage",
        ):
            _use_cookie(client, forged)
            body = _problem(client.get("/pages/dispatch"), 401)
            assert body["field"] == "Cookie"
        expired = f"{session.token_id}.{int(time.time()) - 1}.{session.signature}"
        _use_cookie(client, expired)
        assert "expired" in _problem(client.get("/pages/dispatch"), 401)["detail"]
        _use_cookie(client, value)
        assert client.get("/pages/dispatch").status_code == 200
        assert client.get("/areas").status_code == 401  # sent everywhere, accepted on its paths
        engine = make_engine(tiny_db_url)
        with engine.begin() as conn:
            revoke_token(conn, token_id=session.token_id)
        engine.dispose()
        _problem(client.get("/pages/dispatch"), 401)


def test_a_cookie_authenticated_write_needs_the_pages_csrf_token(tiny_db_url, tokens):
    incident = {"lon": IN_NW[0], "lat": IN_NW[1], "category": "road", "source": "patrol"}
    with _client(tiny_db_url) as client:
        r = client.get("/pages/tablet", params={"access_token": tokens["officer"]})
        assert r.status_code == 303
        page = client.get(r.headers["location"])
        assert page.status_code == 200, page.text
        csrf = re.search(r'"csrf":"([^"]+)"', page.text).group(1)
        assert csrf == csrf_token(client.cookies.get(COOKIE, path="/incidents"))
        assert tokens["officer"] not in page.text

        refused = _problem(client.post("/incidents", json=incident), 403)
        assert refused["field"] == "X-CSRF-Token"
        _problem(client.post("/incidents", json=incident, headers={"X-CSRF-Token": "x"}), 403)
        # Another session's token does not fit this one.
        other = csrf_token(client.cookies.get(COOKIE, path="/incidents") + "x")
        _problem(client.post("/incidents", json=incident, headers={"X-CSRF-Token": other}), 403)
        filed = client.post("/incidents", json=incident, headers={"X-CSRF-Token": csrf})
        assert filed.status_code == 201, filed.text
        assert filed.json()["cells"]["grid_code"] == NW
        # Reads need no CSRF token; a header token needs none either (no cookie involved).
        assert client.get("/incidents", params={"grid": NW}).status_code == 200
        client.cookies.clear()
        r = client.post("/incidents", json=incident, headers=auth(tokens["officer"]))
        assert r.status_code == 201, r.text


def test_cached_tiles_take_the_shortcut_with_a_session_cookie(tiny_db_url, tokens):
    with _client(tiny_db_url, token_cache_seconds=60) as client:
        client.get("/pages/dispatch", params={"access_token": tokens["city"]})
        z, x, y = _tile_of(*IN_NW, 15)
        url = f"/tiles/grids/{z}/{x}/{y}.mvt"
        first = client.get(url)
        assert first.status_code == 200 and first.headers["x-tile-cache"] == "miss"
        again = client.get(url)
        assert again.headers.get("x-tile-shortcut") == "1" and again.content == first.content
        # An expired or foreign cookie never takes it.
        value = client.cookies.get(COOKIE, path="/tiles")
        session = parse_session(value)
        _use_cookie(client, f"{session.token_id}.{int(time.time()) - 1}.{session.signature}")
        _problem(client.get(url), 401)


# -- item 7: failed authentications limited per address --------------------------------------
def test_the_limiter_counts_failures_in_a_sliding_window():
    clock = _Clock()
    limiter = AuthFailureLimiter(3, 10, clock=clock)
    for _ in range(3):
        limiter.check("a")
        limiter.failed("a")
        clock.now += 1
    with pytest.raises(TooManyFailuresError) as refused:
        limiter.check("a")
    assert refused.value.status == 429 and refused.value.retry_after == 7
    limiter.check("b")  # per address
    clock.now += 7.01  # the first failure leaves the window: one more try
    limiter.check("a")
    limiter.failed("a")
    with pytest.raises(TooManyFailuresError):
        limiter.check("a")


def _from_header_address(app):
    """Wrap ``app`` so that the test header ``X-Test-Client`` sets the client address."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-client":
                    scope["client"] = (value.decode(), 1)
        await app(scope, receive, send)

    return wrapped


def test_failed_authentications_from_an_address_are_limited(tiny_db_url, tokens):
    from fastapi.testclient import TestClient

    app = _app(tiny_db_url, token_cache_seconds=60, auth_failure_limit=5)
    clock = _Clock()
    app.state.auth_limiter = AuthFailureLimiter(5, 10, clock=clock)
    city, district = auth(tokens["city"]), auth(tokens["district"])
    z, x, y = _tile_of(*IN_NW, 15)
    tile = f"/tiles/grids/{z}/{x}/{y}.mvt"
    with TestClient(
        _from_header_address(app),
        raise_server_exceptions=False,
        headers={"X-Test-Client": "203.0.113.7"},
    ) as c:
        assert c.get("/areas", headers=city).status_code == 200  # verified, cached
        assert c.get(tile, headers=city).headers["x-tile-cache"] == "miss"
        for _ in range(20):
            assert c.get("/areas").status_code == 401  # no token: no guess, not counted
        for i in range(5):
            wrong = c.get("/areas", headers=auth(f"wg_nope{i}_guess"))
            assert wrong.status_code == 401, wrong.text
        refused = _problem(c.get("/areas", headers=auth("wg_nope_guess")), 429)
        assert refused["field"] == "Authorization"
        assert c.get("/areas", headers=auth("wg_nope_guess")).headers["retry-after"] == "10"
        # A token not yet verified is not checked from here, however good ...
        _problem(c.get("/areas", headers=district), 429)
        _problem(c.get("/pages/dispatch", params={"access_token": tokens["district"]}), 429)
        assert c.get("/open311/v2/requests.json", params={"api_key": "wg_x_y"}).status_code == 429
        # ... but a verified one keeps working, the tile shortcut included.
        assert c.get("/areas", headers=city).status_code == 200
        hit = c.get(tile, headers=city)
        assert hit.status_code == 200 and hit.headers["x-tile-shortcut"] == "1"
        _problem(c.get(tile, headers=auth("wg_nope_guess")), 429)
        # Another address is not limited.
        other = {"X-Test-Client": "198.51.100.2"}
        assert c.get("/areas", headers=auth("wg_nope_guess") | other).status_code == 401
        assert c.get("/areas", headers=auth(tokens["officer"]) | other).status_code == 200
        clock.now += 10.01  # the window moves on
        assert c.get("/areas", headers=district).status_code == 200


def test_open311_keys_count_as_failed_authentications(tiny_db_url):
    from fastapi.testclient import TestClient

    app = _app(tiny_db_url, auth_failure_limit=3)
    with TestClient(app, raise_server_exceptions=False) as c:
        for _ in range(3):
            r = c.get("/open311/v2/requests.json", params={"api_key": "wg_x_y"})
            assert r.status_code == 401, r.text
        assert c.get("/areas", headers=auth("wg_x_y")).status_code == 429


# -- item 7: body sizes before parsing, parsing off the loop ---------------------------------
def _batch(n: int, *, ids: bool = False) -> bytes:
    import json

    if ids:
        points = [{"lon": 106.005, "lat": 26.015, "id": f"case-{i:08d}"} for i in range(n)]
    else:
        points = [[106.005, 26.015]] * n
    return json.dumps({"points": points}).encode()


def test_a_body_over_its_routes_limit_is_refused_before_anything_reads_it(tiny_db_url, tokens):
    h = auth(tokens["city"]) | {"Content-Type": "application/json"}
    with _client(tiny_db_url, max_batch_points=100, max_upload_bytes=10_000) as client:
        limit = 100 * 256 + 64 * 1024
        big = b'{"points": [' + b" " * limit + b"]}"
        started = time.perf_counter()
        body = _problem(client.post("/lookup/batch", content=big), 413)  # before auth even
        assert time.perf_counter() - started < 1
        assert body["field"] == "body" and str(limit) in body["detail"]
        _problem(client.post("/lookup/batch", content=big, headers=h), 413)

        # A chunked body (no Content-Length) is counted as it arrives.
        def chunks():
            yield b'{"points": ['
            for _ in range(100):
                yield b" " * 1024
            yield b"]}"

        body = _problem(client.post("/lookup/batch", content=chunks(), headers=h), 413)
        assert str(limit) in body["detail"]
        # At the limit, the handler judges (here: too many points, its own 413 on the field).
        r = client.post("/lookup/batch", content=_batch(101), headers=h)
        assert _problem(r, 413)["field"] == "points"
        assert client.post("/lookup/batch", content=_batch(100), headers=h).status_code == 200
        # Uploads get their own limit (plus the multipart framing); other bodies 1 MiB.
        files = {"file": ("u.csv", b"x" * (10_000 + 2 * 1024 * 1024))}
        _problem(client.post("/units/import", files=files, headers=auth(tokens["admin"])), 413)
        note = {"lon": 106.005, "lat": 26.015, "category": "road", "source": "patrol"}
        note["description"] = "x" * (1024 * 1024)
        _problem(client.post("/incidents", json=note, headers=auth(tokens["admin"])), 413)


def test_a_big_batch_is_decoded_off_the_event_loop(tiny_db_url, tokens, monkeypatch):
    threaded = []
    run_sync = anyio.to_thread.run_sync

    async def watch(func, *args, **kw):
        threaded.append(getattr(func, "__name__", repr(func)))
        return await run_sync(func, *args, **kw)

    monkeypatch.setattr(anyio.to_thread, "run_sync", watch)
    h = auth(tokens["city"]) | {"Content-Type": "application/json"}
    with _client(tiny_db_url) as client:
        small = client.post("/lookup/batch", content=_batch(10, ids=True), headers=h)
        assert small.status_code == 200 and "_decode" not in threaded
        body = _batch(3_000, ids=True)
        assert len(body) > 64 * 1024
        r = client.post("/lookup/batch", content=body, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["summary"] == {
            "matched": 3000,
            "partial": 0,
            "unmatched": 0,
            "outside_scope": 0,
            "total": 3000,
        }
        assert r.json()["results"][2999]["id"] == "case-00002999"
        assert "_decode" in threaded
        # Errors read as before: 422 naming the point; a body that is no JSON, 422 too.
        bad = body.replace(b'"lat": 26.015, "id": "case-00000007"', b'"lat": 95, "id": "x"')
        assert _problem(client.post("/lookup/batch", content=bad, headers=h), 422)[
            "field"
        ].startswith("points.7")
        _problem(client.post("/lookup/batch", content=b"{nope", headers=h), 422)
        text = {"Content-Type": "text/plain"}
        _problem(
            client.post("/lookup/batch", content=body, headers=auth(tokens["city"]) | text), 422
        )
    schema = client.app.openapi()["paths"]["/lookup/batch"]["post"]["requestBody"]
    assert schema["required"] is True
    assert "points" in schema["content"]["application/json"]["schema"]["properties"]


def test_a_live_server_answers_a_huge_body_at_once_and_stays_responsive(tiny_db_url, tokens):
    big = b'{"points": [' + b"[106.005, 26.015], " * 1_000_000 + b"[106, 26]]}"  # 19 MB
    with _live_server(tiny_db_url) as base, httpx.Client(base_url=base, timeout=30) as http:
        started = time.perf_counter()
        r = http.post("/lookup/batch", content=big, headers=auth(tokens["city"]))
        elapsed = time.perf_counter() - started
        _problem(r, 413)
        assert elapsed < 3, elapsed  # sending 19 MB included; parsing it took a minute
        assert http.get("/health").status_code == 200  # the same connection, kept


# -- item 10: CORS ---------------------------------------------------------------------------
def test_cors_answers_allowed_origins_only(tiny_db_url, tokens):
    preflight = {
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, if-match",
    }
    allowed = "https://dispatch.example"
    with _client(tiny_db_url, cors_origins=[allowed, "http://wall.example:8080"]) as client:
        ok = client.options("/incidents/1", headers={"Origin": allowed, **preflight})
        assert ok.status_code == 200, ok.text
        assert ok.headers["access-control-allow-origin"] == allowed
        assert "PATCH" in ok.headers["access-control-allow-methods"]
        granted = ok.headers["access-control-allow-headers"].lower()
        assert all(h in granted for h in ("authorization", "idempotency-key", "if-match"))
        assert "access-control-allow-credentials" not in ok.headers

        refused = client.options(
            "/incidents/1", headers={"Origin": "https://evil.example", **preflight}
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers

        r = client.get("/areas", headers={"Origin": allowed, **auth(tokens["city"])})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == allowed
        exposed = r.headers["access-control-expose-headers"].lower()
        assert all(h in exposed for h in ("etag", "retry-after", "location"))
        # Errors carry the headers too, so the caller can read them.
        denied = client.get("/areas", headers={"Origin": allowed})
        assert (
            denied.status_code == 401 and denied.headers["access-control-allow-origin"] == allowed
        )
        other = client.get(
            "/areas", headers={"Origin": "https://evil.example", **auth(tokens["city"])}
        )
        assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_by_default(tiny_client, tokens):
    r = tiny_client.get(
        "/areas", headers={"Origin": "https://dispatch.example", **auth(tokens["city"])}
    )
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = tiny_client.options(
        "/areas",
        headers={"Origin": "https://dispatch.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in pre.headers


def test_cors_origins_are_read_comma_separated_and_checked(monkeypatch):
    from pydantic import ValidationError

    from service.settings import APISettings

    monkeypatch.setenv("WANGGE_API_CORS_ORIGINS", "https://a.example, http://b.example:8080")
    assert APISettings().cors_origins == ["https://a.example", "http://b.example:8080"]
    for bad in ("https://a.example/", "a.example", "https://a.example/path"):
        monkeypatch.setenv("WANGGE_API_CORS_ORIGINS", bad)
        with pytest.raises(ValidationError, match="not an origin"):
            APISettings()
