"""Dispatch benchmark: case actions, the live stream and the deadline sweep, in one run.

Sections (each a function taking the parsed arguments, the goals and the bench database;
``--sections`` picks some, all by default):

- ``stream``: ``--screens`` (1,000) dispatch screens follow ``GET /cases/stream`` on one
  uvicorn worker, their scopes spread over the hierarchy (60 % grid officers, 30 % community,
  8 % district dispatchers, 2 % city), all from one client process (raw asyncio sockets, as
  light as a browser's EventSource). Case events are written straight into the database at
  ``--rate`` (200/s) for ``--seconds`` (60): each one a case action's transaction — the case
  row updated (version + 1) and its event inserted, in one statement, on a pool of 8
  connections, cases drawn at random from every area. Checks: every screen connected, and
  every screen received exactly the written events its scope covers (independently: the
  case's location, owner or assignee path under the screen's area), once each, in id
  order. Goals: p99 from commit (the writer's statement returned) to delivery (the screen
  read the frame) ≤ 100 ms; the server's peak RSS ≤ 500 MB.

Database: the lookup benchmark's ``wangge_bench`` (the Guiyang demo; built on first use),
migrated. Run: ``.venv/bin/python -m bench.dispatch [--sections stream] [--quick]``
(``--quick``: 100 screens, 10 s). Exit status 1 when a gated goal is missed or a check fails
(:mod:`bench.goals`).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import statistics
import subprocess
import sys
import time
from array import array
from collections import Counter

import httpx

from bench.goals import Goals

STREAM_PORT = 8767

# -- the stream section --------------------------------------------------------------------

#: Share of screens per role (the area level follows the role).
SCREEN_MIX = (
    ("grid_officer", 0.60),
    ("community_dispatcher", 0.30),
    ("district_dispatcher", 0.08),
    ("city_dispatcher", 0.02),
)
ROLE_LEVEL = {
    "grid_officer": "grid",
    "community_dispatcher": "community",
    "district_dispatcher": "district",
    "city_dispatcher": "city",
}
#: One case action as the lifecycle writes it: the row (version + 1) and its event, together.
ACTION_SQL = """
WITH c AS (
    UPDATE incident SET version = version + 1, supervised = true, updated_at = now()
    WHERE id = $1
    RETURNING id, version, state, owner_area_code
)
INSERT INTO case_event (incident_id, seq, action, actor_role, from_state, to_state,
                        to_owner_area_code, note)
SELECT id, version, 'comment', 'city_dispatcher', state, state, owner_area_code, 'bench'
FROM c
RETURNING id
"""
_FRAME_ID = re.compile(rb"(?:^|\n)id: (\d+)\n")


def _dsn(url: str) -> str:
    return f"postgresql://{url.split('://', 1)[1]}"


def _plan_screens(url: str, n: int, seed: int) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Return the screens as (token, scope path), and token → scope, spread over the areas."""
    from sqlalchemy import text

    from service.auth import create_token
    from service.db import make_engine

    rng = random.Random(seed)
    engine = make_engine(url)
    with engine.begin() as conn:
        areas: dict[str, list[tuple[str, str]]] = {}
        for code, level, path in conn.execute(
            text(
                "SELECT DISTINCT ON (code) code, level, path FROM area "
                "ORDER BY code, generation_high DESC"
            )
        ):
            areas.setdefault(level, []).append((code, path))
        counts = {role: max(1, round(n * share)) for role, share in SCREEN_MIX}
        counts["grid_officer"] += n - sum(counts.values())
        tokens: dict[tuple[str, str], tuple[str, str]] = {}
        screens = []
        for role, count in counts.items():
            for _ in range(count):
                code, path = rng.choice(areas[ROLE_LEVEL[role]])
                if (role, code) not in tokens:
                    token = create_token(conn, name="bench-stream", role=role, area_code=code)
                    tokens[(role, code)] = (token, path)
                screens.append(tokens[(role, code)])
    engine.dispose()
    rng.shuffle(screens)
    return screens, dict(tokens.values())


def _start_server(url: str, port: int) -> subprocess.Popen:
    # No deadline sweep in this server: its events would mix with the measured ones.
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "WANGGE_DB_POOL_SIZE": "10",
        "WANGGE_DISPATCH_SWEEP_SECONDS": "0",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "service.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "3",
            "--backlog",
            "4096",
        ],
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"benchmark server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("benchmark server did not start")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# The screens run in a child process, so their parsing does not delay the writer's clock.


