"""What the benchmarks share: their databases (the configured server's, the Guiyang demo),
starting and stopping a server process, loading it with wrk (the lookup script) and reading
wrk's output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

__all__ = [
    "ROOT",
    "server_url",
    "database_url",
    "demo_database",
    "parse_wrk",
    "run_wrk",
    "LOOKUP_LUA",
    "lookup_lua",
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


def start(
    cmd: list[str],
    env: dict,
    health: str,
    cwd: str | None = None,
    *,
    timeout: float = 60.0,
    ready: Callable[[], bool] | None = None,
    new_session: bool = False,
) -> subprocess.Popen:
    """Run ``cmd`` with ``env`` added to this process's; return once ``health`` answers 200
    (and ``ready()`` is true, when given), within ``timeout`` seconds.

    ``new_session``: the process leads a process group of its own (a server that starts
    worker processes), which :func:`stop` ends whole.
    """
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=cwd, start_new_session=new_session)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
        try:
            if (ready is None or ready()) and httpx.get(health, timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"{' '.join(cmd)} did not start in {timeout:.0f} s")


def start_uvicorn(
    app: str, port: int, env: dict, *options: str, timeout: float = 60.0, cwd: Path = ROOT
) -> subprocess.Popen:
    """Serve the app factory ``app`` (``module:function``) on ``port``, one worker, quietly,
    from the source tree ``cwd`` (this checkout by default)."""
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
    return start(cmd, env, f"http://127.0.0.1:{port}/health", str(cwd), timeout=timeout)


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started by :func:`start`; one leading its own process group (started
    with ``new_session``) is stopped with every process of the group."""
    try:
        group = os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        group = False
    if not group:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    try:  # workers the supervisor did not end in time
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)


#: wrk's script for ``GET /lookup``: a different point per request, in turn, with a token.
LOOKUP_LUA = """
local points = {%s}
local i = 0
request = function()
  i = i + 1
  local p = points[(i %% #points) + 1]
  return wrk.format("GET", "/lookup?lon=" .. p[1] .. "&lat=" .. p[2], {["Authorization"] = "Bearer %s"})
end
"""


def lookup_lua(points: Iterable, token: str) -> str:
    """Return wrk's script looking up ``points`` ((lon, lat) pairs, 6 decimals) in turn."""
    return LOOKUP_LUA % (", ".join(f"{{{x:.6f},{y:.6f}}}" for x, y in points), token)


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    lua: str | None = None,
    during: Callable[[], None] | None = None,
) -> dict:
    """Load ``url`` with ``wrk -t 1 --latency`` (script ``lua``, when given) for ``seconds``;
    return :func:`parse_wrk`'s figures. ``during`` is called once while wrk runs (after
    a second, or half the run when shorter)."""
    args = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s"]
    with tempfile.TemporaryDirectory() as tmp:
        if lua:
            script = Path(tmp) / "load.lua"
            script.write_text(lua)
            args += ["-s", str(script)]
        proc = subprocess.Popen(
            [*args, "--latency", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if during is not None:
            time.sleep(min(1.0, seconds / 2))
            during()
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk {url} failed ({proc.returncode}): {out[-500:]} {err[-500:]}")
    return parse_wrk(out)


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
