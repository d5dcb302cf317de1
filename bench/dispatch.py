"""Dispatch benchmark: case actions, the live stream and the deadline sweep, in one run.

Sections (each a function taking the parsed arguments, the goals and the bench database;
``--sections`` picks some, all by default):

- ``stream``: ``--screens`` (1,000) dispatch screens follow ``GET /cases/stream`` on one
  uvicorn worker, their scopes spread over the hierarchy (60 % grid officers, 30 % community,
  8 % district dispatchers, 2 % city), from two client processes (uvloop, one asyncio
  protocol per connection: lighter than a browser's EventSource; their CPU and event-loop lag
  are printed, so a slow client shows). Case events are written straight into the database at
  ``--rate`` (200/s) for ``--seconds`` (60) as the service writes case actions — the case
  row updated (version + 1) and its event inserted in one statement, the actions that
  arrived while the previous write was in flight written together (its group commit), with
  ``synchronous_commit`` off (see ``_write_events``) — cases drawn at random from every
  area. Checks: every screen connected and stayed, and every screen received
  exactly the written events its scope covers (independently: the case's location, owner or
  assignee path under the screen's area), once each, in id order. Goals: p99 from commit
  (the database's ``clock_timestamp()`` as the event's statement ends, just before its
  commit; the same machine clock as the screens') to delivery (the screen read the frame)
  ≤ 100 ms; the server's peak RSS ≤ 500 MB; the asked rate written. Figures: the latency's
  two legs (commit → the bench's own listener hears the notification: the database's part;
  → the screen: the server's), p99 from the writer hearing the commit, the server's and the
  clients' CPU and how long they waited for one.

- ``sweep``: one deadline sweep (:func:`service.dispatch.deadlines.sweep_deadlines`, with the
  bench's clock) over ``--cases`` (1,000,000) open cases of which ``--due`` (10,000) are past
  their deadline, timed alone. Checks: exactly the due cases flagged, one overdue event each;
  flagging wrote no index entry (≥ 90 % of the row updates HOT: incident's fillfactor leaves
  room and no index holds a flag column); a second sweep at the same time does nothing; a
  sample of swept cases equals the replay of its events. Goal: ≤ 1 s.
- ``actions``: case actions per second through the API (``POST /cases/{id}/actions/comment``
  by the owning community's dispatcher, wrk with ``--concurrency`` (10) connections, one
  uvicorn worker with a pool of 10) against plain ``UPDATE incident SET status`` round trips
  over an asyncpg pool of 10 with as many clients, straight from the bench (no HTTP). For
  the figures, not goals: the lifecycle's SQL alone, and the plain UPDATE behind a minimal
  HTTP endpoint (FastAPI, same pool and wrk), which tells how much of the gap is HTTP. Both
  sides' processes and their backends run at ``WANGGE_BENCH_NICE``, as the stream's.
  Checks: every action 200 and one event each; acted-on cases equal their replay.
  Goal: ≥ 0.5×.

Database: ``stream`` uses the lookup benchmark's ``wangge_bench`` (the Guiyang demo; built on
first use), migrated; ``actions`` uses ``wangge_bench_dispatch`` and ``sweep``
``wangge_bench_sweep``, each the tiny hierarchy and ``--cases`` open cases written set-based
(reset, not rebuilt, when a run finds them; separate, so that runs of the two sections never
measure each other). Run: ``.venv/bin/python -m bench.dispatch [--sections stream sweep actions]
[--quick]`` (``--quick``: 100 screens, 10 s; 100,000 cases with 1,000 due; 3 s of actions).
Exit status 1 when a gated goal is missed or a check fails (:mod:`bench.goals`).
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
import tempfile
import time
from array import array
from collections import Counter, deque

from bench.common import parse_wrk, start_uvicorn, stop
from bench.goals import Goals

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
#: Case actions as the lifecycle writes them: each case row (version + 1) with its event, in
#: one statement for the actions that queued while the previous write was in flight (the
#: service's group commit, service.dispatch.cases.EventWrites); returns each event's id, its
#: case and the database's clock as the statement ends, just before its commit.
ACTION_SQL = """
WITH c AS (
    UPDATE incident SET version = version + 1, supervised = true, updated_at = now()
    WHERE id = ANY($1::bigint[])
    RETURNING id, version, state, owner_area_code
)
INSERT INTO case_event (incident_id, seq, action, actor_role, from_state, to_state,
                        to_owner_area_code, note)
