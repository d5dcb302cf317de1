"""Several server processes: throughput of lookups and cached tiles at 1, 2 and N workers.

``wangge serve --workers N`` (uvicorn's process supervisor: N processes accept on one socket,
each with its own pools, tile cache, token cache and listeners) is started for each N on the
benchmark database (``wangge_bench``, the Guiyang demo, as ``bench.lookup``), and loaded
with ``wrk`` (one thread, ``--connections``):

- ``lookups``: ``GET /lookup`` with a token, a different point per request (2,000 points);
- ``cached tiles``: ``GET /tiles/grids/{z}/{x}/{y}.mvt`` over every tile of zooms 10-14 of
  the urban core, after a warm-up that filled every process's cache (each has its own), so
  each answer is a cache hit (checked).

1 worker is measured first and again last: the two figures say how noisy this machine was
during the run (other work shares its cores), and the ratios are against their mean.

Stated honestly: this machine has ``os.cpu_count()`` cores (2 when written), shared by wrk,
PostgreSQL and the server processes. A lookup spends most of its CPU in the server's Python,
and the rest in PostgreSQL; a cached tile is all Python. More processes than cores cannot add
CPU; what they can add is that one process's pauses (garbage collection, a slow request)
no longer stall everything. The goals are therefore modest: on 2 cores, 2 workers must not
serve less than 1 worker (>= 0.9x, within noise), for each kind of request; the figures
print what they do serve.

Run: ``.venv/bin/python -m bench.workers [--seconds 8] [--connections 32] [--workers 1,2,4]
[--quick]``. Exit status 1 when a goal is missed or a check fails (:mod:`bench.goals`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import ROOT, parse_wrk
from bench.goals import Goals
from bench.lookup import prepare_database, sample_points
from bench.tiles import CORE, _tile_xy

PORT = 8771
#: Database connections per process (each process has its own pools): kept small so that
#: 4 processes stay well within the shared cluster's max_connections.
POOL = 8
TILE_ZOOMS = range(10, 15)


def core_tiles() -> list[tuple[int, int, int]]:
    out = []
    for z in TILE_ZOOMS:
        x0, y0 = _tile_xy(CORE[0], CORE[3], z)
        x1, y1 = _tile_xy(CORE[2], CORE[1], z)
        out += [(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
    return out


LOOKUP_LUA = """
local points = {%s}
local i = 0
request = function()
  i = i + 1
  local p = points[(i %% #points) + 1]
  return wrk.format("GET", "/lookup?lon=" .. p[1] .. "&lat=" .. p[2], {["Authorization"] = "Bearer %s"})
end
"""

TILE_LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["Authorization"] = "Bearer %s"})
end
"""


def serve(url: str, workers: int) -> subprocess.Popen:
    """Start ``wangge serve --workers N`` in a process group of its own; return once it
    answers."""
    cmd = [
        str(Path(sys.executable).parent / "wangge"),
        "serve",
        "--port",
        str(PORT),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "DATABASE_URL": url, "WANGGE_DB_POOL_SIZE": str(POOL)}
    proc = subprocess.Popen(cmd, env=env, cwd=str(ROOT), start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"wangge serve exited with {proc.returncode}")
        # Every process listens on a socket of its own (SO_REUSEPORT): wait for all of them.
        if listening() == workers:
            try:
                if httpx.get(f"http://127.0.0.1:{PORT}/health", timeout=5).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError("wangge serve did not start")


def listening() -> int:
    """Return how many sockets listen on the port."""
    out = subprocess.run(
        ["ss", "-tlnH", f"( sport = :{PORT} )"], capture_output=True, text=True
    ).stdout
    return len(out.splitlines())


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and every process it started (its process group)."""
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


def run_wrk(lua: str, seconds: float, connections: int, spread: list | None = None) -> dict:
    """Run wrk; with ``spread``, append how many of its connections each process holds."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua)
    args = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--latency",
    ]
    proc = subprocess.Popen(
        [*args, "-s", fh.name, f"http://127.0.0.1:{PORT}/"], stdout=subprocess.PIPE, text=True
    )
    if spread is not None:
        time.sleep(min(1.0, seconds / 2))
        spread.append(connections_per_process())
    out, _ = proc.communicate()
    Path(fh.name).unlink()
    if proc.returncode:
        raise RuntimeError(f"wrk failed ({proc.returncode})")
    return parse_wrk(out)


def connections_per_process() -> list[int]:
    """Return how many established connections on the port each server process holds."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{PORT} )"],
        capture_output=True,
        text=True,
    ).stdout
    pids = re.findall(r"pid=(\d+)", out)
    return sorted((pids.count(p) for p in set(pids)), reverse=True)


def _hits(tiles: list[str], token: str) -> tuple[int, int]:
    """Return how many of a sample of tiles, each on a fresh connection, were cache hits."""
    marks = []
    for path in tiles[:: max(1, len(tiles) // 40)]:
        # A fresh connection each, spread over the processes as wrk's are.
        r = httpx.get(
            f"http://127.0.0.1:{PORT}{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        marks.append(r.headers.get("x-tile-cache"))
    return marks.count("hit"), len(marks)


def measure(url: str, workers: int, lookup_lua: str, tile_lua: str, tiles: list[str], token, args):
    """Return the figures of one server with ``workers`` processes, and its cache checks."""
    proc = serve(url, workers)
    try:
        run_wrk(lookup_lua, max(2.0, args.seconds / 3), args.connections)
        # Every process fills its own cache: warm until a sample of fresh connections all
        # hit (uncached grid tiles are slow: several passes), at most 20 rounds.
        for rounds in range(1, 21):  # noqa: B007 (printed)
            run_wrk(tile_lua, 3, args.connections)
            warmed = _hits(tiles, token)
            if warmed[0] == warmed[1]:
                break
        spread: list[list[int]] = []
        lookups = run_wrk(lookup_lua, args.seconds, args.connections, spread)
        cached = run_wrk(tile_lua, args.seconds, args.connections)
        after = _hits(tiles, token)
    finally:
        stop(proc)
    print(
        f"  {workers} workers: cache warm after {rounds} x 3 s; hits {warmed[0]}/{warmed[1]} "
        f"before and {after[0]}/{after[1]} after the load; wrk's connections per process "
        f"{spread[0]}",
        flush=True,
    )
    return {"lookups": lookups, "tiles": cached, "warmed": warmed, "after": after}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated process counts")
    parser.add_argument("--quick", action="store_true", help="short runs: a check, not figures")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 2
    if not shutil.which("wrk"):
        print("wrk is missing: `make bench` installs it (apt-get install wrk)", file=sys.stderr)
        return 2
    counts = sorted({int(n) for n in args.workers.split(",")} | {1})
    goals = Goals("workers", quick=args.quick)

    url, token = prepare_database()
    pts = sample_points(url, 2_000)
    lookup_lua = LOOKUP_LUA % (
        ",".join(f"{{{x:.6f},{y:.6f}}}" for x, y in pts),
        token,
    )
    tiles = [f"/tiles/grids/{z}/{x}/{y}.mvt" for z, x, y in core_tiles()]
    tile_lua = TILE_LUA % (",".join(f'"{p}"' for p in tiles), token)

    results: dict[int, dict] = {}
    order = [*counts, 1]  # 1 worker again at the end: the run's noise
    again = None
    for n in order:
        figures = measure(url, n, lookup_lua, tile_lua, tiles, token, args)
        if n in results:
            again = figures
        else:
            results[n] = figures

    def mean_rps(kind: str) -> float:
        return statistics.mean([results[1][kind]["rps"], again[kind]["rps"]])

    base = {kind: mean_rps(kind) for kind in ("lookups", "tiles")}
    cpus = os.cpu_count()
    print(
        f"\nworkers benchmark: wangge serve --workers N on {cpus} cores (shared with wrk and "
        f"PostgreSQL), wrk -t 1 -c {args.connections}, {args.seconds:g} s each, "
        f"{len(pts)} lookup points, {len(tiles)} cached grid tiles (z10-14 of the urban core)"
    )
    print(
        f"{'workers':>8} {'lookups/s':>10} {'vs 1':>6} {'p99 ms':>7}   "
        f"{'cached tiles/s':>14} {'vs 1':>6} {'p99 ms':>7}"
    )
    for n in counts:
        lk, tl = results[n]["lookups"], results[n]["tiles"]
        print(
            f"{n:>8} {lk['rps']:>10,.0f} {lk['rps'] / base['lookups']:>5.2f}x {lk['p99_ms']:>7.1f}"
            f"   {tl['rps']:>14,.0f} {tl['rps'] / base['tiles']:>5.2f}x {tl['p99_ms']:>7.1f}"
        )
    print(
        f"{'1 again':>8} {again['lookups']['rps']:>10,.0f} "
        f"{again['lookups']['rps'] / base['lookups']:>5.2f}x {again['lookups']['p99_ms']:>7.1f}"
        f"   {again['tiles']['rps']:>14,.0f} {again['tiles']['rps'] / base['tiles']:>5.2f}x "
        f"{again['tiles']['p99_ms']:>7.1f}"
    )
    print("  (vs 1: against the mean of the two 1-worker runs)")

    for n in counts:
        figures = results[n]
        for kind in ("lookups", "tiles"):
            w = figures[kind]
            goals.check(
                f"workers_{n}_{kind}_2xx",
                f"{n} workers, {kind}: every answer 2xx, no socket error",
                w["non_2xx"] == 0 and w["socket_errors"] == 0 and w["requests"] > 0,
                f"{w['non_2xx']} non-2xx, {w['socket_errors']} socket errors",
            )
        (warm, asked), (after, _) = figures["warmed"], figures["after"]
        goals.check(
            f"workers_{n}_cache_hits",
            f"{n} workers: every process's warmed cache answers hits, before and after the load",
            warm == after == asked,
            f"{warm} and {after} of {asked} fresh connections hit",
        )
    if 2 in results:
        for kind, label in (("lookups", "GET /lookup"), ("tiles", "cached tiles")):
            goals.at_least(
                f"workers_2_{kind}",
                f"{label} throughput, 2 workers / 1 worker (2 shared cores)",
                results[2][kind]["rps"] / base[kind],
                0.9,
            )
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
