"""One case at a year of cases: ``GET /cases/{id}``, a transition, an action, and batch lookups,
each against the code of an earlier revision, in one run on one database.

At a year of cases ``incident`` has a partition per month: a statement naming a case by id
alone probes the key index of every month (PostgreSQL 15 locks and opens each); one that
names the case's month too (its ``reported_at``, from ``incident_month``, migration 0020)
reads one. The peer is the service as it was before its single-case statements named the
month: the tree of ``--before`` (a git revision, default :data:`BEFORE`), taken with
``git archive`` into a temporary directory and served beside this tree's. Batch lookups
are measured on the same servers (the peer's ``POST /lookup/batch`` read every point's whole
chain; this one finds the deepest area and takes the chain from the single lookups' cache).

Database ``--database`` (default ``wangge_bench_cases``): the Guiyang demo and ``--incidents``
(1,000,000) more over a year, 70 % around the urban core, one in 20 open
(:func:`bench.tiles.prepare_volume`: built on first use, ~11 min on 2 shared cores; reused
after). ``--drop`` drops it at the end. Both servers: one uvicorn worker, a pool of 10, no
deadline sweep; measured one at a time, rounds alternating which goes first, each round on
a quiet database (:func:`bench.tiles.settle`):

- ``read``: ``GET /cases/{id}`` (the city dispatcher) over 1,000 cases of every month, wrk
  with ``--connections`` (8). Unit: a request.
- ``comment``: ``POST /cases/{id}/actions/comment`` on those cases (an action: the case read,
  judged, its event and the case written). Unit: an action.
- ``take_over``: ``POST /cases/{id}/actions/take_over`` (a transition: the city takes over an
  open case its community or district owns), each case once: every round gets cases of its
  own. Unit: an action.
- ``batch``: ``POST /lookup/batch`` with 1,000 points (bench.lookup's sample: 90 % in grids),
  one request at a time, ``--batch-rounds`` (20) per round after two to warm up. Unit: a point.

Printed per side: requests per second, p50/p99, and the CPU each request (or point) cost the
server process and the database's backends (µs, from /proc: on a machine shared with other
work a far steadier figure than throughput, so the goals judge it), after/before of both, and
the machine's load. Checks: every answer 2xx; both sides answer ``GET /cases/{id}`` alike
(30 cases, the clock aside) and the batch alike (every point). Goals, after/before at 1 M
incidents: CPU per ``GET /cases/{id}`` ≤ 0.9×; per transition and per batch point ≤ 1.05×,
no dearer (an action's cost is mostly its write: the event, the row's triggers, the commit;
a batch's, the search for each point's area: the parts pruning and the chain cache save are
small shares of them). Both servers hear every case event (their streams read each), so the
database's CPU per action holds both streams' reads on either side.

Run: ``.venv/bin/python -m bench.cases [--before REV] [--incidents 1000000] [--seconds 5]
[--rounds 3] [--drop] [--quick]`` (``--quick``: 20,000 incidents in ``wangge_bench_cases_quick``,
2-s rounds, one round).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg

from bench.common import ROOT, database_url, run_wrk, start_uvicorn, stop
from bench.goals import Goals

#: The last revision whose single-case statements named the case by id alone.
BEFORE = "109ec0f"
PORTS = {"before": 8771, "after": 8772}
CASES = 1_000
BATCH = 1_000
#: States a city dispatcher may take a case over in (the lifecycle's OPEN_STATES).
OPEN = ("reported", "registered", "dispatched", "signed", "handled")

LUA = """
local paths = {%s}
local headers = {["Authorization"] = "Bearer %s", ["Content-Type"] = "application/json"}
local method, body = "%s", %s
local once = %s
local i, answered = 0, 0
request = function()
  i = i + 1
  if once and i > #paths then
    -- every path sent once (a take-over twice is a 409): the connections still waiting for
    -- the last answers ask for something harmless until the thread stops
    return wrk.format("GET", "/health")
  end
  return wrk.format(method, paths[((i - 1) %% #paths) + 1], headers, body)
end
response = function(status, headers, body)
  answered = answered + 1
  if once and answered >= #paths then
    wrk.thread:stop()
  end
end
"""


def _pg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def extract(rev: str, into: Path) -> Path:
    """Return a directory holding the tree of git revision ``rev``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def start_server(tree: Path, url: str, port: int) -> subprocess.Popen:
    """Serve the app of ``tree`` (one worker, a pool of 10, no deadline sweep)."""
    env = {
        "DATABASE_URL": url,
        "WANGGE_DB_POOL_SIZE": "10",
        "WANGGE_DISPATCH_SWEEP_SECONDS": "0",
        "PYTHONPATH": str(tree),
    }
    return start_uvicorn("service.app:create_app", port, env, cwd=tree)


def pick_cases(url: str, takeovers: int, seed: int = 3) -> tuple[list[int], list[int]]:
    """Return (cases of every month to read and comment on, open cases the city may take
    over: ``takeovers`` of them, owned by a community or a district)."""
    with psycopg.connect(_pg(url)) as conn:
        conn.execute("SELECT setseed(%s)", (seed / 10,))
        read = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM incident WHERE description = 'volume' ORDER BY random() LIMIT %s",
                (CASES,),
            )
        ]
        take = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM incident WHERE description = 'volume' AND state = ANY(%s) "
                "AND owner_level IN ('community', 'district') ORDER BY random() LIMIT %s",
                (list(OPEN), takeovers),
            )
        ]
    return read, take