SELECT id, version, 'comment', 'city_dispatcher', state, state, owner_area_code, 'bench'
FROM c ORDER BY id
RETURNING id, incident_id, extract(epoch FROM clock_timestamp())::float8
"""
#: The most actions in one write (as EventWrites.MAX_BATCH).
ACTION_BATCH = 64
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


def _free_port() -> int:
    # Other benchmarks (and other work on a shared machine) hold fixed ports.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(url: str, port: int) -> subprocess.Popen:
    # No deadline sweep in this server: its events would mix with the measured ones.
    env = {
        "DATABASE_URL": url,
        "WANGGE_DB_POOL_SIZE": "10",
        "WANGGE_DISPATCH_SWEEP_SECONDS": "0",
    }
    return start_uvicorn(
        "service.app:create_app",
        port,
        env,
        "--timeout-graceful-shutdown",
        "3",
        "--backlog",
        "4096",
    )


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


#: The machine may be shared (other work running beside the bench): while measuring, the
#: bench's own processes (server, screens, writer) and their database backends run at this
#: niceness, so the figures are the stream's, not the neighbours' (``WANGGE_BENCH_NICE``;
#: 0 leaves them be). With the kernel's autogroups (one scheduling group per session), a
#: thread's niceness only weighs within its group: the bench's group gets it too (set back
#: when the section ends), and so does each backend's (a PostgreSQL backend is a session
#: of its own). On an otherwise idle machine it changes nothing.
NICE = int(os.environ.get("WANGGE_BENCH_NICE", "-10"))


def _set_autogroup_nice(pid: int, nice: int) -> None:
    try:
        with open(f"/proc/{pid}/autogroup", "w") as fh:
            fh.write(str(nice))
    except OSError:  # no autogroups here, or not allowed
        pass


def _tids(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def _prioritise(pids: list[int], url: str) -> list[int]:
    """Set ``NICE`` on every thread of ``pids`` and of the backends of their connections to
    the database at ``url``; return the backends' pids."""
    from sqlalchemy.engine import make_url

    if not NICE:
        return []
    backends = []
    pg_port = make_url(url).port
    if pg_port is not None:
        # Each backend's pid, from the client port of one of our processes' connections.
        out = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( dport = :{pg_port} )"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        ours = set(map(str, pids))
        ports = [
            int(line.split()[2].rsplit(":", 1)[1])
            for line in out.splitlines()
            if ours & set(re.findall(r"pid=(\d+)", line))
        ]
        if ports:
            import psycopg

            with psycopg.connect(url.replace("+psycopg", "")) as conn:
                backends = [
                    r[0]
                    for r in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s) "
                        "AND datname = current_database()",
                        (ports,),
                    )
                ]
    for pid in [*pids, *backends]:
        _set_autogroup_nice(pid, NICE)
        for tid in _tids(pid):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, NICE)
            except (PermissionError, ProcessLookupError):
                pass
    return backends


def _waited_s(pid: int) -> float:
    """Return the seconds the threads of ``pid`` have waited for a CPU (runnable, not
    running), from /proc/<pid>/task/*/schedstat."""
    total = 0
    for tid in _tids(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[1])
        except (FileNotFoundError, IndexError):
            pass
    return total / 1e9


# The screens run in child processes (``CLIENT_PROCESSES``, uvloop, one asyncio protocol per
# connection: no task or stream reader per screen), so the client's parsing neither delays
# the writer nor starves itself: each reports its CPU and how late its event loop ran.
CLIENT_PROCESSES = 2
#: The client's loop-lag probe: it asks to wake every LAG_PROBE_S and records how late it was.
LAG_PROBE_S = 0.005


class _ScreenProtocol(asyncio.Protocol):
    """One screen: sends the request, then notes each event id with the time its bytes came."""

    def __init__(self, token: str, ids: array, times: array, ready: asyncio.Future):
        self.request = (
            b"GET /cases/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
        )
        self.ids, self.times, self.ready = ids, times, ready
        self.status: int | None = None
        self.head = True
        self.buf = b""
        self.error: BaseException | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf + data
        if self.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self.status = int(buf.split(b" ", 2)[1])
            self.head = False
            buf = buf[end + 4 :]
            if self.status != 200:
                self.transport.close()
                self.ready.done() or self.ready.set_result(None)
                return
        if not self.ready.done() and b"retry:" in buf:
            self.ready.set_result(None)
        # The body is chunked; frames are written whole, so chunk sizes sit between frames
        # and an id line is complete once its frame's blank line has arrived. Keep the
        # unfinished tail for the next read.
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf
            return
        for m in _FRAME_ID.finditer(buf, 0, end + 1):
            self.ids.append(int(m.group(1)))
            self.times.append(now)
        self.buf = buf[end + 2 :]

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.error = exc
        if not self.ready.done():
            self.ready.set_result(None)


def _screens_main(port: int, tokens: list[str], conn) -> None:
    import resource

    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * len(tokens) + 256)), hard))

    async def run():
        loop = asyncio.get_running_loop()
        got = [(array("q"), array("d")) for _ in tokens]
        screens: list[_ScreenProtocol] = []
        for start in range(0, len(tokens), 100):  # connect in waves of 100
            wave = []
            for i in range(start, min(start + 100, len(tokens))):
                screen = _ScreenProtocol(tokens[i], *got[i], loop.create_future())
                screens.append(screen)
                wave.append(loop.create_connection(lambda s=screen: s, "127.0.0.1", port))
            await asyncio.wait_for(asyncio.gather(*wave), 60)
            await asyncio.wait_for(asyncio.gather(*(s.ready for s in screens[start:])), 60)
        lags = array("d")
        probing = True

        async def probe():
            while probing:
                asked = time.perf_counter() + LAG_PROBE_S
                await asyncio.sleep(LAG_PROBE_S)
                lags.append(time.perf_counter() - asked)

        conn.send(("ready", Counter(s.status for s in screens)))
        await loop.run_in_executor(None, conn.recv)  # "go": the writing starts
        del lags[:]
        prober = asyncio.ensure_future(probe())
        await loop.run_in_executor(None, conn.recv)  # "stop"
        probing = False
        await prober
        dead = sum(1 for s in screens if s.closed)
        for s in screens:
            s.transport.close()
        lag = sorted(lags)
        conn.send(
            (
                "done",
                [(ids.tobytes(), times.tobytes()) for ids, times in got],
                dead,
                lag[int(0.99 * (len(lag) - 1))] * 1000 if lag else float("nan"),
                lag[-1] * 1000 if lag else float("nan"),
            )
        )

    uvloop.run(run())


