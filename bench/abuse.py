"""Abuse benchmark: a caller sending a huge body is answered at once and stalls no one else.

One wangge server (``bench.lookup_app``, uvicorn, one worker: everyone shares its event
loop) on the bench database. A caller POSTs a ``--megabytes`` (default 50) ``/lookup/batch``
body of valid points, ``--rounds`` times with ``Content-Length`` and as many times chunked
(no length: the server can only count as it arrives), one after the other, while another
client GETs ``/health`` every 10 ms on its own connection. Before the fix the body was parsed whole (a minute and a
half for 50 MB) and ``/health`` waited seconds behind it; now it is refused (413
problem+json) from its length, or once the counted bytes pass the route's limit, before any
parsing.

Times to 413 are measured by the caller: from the first byte sent to the answer, sending
the whole body included (HTTP clients send the body before reading the answer; over
loopback 50 MB take a few tens of ms). ``/health`` is also measured alone first, for
reference.

Goals: the slowest time to 413 <= 0.5 s; ``/health`` p99 during the big bodies <= 50 ms.
Checks: every big body answered 413 problem+json; every ``/health`` answered 200.
Big bodies keep coming for ``--seconds`` (default 10), at least ``--rounds`` (5) of each kind.
Run: ``make bench`` or ``.venv/bin/python -m bench.abuse [--megabytes 50] [--rounds 5]
[--seconds 10] [--quick]`` (``--quick``: 10 MB, 2 rounds, 2 s). Under a minute.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import sys
import time

import httpx

from bench.common import stop
from bench.goals import Goals
from bench.lookup import prepare_database
from bench.tiles import start_wangge

HEALTH_EVERY_S = 0.01
POINT = b"[106.7123456, 26.5812345], "


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def big_body(megabytes: float) -> bytes:
    """Return a valid batch body of about ``megabytes`` MB of points."""
    n = int(megabytes * 1_000_000 / len(POINT))
    return b'{"points": [' + POINT * n + b'[106.7, 26.58]], "crs": "EPSG:4326"}'


def _poll(base: str, stopping, out) -> None:
    samples: list[tuple[float, int]] = []
    errors: list[str] = []
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stopping.is_set():
            started = time.perf_counter()
            try:
                status = http.get("/health").status_code
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
                status = 0
            samples.append((time.perf_counter() - started, status))
            stopping.wait(HEALTH_EVERY_S)
    out.send((samples, errors))


class HealthPoller:
    """GETs /health every 10 ms on its own connection, from a process of its own (so the big
    body's sending, in this process, cannot delay the measurement: the GIL)."""

    def __init__(self, base: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stopping = ctx.Event()
        self._out, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_poll, args=(base, self.stopping, child), daemon=True)
        self.errors: list[str] = []

    def start(self) -> None:
        self.process.start()

    def stop(self) -> list[tuple[float, int]]:
        """Return (seconds, status) of every request."""
        self.stopping.set()
        samples, self.errors = self._out.recv()
        self.process.join(30)
        return samples


def p99(seconds: list[float]) -> float:
    if len(seconds) < 2:
        return seconds[0] if seconds else float("nan")
    return statistics.quantiles(seconds, n=100, method="inclusive")[98]


def send_big(http: httpx.Client, body: bytes, token: str, chunked: bool) -> tuple[float, bool]:
    """Return (seconds to the answer, whether it was a 413 problem+json)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if chunked:
        step = 1 << 20
        content = (body[i : i + step] for i in range(0, len(body), step))
    else:
        content = body
    started = time.perf_counter()
    r = http.post("/lookup/batch", content=content, headers=headers)
    seconds = time.perf_counter() - started
    ok = r.status_code == 413 and r.headers.get("content-type", "").startswith(
        "application/problem+json"
    )
    return seconds, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=50.0, help="size of the big body")
    parser.add_argument("--rounds", type=int, default=5, help="big bodies of each kind, at least")
    parser.add_argument("--seconds", type=float, default=10.0, help="of big bodies, at least")
    parser.add_argument("--quick", action="store_true", help="10 MB, 2 rounds, 2 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.megabytes, args.rounds, args.seconds = 10.0, 2, 2.0

    goals = Goals("abuse", quick=args.quick)
    url, token = prepare_database()
    body = big_body(args.megabytes)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_wangge(url, cache=True, port=port)
    try:
        alone = HealthPoller(base)
        alone.start()
        time.sleep(3)  # the process starts in about a second
        idle = [s for s, _ in alone.stop()]

        poller = HealthPoller(base)
        poller.start()
        time.sleep(1.5)
        times: dict[str, list[float]] = {"content-length": [], "chunked": []}
        refused = 0
        until = time.monotonic() + args.seconds
        with httpx.Client(base_url=base, timeout=300) as http:
            # At least --rounds of each kind, and big bodies for --seconds in all: /health is
            # measured while they keep arriving, not only around one.
            while len(times["chunked"]) < args.rounds or time.monotonic() < until:
                for kind in times:
                    seconds, ok = send_big(http, body, token, chunked=kind == "chunked")
                    times[kind].append(seconds)
                    refused += ok
        time.sleep(0.2)
        during = poller.stop()
    finally:
        stop(server)

    mb = len(body) / 1e6
    sent = len(times["chunked"])
    print(f"\nabuse benchmark: {mb:.1f} MB POST /lookup/batch, {sent} of each kind")
    for kind, seconds in times.items():
        print(
            f"  time to 413, {kind:<15} median {statistics.median(seconds) * 1000:7.1f} ms"
            f"   max {max(seconds) * 1000:7.1f} ms"
        )
    health = [s for s, _ in during]
    print(
        f"  /health alone: {len(idle)} requests, p99 {p99(idle) * 1000:.1f} ms; during the big "
        f"bodies: {len(health)} requests, p99 {p99(health) * 1000:.1f} ms, "
        f"max {max(health, default=float('nan')) * 1000:.1f} ms"
    )

    slowest = max(max(v) for v in times.values())
    asked = 2 * sent
    goals.check(
        "abuse_413",
        f"every {mb:.0f} MB body answered 413 problem+json",
        refused == asked,
        f"{asked - refused} of {asked} were not" if refused != asked else "",
    )
    bad = [st for _, st in during if st != 200] + alone.errors + poller.errors
    goals.check(
        "abuse_health_ok",
        "every /health during the run answered 200",
        not bad,
        f"{len(bad)} did not: {bad[:3]}" if bad else "",
    )
    goals.at_most(
        "abuse_time_to_413",
        f"slowest time to 413 for a {mb:.0f} MB batch (sending included)",
        slowest,
        0.5,
        "s",
    )
    goals.at_most(
        "abuse_health_p99", "/health p99 while the big bodies arrive", p99(health) * 1000, 50, "ms"
    )
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
