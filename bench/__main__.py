"""Run every benchmark (or the named ones), each in its own process; fail at the end on any miss.

``python -m bench [--quick] [lookup bulk_assign ...]`` runs the benchmarks one after the other,
each to its end whatever the others did (so every figure is printed), then prints the goals and
checks of all of them in one table and exits 1 when any benchmark missed a goal, failed a
check or did not finish (``make bench`` runs this). ``--quick``: small sizes, a check that
everything runs end to end, not figures to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.goals import RESULTS_ENV, Row, failed, table

BENCHES = (
    "lookup",
    "bulk_assign",
    "bulk_import",
    "tiles",
    "tiles_crs",
    "coverage",
    "abuse",
    "dispatch",
    "cases",
    "scale",
    "workers",
    "planning",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHES))
    parser.add_argument("--quick", action="store_true", help="small sizes: a check, not figures")
    args = parser.parse_args(argv)
    names = args.names or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES)}")

    status: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "goals.jsonl"
        results.touch()
        env = {**os.environ, RESULTS_ENV: str(results)}
        for name in names:
            cmd = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
            print(f"\n=== {' '.join(cmd[1:])}", flush=True)
            started = time.monotonic()
            code = subprocess.run(cmd, env=env).returncode
            status[name] = (code, time.monotonic() - started)
        rows = [Row(**json.loads(line)) for line in results.read_text().splitlines() if line]

    print("\n=== all benchmarks: goals and checks")
    print(table(rows, with_bench=True))
    print()
    broken = []
    for name, (code, seconds) in status.items():
        if code != 0:
            broken.append(name)
        mine = [r for r in rows if r.bench == name]
        missed = [r.id for r in failed(mine)]
        if code == 0:
            state = "ok"
        elif missed:
            state = f"FAILED (exit {code}): {', '.join(missed)}"
        else:
            state = f"FAILED (exit {code}) before reporting its goals"
        print(f"  {name:<13}{seconds:7.0f} s  {state}")
    if broken:
        print(f"\nbench: {len(broken)} of {len(status)} failed: {', '.join(broken)}", flush=True)
        return 1
    print(f"\nbench: all {len(status)} passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
