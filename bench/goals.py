"""Goals of the benchmarks: what was measured against its target, and an exit status that says.

Every benchmark records its goals and its checks here and ends with ``sys.exit(goals.finish())``:

- a **goal** is a measured figure against a target (``at_least`` / ``at_most``), met or missed;
- a **check** is something that must hold for the figures to mean anything (every answer 2xx,
  answers equal to an independent computation, identical figures): passed or failed.

``finish()`` prints one table of them all and returns 1 when any goal was missed or any check
failed (0 otherwise), so ``make bench`` fails on a missed goal. With ``WANGGE_BENCH_RESULTS``
set to a file (``python -m bench`` does this), each row is also appended there as a JSON line,
for the summary over all benchmarks.

With ``--quick`` (small sizes: does everything run end to end?) the goals are measured and
printed but do not decide the exit status: they are set for the full sizes, where fixed costs
weigh less. Checks decide it in every mode.

``WANGGE_BENCH_TARGETS="id=value,id=value"`` replaces the targets of the goals with those ids
(the first column of the table); a goal whose target is replaced so decides the exit status in
``--quick`` runs too, e.g. ``WANGGE_BENCH_TARGETS=lookup_vs_bare=100 python -m bench.lookup
--quick`` exits 1: the way to see the gate work without a full run. Checks cannot be
overridden.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass

TARGETS_ENV = "WANGGE_BENCH_TARGETS"
RESULTS_ENV = "WANGGE_BENCH_RESULTS"


@dataclass
class Row:
    bench: str
    id: str
    what: str
    kind: str  # ">=", "<=" (goals) or "check"
    measured: float | None
    target: float | None
    unit: str
    ok: bool
    detail: str = ""
    gated: bool = True  # False: a goal of a --quick run (printed, not deciding the status)


def _overrides() -> dict[str, float]:
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in os.environ.get(TARGETS_ENV, "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{TARGETS_ENV}: expected id=value, got {item!r}")
        out[key.strip()] = float(value)
    return out


def _num(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.3g} {unit}".strip() if abs(value) < 1000 else f"{value:,.0f} {unit}".strip()


class Goals:
    """The goals and checks of one benchmark run."""

    def __init__(self, bench: str, quick: bool = False) -> None:
        self.bench = bench
        self.quick = quick
        self.rows: list[Row] = []
        self._targets = _overrides()

    def _goal(self, id: str, what: str, kind: str, measured, target, unit, detail) -> bool:
        gated = not self.quick or id in self._targets
        target = self._targets.get(id, target)
        measured = None if measured is None else float(measured)
        ok = (
            measured is not None
            and not math.isnan(measured)
            and (measured >= target if kind == ">=" else measured <= target)
        )
        self.rows.append(Row(self.bench, id, what, kind, measured, target, unit, ok, detail, gated))
        return ok

    def at_least(
        self, id: str, what: str, measured, target: float, unit: str = "x", detail: str = ""
    ) -> bool:
        """Record a goal met when ``measured >= target``; return whether it was met."""
        return self._goal(id, what, ">=", measured, target, unit, detail)

    def at_most(
        self, id: str, what: str, measured, target: float, unit: str = "x", detail: str = ""
    ) -> bool:
        """Record a goal met when ``measured <= target``; return whether it was met."""
        return self._goal(id, what, "<=", measured, target, unit, detail)

    def check(self, id: str, what: str, ok: bool, detail: str = "") -> bool:
        """Record a check (answers all 2xx, results identical, ...); return ``ok``."""
        self.rows.append(Row(self.bench, id, what, "check", None, None, "", bool(ok), detail))
        return bool(ok)

    @property
    def failed(self) -> list[Row]:
        return failed(self.rows)

    def finish(self) -> int:
        """Print the table, append the rows to ``$WANGGE_BENCH_RESULTS``; return the status."""
        quick = " (--quick: only checks and goals set by $WANGGE_BENCH_TARGETS gate)" * self.quick
        print(f"\n{self.bench}: goals and checks{quick}")
        print(table(self.rows))
        path = os.environ.get(RESULTS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                for r in self.rows:
                    fh.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
        if self.failed:
            names = ", ".join(r.id for r in self.failed)
            print(f"{self.bench}: FAILED ({names})", file=sys.stderr, flush=True)
            return 1
        if any(not r.ok for r in self.rows):
            print(f"{self.bench}: every check passed; goals missed at --quick sizes", flush=True)
        else:
            print(f"{self.bench}: every goal met, every check passed", flush=True)
        return 0


def failed(rows: list[Row]) -> list[Row]:
    """Return the rows that decide a failure: missed gated goals and failed checks."""
    return [r for r in rows if not r.ok and r.gated]


def verdict(r: Row) -> str:
    if r.kind == "check":
        return "passed" if r.ok else "FAILED"
    if r.ok:
        return "met"
    return "MISSED" if r.gated else "missed*"


def table(rows: list[Row], with_bench: bool = False) -> str:
    lines = []
    head = f"{'bench':<13}" if with_bench else ""
    lines.append(f"  {head}{'id':<28}{'measured':>14}  {'goal':<17}{'':8}what")
    for r in rows:
        goal = "" if r.kind == "check" else f"{r.kind} {_num(r.target, r.unit)}"
        start = f"{r.bench:<13}" if with_bench else ""
        lines.append(
            f"  {start}{r.id:<28}{_num(r.measured, r.unit):>14}  {goal:<16} {verdict(r):<8}"
            f"{r.what}{': ' + r.detail if r.detail else ''}"
        )
    if any(verdict(r) == "missed*" for r in rows):
        lines.append("  missed*: missed at --quick sizes; goals are set for the full sizes")
    return "\n".join(lines)