async def _write_events(url: str, cases: list[int], rate: float, seconds: float, seed: int) -> dict:
    """Act on cases at ``rate`` for ``seconds``, as the service writes actions: one write in
    flight, the actions that arrive meanwhile written together next (event commits are
    serialised through their WAL flush by the event lock, so the service coalesces them).
    Return ``case_of`` (event id → case), ``committed`` (id → commit time: the database's
    clock_timestamp() as the statement ends, just before its commit), ``heard`` (id → the
    time the writer heard the commit), ``notified`` ((newest id, time) of each notification
    a listener of its own heard, as the server's does), ``rate`` (achieved) and ``commits``."""
    import asyncpg

    rng = random.Random(seed)
    # synchronous_commit off, so that the clock read as the statement ends is the instant of
    # its commit (the commit record follows at once, and the notification with it). With it
    # on, the commit ends when the WAL flush returns: this disk's flushes take 5 ms alone
    # (pg_test_fsync) and far longer when the machine is shared, and the flush is no part of
    # "commit to delivery". The stream sees a commit the same way either way.
    # Generic plans, as the service's hot pool: planning the statement anew for each write
    # costs more than running it (the incident table is partitioned).
    settings = {"synchronous_commit": "off", "plan_cache_mode": "force_generic_plan"}
    conn = await asyncpg.connect(_dsn(url), server_settings=settings)
    listener = await asyncpg.connect(_dsn(url))
    notified: list[tuple[int, float]] = []
    await listener.add_listener(
        "wangge_case_events", lambda *a: notified.append((int(a[3]), time.time()))
    )
    _prioritise([os.getpid()], url)
    case_of: dict[int, int] = {}
    committed: dict[int, float] = {}
    heard: dict[int, float] = {}
    total = int(rate * seconds)
    queue: deque[int] = deque()
    arrived = asyncio.Event()
    commits = 0

    async def write() -> None:
        nonlocal commits
        taken = 0
        while taken < total:
            if not queue:
                arrived.clear()
                await arrived.wait()
                continue
            # The queued actions, up to the first on a case already in the batch (one
            # statement updates a row once).
            batch: list[int] = []
            while queue and len(batch) < ACTION_BATCH and queue[0] not in batch:
                batch.append(queue.popleft())
            taken += len(batch)
            rows = await conn.fetch(ACTION_SQL, batch)
            now = time.time()
            commits += 1
            for event_id, case_id, at in rows:
                heard[event_id] = now
                committed[event_id] = at
                case_of[event_id] = case_id

    writer = asyncio.ensure_future(write())
    started = time.monotonic()
    for i in range(total):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.append(rng.choice(cases))
        arrived.set()
    await writer
    took = time.monotonic() - started
    await asyncio.sleep(0.5)  # the last notifications
    await conn.close()
    await listener.close()
    return {
        "case_of": case_of,
        "committed": committed,
        "heard": heard,
        "notified": notified,
        "rate": total / took,
        "commits": commits,
    }


