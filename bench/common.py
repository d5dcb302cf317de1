"""What the benchmarks share: their databases (the configured server's, the Guiyang demo),
starting and stopping a server process, reading wrk's output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = [
    "ROOT",
    "server_url",
    "database_url",
    "demo_database",
    "parse_wrk",
    "start",
    "start_uvicorn",
    "stop",
]

ROOT = Path(__file__).resolve().parent.parent


def server_url() -> str:
    """Return the URL of the configured PostgreSQL server (``DATABASE_URL`` or the project's
    local cluster)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from service.localdb import LocalCluster

    return LocalCluster.from_env().url


def database_url(name: str) -> str:
    """Return the (psycopg) URL of database ``name`` on the configured server."""
    from sqlalchemy.engine import make_url

    from service.db import sync_url

    url = make_url(sync_url(server_url())).set(database=name)
    return url.render_as_string(hide_password=False)


def demo_database(name: str) -> tuple[str, str]:
    """Return (url, city dispatcher token) of database ``name`` holding the Guiyang demo
    (boundaries and entities, seed 2014), made, migrated and built on first use."""
    from sqlalchemy import text

    from fixtures.guiyang import build_guiyang_demo
    from fixtures.guiyang_entities import build_demo_entities
    from service.auth import create_token
    from service.db import ensure_database, make_engine, migrate
    from service.repositories.boundaries import current_generation

    url = database_url(name)
    ensure_database(url)
    migrate(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        if current_generation(conn) is None:
            print(build_guiyang_demo(conn, seed=2014), flush=True)
        # A database built before the demo had entities gets them now, once (benchmarks may
        # start together: the lock makes the second wait and then find them).
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
        if not conn.execute(text("SELECT EXISTS (SELECT 1 FROM incident)")).scalar():
            print(build_demo_entities(conn, seed=2014), flush=True)
        token = create_token(conn, name="bench", role="city_dispatcher", area_code="520100")
    engine.dispose()
    return url, token


def start(cmd: list[str], env: dict, health: str, cwd: str | None = None) -> subprocess.Popen:
    """Run ``cmd`` with ``env`` added to this process's; return once ``health`` answers 200."""
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=cwd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{' '.join(cmd)} did not start")


def start_uvicorn(app: str, port: int, env: dict, *options: str) -> subprocess.Popen:
    """Serve the app factory ``app`` (``module:function``) on ``port``, one worker, quietly."""
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
        *options,
    ]
    return start(cmd, env, f"http://127.0.0.1:{port}/health", str(ROOT))


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def parse_wrk(out: str) -> dict:
    """Throughput, p50/p99 latency (ms), non-2xx and socket errors from ``wrk --latency``."""

    def ms(text: str) -> float:
        value = float(re.match(r"([\d.]+)", text).group(1))
        unit = re.match(r"[\d.]+(\w+)", text).group(1)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    if "Latency Distribution" not in out:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    # "Socket errors: connect 0, read 0, write 0, timeout 0" (only printed when any).
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    socket_errors = sum(int(v) for v in sockets.groups()) if sockets else 0
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": errors,
        "socket_errors": socket_errors,
        "requests": requests,
    }
