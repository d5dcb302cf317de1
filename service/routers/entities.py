"""One router per entity kind, built from its :class:`~service.specs.entity_kinds.EntitySpec`.

Routes: list (filters, bbox, paging), counts, one by id, create (``Idempotency-Key``
honoured), update, delete. Sensitive kinds answer details only to their detail roles and log
every detail read.
"""

# No ``from __future__ import annotations``: FastAPI reads the spec's models from the
# handlers' annotations at definition time.

import typing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic.fields import FieldInfo

from service.crs_output import content_crs, output_crs, shift_items
from service.deps import (
    ApiSettingsDep,
    ConnDep,
    PrincipalDep,
    SyncEngineDep,
    WriteConnDep,
    page,
    page_limit,
    query_model,
)
from service.edge.limits import read_upload
from service.errors import UnprocessableError, problem
from service.idempotency import request_fingerprint, run_idempotent
from service.inputs import Moment, NulFree, Offset, RowId
from service.querymodels import query_parameters_doc
from service.repositories import entities as repo
from service.responses import JSON
from service.schemas.crs import OutputCrs
from service.schemas.entities import CountRow, ImportReport, Page
from service.specs.entity_kinds import ENTITIES, EntitySpec

__all__ = ["routers"]

EntityId = Annotated[RowId, Path()]
# Ids are digits in the path itself (``{entity_id:int}``): /counts and /export are then no
# id, so a PATCH or DELETE of them is 405 naming the allowed methods, not a 422 about an id.
ID_PATH = "/{entity_id:int}"
#: A number as ``float()`` reads it (ASCII only), and four of them for a bounding box.
_NUMBER = r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?"
BBOX_PATTERN = rf"^{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}$"


class _ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grid: str | None = Field(None, pattern=r"^[0-9]{6,18}$", description="current grid code")
    community: str | None = Field(None, pattern=r"^[0-9]{6,18}$")
    district: str | None = Field(None, pattern=r"^[0-9]{6,18}$")
    unassigned: bool | None = Field(None, description="only those outside every grid")
    bbox: str | None = Field(
        None, pattern=BBOX_PATTERN, description="min_lon,min_lat,max_lon,max_lat (WGS84)"
    )
    limit: int | None = Field(None, ge=1)
    offset: Offset = 0
    crs: OutputCrs = None

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            x0, y0, x1, y1 = (float(v) for v in value.split(","))
        except ValueError:
            raise ValueError("bbox is four comma-separated numbers") from None
        if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
            raise ValueError("bbox must be min_lon,min_lat,max_lon,max_lat within the world")
        return value


def _list_model(spec: EntitySpec) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name in spec.filters:
        # The read schema last: a lifecycle's status is read and filtered, never written.
        schemas = (spec.create, spec.update, spec.read)
        schema = next((m for m in schemas if name in m.model_fields), None)
        if schema is None:
            fields[name] = (str | None, None)
            continue
        # The field's bounds too (a filter on an id is bounded like the id it is compared with).
        info = schema.model_fields[name]
        annotation = info.annotation
        if type(None) not in typing.get_args(annotation):
            annotation = annotation | None
        fields[name] = (
            annotation,
            FieldInfo.merge_field_infos(info, default=None, default_factory=None, description=None),
        )
    if spec.lifecycle is not None and spec.lifecycle.column in fields:
        *earlier, last = spec.lifecycle.statuses
        fields[spec.lifecycle.column] = (
            fields[spec.lifecycle.column][0],
            Field(None, description=f"{', '.join(earlier)} or {last}"),
        )
    if spec.time_column is not None:
        column = spec.time_column
        fields["since"] = (Moment | None, Field(None, description=f"`{column}` at or after"))
        fields["until"] = (Moment | None, Field(None, description=f"`{column}` before"))
    return create_model(f"{spec.read.__name__}Query", __base__=_ListQuery, **fields)


def _count_model(spec: EntitySpec) -> type[BaseModel]:
    groups = repo.count_groups(spec)
    name = "|".join(groups)
    by = Field(
        "grid" if "grid" in groups else groups[0],
        pattern=rf"^ *({name}) *(, *({name}) *)*$",
        description=f"comma-separated, any of: {', '.join(groups)}",
    )
    return create_model(
        f"{spec.read.__name__}CountQuery", __config__=ConfigDict(extra="forbid"), by=(str, by)
    )


_FILE = {"type": "string", "format": "binary"}
_EXPORT_SCHEMAS = {
    "geojson": {
        "type": "object",
        "required": ["type", "features"],
        "properties": {"type": {"const": "FeatureCollection"}, "features": {"type": "array"}},
    },
    "csv": {"type": "string"},
}