def _percentile(values: list[float], q: float) -> float:
    # values sorted; nearest rank
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


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

    # The server and the screens inherit the priority (on a loaded machine the server's
    # start alone, mostly imports, took a minute without it).
    _prioritise([os.getpid()], url)
    port = _free_port()
    server = _start_server(url, port)
    ctx = multiprocessing.get_context("spawn")
    nproc = max(1, min(CLIENT_PROCESSES, len(screens)))
    # Screen k is served by client k % nproc.
    parts = [[t for t, _ in screens[k::nproc]] for k in range(nproc)]
    pipes = [ctx.Pipe() for _ in parts]
    clients = [
        ctx.Process(target=_screens_main, args=(port, part, child))
        for part, (_, child) in zip(parts, pipes, strict=True)
    ]
    rss: list[float] = []
    statuses: Counter = Counter()
    try:
        for client in clients:
            client.start()
        for parent, _ in pipes:
            statuses.update(parent.recv()[1])
        rss.append(_rss_mb(server.pid))
        print(
            f"stream: {len(screens)} screens connected ({dict(statuses)}) from {nproc} client "
            f"processes, server RSS {rss[-1]:.0f} MB; writing {args.rate:g} events/s for "
            f"{args.seconds:g} s",
            flush=True,
        )
        watched = (server.pid, *(c.pid for c in clients))
        backends = _prioritise([*watched, os.getpid()], url)
        cpu_before = [_cpu_seconds(p) for p in watched]
        waited_before = [_waited_s(p) for p in watched]
        for parent, _ in pipes:
            parent.send("go")
        started = time.monotonic()

        async def write_and_watch():
            writing = asyncio.ensure_future(
                _write_events(url, cases, args.rate, args.seconds, args.seed)
            )
            while not writing.done():
                rss.append(_rss_mb(server.pid))
                await asyncio.wait([writing], timeout=0.5)
            return writing.result()

        wrote = asyncio.run(write_and_watch())
        case_of, committed, heard = wrote["case_of"], wrote["committed"], wrote["heard"]
        achieved, commits = wrote["rate"], wrote["commits"]
        time.sleep(1.0)  # the last deliveries
        rss.append(_rss_mb(server.pid))
        elapsed = time.monotonic() - started
        cpu = [(_cpu_seconds(p) - b) / elapsed for p, b in zip(watched, cpu_before, strict=True)]
        # Seconds per second each waited for a CPU: what the machine's other work cost it.
        waited = [(_waited_s(p) - b) / elapsed for p, b in zip(watched, waited_before, strict=True)]
        received, dead, lag_p99, lag_max = [], 0, 0.0, 0.0
        for parent, _ in pipes:
            parent.send("stop")
        for parent, _ in pipes:
            _kind, got, d, p99, mx = parent.recv()
            received.append(got)
            dead += d
            lag_p99, lag_max = max(lag_p99, p99), max(lag_max, mx)
    finally:
        for client in clients:
            client.join(30)
            if client.is_alive():
                client.kill()
        stop(server)
        if NICE:
            _set_autogroup_nice(os.getpid(), 0)
            for tid in _tids(os.getpid()):
                os.setpriority(os.PRIO_PROCESS, tid, 0)
    # Back in screen order: screen k is the (k // nproc)-th of client k % nproc.
    received = [received[k % nproc][k // nproc] for k in range(len(screens))]

    written = sorted(committed)
    # When each event's notification reached a listener: the first one naming it or a later
    # id (a notification names the newest event of its statement; they come in id order).
    notified_at: dict[int, float] = {}
    j = 0
    for newest, at in wrote["notified"]:
        while j < len(written) and written[j] <= newest:
            notified_at[written[j]] = at
            j += 1
    to_notify = sorted((notified_at[i] - committed[i]) * 1000 for i in notified_at)
    # Every area that covers each event's case: its paths and their ancestors.
    covering = {}
    for i in written:
        areas = set()
        for path in paths[case_of[i]]:
            if path:
                parts_ = path.split("/")
                areas.update("/".join(parts_[:k]) for k in range(1, len(parts_) + 1))
        covering[i] = areas
    wrong = 0
    examples = []
    latencies: list[float] = []
    after_heard: list[float] = []
    after_notify: list[float] = []
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
        after_heard += [(t - heard[i]) * 1000 for i, t in mine]
        after_notify += [(t - notified_at[i]) * 1000 for i, t in mine if i in notified_at]
    latencies.sort()
    after_heard.sort()
    after_notify.sort()
    result = {
        "screens": len(screens),
        "tokens": len(scope_of),
        "events": len(written),
        "rate_achieved": achieved,
        "commits": commits,
        "deliveries": deliveries,
        "foreign_events": foreign,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "p99_after_ack_ms": _percentile(after_heard, 0.99),
        # The two legs: the database (commit → a listener hears it), the server (→ screen).
        "p99_commit_to_notify_ms": _percentile(to_notify, 0.99),
        "p99_notify_to_screen_ms": _percentile(after_notify, 0.99),
        "rss_peak_mb": max(rss),
        "rss_idle_mb": rss[0],
        "server_cpu": cpu[0],
        "client_cpu": sum(cpu[1:]),
        "server_waited": waited[0],
        "client_waited": max(waited[1:]),
        "client_lag_p99_ms": lag_p99,
        "client_lag_max_ms": lag_max,
    }
    print(
        f"\nstream: {result['screens']} screens ({result['tokens']} tokens), "
        f"{result['events']:,} events at {achieved:,.0f}/s ({commits:,} commits), "
        f"{deliveries:,} deliveries "
        f"({deliveries / max(1, len(written)):.1f} screens per event); commit → delivery "
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max "
        f"{result['max_ms']:.1f} ms (p99 of its legs: commit → a listener of the bench hears "
        f"it {result['p99_commit_to_notify_ms']:.1f} ms, → the screen "
        f"{result['p99_notify_to_screen_ms']:.1f} ms; from the writer hearing the commit: p99 "
        f"{result['p99_after_ack_ms']:.1f} ms); server RSS {result['rss_idle_mb']:.0f} MB "
        f"connected, {result['rss_peak_mb']:.0f} MB peak; CPU (cores) server "
        f"{result['server_cpu']:.2f}, clients {result['client_cpu']:.2f}; waiting for a CPU "
        f"(ms per s): server {waited[0] * 1000:.0f}, a client up to "
        f"{result['client_waited'] * 1000:.0f}; client loop lag p99 {lag_p99:.1f} ms, max "
        f"{lag_max:.1f} ms; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        + (
            f"the bench's processes and {len(backends)} database backends at nice {NICE}"
            if NICE
            else "no priority given"
        )
    )
    goals.check(
        "stream_connected",
        f"all {len(screens)} screens connected (200) and stayed",
        statuses.get(200, 0) == len(screens) and dead == 0,
        f"statuses {dict(statuses)}, {dead} closed before the end",
    )
    goals.check(
        "stream_exact",
        "every screen got exactly its events, once each, in id order",
        wrong == 0 and deliveries > 0,
        f"{wrong} screens wrong: {'; '.join(examples)}" if wrong else f"{deliveries:,} deliveries",
    )
    # A goal, not a check: the database's commit rate bounds it (every event write holds
    # the event lock through its commit, so event commits do not overlap).
    goals.at_least(
        "stream_rate",
        "case events written per second",
        achieved,
        0.95 * args.rate,
        "/s",
        f"asked {args.rate:g}/s; {commits:,} commits",
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


# -- the deadline sweep and case actions sections (a shared bench database) ----------------

#: The bench's own clock: every deadline is set relative to it and the sweep judges by it.
BENCH_T = "2030-06-01T12:00:00+00:00"
ACTIONS_PORT = 8768
#: The community whose dispatcher takes the actions (fixtures.tiny).
ACTIONS_COMMUNITY = "990101001001"


def _dispatch_db_url(database: str = "wangge_bench_dispatch") -> str:
    from sqlalchemy.engine import make_url

    from bench.lookup import _server_url
    from service.db import sync_url

    url = make_url(sync_url(_server_url())).set(database=database)
    return url.render_as_string(hide_password=False)


# One statement per table, set-based: the writer fills the cells and the lifecycle itself, so
# the per-row triggers are skipped (WHEN ... IS NULL); the statement trigger still writes every
# case's first event (import). States: 20 % registered, 40 % dispatched, 30 % signed, 10 %
# handled; every (n // due)-th case is past its deadline by up to 30 minutes, the others
# due from one hour to a week after the bench's clock.
BUILD_CASES_SQL = """
WITH gen AS (SELECT max(id) AS id FROM generation WHERE active),
grids AS (
    SELECT row_number() OVER (ORDER BY a.code) - 1 AS k, a.code, a.path,
           ST_PointOnSurface(a.geom) AS p
    FROM area a, gen
    WHERE a.level = 'grid' AND a.generation_low <= gen.id AND a.generation_high >= gen.id
),
cases AS (
    SELECT g, gr.*, (ARRAY['registered', 'registered', 'dispatched', 'dispatched',
               'dispatched', 'dispatched', 'signed', 'signed', 'signed', 'handled'])[1 + g %% 10]
               AS state
    FROM generate_series(1, %(n)s) g
    JOIN grids gr ON gr.k = g %% (SELECT count(*) FROM grids)
)
INSERT INTO incident (category, source, description, geom, generation, area_path, grid_code,
    community_code, district_code, city_code, reported_generation, reported_area_path,
    reported_grid_code, reported_at, status, state, priority, owner_level, owner_area_code,
    owner_area_path, assignee_kind, assignee_code, assignee_path, step, step_due_at,
    dispatched_at, signed_at, handled_at, version)
SELECT (ARRAY['water', 'gas', 'street_light', 'road', 'sanitation', 'public_order',
              'other'])[1 + g %% 7],
       'patrol', 'bench', c.p, gen.id, c.path, c.code, split_part(c.path, '/', 3),
       split_part(c.path, '/', 2), split_part(c.path, '/', 1), gen.id, c.path, c.code,
       t.t - interval '3 hours', 'open', c.state, 'normal', 'community',
       split_part(c.path, '/', 3), array_to_string((string_to_array(c.path, '/'))[1:3], '/'),
       CASE WHEN c.state <> 'registered' THEN 'grid' END,
       CASE WHEN c.state <> 'registered' THEN c.code END,
       CASE WHEN c.state <> 'registered' THEN c.path END,
       CASE c.state WHEN 'registered' THEN 'accept' WHEN 'dispatched' THEN 'sign'
            WHEN 'signed' THEN 'handle' ELSE 'verify' END,
       CASE WHEN g %% %(stride)s = 0 THEN t.t - make_interval(secs => 1 + g %% 1800)
            ELSE t.t + interval '1 hour' + make_interval(mins => g %% 10080) END,
       CASE WHEN c.state <> 'registered' THEN t.t - interval '2 hours' END,
       CASE WHEN c.state IN ('signed', 'handled') THEN t.t - interval '90 minutes' END,
       CASE WHEN c.state = 'handled' THEN t.t - interval '80 minutes' END,
       1
FROM cases c, gen, (SELECT CAST(%(t)s AS timestamptz) AS t) t
ORDER BY g
"""


def prepare_dispatch_database(n: int, due: int, database: str = "wangge_bench_dispatch") -> str:
    """Return the URL of ``database`` holding ``n`` open cases, ``due`` of them past their
    deadline at :data:`BENCH_T` and none flagged (built, or reset, set-based)."""
    import psycopg

    from fixtures.tiny import tiny_records
    from service.db import ensure_database, make_engine, migrate
    from service.repositories import boundaries

    url = _dispatch_db_url(database)
    ensure_database(url)
    migrate(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        if boundaries.current_generation(conn) is None:
            gen = boundaries.create_generation(conn, description="tiny")
            boundaries.write_areas(conn, generation_id=gen, records=tiny_records(), source="tiny")
            boundaries.activate_generation(conn, generation_id=gen)
    engine.dispose()
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        total, due_now, other = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE step_due_at <= %s), "
            "count(*) FILTER (WHERE description <> 'bench' OR state NOT IN "
            "('registered', 'dispatched', 'signed', 'handled') OR escalations > 0) "
            "FROM incident",
            (BENCH_T,),
        ).fetchone()
        if (total, due_now, other) == (n, due, 0):
            # The cases of an earlier run: undo what its sweep and actions did.
            started = time.perf_counter()
            conn.execute(
                "UPDATE incident SET step_overdue = false, supervised = false, version = 1 "
                "WHERE version > 1 OR step_overdue OR supervised"
            )
            conn.execute("DELETE FROM case_event WHERE seq > 1")
            print(f"dispatch db: reset {n:,} cases in {time.perf_counter() - started:.1f} s")
        else:
            started = time.perf_counter()
            conn.execute("TRUNCATE incident, case_event CASCADE")
            conn.execute(BUILD_CASES_SQL, {"n": n, "stride": n // due, "t": BENCH_T})
            print(
                f"dispatch db: built {n:,} open cases ({due:,} due) with their first events "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        conn.execute("VACUUM ANALYZE incident")
        conn.execute("VACUUM ANALYZE case_event")
    return url


def _replay_sample(url: str, ids: list[int]) -> list[int]:
    """Return the ids among ``ids`` whose row differs from the replay of its events."""
    import psycopg
    from psycopg.rows import dict_row

    from service.dispatch.lifecycle import LIFECYCLE_COLUMNS, Event, replay

    cols = ", ".join(["id", "category", *LIFECYCLE_COLUMNS])
    with psycopg.connect(url.replace("+psycopg", ""), row_factory=dict_row) as conn:
        rows = {
            r["id"]: r
            for r in conn.execute(f"SELECT {cols} FROM incident WHERE id = ANY(%s)", (ids,))
        }
        events: dict[int, list] = {}
        for e in conn.execute(
            "SELECT * FROM case_event WHERE incident_id = ANY(%s) ORDER BY incident_id, seq",
            (ids,),
        ):
            events.setdefault(e["incident_id"], []).append(Event.from_row(e))
    wrong = []
    for i in ids:
        case = replay(events.get(i, []))
        if any(getattr(case, k) != rows[i][k] for k in ("category", *LIFECYCLE_COLUMNS)):
            wrong.append(i)
    return wrong


def _renice(pid: int, nice: int) -> None:
    for tid in _tids(pid):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except (PermissionError, ProcessLookupError):
            pass


def _sweep_once(url: str, now, **kwargs):
    from service.db import make_async_engine
    from service.dispatch.deadlines import sweep_deadlines

    async def run():
        # One connection: its server process does all the sweep's work, so its CPU time is
        # the sweep's cost on the server whatever else the machine runs; while it sweeps it
        # runs at NICE, as the other sections' backends (the figure is the sweep's, not the
        # neighbours').
        engine = make_async_engine(url, pool_size=1)
        pid = None
        try:
            async with engine.connect() as conn:  # connected and warm before the clock starts
                pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
            _renice(pid, NICE)
            cpu, waited = _cpu_seconds(pid), _waited_s(pid)
            started = time.perf_counter()
            result = await sweep_deadlines(engine, now=now, **kwargs)
            seconds = time.perf_counter() - started
            return result, seconds, (_cpu_seconds(pid) - cpu, _waited_s(pid) - waited)
        finally:
            if pid is not None:
                _renice(pid, 0)
            await engine.dispose()

    return asyncio.run(run())


#: The sweep's own database (the actions section's runs would otherwise reset it under a sweep).
SWEEP_DATABASE = "wangge_bench_sweep"
#: Row updates of incident (all its partitions) so far, and how many were HOT.
_UPDATES_SQL = (
    "SELECT CAST(coalesce(sum(n_tup_upd), 0) AS bigint), "
    "CAST(coalesce(sum(n_tup_hot_upd), 0) AS bigint) "
    "FROM pg_stat_user_tables WHERE relid = 'incident'::regclass "
    "OR relid IN (SELECT relid FROM pg_partition_tree('incident') WHERE isleaf)"
)


def sweep(args, goals: Goals, url: str) -> dict:
    """Deadline sweep: one sweep over ``--cases`` open cases with ``--due`` past their
    deadline; exactly those flagged once; nothing on a second sweep; rows = replay."""
    from datetime import datetime, timedelta

    import psycopg

    url = prepare_dispatch_database(args.cases, args.due, SWEEP_DATABASE)
    now = datetime.fromisoformat(BENCH_T)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        expected = {
            r[0]
            for r in conn.execute(
                "SELECT id FROM incident WHERE step_due_at <= %s AND NOT step_overdue", (now,)
            )
        }
        # The heap and index pages of the due cases in memory, as on a server that runs.
        conn.execute(
            "SELECT sum(version) FROM incident WHERE state IN ('registered', 'dispatched', "
            "'signed', 'handled') AND step_due_at <= %s",
            (now,),
        )
        updates_before = conn.execute(_UPDATES_SQL).fetchone()
    grace = timedelta(minutes=60)
    result, seconds, (server_cpu, server_waited) = _sweep_once(url, now, escalate_after=grace)
    again, idle_seconds, _ = _sweep_once(url, now, escalate_after=grace)
    flagged = result.overdue
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        per_case = conn.execute(
            "SELECT count(*), count(DISTINCT incident_id) FROM case_event WHERE action = 'overdue'"
        ).fetchone()
        # Statistics arrive when the sweep's backend reports them (at the latest when idle).
        for _ in range(50):
            updates_after = conn.execute(_UPDATES_SQL).fetchone()
            if updates_after[0] - updates_before[0] >= len(flagged):
                break
            time.sleep(0.1)
    updated = updates_after[0] - updates_before[0]
    hot = updates_after[1] - updates_before[1]
    sample = random.Random(args.seed).sample(sorted(expected), min(500, len(expected)))
    wrong = _replay_sample(url, sample)
    out = {
        "cases": args.cases,
        "due": len(expected),
        "flagged": len(flagged),
        "escalated": len(result.escalated),
        "batches": result.batches,
        "seconds": seconds,
        "idle_seconds": idle_seconds,
        "server_cpu_seconds": server_cpu,
        "server_waited_for_cpu_seconds": server_waited,
        "updated_rows": updated,
        "hot_updates": hot,
    }
    print(
        f"\nsweep: {args.cases:,} open cases, {len(expected):,} due: flagged {len(flagged):,} "
        f"in {result.batches} batches, {seconds * 1000:.0f} ms ({len(flagged) / seconds:,.0f} "
        f"cases/s; the server process used {server_cpu * 1000:.0f} ms of CPU and waited "
        f"{server_waited * 1000:.0f} ms for one); {hot:,} of "
        f"{updated:,} row updates HOT (no index written); a second sweep "
        f"with nothing due took {idle_seconds * 1000:.1f} ms; the sweep's backend at nice "
        f"{NICE}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    goals.check(
        "sweep_exact",
        "the sweep flagged exactly the due cases, one overdue event each",
        set(flagged) == expected and len(flagged) == len(expected) == per_case[0] == per_case[1],
        f"{len(flagged):,} flagged of {len(expected):,} due; {per_case[0]:,} overdue events",
    )
    goals.check(
        "sweep_once",
        "a second sweep at the same time does nothing",
        not again.overdue and not again.escalated,
        f"{len(again.overdue)} flagged, {len(again.escalated)} escalated again",
    )
    goals.check(
        "sweep_hot",
        "flagging a case writes no index entry (HOT update: fillfactor room, no flag indexed)",
        updated > 0 and hot >= 0.9 * updated,
        f"{hot:,} of {updated:,} updates HOT",
    )
    goals.check(
        "sweep_replay",
        "swept cases equal the replay of their events",
        not wrong,
        f"{len(sample)} sampled, {len(wrong)} differ" + (f" (e.g. {wrong[:3]})" if wrong else ""),
    )
    goals.at_most(
        "sweep_seconds",
        f"deadline sweep, {args.cases:,} open cases with {len(expected):,} due",
        seconds,
        1.0,
        "s",
        f"{result.batches} batches; server CPU {server_cpu * 1000:.0f} ms; idle sweep "
        f"{idle_seconds * 1000:.1f} ms",
    )
    return out


def _cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


ACTION_LUA = """
local ids = {%s}
local i = 0
local headers = {["Authorization"] = "Bearer %s", ["Content-Type"] = "application/json"}
request = function()
  i = i + 1
  return wrk.format("POST", "/cases/" .. ids[(i %% #ids) + 1] .. "/actions/comment", headers,
                    '{"note": "bench"}')
end
"""
#: The bare write the lifecycle is measured against: one row, one statement, its own commit.
PLAIN_UPDATE_SQL = "UPDATE incident SET status = status, updated_at = now() WHERE id = $1"
#: The same write behind the smallest HTTP endpoint (for the figures, not a goal).
PLAIN_LUA = """
local ids = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/plain/" .. ids[(i %% #ids) + 1])
end
"""
PLAIN_PORT = 8769
#: What a case action writes, without the server (for the figures, not a goal): the row
#: locked, then updated with its event in one statement, in one transaction.
LIFECYCLE_SQL = (
    "SELECT version FROM incident WHERE id = $1 FOR UPDATE",
    "WITH c AS (UPDATE incident SET version = version + 1, updated_at = now() WHERE id = $1 "
    "RETURNING id, version, state, owner_area_code, assignee_kind, assignee_code, "
    "assignee_path) "
    "INSERT INTO case_event (incident_id, seq, action, actor_role, from_state, to_state, "
    "from_owner_area_code, to_owner_area_code, assignee_kind, assignee_code, note, data) "
    "SELECT id, version, 'comment', 'community_dispatcher', state, state, owner_area_code, "
    "owner_area_code, assignee_kind, assignee_code, 'bench', CASE WHEN assignee_code IS NULL "
    "THEN '{}'::jsonb ELSE jsonb_build_object('assignee_path', assignee_path) END FROM c",
)


def plain_app():
    """Return the minimal HTTP peer: ``POST /plain/{id}`` runs :data:`PLAIN_UPDATE_SQL` on an
    asyncpg pool of ``WANGGE_DB_POOL_SIZE`` (FastAPI, as the service; no auth, no middleware)."""
    from contextlib import asynccontextmanager

    import asyncpg
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    @asynccontextmanager
    async def lifespan(app):
        size = int(os.environ["WANGGE_DB_POOL_SIZE"])
        app.state.pool = await asyncpg.create_pool(
            _dsn(os.environ["DATABASE_URL"]), min_size=size, max_size=size
        )
        yield
        await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health():
        return {"ok": True}

    @app.post("/plain/{case_id}")
    async def plain(case_id: int):
        await app.state.pool.execute(PLAIN_UPDATE_SQL, case_id)
        return JSONResponse({"id": case_id})

    return app


async def _db_writes(
    url: str, ids: list[int], pool_size: int, clients: int, seconds: float, lifecycle: bool
) -> dict:
    """Return the rate and latency of plain updates (or of the lifecycle's writes) of
    ``ids`` by ``clients`` tasks over an asyncpg pool of ``pool_size``."""
    import asyncpg

    pool = await asyncpg.create_pool(_dsn(url), min_size=pool_size, max_size=pool_size)
    # As the API's processes below: this process and its backends at NICE.
    _prioritise([os.getpid()], url)
    done = 0
    lat: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if lifecycle:
                async with pool.acquire() as conn, conn.transaction():
                    for sql in LIFECYCLE_SQL:
                        await conn.execute(sql, ids[i % len(ids)])
            else:
                await pool.execute(PLAIN_UPDATE_SQL, ids[i % len(ids)])
            lat.append(time.perf_counter() - started)
            done += 1
            i += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.perf_counter() - started
    await pool.close()
    lat.sort()
    return {
        "rps": done / elapsed,
        "requests": done,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


def _wrk(server, url: str, port: int, lua: str, clients: int, seconds: float) -> dict:
    """Run wrk against ``server`` for ``seconds`` (the server, its backends and wrk at
    NICE); return its figures and the server's CPU milliseconds."""
    cpu_before = _cpu_seconds(server.pid)
    proc = subprocess.Popen(
        ["wrk", "-t", "1", "-c", str(clients), "-d", f"{seconds:g}s", "--latency"]
        + ["-s", lua, f"http://127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    _prioritise([server.pid, proc.pid], url)
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"wrk exited with {proc.returncode}")
    figures = parse_wrk(out)
    figures["server_cpu_ms"] = (_cpu_seconds(server.pid) - cpu_before) * 1000
    return figures


def actions(args, goals: Goals, url: str) -> dict:
    """Case actions per second through the API (POST /cases/{id}/actions/comment by the
    owning community's dispatcher, wrk) against plain one-row UPDATEs over a pool of the
    server's size at the same concurrency."""
    import psycopg

    from service.auth import create_token
    from service.db import make_engine

    url = prepare_dispatch_database(args.cases, args.due)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM incident WHERE owner_area_code = %s ORDER BY random() LIMIT 5000",
                (ACTIONS_COMMUNITY,),
            )
        ]
    engine = make_engine(url)
    with engine.begin() as conn:
        token = create_token(
            conn, name="bench-actions", role="community_dispatcher", area_code=ACTIONS_COMMUNITY
        )
    engine.dispose()
    pool_size, clients = 10, args.concurrency

    try:
        plain = asyncio.run(_db_writes(url, ids, pool_size, clients, args.action_seconds, False))
        bare = asyncio.run(_db_writes(url, ids, pool_size, clients, args.action_seconds, True))
    finally:
        if NICE:
            _set_autogroup_nice(os.getpid(), 0)
            for tid in _tids(os.getpid()):
                os.setpriority(os.PRIO_PROCESS, tid, 0)
    env = {"DATABASE_URL": url, "WANGGE_DB_POOL_SIZE": str(pool_size)}
    peer = start_uvicorn("bench.dispatch:plain_app", PLAIN_PORT, env)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write(PLAIN_LUA % ", ".join(map(str, ids)))
        _wrk(peer, url, PLAIN_PORT, fh.name, clients, 1)
        plain_http = _wrk(peer, url, PLAIN_PORT, fh.name, clients, args.action_seconds)
    finally:
        os.unlink(fh.name)
        stop(peer)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        events_before = conn.execute("SELECT count(*) FROM case_event").fetchone()[0]
        bare_events = conn.execute(
            "SELECT count(*) FROM case_event WHERE action = 'comment'"
        ).fetchone()[0]
    server = _start_server(url, ACTIONS_PORT)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write(ACTION_LUA % (", ".join(map(str, ids)), token))
        # A short warm-up (connections, prepared statements), then the measured run.
        runs = [
            _wrk(server, url, ACTIONS_PORT, fh.name, clients, seconds)
            for seconds in (1, args.action_seconds)
        ]
        api = runs[-1]
    finally:
        os.unlink(fh.name)
        stop(server)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        written = (
            conn.execute("SELECT count(*) FROM case_event WHERE action = 'comment'").fetchone()[0]
            - bare_events
        )
        events_after = conn.execute("SELECT count(*) FROM case_event").fetchone()[0]
    answered = sum(r["requests"] for r in runs)
    non_2xx = sum(r["non_2xx"] for r in runs)
    socket_errors = sum(r["socket_errors"] for r in runs)
    ok_actions = answered - non_2xx
    wrong = _replay_sample(url, random.Random(args.seed).sample(ids, min(300, len(ids))))
    ratio = api["rps"] / plain["rps"]
    print(
        f"\nactions: {clients} clients, pool {pool_size}: API comment actions "
        f"{api['rps']:,.0f}/s (p50 {api['p50_ms']:.1f} ms, p99 {api['p99_ms']:.1f} ms) vs plain "
        f"UPDATE {plain['rps']:,.0f}/s (p50 {plain['p50_ms']:.2f} ms, p99 "
        f"{plain['p99_ms']:.2f} ms): {ratio:.2f}x; the lifecycle's SQL alone (row lock, "
        f"update + event, commit) {bare['rps']:,.0f}/s = {bare['rps'] / plain['rps']:.2f}x "
        f"(p50 {bare['p50_ms']:.2f} ms); the plain UPDATE behind a minimal HTTP endpoint "
        f"{plain_http['rps']:,.0f}/s (the API is {api['rps'] / plain_http['rps']:.2f}x that); "
        f"the server used {api['server_cpu_ms'] / max(1, api['requests']):.1f} ms CPU per "
        f"action ({api['server_cpu_ms'] / 1000 / args.action_seconds:.0%} of a core), the "
        f"minimal endpoint {plain_http['server_cpu_ms'] / max(1, plain_http['requests']):.1f} "
        f"ms per UPDATE; bench processes and their backends at nice {NICE}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    goals.check(
        "actions_ok",
        "every case action answered 200 and wrote one event",
        # wrk stops with up to one request per connection in flight: answered by the
        # server (its event written) but not counted by wrk.
        non_2xx == 0
        and socket_errors == 0
        and written == events_after - events_before
        and ok_actions <= written <= ok_actions + clients * len(runs),
        f"{non_2xx} non-2xx, {socket_errors} socket errors; {written:,} events for "
        f"{ok_actions:,} answers counted (+ up to {clients * len(runs)} cut off by wrk)",
    )
    goals.check(
        "actions_replay",
        "acted-on cases equal the replay of their events",
        not wrong,
        f"{len(wrong)} of 300 sampled differ",
    )
    goals.at_least(
        "actions_vs_update",
        "case actions/s through the API vs plain UPDATE round trips/s (same pool, clients)",
        ratio,
        0.5,
        "x",
        f"{api['rps']:,.0f}/s vs {plain['rps']:,.0f}/s, {clients} clients; the lifecycle's "
        f"SQL alone {bare['rps']:,.0f}/s; the UPDATE behind a minimal HTTP endpoint "
        f"{plain_http['rps']:,.0f}/s",
    )
    return {
        "api": api,
        "plain": plain,
        "plain_http": plain_http,
        "lifecycle_sql": bare,
        "ratio": ratio,
    }


# -- running -------------------------------------------------------------------------------

SECTIONS = {"stream": stream, "sweep": sweep, "actions": actions}
#: Sections that build and use a database of their own.
OWN_DATABASE = {"sweep", "actions"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="small sizes: a check, not figures")
    parser.add_argument("--screens", type=int, default=1000, help="stream: connected screens")
    parser.add_argument("--rate", type=float, default=200, help="stream: case events per second")
    parser.add_argument("--seconds", type=float, default=60, help="stream: seconds of events")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--cases", type=int, default=1_000_000, help="sweep, actions: open cases")
    parser.add_argument("--due", type=int, default=10_000, help="sweep: cases past their deadline")
    parser.add_argument("--concurrency", type=int, default=10, help="actions: clients at once")
    parser.add_argument(
        "--action-seconds", type=float, default=10, help="actions: seconds of each measurement"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.screens, args.seconds = min(args.screens, 100), min(args.seconds, 10)
        args.cases, args.due = min(args.cases, 100_000), min(args.due, 1_000)
        args.action_seconds = min(args.action_seconds, 3)
    goals = Goals("dispatch", quick=args.quick)
    from bench.lookup import prepare_database

    # The Guiyang demo database only for the sections that read it (built on first use);
    # sweep and actions build their own (wangge_bench_sweep, wangge_bench_dispatch).
    url = prepare_database()[0] if set(args.sections) - OWN_DATABASE else None
    for name in args.sections:
        print(f"\n--- dispatch: {name}", flush=True)
        SECTIONS[name](args, goals, url)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
