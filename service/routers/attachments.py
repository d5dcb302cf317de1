"""``/cases/{id}/attachments``: photos of a case, uploaded before the action that cites them.

A handler's feedback carries ``attachments``: URLs. A tablet uploads each photo here first
(the body is the image itself, or a ``multipart/form-data`` form with a ``file`` part) and
puts the URL it gets back into the action. A photo is stored once per case, keyed by the
SHA-256 of its bytes (:mod:`service.repositories.attachments`): a retried upload (a weak
network, an offline queue sending again) answers the same URL and stores nothing new, so no
``Idempotency-Key`` is needed (one is accepted and changes nothing). The size is bounded
before the body is read (``WANGGE_API_MAX_ATTACHMENT_BYTES``, :mod:`service.edge.limits`).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import Response

from service.auth import MANAGER_ROLES
from service.deps import PrincipalDep
from service.dispatch import cases as case_repo
from service.errors import (
    ForbiddenError,
    PayloadTooLargeError,
    UnprocessableError,
    WanggeError,
)
from service.repositories import attachments as repo
from service.responses import JSON
from service.tables import ATTACHMENT_MEDIA_TYPES

__all__ = ["router", "sniff_media_type"]

router = APIRouter(tags=["cases"])

#: Who may attach photos: whoever may act on cases (planners only read).
UPLOAD_ROLES = frozenset({*MANAGER_ROLES, "grid_officer"})
#: Leading bytes of each accepted type.
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)
CaseId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the case (incident) id")]
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="the photo's SHA-256")]


class UnsupportedMediaTypeError(WanggeError):
    status = 415
    title = "Unsupported media type"


def sniff_media_type(data: bytes) -> str | None:
    """Return the image type of ``data`` from its first bytes (None: not an accepted image)."""
    for magic, media in _MAGIC:
        if data.startswith(magic):
            return media
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


async def _body(request: Request) -> bytes:
    """Return the photo's bytes: the raw body, or the ``file`` part of a form."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return await request.body()
    form = await request.form(max_files=1, max_fields=10)
    try:
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise UnprocessableError("send the photo as the form's 'file' part", field="file")
        return await part.read()
    finally:
        await form.close()


_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            **{
                m: {"schema": {"type": "string", "format": "binary"}}
                for m in ATTACHMENT_MEDIA_TYPES
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


@router.post(
    "/cases/{case_id:int}/attachments",
    summary="Attach a photo to a case (answers the URL to cite in an action)",
    status_code=201,
    openapi_extra=_UPLOAD_DOC,
    description="The body is a JPEG, PNG or WebP photo (or a form with a `file` part). "
    "201 with `url` when stored, 200 with the same `url` when this case already has these "
    "bytes (a retry). Put `url` in the `attachments` of the action (e.g. `feedback`).",
    responses={
        200: {"description": "the case already had this photo: its URL"},
        415: {"description": "not a JPEG, PNG or WebP image"},
    },
)
async def upload_attachment(
    request: Request,
    principal: PrincipalDep,
    case_id: CaseId,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", max_length=200, description="accepted; not needed"),
    ] = None,
) -> JSON:
    if principal.role not in UPLOAD_ROLES:
        raise ForbiddenError(f"a {principal.role} token does not attach photos to cases")
    data = await _body(request)
    if not data:
        raise UnprocessableError("the photo is empty", field="body")
    limit = request.app.state.settings.api.max_attachment_bytes
    if len(data) > limit:
        raise PayloadTooLargeError(f"the photo is over {limit} bytes", field="body")
    media_type = sniff_media_type(data)
    if media_type is None:
        raise UnsupportedMediaTypeError(
            f"a photo is {', '.join(ATTACHMENT_MEDIA_TYPES)}", field="body"
        )
    # A few megabytes: hashed off the event loop.
    sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    async with request.app.state.engine.begin() as conn:
        # 404 for a case the caller does not see, as everywhere.
        case = await case_repo.get_case(conn, principal=principal, case_id=case_id)
        created = await repo.store_attachment(
            conn,
            case_id=case_id,
            sha256=sha256,
            media_type=media_type,
            data=data,
            created_by=principal.token_id,
            reported_at=case["reported_at"],
        )
    url = str(request.url_for("case_attachment", case_id=case_id, sha256=sha256))
    return JSON(
        {"url": url, "sha256": sha256, "media_type": media_type, "bytes": len(data)},
        status_code=201 if created else 200,
        headers={"Location": url},
    )


@router.get(
    "/cases/{case_id:int}/attachments/{sha256}",
    name="case_attachment",
    summary="A photo of a case",
    response_class=Response,
    responses={200: {"content": {m: {} for m in ATTACHMENT_MEDIA_TYPES}, "description": "it"}},
)
async def case_attachment(
    request: Request, principal: PrincipalDep, case_id: CaseId, sha256: Sha256
) -> Response:
    async with request.app.state.engine.connect() as conn:
        await case_repo.get_case(conn, principal=principal, case_id=case_id)
        media_type, data = await repo.get_attachment(conn, case_id=case_id, sha256=sha256)
    etag = f'"{sha256}"'
    headers = {
        # Its address names its bytes: it never changes; it is the caller's, not a proxy's.
        "Cache-Control": "private, max-age=31536000, immutable",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; img-src 'self'",
        "Vary": "Authorization, X-API-Key, Cookie",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)