async def _screen(
    port: int, token: str, ready: asyncio.Event, got: tuple[array, array], status: list
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(
        b"GET /cases/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status.append(int(head.split(b" ", 2)[1]))
    if status[-1] != 200:
        writer.close()
        ready.set()
        return
    ids, times = got
    buf = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.time()
            buf += chunk
            if not ready.is_set() and b"retry:" in buf:
                ready.set()
            # Frames are written whole (one chunk each): an id line is complete once its
            # frame's blank line has arrived; keep the unfinished tail for the next read.
            end = buf.rfind(b"\n\n")
            if end < 0:
                continue
            for m in _FRAME_ID.finditer(buf, 0, end + 1):
                ids.append(int(m.group(1)))
                times.append(now)
            buf = buf[end + 2 :]
    finally:
        writer.close()


def _screens_main(port: int, tokens: list[str], conn) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * len(tokens) + 256)), hard))

    async def run():
        got = [(array("q"), array("d")) for _ in tokens]
        status: list[int] = []
        tasks = []
        for start in range(0, len(tokens), 100):  # connect in waves of 100
            readies = []
            for i in range(start, min(start + 100, len(tokens))):
                ready = asyncio.Event()
                readies.append(ready)
                tasks.append(asyncio.ensure_future(_screen(port, tokens[i], ready, got[i], status)))
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
        conn.send(("ready", Counter(status)))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        dead = sum(1 for t in tasks if not t.cancelled() and t.exception() is not None)
        conn.send(("done", [(ids.tobytes(), times.tobytes()) for ids, times in got], dead))

    asyncio.run(run())


async def _write_events(
    url: str, cases: list[int], rate: float, seconds: float, seed: int
) -> tuple[dict[int, int], dict[int, float], float]:
    """Write case events at ``rate`` for ``seconds``; return id → case, id → commit time."""
    import asyncpg

    rng = random.Random(seed)
    pool = await asyncpg.create_pool(_dsn(url), min_size=8, max_size=8)
    case_of: dict[int, int] = {}
    committed: dict[int, float] = {}
    total = int(rate * seconds)
    limit = asyncio.Semaphore(8)

    async def one(case_id: int) -> None:
        async with limit:
            event_id = await pool.fetchval(ACTION_SQL, case_id)
            committed[event_id] = time.time()
            case_of[event_id] = case_id

    started = time.monotonic()
    tasks = []
    for i in range(total):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(rng.choice(cases))))
    await asyncio.gather(*tasks)
    took = time.monotonic() - started
    await pool.close()
    return case_of, committed, total / took


