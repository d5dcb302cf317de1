"""Several server processes: throughput of lookups and cached tiles at 1, 2 and N workers.

``wangge serve --workers N`` (N processes, each listening on a SO_REUSEPORT socket of its
own, with its own pools, tile cache, token cache and listeners) is started for each N on the
benchmark database (``wangge_bench``, the Guiyang demo, as ``bench.lookup``), and loaded
with ``wrk`` (one thread, ``--connections``):

- ``lookups``: ``GET /lookup`` with a token, a different point per request (2,000 points);
- ``cached tiles``: ``GET /tiles/grids/{z}/{x}/{y}.mvt`` over every tile of zooms 10-14 of
  the urban core, after a warm-up that filled every process's cache (each has its own), so
  each answer is a cache hit (checked).

The servers (one per N, each on its own port) run side by side for the whole benchmark, and
the measurements are interleaved: ``--rounds`` rounds, each running every server in a
rotating order, so that whatever else loads the machine meanwhile weighs on each alike; the
medians are compared, and each figure's range across rounds is printed beside it.

Stated honestly: this machine has ``os.cpu_count()`` cores (2 when written), shared by wrk,
PostgreSQL and the server processes. A lookup spends most of its CPU in the server's Python,
and the rest in PostgreSQL; a cached tile is all Python. More processes than cores cannot add
CPU; what they can add is that one process's pauses (garbage collection, a slow request)
no longer stall everything. The goals are therefore modest: on 2 cores, 2 workers must not
serve less than 1 worker (>= 0.9x, within noise), for each kind of request; the figures
print what they do serve.

Run: ``.venv/bin/python -m bench.workers [--seconds 5] [--rounds 3] [--connections 32]
[--workers 1,2,4] [--quick]``. Exit status 1 when a goal is missed or a check fails
(:mod:`bench.goals`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import httpx

from bench.common import ROOT, lookup_lua, run_wrk, start, stop
from bench.goals import Goals
from bench.lookup import prepare_database, sample_points
from bench.tiles import CORE, _tile_xy

PORT = 8771
#: Database connections per pool of each process (each has its own): kept small so that
#: the 7 processes of 1, 2 and 4 workers stay well within the shared cluster's
#: max_connections (a lookup holds one hot-pool connection for ~1 ms; cached tiles none).
POOL = 4
TILE_ZOOMS = range(10, 15)


def core_tiles() -> list[tuple[int, int, int]]:
    out = []
    for z in TILE_ZOOMS:
        x0, y0 = _tile_xy(CORE[0], CORE[3], z)
        x1, y1 = _tile_xy(CORE[2], CORE[1], z)
        out += [(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
    return out


TILE_LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["Authorization"] = "Bearer %s"})
end
"""


