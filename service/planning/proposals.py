"""Automatic proposals as drafts: an area cut into k balanced, contiguous grids.

:func:`create_proposal_draft` measures the area as :mod:`service.planning.metrics` does
(the same population, households, units and incidents), cuts it with
:func:`geo.proposal.propose_grids` and stores the result as a new draft
(:func:`service.repositories.plans.create_plan_from_grids`), which then takes edits, metrics,
what-if coverage and publishing like a hand-drawn one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import geopandas as gpd
from sqlalchemy import Connection, text

from geo.crs import STORAGE_SRID
from service.errors import NotFoundError, UnprocessableError
from service.planning.metrics import CACHE, plan_context
from service.repositories import plans as plans_repo

__all__ = ["create_proposal_draft", "MAX_GRIDS"]

#: A proposal's grids at most (a county of the demo has 66; the partition is superlinear).
MAX_GRIDS = 200

_AREA_SQL = text(
    "SELECT a.code, a.path, a.level, g.id AS generation FROM area a "
    "JOIN generation g ON g.id = (SELECT max(id) FROM generation WHERE active) "
    "WHERE a.code = :code AND a.generation_low <= g.id AND a.generation_high >= g.id"
)
_NAMES_SQL = text(
    "SELECT code, name FROM area WHERE code = ANY(CAST(:codes AS text[])) "
    "AND generation_low <= :g AND generation_high >= :g"
)


def _grid_name(community_name: str, seq: int) -> str:
    return f"{community_name}第{seq}网格"


def create_proposal_draft(
    conn: Connection,
    *,
    name: str,
    area_code: str,
    k: int,
    created_by: str,
    created_by_name: str = "",
    balance: Mapping[str, float] | None = None,
    epsilon: float = 0.04,
    seed: int = 0,
    nest: bool = True,
    bursts: int = 10,
) -> dict[str, Any]:
    """Return ``{"plan_id", "proposal": {...}}`` for a new draft of ``k`` proposed grids.

    404 for an area not in the current generation; 422 naming the problem when the area
    cannot be cut as asked (fewer grids than communities, no population, no balanced cut).
    """
    if not 1 <= k <= MAX_GRIDS:
        raise UnprocessableError(f"k must be between 1 and {MAX_GRIDS}, got {k}", field="k")
    area = conn.execute(_AREA_SQL, {"code": area_code}).first()
    if area is None:
        raise NotFoundError(f"no area {area_code} in the current generation", field="area_code")
    if area.level not in ("district", "community"):
        raise UnprocessableError(
            f"a proposal cuts a community or a county (district); {area_code} is a {area.level}",
            field="area_code",
        )
    plan_like = {"area_code": area_code, "base_generation": area.generation, "area_path": area.path}
    ctx, _teams = plan_context(conn, plan_like)
    if not ctx.communities:
        raise UnprocessableError(f"area {area_code} has no communities", field="area_code")
    layers = {
        "population": ctx.population,
        "households": ctx.households,
        "units": ctx.units,
        "incidents": ctx.incidents,
    }
    # GerryChain takes a second to import: only when a proposal is asked for.
    from geo.proposal import ProposalError, propose_grids

    try:
        proposal = propose_grids(
            ctx.communities,
            k,
            layers,
            balance=balance,
            epsilon=epsilon,
            seed=seed,
            nest=nest,
            bursts=bursts,
        )
    except ProposalError as exc:
        raise UnprocessableError(str(exc), field="k") from None
    names = {
        r.code: r.name
        for r in conn.execute(
            _NAMES_SQL, {"codes": sorted(set(proposal.communities)), "g": area.generation}
        )
    }
    rows = []
    for code, geom, comm in zip(proposal.codes, proposal.geoms, proposal.communities, strict=True):
        rows.append(
            {
                "parent_code": comm,
                "name": _grid_name(names.get(comm, comm), int(code[-3:])),
                "geometry": geom,
            }
        )
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=f"EPSG:{STORAGE_SRID}")
    plan_id = plans_repo.create_plan_from_grids(
        conn,
        name=name,
        area_code=area_code,
        created_by=created_by,
        created_by_name=created_by_name,
        grids=frame,
    )
    CACHE.clear_plan(plan_id)
    return {
        "plan_id": plan_id,
        "proposal": {
            "k": k,
            "nest": nest,
            "epsilon": epsilon,
            "balance": dict(balance or {"population": 1.0}),
            "seed": seed,
            "max_abs_dev": round(proposal.max_abs_dev, 4),
            "max_abs_dev_in_community": round(proposal.max_abs_dev_in_community, 4),
            "seconds": round(proposal.seconds, 2),
        },
    }
