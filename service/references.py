"""Judge the references a write sets: each names something that exists, inside the writer's area.

A reference is a column an entity kind declares with :class:`~service.specs.entity_kinds.Reference`
(a member's ``serving_grid_code``, a care household's ``cadre_member_id``, ...). One judgement
serves every write path: the API's create and change (:mod:`service.repositories.entities`)
and file imports (:mod:`service.bulk`, :mod:`service.transfer`). The command line acts as the
operator, whose scope is everything, so there only existence is checked.

- A code naming no area of the declared level, or an id naming no entity, is invalid (422).
- An area outside the writer's scope is forbidden (403, naming the field, the area and the
  scope): a community's dispatcher may not put a member on another community's grid, where it
  would show on that grid's tablet page and in its staffing.
- An entity outside the writer's scope is answered as one that does not exist (422, "no member
  N in your area"), as a read of it answers 404: a write must not tell which ids exist
  elsewhere. Area codes are public administrative codes; entity ids are not.
- A change is judged on the value it replaces too (403 when that is outside the scope): taking
  a member off another community's grid is a write to that community as much as putting one
  on it. A column whose value does not change is not judged (a client may send back the whole
  record it read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from geo.tables import RowProblem
from service.auth import Principal
from service.errors import ForbiddenError, UnprocessableError, WanggeError
from service.specs.entity_kinds import ENTITIES, EntitySpec

__all__ = [
    "ReferenceProblem",
    "Targets",
    "find_targets",
    "find_targets_async",
    "judge_reference",
    "check_references",
    "reference_problems",
]

#: The largest id a bigint column holds: a larger one names nothing (and must not reach SQL).
MAX_ID = 2**63 - 1

_AREAS_SQL = text(
    "SELECT DISTINCT ON (code) code, level, path FROM area "
    "WHERE code = ANY(CAST(:codes AS text[])) ORDER BY code, generation_high DESC"
)


@dataclass(frozen=True)
class ReferenceProblem:
    """Why a reference may not be written: the column, the status (403 or 422), the reason."""

    column: str
    status: int
    reason: str

    def as_error(self) -> WanggeError:
        error = ForbiddenError if self.status == 403 else UnprocessableError
        return error(f"{self.column}: {self.reason}", field=self.column)


@dataclass(frozen=True)
class Targets:
    """What the codes and ids of some writes name, as far as the writer may know."""

    #: area code → (level, path) of its newest version (codes never change meaning)
    areas: Mapping[str, tuple[str, str]]
    #: kind name → ids that exist and that the writer may see
    visible: Mapping[str, frozenset[int]]


def _codes(values: Iterable[Any]) -> list[str]:
    # Only digits can be a code; anything else names no area and must not reach SQL (NUL).
    return sorted({v for v in values if isinstance(v, str) and v.isascii() and v.isdigit()})


def _ids(values: Iterable[Any]) -> list[int]:
    out = set()
    for v in values:
        if v is None or isinstance(v, bool | str):
            continue
        try:
            number = int(v)
        except (TypeError, ValueError):
            continue
        if number == v and 1 <= number <= MAX_ID:
            out.add(number)
    return sorted(out)


def _queries(
    spec: EntitySpec, values: Mapping[str, Iterable[Any]]
) -> list[tuple[str | None, TextClause, dict[str, Any]]]:
    """Return (kind or None for areas, statement, parameters) looking up what ``values`` name."""
    codes: set[str] = set()
    ids: dict[str, set[int]] = {}
    for column, ref in spec.references.items():
        if column not in values:
            continue
        if ref.target == "area":
            codes.update(_codes(values[column]))
        else:
            ids.setdefault(ref.target, set()).update(_ids(values[column]))
    out: list[tuple[str | None, TextClause, dict[str, Any]]] = []
    if codes:
        out.append((None, _AREAS_SQL, {"codes": sorted(codes)}))
    for kind, wanted in ids.items():
        if not wanted:
            continue
        target = ENTITIES[kind]
        paths = ["area_path"] if target.point else list(target.area_path_columns.values())
        sql = text(
            f"SELECT t.id, {', '.join(f't.{p}' for p in paths)} FROM {target.table} t "
            "WHERE t.id = ANY(CAST(:ids AS bigint[]))"
        )
        out.append((kind, sql, {"ids": sorted(wanted)}))
    return out


def _entity_visible(principal: Principal, target: EntitySpec, row: Mapping[str, Any]) -> bool:
    """Return whether the writer may see an entity, from its paths (as ``visible_sql``)."""
    scope = principal.scope_path
    if scope is None:
        return True
    if target.point:
        path = row["area_path"]
        # Points outside every area belong to the city-level queue.
        return "/" not in scope if path is None else principal.covers_path(path)
    return any(
        row[p] is not None and principal.covers_path(row[p])
        for p in target.area_path_columns.values()
    )


def _collect(principal: Principal, results: list[tuple[str | None, list[Any]]]) -> Targets:
    areas: dict[str, tuple[str, str]] = {}
    visible: dict[str, frozenset[int]] = {}
    for kind, rows in results:
        if kind is None:
            areas.update({r.code: (r.level, r.path) for r in rows})
        else:
            target = ENTITIES[kind]
            visible[kind] = frozenset(
                r.id for r in rows if _entity_visible(principal, target, r._mapping)
            )
    return Targets(areas=areas, visible=visible)


def find_targets(
    conn: Connection, spec: EntitySpec, principal: Principal, values: Mapping[str, Iterable[Any]]
) -> Targets:
    """Return what the codes and ids in ``values`` (column → values) name (synchronous)."""
    results = [(k, conn.execute(sql, p).all()) for k, sql, p in _queries(spec, values)]
    return _collect(principal, results)


async def find_targets_async(
    conn: AsyncConnection,
    spec: EntitySpec,
    principal: Principal,
    values: Mapping[str, Iterable[Any]],
) -> Targets:
    """Return what the codes and ids in ``values`` (column → values) name."""
    results = [(k, (await conn.execute(sql, p)).all()) for k, sql, p in _queries(spec, values)]
    return _collect(principal, results)


def judge_reference(
    spec: EntitySpec,
    principal: Principal,
    column: str,
    value: Any,
    targets: Targets,
    *,
    replaced: bool = False,
) -> ReferenceProblem | None:
    """Return why ``value`` may not be written to ``column`` (None: it may).

    ``replaced``: the value is the one a change overwrites; it must be inside the scope (it
    exists: the row refers to it).
    """
    ref = spec.references[column]
    area = principal.area_code
    if ref.target == "area":
        level, path = targets.areas.get(value, (None, None))
        if replaced:
            if path is not None and not principal.covers_path(path):
                return ReferenceProblem(
                    column,
                    403,
                    f"{level} {value}, its current value, is outside your area {area}",
                )
            return None
        if level != ref.level:
            return ReferenceProblem(column, 422, f"{value} is not a {ref.level}")
        if not principal.covers_path(path):
            return ReferenceProblem(column, 403, f"{level} {value} is outside your area {area}")
        return None
    target = ENTITIES[ref.target]
    if value in targets.visible.get(ref.target, ()):
        return None
    if replaced:
        return ReferenceProblem(
            column, 403, f"{target.label} {value}, its current value, is outside your area {area}"
        )
    return ReferenceProblem(column, 422, f"no {target.label} {value} in your area")


async def check_references(
    conn: AsyncConnection,
    spec: EntitySpec,
    principal: Principal,
    values: Mapping[str, Any],
    *,
    current: Mapping[str, Any] | None = None,
) -> None:
    """Refuse (403/422 naming the field) the first reference a write may not set.

    ``values`` are the columns written; ``current`` the row a change applies to (its
    replaced values are judged too, and unchanged columns are not judged).
    """
    new = {
        c: values[c]
        for c in spec.references
        if c in values and (current is None or values[c] != current[c])
    }
    old = {c: current[c] for c in new if current is not None and current[c] is not None}
    if not new:
        return
    lookups = {c: [v for v in (new[c], old.get(c)) if v is not None] for c in new}
    targets = await find_targets_async(conn, spec, principal, lookups)
    for column, value in new.items():
        if column in old:
            problem = judge_reference(spec, principal, column, old[column], targets, replaced=True)
            if problem is not None:
                raise problem.as_error()
        if value is not None:
            problem = judge_reference(spec, principal, column, value, targets)
            if problem is not None:
                raise problem.as_error()


def reference_problems(
    conn: Connection,
    spec: EntitySpec,
    principal: Principal,
    values: Mapping[str, np.ndarray],
    rows: np.ndarray,
) -> list[RowProblem]:
    """Return the rows of an import whose references may not be written (one per column).

    A kind without location must also name at least one area in the writer's scope, or no
    one could see what it wrote (a member without a home community).
    """
    columns = [c for c in spec.references if c in values]
    if not columns:
        return []
    targets = find_targets(conn, spec, principal, {c: values[c] for c in columns})
    problems = []
    area_columns = [c for c in columns if spec.references[c].target == "area"]
    # Without location, a row is seen through its areas: it must name one.
    must_name_area = not spec.point and principal.scope_path is not None and bool(area_columns)
    for i, row in enumerate(rows):
        for column in columns:
            value = values[column][i]
            if value is None or value == "":
                continue
            problem = judge_reference(spec, principal, column, _plain(value), targets)
            if problem is not None:
                problems.append(RowProblem(int(row), column, problem.reason))
        if must_name_area and all(values[c][i] in (None, "") for c in area_columns):
            problems.append(
                RowProblem(int(row), area_columns[0], f"outside your area {principal.area_code}")
            )
    return problems


def _plain(value: Any) -> Any:
    """Return numpy scalars as Python ones (a dictionary lookup must find them)."""
    return value.item() if isinstance(value, np.generic) else value
