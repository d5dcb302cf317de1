"""Boundary plans: drafts of an area's grids, their edits (If-Match), diff, publish.

Planners and admins only; a planner works on areas inside their own. The work runs in a
worker thread on the primary's synchronous engine, one transaction per request
(:mod:`service.repositories.plans`; the geometry is :mod:`geo.planedit`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import shapely
import shapely.geometry
from fastapi import APIRouter, Depends, File, Form, Header, Path, Request, UploadFile
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from geo.planedit import PlanEditError, read_grid_file
from geo.planmetrics import measure_shapes
from geo.population import LocalFrame
from service.auth import Principal
from service.deps import ApiSettingsDep, PrincipalDep, SyncEngineDep, WriteConnDep
from service.edge.limits import read_upload
from service.errors import ForbiddenError, UnprocessableError
from service.idempotency import request_fingerprint, run_idempotent, run_idempotent_sync
from service.inputs import NUL_REASON, NulFree, find_nul
from service.planning.metrics import edit_metrics
from service.preconditions import IfMatch as IfMatchCondition
from service.preconditions import parse_if_match
from service.repositories import plans as repo
from service.responses import JSON
from service.schemas.plans import (
    PlanCreate,
    PlanDiff,
    PlanEdit,
    PlanEditRead,
    PlanEditResult,
    PlanPublished,
    PlanRead,
)

router = APIRouter(prefix="/plans", tags=["plans"])
log = logging.getLogger("wangge")

#: Who plans boundaries (issue 14: publishing is for planners and admins only).
GEOJSON = "application/geo+json"
PLAN_ROLES = frozenset({"admin", "planner"})
PlanId = Annotated[int, Path(ge=1, le=2**62)]
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", max_length=64, description='the plan\'s ETag, e.g. "3"'),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="makes a retry safe: the same key and request again answer the first "
        "answer (even once the plan has moved on), the same key with another request is 422",
    ),
]
_STALE = {
    412: {"description": "If-Match names an older version of the plan: read it and redo"},
    428: {"description": "If-Match is missing"},
}


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _require_planner(principal: Principal) -> None:
    if principal.role not in PLAN_ROLES:
        raise ForbiddenError(
            f"boundary plans are for planners and admins; you are {principal.role}",
            field="role",
        )


def _require_area(principal: Principal, path: str | None, code: str) -> None:
    if path is None or not principal.covers_path(path):
        raise ForbiddenError(f"area {code} is outside your area", field="area_code")


def _plan_for(conn, principal: Principal, plan_id: int, *, for_update: bool = False) -> dict:
    return repo.get_plan_in(conn, plan_id, principal.covers_path, for_update=for_update)


def _public(plan: dict) -> dict:
    return {k: v for k, v in plan.items() if k != "area_path"}


def _feature_collection(grids) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": g.key,
                "properties": {
                    "key": g.key,
                    "code": g.code,
                    "parent_code": g.parent_code,
                    "name": g.name,
                },
                "geometry": shapely.geometry.mapping(g.geom),
            }
            for g in grids
        ],
    }


def _edit_metrics(conn, plan_id: int, removed: list[str], added) -> dict[str, Any] | None:
    """Return the measures of the grids an edit changed and of the plan
    (:func:`service.planning.metrics.edit_metrics`), read in the edit's transaction (so a
    replayed answer carries them); should that fail, the changed grids' shapes alone."""
    changed = {g.key: g.geom for g in added}
    try:
        with conn.begin_nested():  # a failure rolls back the measuring, not the edit
            return edit_metrics(conn, plan_id=plan_id, removed=list(removed), changed=changed)
    except Exception:  # the edit stands; its measures are a courtesy
        log.exception("plan %s: measuring the edit failed", plan_id)
    if not changed:
        return None
    geoms = list(changed.values())
    frame = LocalFrame.around(shapely.GeometryCollection(geoms))
    shapes = measure_shapes(frame.to_metric(geoms))
    shapes.insert(0, "key", list(changed))
    return {"grids": shapes.to_dict(orient="records"), "plan": None}


