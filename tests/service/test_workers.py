"""``wangge serve --workers 2``: two processes on one port behave as one server.

Each process has its own tile cache, token cache, listeners and case stream. Requests go on
fresh connections, which the kernel spreads over the processes (each listens on a socket of
its own, SO_REUSEPORT); which one answered is read from ``ss`` (the server side of the
connection), so each check is seen on both processes:

- a write made through one process invalidates the cached tile in both (each listens);
- a revoked token stops working in both within the token cache's lifetime (the process that
  revoked it forgets it at once, the other when its cached entry expires);
- a case event reaches a dispatch screen following ``/cases/stream`` on each process.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_tokens
from tests.service.test_outage import IN_NW, _free_port, _tile_of, _wait_for

TOKEN_CACHE_S = 1.0


@pytest.fixture(scope="module")
def workers_db():
    """Return the URL of a throwaway database with the tiny hierarchy, for this module."""
    from tests.conftest import _drop_database, tiny_database

    url = tiny_database("wangge_test_workers")
    yield url
    _drop_database(url)


@pytest.fixture(scope="module")
def workers(workers_db):
    """Return the port of ``wangge serve --workers 2`` on the tiny database."""
    tiny_db_url = workers_db
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": tiny_db_url,
        "WANGGE_API_TOKEN_CACHE_SECONDS": str(TOKEN_CACHE_S),
        "WANGGE_DISPATCH_SWEEP_SECONDS": "0",
        "WANGGE_DB_POOL_SIZE": "4",
    }
    wangge = str(Path(sys.executable).parent / "wangge")
    args = ["--port", str(port), "--workers", "2", "--no-access-log", "--log-level", "warning"]
    # A process group of its own: whatever happens, no worker outlives the test.
    proc = subprocess.Popen([wangge, "serve", *args], env=env, start_new_session=True)
    try:
        # Each process listens on a socket of its own (SO_REUSEPORT) once it has started.
        assert _wait_for(lambda: _listening(port) == 2 and _health(port), 240), (
            "wangge serve --workers 2 did not start"
        )
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _health(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _listening(port: int) -> int:
    out = subprocess.run(
        ["ss", "-tlnH", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return len(out.splitlines())


def _pid(port: int, client_port: int) -> int:
    """Return the pid of the server process holding the connection from ``client_port``."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if re.search(rf":{client_port}\s", line + " "):
            return int(re.search(r"pid=(\d+)", line).group(1))
    raise AssertionError(f"no server connection from :{client_port}\n{out}")


def _fresh(port: int, method: str, path: str, headers: dict, body=None):
    """Return (status, headers, body, server pid) of one request on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    try:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {**headers, **({"Content-Type": "application/json"} if data else {})}
        conn.request(method, path, body=data, headers=hdrs)
        response = conn.getresponse()
        content = response.read()
        pid = _pid(port, conn.sock.getsockname()[1])
        return response.status, {k.lower(): v for k, v in response.getheaders()}, content, pid
    finally:
        conn.close()


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _on_both(port: int, method: str, path: str, headers: dict, tries: int = 400) -> list:
    """Return answers to ``method path`` on fresh connections until both processes answered.

    The kernel gives a new connection to whichever process accepts first, so one process
    may take many in a row: ask until each has answered at least twice.
    """
    answers = []
    for _ in range(tries):
        answers.append(_fresh(port, method, path, headers))
        pids = [a[3] for a in answers]
        if len(set(pids)) == 2 and min(pids.count(p) for p in set(pids)) >= 2:
            return answers
    raise AssertionError(f"{tries} connections and one process answered every one")


def test_each_process_drops_a_tile_a_write_made_stale(workers, workers_db):
    port = workers
    city = _auth(make_tokens(workers_db, {"city": ("city_dispatcher", "990100")})["city"])
    z, x, y = _tile_of(*IN_NW, 15)
    tile = f"/tiles/incidents/{z}/{x}/{y}.mvt"
    answers = _on_both(port, "GET", tile, city)
    before = {a[1].get("etag") for a in answers}
    assert len(before) == 1, before
    marks: dict[int, set] = {}
    for _status, headers, _, pid in answers:
        marks.setdefault(pid, set()).add(headers["x-tile-cache"])
    assert all("hit" in m for m in marks.values()), marks  # each process caches its own

    body = {"category": "road", "source": "patrol", "lon": IN_NW[0], "lat": IN_NW[1]}
    status, _, _, writer = _fresh(port, "POST", "/incidents", city, body)
    assert status == 201

    def all_fresh() -> bool:
        etags = {a[1].get("etag") for a in _on_both(port, "GET", tile, city)}
        return len(etags) == 1 and not etags & before

    # The write went through one process; both drop the tile (within a notification).
    assert _wait_for(all_fresh, 5), f"a process kept the stale tile (write on {writer})"


def test_a_revoked_token_stops_working_in_every_process_within_the_cache_lifetime(
    workers, workers_db
):
    port = workers
    tokens = make_tokens(workers_db, {"admin": ("admin", None), "gone": ("planner", "990100")})
    gone = _auth(tokens["gone"])
    # Both processes verify it and keep it in their token cache.
    assert {a[0] for a in _on_both(port, "GET", "/me", gone)} == {200}
    token_id = tokens["gone"].split("_")[1]
    status, _, _, _ = _fresh(port, "DELETE", f"/tokens/{token_id}", _auth(tokens["admin"]))
    assert status == 204
    time.sleep(TOKEN_CACHE_S + 0.2)
    assert {a[0] for a in _on_both(port, "GET", "/me", gone)} == {401}


def test_a_case_event_reaches_a_screen_on_each_process(workers, workers_db):
    port = workers
    admin = _auth(make_tokens(workers_db, {"admin": ("admin", None)})["admin"])
    screens: dict[int, http.client.HTTPResponse] = {}
    conns = []
    try:
        for _ in range(400):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", "/cases/stream", headers=admin)
            response = conn.getresponse()
            assert response.status == 200
            pid = _pid(port, conn.sock.getsockname()[1])
            if pid in screens:
                conn.close()
                continue
            conns.append(conn)
            screens[pid] = response
            if len(screens) == 2:
                break
        assert len(screens) == 2, "every stream went to one process"
        body = {"category": "road", "source": "patrol", "lon": IN_NW[0], "lat": IN_NW[1]}
        status, _, created, _ = _fresh(port, "POST", "/incidents", admin, body)
        assert status == 201
        case_id = json.loads(created)["id"]
        for pid, response in screens.items():
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                line = response.fp.readline().decode()
                if line.startswith("data:") and json.loads(line[5:])["case_id"] == case_id:
                    break
            else:
                raise AssertionError(f"the screen on process {pid} missed case {case_id}")
    finally:
        for conn in conns:
            conn.close()
