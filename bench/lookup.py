"""Lookup benchmark: single-point and batch HTTP lookups beside a bare route and raw PostGIS.

Everything is measured in one run against one database (a throwaway copy of the Guiyang
demo) and one server process (uvicorn, 1 worker):

- ``bare``: ``GET /bench/bare`` on the same app (no auth, no database) — the ceiling.
- ``lookup``: ``GET /lookup`` with a token, a different point per request.
- ``raw``: the service's lookup SQL for one point, straight from PostgreSQL's own load
  generator ``pgbench`` (C, like wrk; prepared statements, generic plans) with as many
  concurrent connections as wrk has HTTP connections: the lookup / raw ratio is at equal
  concurrency. Also from psycopg on one connection, for the latency of one query alone.
- ``batch``: ``POST /lookup/batch`` with 1,000 points per request, and the raw batch SQL, both
  one request at a time.

Before the load, the answers are checked: 200 single lookups and one batch against a plain
``ST_Covers`` query on the grids (smallest code on shared edges), independent of the service's
SQL. Any answer that is not 2xx or not the expected grid fails the run.

HTTP load comes from ``wrk`` (Debian package; installed by ``make bench``) with a Lua script
rotating the points; ``--connections`` concurrent connections. Run: ``make bench`` or
``.venv/bin/python -m bench.lookup [--seconds 10] [--connections 32] [--quick]``.
Goal: single lookups at >= 0.5x the bare route's throughput. Exit status 1 when a goal is
missed or a check fails (:mod:`bench.goals`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg

from bench.common import demo_database, lookup_lua, run_wrk, server_url, start_uvicorn, stop
from bench.goals import Goals
from service.db import load_sql

PORT = 8765
BATCH = 1_000


#: The configured server's URL (older name; :func:`bench.common.server_url`).
_server_url = server_url


def prepare_database() -> tuple[str, str]:
    """Return (url, city token) of the benchmark database, building the demo on first use."""
    return demo_database("wangge_bench")


def sample_points(url: str, n: int, seed: int = 7) -> np.ndarray:
    """Return n points: 90 % inside gridded areas, 10 % anywhere in the city's bbox."""
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT (ST_Dump(ST_GeneratePoints(geom, 20, 7))).geom p "
            "FROM area WHERE level = 'grid') s"
        ).fetchall()
        bbox = conn.execute(
            "SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM area "
            "WHERE level = 'city'"
        ).fetchone()
    rng = np.random.default_rng(seed)
    inside = np.array(rows)[rng.integers(0, len(rows), int(n * 0.9))]
    anywhere = np.column_stack(
        [
            rng.uniform(bbox[0], bbox[2], n - len(inside)),
            rng.uniform(bbox[1], bbox[3], n - len(inside)),
        ]
    )
    pts = np.vstack([inside, anywhere])
    rng.shuffle(pts)
    return pts


def start_server(url: str) -> subprocess.Popen:
    env = {"DATABASE_URL": url, "WANGGE_DB_POOL_SIZE": "20"}
    return start_uvicorn("bench.lookup_app:create_bench_app", PORT, env)


def wrk(path: str, seconds: int, connections: int, lua: str | None = None) -> dict:
    return run_wrk(
        f"http://127.0.0.1:{PORT}{path}", seconds=seconds, connections=connections, lua=lua
    )


def _raw_sql() -> str:
    sql = load_sql("lookup_batch").replace(
        "CAST(:generation AS integer)", "CAST(%(generation)s AS integer)"
    )
    return sql.replace(":lons", "%(lons)s").replace(":lats", "%(lats)s")