@dataclass(frozen=True)
class PlanChange:
    """A change of one plan as a request asks it (every edit, publish, discard): who, which
    plan, its ``If-Match`` and ``Idempotency-Key``. :meth:`run` is the one way it is made."""

    request: Request
    engine: Any
    principal: Principal
    plan_id: int
    if_match: IfMatchCondition
    key: str | None

    @property
    def actor(self) -> dict[str, Any]:
        """Who changes the plan, and at which version (the repository's keywords)."""
        return {
            "plan_id": self.plan_id,
            "if_match": self.if_match,
            "actor": self.principal.token_id,
            "actor_name": self.principal.name,
        }

    async def run(self, sent: Any, change: Callable[[Connection], dict[str, Any]]) -> JSON:
        """Make the change: the plan read in the caller's scope, the key claimed, then
        ``change`` (the repository's: lock, If-Match, write, log) and its answer, all in one
        transaction in a worker thread.

        The key is claimed before If-Match is judged: a retry of an edit that went through
        is answered the first answer again (``Idempotent-Replayed: true``), never a 412 for
        the version its own first attempt made. ``sent`` is the request as the key's
        fingerprint reads it (the same key with another request is a 422)."""
        fingerprint = request_fingerprint("POST", self.request.url.path, sent)

        def work() -> tuple[int, Any, bool]:
            with self.engine.begin() as conn:
                _plan_for(conn, self.principal, self.plan_id)
                return run_idempotent_sync(
                    conn,
                    principal=self.principal,
                    key=self.key,
                    fingerprint=fingerprint,
                    work=lambda: (200, change(conn)),
                )

        status, answer, replayed = await run_in_threadpool(work)
        headers = _etag(answer["version"])
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSON(answer, status_code=status, headers=headers)

    async def edit_grids(self, sent: Any, edit: dict[str, Any], log: dict[str, Any]) -> JSON:
        """Run a grid edit (``log``: what the plan's history keeps of it); its answer has
        the grids added and their measures."""

        def change(conn: Connection) -> dict[str, Any]:
            done = repo.edit_plan(conn, edit=edit, payload=log, **self.actor)
            return {
                "plan_id": self.plan_id,
                "version": done["version"],
                "removed": done["removed"],
                "added": _feature_collection(done["added"]),
                "metrics": _edit_metrics(conn, self.plan_id, done["removed"], done["added"]),
            }

        return await self.run(sent, change)