def _add_transfer_routes(router: APIRouter, spec: EntitySpec) -> None:
    """Import (multipart file upload) and export routes of one entity kind."""
    _add_import_route(router, spec)
    _add_export_route(router, spec)


def _import_refused(request: Request, report) -> Response:
    """Return the 422 of an import refused as a whole, naming its first problem."""
    first = report.problems[0] if report.problems else None
    detail = f"{report.rejected} of {report.rows} rows refused; nothing was imported" + (
        f"; first: row {first.row} {first.field}: {first.reason}" if first else ""
    )
    return problem(
        422,
        "Import refused",
        detail,
        instance=request.url.path,
        field=first.field if first else "file",
        report=report.as_dict(),
    )


def _add_import_route(router: APIRouter, spec: EntitySpec) -> None:
    from fastapi import File, Form, UploadFile
    from starlette.concurrency import run_in_threadpool

    from service.transfer import import_file

    @router.post(
        "/import",
        summary=f"Import {spec.name} from a file",
        description="GeoJSON, CSV with coordinate columns, GeoPackage or zipped Shapefile "
        "(members: CSV). All or nothing unless `skip_bad`; answers a per-row report "
        "(row, field, reason) and a summary (accepted, rejected, unassigned, per grid). "
        "`crs` overrides the file's own (a file without one is read as WGS84).",
        response_model=ImportReport,
    )
    async def import_items(
        request: Request,
        principal: PrincipalDep,
        engine: SyncEngineDep,
        api: ApiSettingsDep,
        file: UploadFile = File(description="the file to import"),
        crs: NulFree | None = Form(None),
        lon_column: NulFree | None = Form(None),
        lat_column: NulFree | None = Form(None),
        layer: NulFree | None = Form(None),
        skip_bad: bool = Form(False),
    ) -> JSON:
        data = await read_upload(file, api)

        def work():
            with engine.connect() as conn:
                with conn.begin() as tx:
                    report = import_file(
                        conn,
                        spec,
                        principal=principal,
                        data=data,
                        filename=file.filename or "upload",
                        crs=crs,
                        lon_column=lon_column,
                        lat_column=lat_column,
                        layer=layer,
                        skip_bad=skip_bad,
                    )
                    if not report.committed:
                        tx.rollback()
            return report

        report = await run_in_threadpool(work)
        if not report.committed:
            return _import_refused(request, report)
        return JSON(report.as_dict())


def _add_export_route(router: APIRouter, spec: EntitySpec) -> None:
    from starlette.concurrency import run_in_threadpool

    from geo.tables import TableFormatError
    from service.transfer import EXPORT_MEDIA, export_rows

    formats = tuple(EXPORT_MEDIA) if spec.point else ("csv",)
    ExportFormat = Annotated[
        Literal[formats],
        Query(description="shp: a zipped Shapefile" if spec.point else "no location: csv only"),
    ]

    @router.get(
        "/export",
        summary=f"Export your {spec.name} as a file",
        response_class=Response,
        responses={
            200: {
                "description": f"the {spec.name} you may see, as a file to save",
                "content": {
                    EXPORT_MEDIA[f][0].split(";")[0]: {"schema": _EXPORT_SCHEMAS.get(f, _FILE)}
                    for f in formats
                },
            }
        },
    )
    async def export_items(
        principal: PrincipalDep, engine: SyncEngineDep, format: ExportFormat = formats[0]
    ) -> Response:
        if format not in EXPORT_MEDIA:
            raise UnprocessableError(
                f"unknown format {format!r}; one of {', '.join(EXPORT_MEDIA)}", field="format"
            )

        def work() -> bytes:
            with engine.begin() as conn:
                return export_rows(conn, spec, principal=principal, format=format)

        try:
            data = await run_in_threadpool(work)
        except TableFormatError as exc:
            # The rows do not fit the format (a Shapefile field holds 254 bytes of text).
            raise UnprocessableError(str(exc), field="format") from None
        media, ext = EXPORT_MEDIA[format]
        return Response(
            data,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{spec.table}.{ext}"'},
        )


def _make_router(spec: EntitySpec) -> APIRouter:
    router = APIRouter(prefix=f"/{spec.name}", tags=[spec.name])
    _add_list_routes(router, spec)
    # Before "/{entity_id}", so that /import and /export are not taken for ids.
    _add_transfer_routes(router, spec)
    _add_item_routes(router, spec)
    return router


