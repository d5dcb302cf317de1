"""What-if coverage: the coverage analyses run on a draft's grids, beside today's.

The analyses (:mod:`service.analysis`: staffing, workload, care, reach) read boundaries by
generation, so the draft is written as a *hypothetical generation* inside a transaction that
is always rolled back: a pending generation carrying today's areas over, the draft's
replaced grids retired and its new grids written with provisional codes (the community's
next sequence numbers, as publishing would give). Each analysis then runs twice — on the
current generation and on the hypothetical one (entities re-located on the fly) — and the
difference of their summaries is returned. Nothing is ever committed: no other session sees
the hypothetical generation, and the current one is untouched.

The database allows one pending generation at a time, so a what-if waits (at most
:data:`LOCK_TIMEOUT`) for a concurrent publish or what-if, and answers 409 while a real
generation is pending. Reading a pending generation is for planners and admins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, text

from geo.areas import AreaRecord, as_multipolygon
from service.analysis import run_care, run_staffing, run_workload
from service.analysis.reach import run_reach
from service.auth import Principal
from service.errors import ConflictError
from service.repositories import boundaries
from service.repositories import plans as plans_repo

__all__ = ["WHATIF_ANALYSES", "LOCK_TIMEOUT", "run_whatif"]

LOCK_TIMEOUT = "10s"

#: name → how to run it for a what-if (counts only: the difference is in the numbers).
WHATIF_ANALYSES: dict[str, Callable[..., dict]] = {
    "staffing": lambda conn, **w: run_staffing(conn, geometry=False, **w),
    "workload": lambda conn, **w: run_workload(conn, geometry=False, **w),
    "care": lambda conn, **w: run_care(conn, geometry=False, details=False, **w),
    "reach": lambda conn, **w: run_reach(conn, geometry=False, use_network=False, **w),
}
_ITEMS = 20


def _numbers(summary: dict[str, Any]) -> dict[str, float]:
    return {
        k: v
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v is not None
    }


def _change(today: dict[str, Any], draft: dict[str, Any]) -> dict[str, float]:
    a, b = _numbers(today), _numbers(draft)
    return {k: round(b[k] - a[k], 6) for k in sorted(a.keys() & b.keys()) if b[k] != a[k]}


def _strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "geometry"} for item in items[:_ITEMS]]


def _write_hypothetical(conn: Connection, plan: dict[str, Any]) -> tuple[int, dict[str, str]]:
    """Write the draft as a pending generation (in the caller's doomed transaction); return
    its id and key → provisional code of the draft's new grids."""
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    if boundaries.pending_generation(conn) is not None:
        raise ConflictError(
            "a generation is pending (loaded but not activated): what-if coverage needs the "
            "slot; activate or finish it first",
            field="generation",
        )
    grids = plans_repo.read_plan_grids(conn, plan["id"])
    current = {
        r.code
        for r in conn.execute(
            text(
                "SELECT a.code FROM area a JOIN area p ON p.code = :code "
                "AND p.generation_low <= :g AND p.generation_high >= :g "
                "WHERE a.depth = 3 AND a.path LIKE p.path || '/%' "
                "AND a.generation_low <= :g AND a.generation_high >= :g"
            ),
            {"code": plan["area_code"], "g": plan["base_generation"]},
        )
    }
    kept = {c for c in grids["code"] if isinstance(c, str) and c in current}
    fresh = [r for r in grids.itertuples(index=False) if r.code not in kept]
    codes = plans_repo._new_codes(
        conn,
        [g for g in plans_repo._grids_of(grids) if g.code not in kept],
    )
    generation_id = boundaries.create_generation(
        conn, description=f"what-if of plan {plan['id']} (never committed)", carry_over=True
    )
    retired = sorted(current - kept)
    if retired:
        boundaries.retire_areas(conn, generation_id=generation_id, codes=retired)
    records = [
        AreaRecord(codes[r.key], r.name, "grid", r.parent_code, as_multipolygon(r.geometry))
        for r in fresh
    ]
    if records:
        boundaries.write_areas(
            conn, generation_id=generation_id, records=records, source=f"what-if:{plan['id']}"
        )
    return generation_id, codes


def run_whatif(
    conn: Connection,
    *,
    plan_id: int,
    principal: Principal,
    analyses: tuple[str, ...] = tuple(WHATIF_ANALYSES),
) -> dict[str, Any]:
    """Return today's and the draft's analysis summaries of the plan's area and their change.

    Runs in the caller's transaction and leaves it dirty: the caller must roll it back
    (the router does, always). 409 when the plan's base generation is no longer current.
    """
    plan = plans_repo.get_plan(conn, plan_id)
    if not plan["base_is_current"]:
        raise ConflictError(
            f"plan {plan_id} was drawn on generation {plan['base_generation']}, which is no "
            "longer current: what-if coverage compares with today's grids",
            field="base_generation",
        )
    where = {"principal": principal, "area_code": plan["area_code"]}
    today = {name: WHATIF_ANALYSES[name](conn, **where) for name in analyses}
    generation_id, codes = _write_hypothetical(conn, plan)
    draft = {
        name: WHATIF_ANALYSES[name](conn, generation=generation_id, **where) for name in analyses
    }
    out: dict[str, Any] = {
        "plan_id": plan_id,
        "version": plan["version"],
        "area_code": plan["area_code"],
        "base_generation": plan["base_generation"],
        "provisional_codes": codes,
        "analyses": {},
    }
    for name in analyses:
        out["analyses"][name] = {
            "today": today[name]["summary"],
            "draft": draft[name]["summary"],
            "change": _change(today[name]["summary"], draft[name]["summary"]),
            "draft_items": _strip(draft[name].get("items", [])),
        }
    return out