def _time_raw(url: str, lookups) -> list[float]:
    """Milliseconds the service's lookup SQL takes straight from psycopg (one connection,
    generic plans), once for each (lons, lats) of ``lookups``."""
    sql = _raw_sql()
    lat_ms = []
    with psycopg.connect(
        url.replace("+psycopg", ""),
        prepare_threshold=0,
        options="-c plan_cache_mode=force_generic_plan",
    ) as conn:
        for lons, lats in lookups:
            t = time.perf_counter()
            conn.execute(sql, {"lons": lons, "lats": lats, "generation": None}).fetchall()
            lat_ms.append((time.perf_counter() - t) * 1e3)
    return lat_ms


def run_raw(url: str, pts: np.ndarray, seconds: float) -> dict:
    """Time the service's lookup SQL for one point at a time, straight from psycopg."""

    def points():  # from the first lookup on, for ``seconds``
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline:
            lon, lat = pts[i % len(pts)]
            yield [float(lon)], [float(lat)]
            i += 1

    lat_ms = _time_raw(url, points())
    return _summary(lat_ms, len(lat_ms) / (sum(lat_ms) / 1e3))


def run_raw_batch(url: str, pts: np.ndarray, rounds: int) -> dict:
    chunks = (pts[(r * BATCH) % len(pts) :][:BATCH] for r in range(rounds))
    lat_ms = _time_raw(url, ((c[:, 0].tolist(), c[:, 1].tolist()) for c in chunks))
    return _summary(lat_ms, BATCH * len(lat_ms) / (sum(lat_ms) / 1e3))