def wrk_lua(
    paths: list[str],
    token: str,
    method: str = "GET",
    body: str | None = None,
    *,
    once: bool = False,
) -> str:
    """Return a wrk script sending ``paths`` in turn (``once``: each once, then stop, so a
    round faster than the list was sized for never repeats a one-time action)."""
    quoted = ", ".join(f'"{p}"' for p in paths)
    return LUA % (
        quoted,
        token,
        method,
        "nil" if body is None else f"[[{body}]]",
        "true" if once else "false",
    )


def backend_pids(url: str) -> list[int]:
    """Return the client backends of ``url``'s database (autovacuum's workers left out: they
    come and go with the writes, whichever side made them)."""
    with psycopg.connect(_pg(url)) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
    return [r[0] for r in rows]


def measure_wrk(
    port: int, lua: str, seconds: float, connections: int, server: int, backends: list[int]
) -> dict:
    """Return wrk's figures and the CPU µs each request cost the server process (``server``)
    and the database's backends (all of the database's: the other server idles meanwhile)."""
    from bench.scale import cpu_seconds, run_seconds

    before = run_seconds(server), cpu_seconds(backends)
    out = run_wrk(
        f"http://127.0.0.1:{port}/health", seconds=seconds, connections=connections, lua=lua
    )
    n = max(out["requests"], 1)
    out["server_us"] = (run_seconds(server) - before[0]) / n * 1e6
    out["db_us"] = (cpu_seconds(backends) - before[1]) / n * 1e6
    return out


def measure_batch(port: int, token: str, chunks: list[np.ndarray]) -> tuple[list[float], list]:
    """Return (ms per request, the last answer's results) of one request per chunk."""
    lat_ms, results = [], None
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        timeout=120,
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        for chunk in chunks:
            t = time.perf_counter()
            r = client.post("/lookup/batch", json={"points": chunk.tolist()})
            lat_ms.append((time.perf_counter() - t) * 1e3)
            r.raise_for_status()
            results = r.json()["results"]
    return lat_ms, results


