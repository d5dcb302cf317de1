"""Planning analyses over a scope: staffing, partition topology, organisation, care, workload.

Every analysis is one or a few set-based PostgreSQL/PostGIS statements over the caller's
area (a :class:`~service.auth.Principal`), for the current boundary generation unless told
otherwise, and returns ``{"summary": {...numbers...}, "items": [...findings, worst first...]}``;
a finding that has a place carries ``"geometry"`` (GeoJSON, EPSG:4326).

The ``run_*`` functions take a synchronous SQLAlchemy connection (the API runs them in a
worker thread on ``app.state.sync_engine``; the CLI and the report on ``make_engine(url)``)
and never commit: the care analysis writes its detail reads to ``access_log``, so the caller
runs it in a transaction (``engine.begin()``).

Scope: an analysis covers one area (``area_code``, default the caller's own) and everything
below it; every ``run_*`` takes ``principal``, ``area_code`` and ``generation`` as keywords
(:class:`Where`) and resolves them with :func:`resolve_scope`. Areas outside the caller's
scope answer 404 as if they did not exist, exactly like ``GET /areas/{code}``. Planners,
dispatchers and admins may run analyses; a grid officer only for their own grid; intake
systems not at all.

Generations: areas are read in ``generation`` (default the current one). Entities carry the
cells of the current generation (a closed case those it was handled in); for another
generation those whose cells may differ are re-located on the fly (``locate_point``, one
index probe per row): the rows located in an area not of both generations, or lying in an
area the other has and the current one has not, or not located at all. Every other row is in
the same area in both and keeps its cells, so a what-if of a draft
(:mod:`service.planning.whatif`) re-locates what the draft changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Required, TypedDict, Unpack

import orjson
from sqlalchemy import Connection, text

from service.auth import STAFF_ROLES, Principal, require_readable_generation
from service.errors import ForbiddenError, NotFoundError

__all__ = [
    "ANALYSIS_ROLES",
    "Scope",
    "Where",
    "resolve_scope",
    "area_in_scope",
    "located",
    "relocating_everything",
    "geometry_json",
    "ANALYSES",
    "run_staffing",
    "run_topology",
    "run_organisation",
    "run_care",
    "run_workload",
]

#: Roles that may run analyses (a grid officer only on their own grid, by scope).
ANALYSIS_ROLES = STAFF_ROLES
#: Digits of GeoJSON coordinates: 1e-8 degrees is about a millimetre, so slivers keep shape.
GEOJSON_DIGITS = 8


@dataclass(frozen=True)
class Scope:
    """The area and generation an analysis covers (``path`` None: the whole system)."""

    generation: int
    current: bool
    area_code: str | None
    path: str | None
    level: str | None
    name: str | None

    def params(self) -> dict[str, Any]:
        """Return the bound parameters every analysis query uses (:g, :scope)."""
        return {"g": self.generation, "scope": self.path}

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.area_code,
            "name": self.name,
            "level": self.level,
            "generation": self.generation,
            "current_generation": self.current,
        }


class Where(TypedDict, total=False):
    """The keywords every ``run_*`` takes for what it covers (``**where: Unpack[Where]``)."""

    #: who asks: their role may run analyses, their area bounds the scope
    principal: Required[Principal]
    #: the area analysed with everything below it (default: the caller's own; 404 outside
    #: their scope)
    area_code: str | None
    #: the boundary generation (default: the current one)
    generation: int | None


def resolve_scope(conn: Connection, **where: Unpack[Where]) -> Scope:
    """Return the scope to analyse: ``area_code`` (default the caller's) in ``generation``.

    403 for roles that may not run analyses or read a pending generation; 404 for an area
    that does not exist in the generation or lies outside the caller's scope.
    """
    unexpected = where.keys() - (Where.__required_keys__ | Where.__optional_keys__)
    if unexpected:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unexpected))}")
    principal = where["principal"]
    area_code, generation = where.get("area_code"), where.get("generation")
    if principal.role not in ANALYSIS_ROLES:
        raise ForbiddenError(f"a {principal.role} may not run analyses", field="role")
    # PostGIS functions carry high planner costs, which push these one-off statements over
    # the JIT thresholds: compiling them took over a second for 50 ms of work. Transaction
    # scoped, so the caller's connection is left as it was.
    conn.execute(text("SET LOCAL jit = off"))
    current = conn.execute(text("SELECT max(id) FROM generation WHERE active")).scalar()
    if generation is None:
        if current is None:
            raise NotFoundError("no boundaries have been activated yet", field="generation")
        generation = current
    else:
        row = conn.execute(
            text("SELECT active FROM generation WHERE id = :g"), {"g": generation}
        ).first()
        if row is None:
            raise NotFoundError(f"generation {generation} does not exist", field="generation")
        require_readable_generation(principal, generation, row.active)
    code = area_code or principal.area_code
    if code is None:  # an admin without an area: everything
        return Scope(generation, generation == current, None, None, None, None)
    row = conn.execute(
        text(
            "SELECT code, name, level, path FROM area WHERE code = :c "
            "AND generation_low <= :g AND generation_high >= :g"
        ),
        {"c": code, "g": generation},
    ).first()
    # Outside the caller's scope answers like "does not exist" (no probing of codes).
    if row is None or not principal.covers_path(row.path):
        raise NotFoundError(
            f"no area {code} in generation {generation} that you may analyse", field="area"
        )
    return Scope(generation, generation == current, row.code, row.path, row.level, row.name)


def area_in_scope(alias: str = "a", column: str = "path") -> str:
    """Return the SQL condition "this path is the scope's area or below it" (param :scope)."""
    path = f"{alias}.{column}"
    return f"(CAST(:scope AS text) IS NULL OR {path} = :scope OR {path} LIKE :scope || '/%')"


def located(table: str, columns: tuple[str, ...], *, scope: Scope) -> str:
    """Return a subquery of ``table`` rows with their cells in the analysed generation.

    ``table`` and ``columns`` are fixed identifiers from the calling module, never input.
    The subquery exposes ``columns`` plus ``area_path``, ``grid_code``, ``community_code``.
    """
    cols = ", ".join(f"e.{c}" for c in columns)
    stored = f"SELECT {cols}, e.area_path, e.grid_code, e.community_code FROM {table} e"
    if scope.current:
        # Cells written by the database for the current generation: a plain, indexable scan.
        return f"({stored})"
    relocated = (
        f"SELECT {cols}, loc.area_path, loc.grid_code, loc.community_code FROM {table} e "
        "CROSS JOIN LATERAL locate_point(e.geom, :g) loc"
    )
    if _RELOCATE_ALL.get():
        return f"({relocated})"
    # The rows that may move are located by locate_point's own first step inline (the grid
    # covering the point; no function call per row), and by locate_point where no grid does
    # (OFFSET 0 keeps that a one-time filter of the lateral: the call is skipped otherwise;
    # and each part's area read by its id, not found again through the areas' GiST index).
    moved = (
        f"SELECT {cols}, coalesce(grid.path, whole.area_path) AS area_path, "
        "coalesce(split_part(grid.path, '/', 4), whole.grid_code) AS grid_code, "
        "coalesce(split_part(grid.path, '/', 3), whole.community_code) AS community_code "
        f"FROM {table} e LEFT JOIN LATERAL (SELECT a.path FROM area_part p CROSS JOIN LATERAL "
        "(SELECT path, geom FROM area WHERE id = p.area_id OFFSET 0) a "
        f"WHERE p.depth = 3 AND p.geom && e.geom AND {_valid('p', ':g')} "
        "AND ST_Covers(a.geom, e.geom) ORDER BY p.code LIMIT 1) grid ON true "
        "LEFT JOIN LATERAL (SELECT * FROM locate_point(e.geom, :g) WHERE grid.path IS NULL "
        "OFFSET 0) whole ON true"
    )
    may_move = f"coalesce({_MAY_MOVE}, true)"  # every row in exactly one branch
    return f"({stored} WHERE NOT {may_move} UNION ALL {moved} WHERE {may_move})"


def _valid(alias: str, generation: str) -> str:
    return f"({alias}.generation_low <= {generation} AND {alias}.generation_high >= {generation})"


_CURRENT_ID = "(SELECT max(id) FROM generation WHERE active)"
#: True (never NULL) for a row whose cells in generation :g may differ from those stored: not
#: located; located in an area (its path) that is not one of both the current generation and
#: :g (a closed case keeps the cells it was handled in, perhaps of an older generation); or
#: lying in an area :g has and the current generation has not (those collected once, a
#: point-in-polygon test a row; entities are points). Stored cells are the current
#: generation's, and locate_point picks the deepest covering area, the lowest code first:
#: with neither, the same area in both.
_MAY_MOVE = (
    "(e.area_path IS NULL"
    f" OR e.area_path NOT IN (SELECT o.path FROM area o WHERE {_valid('o', _CURRENT_ID)}"
    f" AND {_valid('o', ':g')})"
    " OR coalesce(ST_Intersects(e.geom, (SELECT ST_CollectionExtract(ST_Collect(n.geom), 3)"
    f" FROM area n WHERE {_valid('n', ':g')} AND NOT {_valid('n', _CURRENT_ID)})), false))"
)
_RELOCATE_ALL: ContextVar[bool] = ContextVar("relocate_all", default=False)


@contextmanager
def relocating_everything() -> Iterator[None]:
    """Within it, :func:`located` re-locates every row in another generation than the
    current one (the reference the proportional re-location is tested and measured against)."""
    token = _RELOCATE_ALL.set(True)
    try:
        yield
    finally:
        _RELOCATE_ALL.reset(token)


def geometry_json(expr: str, enabled: bool) -> str:
    """Return the select expression of ``expr`` as GeoJSON text (or NULL when disabled)."""
    if not enabled:
        return "NULL"
    return f"ST_AsGeoJSON({expr}, {GEOJSON_DIGITS})"


def parse_geometry(value: str | None) -> dict | None:
    """Return the GeoJSON dict of a ``ST_AsGeoJSON`` text (None stays None)."""
    return None if value is None else orjson.loads(value)


def ratio(part: float, whole: float) -> float | None:
    """Return part / whole rounded to 4 places, or None when whole is 0."""
    return round(part / whole, 4) if whole else None


# The analyses themselves; imported last because they use the helpers above.
from service.analysis.care import run_care  # noqa: E402
from service.analysis.organisation import run_organisation  # noqa: E402
from service.analysis.staffing import run_staffing  # noqa: E402
from service.analysis.topology import run_topology  # noqa: E402
from service.analysis.workload import run_workload  # noqa: E402

#: Name → function, in the order a report presents them.
ANALYSES = {
    "staffing": run_staffing,
    "topology": run_topology,
    "organisation": run_organisation,
    "care": run_care,
    "workload": run_workload,
}