def _add_list_routes(router: APIRouter, spec: EntitySpec) -> None:
    """The list (filters, bbox, paging) and counts routes of one entity kind."""
    ListQuery = _list_model(spec)
    detail_note = (
        f" Sensitive: details only for {', '.join(sorted(spec.detail_roles))}; every read "
        "is logged."
        if spec.sensitive
        else ""
    )

    @router.get(
        "",
        summary=f"List {spec.name} in your area",
        openapi_extra=query_parameters_doc(ListQuery),
        response_model=Page[spec.read],
        description=f"Ordered by id, paged with a `next` link.{detail_note}",
    )
    async def list_items(
        request: Request,
        principal: PrincipalDep,
        q: Annotated[ListQuery, Depends(query_model(ListQuery))],
        api: ApiSettingsDep,
        conn: WriteConnDep,  # a sensitive kind's detail reads are logged
    ) -> JSON:
        limit = page_limit(api, q.limit)
        bbox = tuple(float(v) for v in q.bbox.split(",")) if q.bbox else None
        items, total = await repo.list_entities(
            conn,
            spec,
            principal=principal,
            filters={f: getattr(q, f) for f in spec.filters},
            grid=q.grid,
            community=q.community,
            district=q.district,
            unassigned=q.unassigned,
            bbox=bbox,
            since=getattr(q, "since", None),
            until=getattr(q, "until", None),
            limit=limit,
            offset=q.offset,
        )
        crs = output_crs(q.crs, status=422)
        body = page(request, shift_items(items, crs), total, limit=limit, offset=q.offset)
        return JSON(body, headers=content_crs(crs) if spec.point else None)

    CountQuery = _count_model(spec)

    @router.get(
        "/counts",
        summary=f"Count {spec.name} in your area",
        openapi_extra=query_parameters_doc(CountQuery),
        response_model=list[CountRow],
    )
    async def counts(
        principal: PrincipalDep,
        q: Annotated[CountQuery, Depends(query_model(CountQuery))],
        conn: ConnDep,
    ) -> JSON:
        by = [b.strip() for b in q.by.split(",") if b.strip()]
        return JSON(await repo.count_entities(conn, spec, principal=principal, by=by))


def _add_item_routes(router: APIRouter, spec: EntitySpec) -> None:
    """One entity by id, create, change and delete."""

    @router.get(ID_PATH, response_model=spec.read, summary=f"One {spec.label}")
    async def get_item(
        principal: PrincipalDep,
        entity_id: EntityId,
        conn: WriteConnDep,  # a sensitive kind's detail reads are logged
        crs: Annotated[OutputCrs, Query()] = None,
    ) -> JSON:
        name = output_crs(crs, status=422)
        item = await repo.get_entity(conn, spec, principal=principal, entity_id=entity_id)
        return JSON(shift_items([item], name)[0], headers=content_crs(name) if spec.point else None)

    async def create_item(
        request: Request,
        principal: PrincipalDep,
        body: spec.create,
        conn: WriteConnDep,
    ) -> JSON:
        # Read by hand, not declared (so not in OpenAPI, as before): a key reused with another
        # body is refused with 422, a refusal the schema cannot state.
        key = request.headers.get("idempotency-key")
        fingerprint = request_fingerprint("POST", request.url.path, body.model_dump(mode="json"))

        async def work():
            return 201, await repo.create_entity(conn, spec, principal=principal, data=body)

        status, item, replayed = await run_idempotent(
            conn, principal=principal, key=key, fingerprint=fingerprint, work=work
        )
        headers = {"Location": f"/{spec.name}/{item['id']}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSON(item, status_code=status, headers=headers)

    router.add_api_route(
        "",
        create_item,
        methods=["POST"],
        status_code=201,
        response_model=spec.read,
        summary=f"Create a {spec.label}",
        description="Mapped to its grid, community and district at once. Send an "
        "`Idempotency-Key` header to make retries safe.",
    )

    async def update_item(
        principal: PrincipalDep, entity_id: EntityId, body: spec.update, conn: WriteConnDep
    ) -> JSON:
        item = await repo.update_entity(
            conn, spec, principal=principal, entity_id=entity_id, patch=body
        )
        return JSON(item)

    router.add_api_route(
        ID_PATH,
        update_item,
        methods=["PATCH"],
        response_model=spec.read,
        summary=f"Change a {spec.label}",
    )

    @router.delete(ID_PATH, status_code=204, summary=f"Delete a {spec.label}")
    async def delete_item(
        principal: PrincipalDep, entity_id: EntityId, conn: WriteConnDep
    ) -> Response:
        await repo.delete_entity(conn, spec, principal=principal, entity_id=entity_id)
        return Response(status_code=204)


routers = [_make_router(spec) for spec in ENTITIES.values()]