def serve(url: str, workers: int, port: int) -> subprocess.Popen:
    """Start ``wangge serve --workers N`` in a process group of its own; return once every
    process listens and it answers."""
    cmd = [
        str(Path(sys.executable).parent / "wangge"),
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    # No deadline sweeps: seven servers sweeping the same cases would only add writes (and
    # tile invalidations) unrelated to what is measured.
    env = {
        "DATABASE_URL": url,
        "WANGGE_DB_POOL_SIZE": str(POOL),
        "WANGGE_DISPATCH_SWEEP_SECONDS": "0",
    }
    # Every process listens on a socket of its own (SO_REUSEPORT): wait for all of them.
    return start(
        cmd,
        env,
        f"http://127.0.0.1:{port}/health",
        str(ROOT),
        timeout=240,
        ready=lambda: listening(port) == workers,
        new_session=True,
    )


def listening(port: int) -> int:
    """Return how many sockets listen on ``port``."""
    out = subprocess.run(
        ["ss", "-tlnH", f"( sport = :{port} )"], capture_output=True, text=True
    ).stdout
    return len(out.splitlines())


def wrk(port: int, lua: str, seconds: float, connections: int, spread: list | None = None) -> dict:
    """Run wrk; with ``spread``, append how many of its connections each process holds."""
    during = None if spread is None else (lambda: spread.append(connections_per_process(port)))
    return run_wrk(
        f"http://127.0.0.1:{port}/",
        seconds=seconds,
        connections=connections,
        lua=lua,
        during=during,
    )


def connections_per_process(port: int) -> list[int]:
    """Return how many established connections on ``port`` each server process holds."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
    ).stdout
    pids = re.findall(r"pid=(\d+)", out)
    return sorted((pids.count(p) for p in set(pids)), reverse=True)


def _hits(port: int, tiles: list[str], token: str) -> tuple[int, int]:
    """Return how many of a sample of tiles, each on a fresh connection, were cache hits."""
    marks = []
    for path in tiles[:: max(1, len(tiles) // 40)]:
        # A fresh connection each, spread over the processes as wrk's are.
        r = httpx.get(
            f"http://127.0.0.1:{port}{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        marks.append(r.headers.get("x-tile-cache"))
    return marks.count("hit"), len(marks)


def warm(port: int, lookup_script: str, tile_lua: str, tiles: list[str], token, args) -> dict:
    """Warm one server: lookups, then tiles until every process's cache answers hits."""
    wrk(port, lookup_script, 3, args.connections)
    # Every process fills its own cache: warm until a sample of fresh connections all hit
    # (uncached grid tiles are slow: several passes), at most 20 passes.
    for passes in range(1, 21):  # noqa: B007 (reported)
        wrk(port, tile_lua, 3, args.connections)
        warmed = _hits(port, tiles, token)
        if warmed[0] == warmed[1]:
            break
    return {"passes": passes, "warmed": warmed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated process counts")
    parser.add_argument("--quick", action="store_true", help="short runs: a check, not figures")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 2, 1
    if not shutil.which("wrk"):
        print("wrk is missing: `make bench` installs it (apt-get install wrk)", file=sys.stderr)
        return 2
    counts = sorted({int(n) for n in args.workers.split(",")} | {1})
    goals = Goals("workers", quick=args.quick)

    url, token = prepare_database()
    pts = sample_points(url, 2_000)
    lookup_script = lookup_lua(pts, token)
    tiles = [f"/tiles/grids/{z}/{x}/{y}.mvt" for z, x, y in core_tiles()]
    tile_lua = TILE_LUA % (",".join(f'"{p}"' for p in tiles), token)

    # Every server runs for the whole benchmark and the runs are interleaved, round after
    # round, in a rotating order: whatever else loads the machine meanwhile weighs on each
    # alike, and the median of each is compared.
    ports = {n: PORT + i for i, n in enumerate(counts)}
    procs: dict[int, subprocess.Popen] = {}
    runs: dict[int, dict[str, list[dict]]] = {n: {"lookups": [], "tiles": []} for n in counts}
    spread: dict[int, list[list[int]]] = {n: [] for n in counts}
    warmed, after = {}, {}
    try:
        for n in counts:
            procs[n] = serve(url, n, ports[n])
        for n in counts:
            warmed[n] = warm(ports[n], lookup_script, tile_lua, tiles, token, args)
        for r in range(args.rounds):
            order = counts[r % len(counts) :] + counts[: r % len(counts)]
            for n in order:
                runs[n]["lookups"].append(
                    wrk(ports[n], lookup_script, args.seconds, args.connections, spread[n])
                )
                runs[n]["tiles"].append(wrk(ports[n], tile_lua, args.seconds, args.connections))
        for n in counts:
            after[n] = _hits(ports[n], tiles, token)
    finally:
        for proc in procs.values():
            stop(proc)

    def med(n: int, kind: str, key: str) -> float:
        return statistics.median(w[key] for w in runs[n][kind])

    def spread_of(n: int, kind: str) -> str:
        rps = [w["rps"] for w in runs[n][kind]]
        return f"{min(rps):,.0f}-{max(rps):,.0f}"

    base = {kind: med(1, kind, "rps") for kind in ("lookups", "tiles")}
    print(
        f"\nworkers benchmark: wangge serve --workers N on {os.cpu_count()} cores, shared with "
        f"wrk, PostgreSQL and whatever else runs; wrk -t 1 -c {args.connections}, "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s per server and kind (medians); "
        f"{len(pts)} lookup points, {len(tiles)} cached grid tiles (z10-14 of the urban core)"
    )
    print(
        f"{'workers':>8} {'lookups/s':>10} {'(range)':>13} {'vs 1':>6} {'p99 ms':>7}   "
        f"{'cached tiles/s':>14} {'(range)':>13} {'vs 1':>6} {'p99 ms':>7}  connections"
    )
    for n in counts:
        print(
            f"{n:>8} {med(n, 'lookups', 'rps'):>10,.0f} {spread_of(n, 'lookups'):>13} "
            f"{med(n, 'lookups', 'rps') / base['lookups']:>5.2f}x "
            f"{med(n, 'lookups', 'p99_ms'):>7.1f}   "
            f"{med(n, 'tiles', 'rps'):>14,.0f} {spread_of(n, 'tiles'):>13} "
            f"{med(n, 'tiles', 'rps') / base['tiles']:>5.2f}x {med(n, 'tiles', 'p99_ms'):>7.1f}"
            f"  {spread[n][0]}"
        )
    passes = ", ".join(f"{n}: {warmed[n]['passes']}" for n in counts)
    print(f"  (connections: wrk's per process, as ss saw them; 3 s warm-up passes: {passes})")

    for n in counts:
        for kind in ("lookups", "tiles"):
            bad = sum(w["non_2xx"] + w["socket_errors"] for w in runs[n][kind])
            goals.check(
                f"workers_{n}_{kind}_2xx",
                f"{n} workers, {kind}: every answer 2xx, no socket error",
                bad == 0 and all(w["requests"] > 0 for w in runs[n][kind]),
                f"{bad} non-2xx or socket errors",
            )
        (warm_hits, asked), (after_hits, _) = warmed[n]["warmed"], after[n]
        goals.check(
            f"workers_{n}_cache_hits",
            f"{n} workers: every process's warmed cache answers hits, before and after the load",
            warm_hits == after_hits == asked,
            f"{warm_hits} and {after_hits} of {asked} fresh connections hit",
        )
    if 2 in counts:
        for kind, label in (("lookups", "GET /lookup"), ("tiles", "cached tiles")):
            goals.at_least(
                f"workers_2_{kind}",
                f"{label} throughput, 2 workers / 1 worker (medians; 2 shared cores)",
                med(2, kind, "rps") / base[kind],
                0.9,
            )
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