def stream(args, goals: Goals, url: str) -> dict:
    """Live stream: scoped screens, events at a fixed rate; exactness, latency, server RSS."""
    import psycopg

    screens, scope_of = _plan_screens(url, args.screens, args.seed)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT id, area_path, owner_area_path, assignee_path FROM incident "
            "WHERE area_path IS NOT NULL"
        ).fetchall()
    paths = {r[0]: r[1:] for r in rows}
    cases = sorted(paths)

    server = _start_server(url, STREAM_PORT)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    client = ctx.Process(target=_screens_main, args=(STREAM_PORT, [t for t, _ in screens], child))
    rss: list[float] = []
    try:
        client.start()
        kind, statuses = parent.recv()
        rss.append(_rss_mb(server.pid))
        print(
            f"stream: {len(screens)} screens connected ({dict(statuses)}), server RSS "
            f"{rss[-1]:.0f} MB; writing {args.rate:g} events/s for {args.seconds:g} s",
            flush=True,
        )

        async def write_and_watch():
            writing = asyncio.ensure_future(
                _write_events(url, cases, args.rate, args.seconds, args.seed)
            )
            while not writing.done():
                rss.append(_rss_mb(server.pid))
                await asyncio.wait([writing], timeout=0.5)
            return writing.result()

        case_of, committed, achieved = asyncio.run(write_and_watch())
        time.sleep(1.0)  # the last deliveries
        rss.append(_rss_mb(server.pid))
        parent.send("stop")
        kind, received, dead = parent.recv()
    finally:
        client.join(30)
        if client.is_alive():
            client.kill()
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()

    written = sorted(committed)
    # Every area that covers each event's case: its paths and their ancestors.
    covering = {}
    for i in written:
        areas = set()
        for path in paths[case_of[i]]:
            if path:
                parts = path.split("/")
                areas.update("/".join(parts[:k]) for k in range(1, len(parts) + 1))
        covering[i] = areas
    wrong = 0
    examples = []
    latencies: list[float] = []
    deliveries = 0
    foreign = 0
    for (_token, scope), (ids_raw, times_raw) in zip(screens, received, strict=True):
        ids, times = array("q"), array("d")
        ids.frombytes(ids_raw)
        times.frombytes(times_raw)
        mine = [(i, t) for i, t in zip(ids, times, strict=True) if i in committed]
        foreign += len(ids) - len(mine)
        got = [i for i, _ in mine]
        expected = [i for i in written if scope in covering[i]]
        if got != expected:
            wrong += 1
            if len(examples) < 3:
                missing = len(set(expected) - set(got))
                extra = len(set(got) - set(expected))
                dup = len(got) - len(set(got))
                examples.append(f"{scope}: {missing} missing, {extra} extra, {dup} repeated")
        deliveries += len(got)
        latencies += [(t - committed[i]) * 1000 for i, t in mine]
    latencies.sort()
    p = (
        (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))])
        if latencies
        else (lambda q: float("nan"))
    )
    result = {
        "screens": len(screens),
        "tokens": len(scope_of),
        "events": len(written),
        "rate_achieved": achieved,
        "deliveries": deliveries,
        "foreign_events": foreign,
        "p50_ms": p(0.50),
        "p99_ms": p(0.99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "rss_peak_mb": max(rss),
        "rss_idle_mb": rss[0],
    }
    print(
        f"\nstream: {result['screens']} screens ({result['tokens']} tokens), "
        f"{result['events']:,} events at {achieved:,.0f}/s, {deliveries:,} deliveries "
        f"({deliveries / max(1, len(written)):.1f} screens per event); commit → delivery "
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max "
        f"{result['max_ms']:.1f} ms; server RSS {result['rss_idle_mb']:.0f} MB connected, "
        f"{result['rss_peak_mb']:.0f} MB peak; {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    goals.check(
        "stream_connected",
        f"all {len(screens)} screens connected (200)",
        statuses.get(200, 0) == len(screens) and dead == 0,
        f"statuses {dict(statuses)}, {dead} ended with an error",
    )
    goals.check(
        "stream_exact",
        "every screen got exactly its events, once each, in id order",
        wrong == 0 and deliveries > 0,
        f"{wrong} screens wrong: {'; '.join(examples)}" if wrong else f"{deliveries:,} deliveries",
    )
    # A goal, not a check: the database's commit rate bounds it (every event transaction
    # holds the event lock through its commit, so event commits do not overlap).
    goals.at_least(
        "stream_rate",
        "case events written per second (each its own transaction)",
        achieved,
        0.95 * args.rate,
        "/s",
        f"asked {args.rate:g}/s",
    )
    goals.at_most(
        "stream_p99_ms",
        "p99 commit → delivery on a screen",
        result["p99_ms"],
        100,
        "ms",
        f"p50 {result['p50_ms']:.1f} ms, max {result['max_ms']:.0f} ms",
    )
    goals.at_most(
        "stream_rss_mb",
        "server peak RSS",
        result["rss_peak_mb"],
        500,
        "MB",
        f"{result['screens']} screens connected",
    )
    return result


# -- running -------------------------------------------------------------------------------

SECTIONS = {"stream": stream}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="small sizes: a check, not figures")
    parser.add_argument("--screens", type=int, default=1000, help="stream: connected screens")
    parser.add_argument("--rate", type=float, default=200, help="stream: case events per second")
    parser.add_argument("--seconds", type=float, default=60, help="stream: seconds of events")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    if args.quick:
        args.screens, args.seconds = min(args.screens, 100), min(args.seconds, 10)
    goals = Goals("dispatch", quick=args.quick)
    from bench.lookup import prepare_database

    url, _ = prepare_database()
    for name in args.sections:
        print(f"\n--- dispatch: {name}", flush=True)
        SECTIONS[name](args, goals, url)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
