"""The planning page's draft view: a plan's grids with their metrics, and today's summary.

:func:`plan_draft_view` returns the keyword arguments of :func:`maps.plandraft.add_plan_draft`
(``GET /pages/planning?plan=<id>``): planners and admins, on plans of their own area.
"""

from __future__ import annotations

from typing import Any

import shapely.geometry
from sqlalchemy import Engine

from service.auth import Principal
from service.errors import ForbiddenError, NotFoundError
from service.planning.metrics import metrics_json, read_base_metrics, read_plan_metrics
from service.repositories import plans as plans_repo

__all__ = ["DRAFT_ROLES", "plan_draft_view"]

DRAFT_ROLES = frozenset({"admin", "planner"})


def plan_draft_view(engine: Engine, principal: Principal, plan_id: int) -> dict[str, Any]:
    """Return ``{"name", "grids", "today", "draft"}`` of plan ``plan_id`` for the page.

    403 for other roles; 404 for no such plan or one outside the caller's area.
    """
    if principal.role not in DRAFT_ROLES:
        raise ForbiddenError(
            f"boundary drafts are for planners and admins; you are {principal.role}",
            field="plan",
        )
    with engine.connect() as conn:
        plan = plans_repo.get_plan(conn, plan_id)
        if plan["area_path"] is None or not principal.covers_path(plan["area_path"]):
            # As if it did not exist, like everything outside one's scope.
            raise NotFoundError(f"no plan {plan_id} that you may see", field="plan")
        plan, metrics = read_plan_metrics(conn, plan_id)
        today = read_base_metrics(conn, plan_id)
        grids = plans_repo.read_plan_grids(conn, plan_id)
    rows = {r["key"]: r for r in metrics_json(metrics)["grids"]}
    features = []
    for rec in grids.itertuples(index=False):
        props = dict(rows.get(rec.key, {}))
        props["key"] = rec.key
        props["code"] = rec.code or ""
        props["name"] = rec.name
        features.append(
            {
                "type": "Feature",
                "properties": props,
                "geometry": shapely.geometry.mapping(rec.geometry),
            }
        )
    return {
        "name": plan["name"],
        "grids": {"type": "FeatureCollection", "features": features},
        "today": today.plan,
        "draft": metrics.plan,
    }