def same_cases(token: str, ids: list[int]) -> tuple[bool, str]:
    """Return whether both servers answer ``GET /cases/{id}`` alike for ``ids``."""
    answers = {}
    for side, port in PORTS.items():
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
        ) as client:
            out = []
            for case_id in ids:
                r = client.get(f"/cases/{case_id}")
                body = r.json()
                body.pop("clock", None)
                out.append((r.status_code, body))
            answers[side] = out
    for case_id, a, b in zip(ids, answers["before"], answers["after"], strict=True):
        if a != b:
            return False, f"case {case_id}: {a} != {b}"
    return True, f"{len(ids)} cases"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cases", description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="the peer's git revision")
    parser.add_argument("--database", default="wangge_bench_cases")
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch-rounds", type=int, default=20)
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    parser.add_argument("--quick", action="store_true", help="20,000 incidents, 2-s rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.incidents, args.seconds, args.rounds, args.batch_rounds = 20_000, 2.0, 1, 3
        if args.database == "wangge_bench_cases":  # never the full-size one
            args.database = "wangge_bench_cases_quick"
    goals = Goals("cases", quick=args.quick)

    from bench.lookup import sample_points
    from bench.tiles import prepare_volume, settle

    load = [os.getloadavg()[0]]
    url, token = prepare_volume(args.database, args.incidents)
    # Each take-over round needs cases of its own: enough for ~400 actions a second (a
    # round that runs out takes a case twice: a 409, and the all-2xx check fails).
    needed = (int(400 * args.seconds) + 200) * args.rounds * 2
    read, take = pick_cases(url, needed)
    if len(take) < needed // 2:
        # Earlier runs took these cases over (for good): the volume's cases made anew.
        with psycopg.connect(_pg(url), autocommit=True) as conn:
            conn.execute("DELETE FROM incident WHERE description = 'volume'")
        url, token = prepare_volume(args.database, args.incidents)
        read, take = pick_cases(url, needed)
    per_round = len(take) // (args.rounds * 2)
    if per_round == 0:
        raise SystemExit(f"bench.cases: no open case the city may take over in {args.database}")
    pts = sample_points(url, BATCH * 4)
    chunks = [pts[(r * BATCH) % len(pts) :][:BATCH] for r in range(args.batch_rounds + 2)]
    results: dict[str, dict[str, list]] = {}
    batch_answers = {}
    non2xx = 0
    with tempfile.TemporaryDirectory(prefix="wangge-before-") as tmp:
        trees = {"before": extract(args.before, Path(tmp)), "after": ROOT}
        servers = {side: start_server(trees[side], url, PORTS[side]) for side in PORTS}
        try:
            ok, detail = same_cases(token, read[:30])
            goals.check("same_case_answers", "GET /cases/{id}: both sides alike", ok, detail)
            # Warm: every pooled connection open (their backends are the ones measured).
            for side in PORTS:
                lua = wrk_lua([f"/cases/{i}" for i in read], token)
                run_wrk(
                    f"http://127.0.0.1:{PORTS[side]}/health", seconds=2, connections=16, lua=lua
                )
            from bench.scale import cpu_seconds, run_seconds

            takes = iter(take[i : i + per_round] for i in range(0, len(take), per_round))
            ops = {
                "read": lambda: wrk_lua([f"/cases/{i}" for i in read], token),
                "comment": lambda: wrk_lua(
                    [f"/cases/{i}/actions/comment" for i in read], token, "POST", '{"note": "b"}'
                ),
                "take_over": lambda: wrk_lua(
                    [f"/cases/{i}/actions/take_over" for i in next(takes)],
                    token,
                    "POST",
                    '{"note": "bench"}',
                    once=True,
                ),
            }
            for op, lua_of in ops.items():
                results[op] = {"before": [], "after": []}
                for r in range(args.rounds):
                    for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
                        settle(url)
                        backends = backend_pids(url)  # the pools' connections, open by now
                        got = measure_wrk(
                            PORTS[side],
                            lua_of(),
                            args.seconds,
                            args.connections,
                            servers[side].pid,
                            backends,
                        )
                        non2xx += got["non_2xx"] + got["socket_errors"]
                        results[op][side].append(got)
                        print(
                            f"{op:<10} {side:<7} {got['rps']:8.0f} req/s  p50 {got['p50_ms']:.1f}"
                            f" ms  p99 {got['p99_ms']:.1f} ms  CPU {got['server_us']:.0f} + "
                            f"{got['db_us']:.0f} µs  {got['requests']} requests, "
                            f"{got['non_2xx'] + got['socket_errors']} not 2xx",
                            flush=True,
                        )
            results["batch"] = {"before": [], "after": []}
            for side in PORTS:  # warm: the chain cache, the prepared statements
                measure_batch(PORTS[side], token, chunks[:2])
            for r in range(args.rounds):
                for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
                    settle(url)
                    backends = backend_pids(url)
                    cpu = run_seconds(servers[side].pid), cpu_seconds(backends)
                    lat_ms, answer = measure_batch(PORTS[side], token, chunks[2:])
                    n = len(lat_ms) * BATCH
                    got = {
                        "us": statistics.median(lat_ms) * 1e3 / BATCH,
                        "server_us": (run_seconds(servers[side].pid) - cpu[0]) / n * 1e6,
                        "db_us": (cpu_seconds(backends) - cpu[1]) / n * 1e6,
                    }
                    batch_answers[side] = answer
                    results["batch"][side].append(got)
                    print(
                        f"batch      {side:<7} {got['us']:8.1f} µs a point (median of "
                        f"{len(lat_ms)} requests of {BATCH})  CPU {got['server_us']:.1f} + "
                        f"{got['db_us']:.1f} µs",
                        flush=True,
                    )
        finally:
            for proc in servers.values():
                stop(proc)
    load.append(os.getloadavg()[0])

    goals.check("all_2xx", "every answer 2xx", non2xx == 0, f"{non2xx} not 2xx")
    goals.check(
        "same_batch_answers",
        "POST /lookup/batch: both sides alike, every point",
        batch_answers.get("before") == batch_answers.get("after"),
        f"{BATCH} points",
    )

    print(
        f"\n{args.incidents:,} incidents; peer: revision {args.before}; {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end"
    )
    print(
        f"{'':<10}{'before':>40}{'after':>40}   after/before: throughput, CPU\n"
        f"{'':<10}{'(req/s, p50/p99 ms, CPU µs: server + database)':>80}"
    )
    ratios = {}

    def med(op: str, side: str, key: str) -> float:
        return statistics.median(g[key] for g in results[op][side])

    for op in ("read", "comment", "take_over"):
        cpu = {s: med(op, s, "server_us") + med(op, s, "db_us") for s in PORTS}
        rps = {s: med(op, s, "rps") for s in PORTS}
        ratios[op] = (rps["after"] / rps["before"], cpu["after"] / cpu["before"])
        cells = [
            f"{rps[s]:5.0f}/s {med(op, s, 'p50_ms'):5.1f}/{med(op, s, 'p99_ms'):5.0f}  "
            f"{med(op, s, 'server_us'):5.0f} + {med(op, s, 'db_us'):4.0f}"
            for s in PORTS
        ]
        print(f"{op:<10}{cells[0]:>40}{cells[1]:>40}   {ratios[op][0]:.2f}x, {ratios[op][1]:.2f}x")
    us = {s: med("batch", s, "us") for s in PORTS}
    cpu = {s: med("batch", s, "server_us") + med("batch", s, "db_us") for s in PORTS}
    ratios["batch"] = (us["after"] / us["before"], cpu["after"] / cpu["before"])
    cells = [
        f"{us[s]:6.1f} µs/pt  {med('batch', s, 'server_us'):5.1f} + {med('batch', s, 'db_us'):5.1f}"
        for s in PORTS
    ]
    print(
        f"{'batch':<10}{cells[0]:>40}{cells[1]:>40}   {ratios['batch'][0]:.2f}x time, "
        f"{ratios['batch'][1]:.2f}x CPU"
    )
    # CPU per request: what the machine's other load disturbs least (throughput is printed).
    goals.at_most(
        "read_cpu_vs_before",
        "GET /cases/{id} at 1 M: CPU per request (server + database), after/before",
        ratios["read"][1],
        0.9,
    )
    goals.at_most(
        "take_over_cpu_vs_before",
        "a transition at 1 M: CPU per action (server + database), after/before",
        ratios["take_over"][1],
        1.05,
    )
    goals.at_most(
        "batch_cpu_vs_before",
        "POST /lookup/batch: CPU per point (server + database), after/before",
        ratios["batch"][1],
        1.05,
    )
    if args.drop:
        with psycopg.connect(_pg(database_url("postgres")), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