def run_http_batch(token: str, pts: np.ndarray, rounds: int) -> dict:
    lat_ms = []
    with httpx.Client(
        base_url=f"http://127.0.0.1:{PORT}",
        timeout=60,
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        for r in range(rounds):
            chunk = pts[(r * BATCH) % len(pts) :][:BATCH]
            t = time.perf_counter()
            resp = client.post("/lookup/batch", json={"points": chunk.tolist()})
            resp.raise_for_status()
            lat_ms.append((time.perf_counter() - t) * 1e3)
    return _summary(lat_ms, BATCH * len(lat_ms) / (sum(lat_ms) / 1e3))


PGBENCH_POINTS = 200


def _pgbench_sql() -> str:
    """The service's lookup SQL for one point, with pgbench's variables ``:lon``, ``:lat``."""
    sql = "\n".join(
        line for line in load_sql("lookup_batch").splitlines() if not line.lstrip().startswith("--")
    )
    sql = sql.replace("CAST(:generation AS integer)", "CAST(NULL AS integer)")
    sql = sql.replace("CAST(:lons AS float8[])", "ARRAY[CAST(:lon AS float8)]")
    sql = sql.replace("CAST(:lats AS float8[])", "ARRAY[CAST(:lat AS float8)]")
    if ":lons" in sql or ":lats" in sql or ":generation" in sql:
        raise RuntimeError("lookup_batch.sql changed: bench.lookup's pgbench script needs updating")
    return sql.rstrip().rstrip(";") + ";\n"


def pgbench_script(pts: np.ndarray) -> str:
    """Return a pgbench script: pick one of the points at random, look it up (one statement)."""
    lines = [f"\\set k random(0, {len(pts) - 1})"]
    for k, (lon, lat) in enumerate(pts):
        lines.append(f"\\{'if' if k == 0 else 'elif'} :k = {k}")
        lines.append(f"\\set lon {lon:.6f}")
        lines.append(f"\\set lat {lat:.6f}")
    lines.append("\\endif")
    return "\n".join(lines) + "\n" + _pgbench_sql()


def run_pgbench(url: str, pts: np.ndarray, seconds: int, connections: int) -> dict:
    """Run the single-point lookup SQL with pgbench at ``connections`` concurrent connections.

    pgbench is to PostgreSQL what wrk is to HTTP (C, one thread here as wrk has). Each
    transaction looks up one of :data:`PGBENCH_POINTS` points of the same sample as the HTTP
    load, with one prepared statement per connection and generic plans, as the service's pool
    runs it. Per-transaction latencies come from pgbench's log.
    """
    if not shutil.which("pgbench"):
        raise RuntimeError("pgbench is missing (Debian: postgresql-client)")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "lookup.sql"
        script.write_text(pgbench_script(pts[:PGBENCH_POINTS]))
        args = ["pgbench", "-n", "-M", "prepared", "-c", str(connections), "-j", "1"]
        args += ["-T", str(seconds), "--log", f"--log-prefix={tmp}/log", "-f", str(script)]
        env = {**os.environ, "PGOPTIONS": "-c plan_cache_mode=force_generic_plan"}
        done = subprocess.run(
            [*args, url.replace("+psycopg", "")], capture_output=True, text=True, env=env
        )
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed ({done.returncode}):\n{done.stderr[-2000:]}")
        lat_ms = []
        for log in Path(tmp).glob("log*"):
            for line in log.read_text().splitlines():
                lat_ms.append(int(line.split()[2]) / 1e3)
    tps = float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    out = _summary(lat_ms, tps)
    out["failed"] = int(failed.group(1)) if failed else 0
    return out


EXPECTED_SQL = """
SELECT (SELECT a.code FROM area a
        WHERE a.level = 'grid' AND a.generation_low <= gen.id AND a.generation_high >= gen.id
          AND ST_Covers(a.geom, ST_SetSRID(ST_MakePoint(u.x, u.y), 4326))
        ORDER BY a.code LIMIT 1)
FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS u(x, y, i),
     (SELECT max(id) AS id FROM generation WHERE active) gen
ORDER BY u.i
"""


def expected_grids(url: str, pts: np.ndarray) -> list[str | None]:
    """Return each point's grid by a plain ST_Covers on the grids (smallest code on edges).

    Independent of the service's lookup SQL (no subdivided parts, no level cascade).
    """
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        rows = conn.execute(EXPECTED_SQL, [pts[:, 0].tolist(), pts[:, 1].tolist()]).fetchall()
    return [r[0] for r in rows]


def check_answers(url: str, token: str, pts: np.ndarray) -> tuple[int, int, list[str]]:
    """Return (points asked, wrong or non-2xx answers, examples) of single and batch lookups."""
    pts = np.array([[float(f"{x:.6f}"), float(f"{y:.6f}")] for x, y in pts])  # as wrk sends
    expected = expected_grids(url, pts)
    wrong: list[str] = []
    with httpx.Client(
        base_url=f"http://127.0.0.1:{PORT}",
        timeout=60,
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        for (lon, lat), want in zip(pts, expected, strict=True):
            r = client.get("/lookup", params={"lon": repr(float(lon)), "lat": repr(float(lat))})
            got = (r.json().get("grid") or {}).get("code") if r.status_code == 200 else None
            if r.status_code != 200 or got != want:
                wrong.append(f"GET /lookup {lon},{lat}: {r.status_code} {got} (want {want})")
        r = client.post("/lookup/batch", json={"points": pts.tolist()})
        if r.status_code != 200:
            wrong.append(f"POST /lookup/batch: {r.status_code} {r.text[:200]}")
        else:
            for res, want in zip(r.json()["results"], expected, strict=True):
                got = (res.get("grid") or {}).get("code")
                if got != want:
                    wrong.append(f"batch point {res['index']}: {got} (want {want})")
    return 2 * len(pts), len(wrong), wrong[:5]


def _summary(lat_ms: list[float], throughput: float) -> dict:
    lat_ms = sorted(lat_ms)
    return {
        "rps": throughput,
        "p50_ms": statistics.median(lat_ms),
        "p99_ms": lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))],
        "n": len(lat_ms),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    parser.add_argument("--connections", type=int, default=32, help="wrk's and pgbench's")
    parser.add_argument("--batch-rounds", type=int, default=40)
    parser.add_argument("--check-points", type=int, default=200, help="answers checked")
    parser.add_argument("--quick", action="store_true", help="2 s per measurement, 5 batches")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.batch_rounds, args.check_points = 2, 5, 50
    warm = 1 if args.quick else 2
    if not shutil.which("wrk"):
        print("wrk is missing: `make bench` installs it (apt-get install wrk)", file=sys.stderr)
        return 2

    goals = Goals("lookup", quick=args.quick)
    url, token = prepare_database()
    pts = sample_points(url, 20_000)
    lua = lookup_lua(pts[:5000], token)
    server = start_server(url)
    try:
        asked, wrong, examples = check_answers(url, token, pts[5000 : 5000 + args.check_points])
        goals.check(
            "lookup_answers",
            f"{asked} single and batch answers 2xx and equal to plain ST_Covers on the grids",
            wrong == 0,
            f"{wrong} wrong: {'; '.join(examples)}" if wrong else "",
        )
        wrk("/bench/bare", warm, args.connections)  # warm-up
        wrk("/", warm, args.connections, lua)
        results = {
            "bare": wrk("/bench/bare", args.seconds, args.connections),
            "lookup": wrk("/", args.seconds, args.connections, lua),
            "raw_concurrent": run_pgbench(url, pts, args.seconds, args.connections),
            "raw": run_raw(url, pts, args.seconds),
            "batch_http": run_http_batch(token, pts, args.batch_rounds),
            "batch_raw": run_raw_batch(url, pts, args.batch_rounds),
        }
    finally:
        stop(server)

    ratio = results["lookup"]["rps"] / results["bare"]["rps"]
    raw_ratio = results["lookup"]["rps"] / results["raw_concurrent"]["rps"]
    c = args.connections
    print(
        f"\nlookup benchmark: 1 uvicorn worker, wrk -c {c}, pgbench -c {c}, {args.seconds}s each, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(f"{'what':<40}{'throughput':>16}{'p50 ms':>10}{'p99 ms':>10}")
    rows = [
        ("bare route GET /bench/bare", results["bare"], "req/s"),
        ("lookup GET /lookup", results["lookup"], "req/s"),
        (f"raw lookup SQL (pgbench, {c} conns)", results["raw_concurrent"], "q/s"),
        ("raw lookup SQL (psycopg, 1 conn)", results["raw"], "q/s"),
        (f"batch POST /lookup/batch ({BATCH} pts)", results["batch_http"], "pts/s"),
        (f"raw batch SQL ({BATCH} pts)", results["batch_raw"], "pts/s"),
    ]
    for name, r, unit in rows:
        print(f"{name:<40}{r['rps']:>10,.0f} {unit:<5}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}")
    print(f"\nlookup / bare route throughput: {ratio:.2f}x (goal >= 0.5x)")
    print(
        f"lookup / raw lookup SQL, both at {c} concurrent connections: {raw_ratio:.2f}x "
        "(the server coalesces concurrent single lookups into one batch query; pgbench sends "
        "one query per lookup)"
    )
    print(
        f"batch HTTP / raw batch SQL, one request at a time: "
        f"{results['batch_http']['rps'] / results['batch_raw']['rps']:.2f}x"
    )
    goals.at_least("lookup_vs_bare", "GET /lookup / bare route throughput, same wrk -c", ratio, 0.5)
    for name in ("bare", "lookup"):
        r = results[name]
        goals.check(
            f"{name}_all_2xx",
            f"wrk {name}: every answer 2xx, no socket error",
            r["non_2xx"] == 0 and r["socket_errors"] == 0,
            f"{r['non_2xx']} non-2xx, {r['socket_errors']} socket errors of {r['requests']:,}",
        )
    goals.check(
        "raw_no_failures",
        "pgbench: no failed transaction",
        results["raw_concurrent"]["failed"] == 0,
        f"{results['raw_concurrent']['failed']} failed",
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {**results, "ratio_lookup_bare": ratio, "ratio_lookup_raw": raw_ratio}, indent=1
            )
        )
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
