"""GCJ-02 vector tiles against WGS84 tiles: what shifting every vertex on the server costs.

Issue 13's goal: uncached GCJ-02 tiles (``/tiles/{layer}/{z}/{x}/{y}.mvt?crs=GCJ-02``, drawn by
``service/tiles/shifted.py``: one statement per layer, every point and polygon vertex shifted by
the GCJ-02 formula written out in SQL, equal to ``geo/coords.py``'s numpy kernel to 1e-12°)
within 0.8x the throughput of the same server's uncached WGS84 tiles, measured in the same
run.

One server (``bench.lookup_app`` with the tile cache off, one uvicorn worker, a pool of 10)
on the Guiyang demo database of ``bench.tiles`` (``wangge_bench``, ~3,700 incidents). Tiles:
every Web Mercator tile at zooms 8–14 over Guiyang's urban core (``bench.tiles.core_tiles``)
holding data of the layer in both systems (``grids`` from zoom 8, ``incidents`` from zoom 10,
where tiles of more than 1,000 incidents are clusters), shuffled; the same z/x/y asked for in
WGS84 and in GCJ-02 (a GCJ-02 tile shows the same ground ~500 m over). Load from ``wrk`` at 8
and 64 connections, the two systems taking turns for ``--rounds`` rounds, median of the rounds
with ± half their range (the machine may be shared).

Checks: every answer 2xx; every GCJ-02 tile holds features; features per tile within a few
of the WGS84 tile's in total (the same ground, shifted). Exit 1 on a missed goal or failed
check (:mod:`bench.goals`).

Run: ``.venv/bin/python -m bench.tiles_crs [--seconds 12] [--rounds 3] [--quick]`` (about
2 minutes; ``--quick``: 64 connections, one round of 2 s a side).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import sys
import time

from bench.common import stop
from bench.goals import Goals
from bench.lookup import prepare_database
from bench.tiles import (
    core_tiles,
    ensure_entities,
    fetch_all,
    mvt_features,
    run_wrk,
    start_wangge,
)
from service.specs.map_layers import LAYERS

LAYER_NAMES = ("grids", "incidents")
GOAL = 0.8


def _free_port() -> int:
    """Return a port nobody listens on now: bench.tiles and test servers may run beside us
    (a fixed port once answered the health check from another helper's server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SYSTEMS = {"WGS84": "", "GCJ-02": "?crs=GCJ-02"}


def _combine(runs: list[dict]) -> dict:
    rps = sorted(r["rps"] for r in runs)
    return {
        "rps": statistics.median(rps),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "spread": (rps[-1] - rps[0]) / 2 / statistics.median(rps) if rps[-1] else 0.0,
        "bad": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12, help="per system and load, all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the systems")
    parser.add_argument("--quick", action="store_true", help="64 connections, 1 round of 2 s")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else max(1, args.rounds)
    seconds = 2 if args.quick else max(1, round(args.seconds / rounds))
    conns = (64,) if args.quick else (8, 64)
    goals = Goals("tiles_crs", quick=args.quick)
    load_before = os.getloadavg()[0]
    started = time.monotonic()

    url, token = prepare_database()
    ensure_entities(url)
    auth = {"Authorization": f"Bearer {token}"}
    port = _free_port()
    proc = start_wangge(url, cache=False, port=port)
    results: dict[tuple[str, str, int], dict] = {}
    counts: dict[tuple[str, str], int] = {}
    try:
        tiles: dict[str, list[str]] = {}
        for layer in LAYER_NAMES:
            all_tiles = [t for t in core_tiles() if t[0] >= LAYERS[layer].min_zoom]
            random.Random(11).shuffle(all_tiles)
            paths = [f"/tiles/{layer}/{z}/{x}/{y}.mvt" for z, x, y in all_tiles]
            # Once each way: keeps the tiles with data in both, warms PostgreSQL's cache.
            got = {s: fetch_all(port, [p + q for p in paths], auth) for s, q in SYSTEMS.items()}
            keep = [
                i for i in range(len(paths)) if all(got[s][i].status_code == 200 for s in SYSTEMS)
            ]
            tiles[layer] = [paths[i] for i in keep]
            for s in SYSTEMS:
                counts[(layer, s)] = sum(mvt_features(got[s][i].content) for i in keep)
            goals.check(
                f"gcj02_{layer}_features",
                f"GCJ-02 {layer} tiles hold features (the WGS84 tiles' ground, shifted)",
                counts[(layer, "GCJ-02")] > 0 and len(keep) > 0,
                f"{len(keep)} tiles; features WGS84 {counts[(layer, 'WGS84')]}, "
                f"GCJ-02 {counts[(layer, 'GCJ-02')]}",
            )
        for layer in LAYER_NAMES:
            for q in SYSTEMS.values():  # warm-up
                run_wrk(port, [p + q for p in tiles[layer]], auth, 1, 8)
            for c in conns:
                runs: dict[str, list] = {s: [] for s in SYSTEMS}
                for _ in range(rounds):
                    for s, q in SYSTEMS.items():
                        paths = [p + q for p in tiles[layer]]
                        runs[s].append(run_wrk(port, paths, auth, seconds, c))
                for s in SYSTEMS:
                    results[(layer, s, c)] = _combine(runs[s])
    finally:
        stop(proc)

    load_after = os.getloadavg()[0]
    print(
        f"\nGCJ-02 vs WGS84 vector tiles, uncached, one worker, pool 10; {rounds} round(s) of "
        f"{seconds} s a side; load average {load_before:.1f} before, {load_after:.1f} after"
    )
    print(f"{'layer':<10} {'conns':>5} {'system':<7} {'req/s':>14} {'p50 ms':>8} {'p99 ms':>8}")
    bad = 0
    for (layer, s, c), r in results.items():
        bad += r["bad"]
        print(
            f"{layer:<10} {c:>5} {s:<7} {r['rps']:>8.0f} ±{r['spread'] * 100:>3.0f}% "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
        )
    for layer in LAYER_NAMES:
        for c in conns:
            wgs, gcj = results[(layer, "WGS84", c)], results[(layer, "GCJ-02", c)]
            goals.at_least(
                f"gcj02_vs_wgs84_{layer}_c{c}",
                f"uncached GCJ-02 {layer} tiles' throughput over WGS84's, {c} connections",
                gcj["rps"] / wgs["rps"] if wgs["rps"] else None,
                GOAL,
                detail=f"{gcj['rps']:.0f} vs {wgs['rps']:.0f} req/s, {len(tiles[layer])} tiles",
            )
    goals.check("all_2xx", "every answer under load 2xx, no socket error", bad == 0, f"{bad} bad")
    print(f"({time.monotonic() - started:.0f} s)")
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