def _plan_change(
    request: Request,
    engine: SyncEngineDep,
    principal: PrincipalDep,
    plan_id: PlanId,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> PlanChange:
    _require_planner(principal)
    return PlanChange(
        request, engine, principal, plan_id, parse_if_match(if_match), idempotency_key
    )


PlanChangeDep = Annotated[PlanChange, Depends(_plan_change)]


@router.post(
    "",
    status_code=201,
    response_model=PlanRead,
    summary="Start a draft (planners)",
    description="Copy the current grids of a community or county into a new draft; dispatch "
    "keeps using the current grids until the draft is published. Send an `Idempotency-Key` "
    "header to make a retry safe.",
)
async def create_plan(
    request: Request, conn: WriteConnDep, principal: PrincipalDep, body: PlanCreate
) -> JSON:
    _require_planner(principal)
    # Read by hand, as the entity routes do: a key reused with another body is a 422.
    key = request.headers.get("idempotency-key")
    fingerprint = request_fingerprint("POST", request.url.path, body.model_dump(mode="json"))

    def create(c) -> dict:
        path = c.execute(repo.AREA_PATH_SQL, {"code": body.area_code}).scalar()
        _require_area(principal, path, body.area_code)
        plan_id = repo.create_plan_from_area(
            c,
            name=body.name.strip(),
            area_code=body.area_code,
            created_by=principal.token_id,
            created_by_name=principal.name,
        )
        return _public(repo.get_plan(c, plan_id))

    async def work():
        return 201, await conn.run_sync(create)

    status, plan, replayed = await run_idempotent(
        conn, principal=principal, key=key, fingerprint=fingerprint, work=work
    )
    headers = {**_etag(plan["version"]), "Location": f"/plans/{plan['id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSON(plan, status_code=status, headers=headers)


@router.get("", response_model=list[PlanRead], summary="Plans of your area, newest first")
async def list_plans(engine: SyncEngineDep, principal: PrincipalDep) -> JSON:
    _require_planner(principal)

    def work() -> list[dict]:
        with engine.connect() as conn:
            return repo.list_plans(conn)

    plans = await run_in_threadpool(work)
    return JSON(
        [_public(p) for p in plans if p["area_path"] and principal.covers_path(p["area_path"])]
    )


@router.get(
    "/{plan_id:int}",
    response_model=PlanRead,
    summary="One plan; its ETag is the version",
    description="Send the `ETag` back as `If-Match` with an edit: a plan edited meanwhile "
    "answers 412 instead of losing the other edit.",
)
async def get_plan(engine: SyncEngineDep, principal: PrincipalDep, plan_id: PlanId) -> JSON:
    _require_planner(principal)

    def work() -> dict:
        with engine.connect() as conn:
            return _plan_for(conn, principal, plan_id)

    plan = await run_in_threadpool(work)
    return JSON(_public(plan), headers=_etag(plan["version"]))


@router.get(
    "/{plan_id:int}/grids",
    summary="The plan's grids (GeoJSON)",
    description="Properties: `key` (names the grid in edits), `code` (the current code "
    "while unchanged, else null: a new code comes with publishing), `parent_code`, `name`.",
    responses={
        200: {
            "description": "a FeatureCollection",
            "content": {GEOJSON: {"schema": {"type": "object"}}},
        }
    },
)
async def plan_grids(engine: SyncEngineDep, principal: PrincipalDep, plan_id: PlanId) -> JSON:
    _require_planner(principal)

    def work():
        with engine.connect() as conn:
            plan = _plan_for(conn, principal, plan_id)
            return plan, repo.read_plan_grids(conn, plan_id)

    plan, frame = await run_in_threadpool(work)
    grids = [
        repo.PlanGrid(r.key, r.parent_code, r.name, r.geometry, code=r.code)
        for r in frame.itertuples(index=False)
    ]
    return JSON(_feature_collection(grids), headers=_etag(plan["version"]), media_type=GEOJSON)


@router.get("/{plan_id:int}/edits", response_model=list[PlanEditRead], summary="Who changed what")
async def plan_edits(engine: SyncEngineDep, principal: PrincipalDep, plan_id: PlanId) -> JSON:
    _require_planner(principal)

    def work() -> list[dict]:
        with engine.connect() as conn:
            _plan_for(conn, principal, plan_id)
            return repo.list_plan_edits(conn, plan_id)

    return JSON(await run_in_threadpool(work))


@router.post(
    "/{plan_id:int}/edits",
    response_model=PlanEditResult,
    summary="Edit a draft (If-Match required)",
    description="One edit, chosen by `op`: `split_line` (cut a grid along a line drawn "
    "across it), `split_parts` (into k compact pieces of equal area), `merge` (grids of one "
    "community that form one polygon), `move_edge` (redraw two neighbours' shared edge "
    "along a line), `reassign` (the part of `from_key` inside a polygon goes to its "
    "neighbour `to_key`), `replace_all` (a whole redrawn set as GeoJSON features). Every "
    "edit keeps the partition valid or is refused with 422 and a `reason`: "
    "`self_intersecting`, `multipart`, `line_misses`, `region_misses`, `not_adjacent`, "
    "`crosses_community`, `gap`, `overlap`, `sliver`, `too_many_parts`, `unknown_grid`, "
    "`invalid_geometry`. Answers the new grids with their measures and the new ETag.",
    responses=_STALE,
)
async def edit_plan(change: PlanChangeDep, body: PlanEdit) -> JSON:
    sent = body.model_dump(mode="json")
    nul = find_nul(sent)
    if nul is not None:
        raise UnprocessableError(f"{nul}: {NUL_REASON}", field=nul)
    edit, log = dict(sent), sent
    if body.op == "replace_all":
        edit["features"] = [
            {**f["properties"], "geometry": f["geometry"]} for f in sent["features"]
        ]
        # The log keeps what was done, not megabytes of coordinates.
        log = {"op": "replace_all", "features": len(edit["features"])}
    return await change.edit_grids(sent, edit, log)


@router.post(
    "/{plan_id:int}/edits/file",
    response_model=PlanEditResult,
    summary="Replace a draft's grids from a file (If-Match required)",
    description="A redrawn set as GeoJSON, GeoPackage, KML or zipped Shapefile (polygons; "
    "fields `name`, optional `parent_code` and `code`, in any case), in EPSG:4326 or CGCS2000 "
    "(other CRSs, e.g. Gauss-Kruger zones, are transformed; heights are dropped). Checked as "
    "`replace_all`; a file that is empty, not one of these, a zip without a layer, points or "
    "lines, or no rows is a 422 naming it.",
    responses=_STALE,
)
async def replace_from_file(
    change: PlanChangeDep,
    api: ApiSettingsDep,
    file: UploadFile = File(description="GeoJSON, GeoPackage, KML or zipped Shapefile of grids"),
    layer: NulFree | None = Form(None, max_length=200),
) -> JSON:
    data = await read_upload(file, api)
    filename = file.filename or "upload"
    try:
        features = await run_in_threadpool(read_grid_file, data, filename, layer=layer)
    except PlanEditError as exc:
        raise UnprocessableError(
            exc.message, field=exc.field or "file", extra={"reason": exc.reason}
        ) from None
    sent = {"file_sha256": hashlib.sha256(data).hexdigest(), "filename": filename, "layer": layer}
    edit = {"op": "replace_all", "features": features}
    log = {"op": "replace_all", "file": filename, "features": len(features)}
    return await change.edit_grids(sent, edit, log)


@router.get(
    "/{plan_id:int}/diff",
    response_model=PlanDiff,
    summary="What publishing would change",
    description="Against the current generation: grids unchanged, retired and added; "
    "territory moving from each retired grid to each new one (m²); entities that would move "
    "(units and facilities by id; open cases; care households counted only); team members "
    "and grid officers whose grid would be retired.",
)
async def plan_diff(engine: SyncEngineDep, principal: PrincipalDep, plan_id: PlanId) -> JSON:
    _require_planner(principal)

    def work() -> dict:
        with engine.connect() as conn:
            _plan_for(conn, principal, plan_id)
            return repo.diff_plan(conn, plan_id=plan_id)

    diff = await run_in_threadpool(work)
    return JSON(diff, headers=_etag(diff["version"]))


@router.post(
    "/{plan_id:int}/publish",
    response_model=PlanPublished,
    summary="Publish a draft as the next boundary generation (planners, admins)",
    description="Atomic: the plan is checked (a valid partition of its area, drawn on the "
    "current generation, no other generation pending), new grids get new codes (their "
    "community's next sequence numbers), unchanged grids keep theirs, the new generation is "
    "activated and entities re-mapped (incidents keep the grid they were reported in; "
    "closed cases the cells they were handled in). A refused publish changes nothing. "
    "`If-Match` is optional here; when sent, a stale one is refused (412).",
    responses={**_STALE, 409: {"description": "not a draft, base not current, or pending"}},
)
async def publish_plan(change: PlanChangeDep) -> JSON:
    return await change.run(None, lambda conn: repo.publish_plan(conn, **change.actor))


@router.post("/{plan_id:int}/discard", response_model=PlanRead, summary="Discard a draft")
async def discard_plan(change: PlanChangeDep) -> JSON:
    def discard(conn: Connection) -> dict[str, Any]:
        repo.discard_plan(conn, **change.actor)
        return _public(repo.get_plan(conn, change.plan_id))

    return await change.run(None, discard)
