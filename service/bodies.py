"""Read big JSON bodies off the event loop, for the routes that take them.

FastAPI decodes and validates a declared body on the event loop, before the handler runs
(and before its dependencies authenticate the caller): a 2 MB batch of 10 000 points costs
tens of milliseconds of validation in which no other request moves, and a 200 MB boundary
collection seconds. Routes taking such bodies declare no body parameter; their handler
authenticates first, then calls :func:`read_json_body`, which decodes (and validates) in a
worker thread once the body is larger than a small one. Errors read as FastAPI's (422
problem+json naming ``body.…``), and :func:`json_body_doc` documents the body in OpenAPI as
a declared one would be. The size limit is checked before any of this, as the body arrives
(:mod:`service.edge.limits`).
"""

from __future__ import annotations

import json
from typing import Any

import anyio.to_thread
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from service.querymodels import request_validation_error

__all__ = ["INLINE_BYTES", "read_json_body", "json_body_doc"]

#: Bodies up to this size are decoded on the loop: a thread hop costs more than they do.
INLINE_BYTES = 64 * 1024


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # as FastAPI: a body without a type is read as JSON
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _decode(raw: bytes, adapter: TypeAdapter | None) -> Any:
    try:
        if adapter is None:
            return json.loads(raw)
        return adapter.validate_json(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}]
        ) from None
    except ValidationError as exc:
        raise request_validation_error(exc, "body") from None


async def read_json_body(request: Request, adapter: TypeAdapter | None = None) -> Any:
    """Return the request's JSON body, validated by ``adapter`` if given (422 otherwise).

    Decoded in a worker thread when larger than :data:`INLINE_BYTES`; ``adapter`` is a
    ``pydantic.TypeAdapter`` of the body's model (made once, at import).
    """
    if not _is_json(request.headers.get("content-type")):
        raise RequestValidationError(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ("body",),
                    "msg": "the body must be JSON (Content-Type: application/json)",
                }
            ]
        )
    raw = await request.body()
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required"}]
        )
    if len(raw) <= INLINE_BYTES:
        return _decode(raw, adapter)
    return await anyio.to_thread.run_sync(_decode, raw, adapter)


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def json_body_doc(adapter: TypeAdapter, description: str | None = None) -> dict[str, Any]:
    """Return ``openapi_extra`` declaring a required JSON body of ``adapter``'s type.

    The schema is written in place (nested models inlined, no ``$ref``): a route's extra
    cannot add to the document's components. The body's types must not be recursive.
    """
    schema = adapter.json_schema()
    schema = _inline_refs(schema, schema.get("$defs", {}))
    body: dict[str, Any] = {"content": {"application/json": {"schema": schema}}, "required": True}
    if description:
        body["description"] = description
    return {"requestBody": body}
