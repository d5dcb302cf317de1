"""Return the published OpenAPI document: token schemes and every error an operation answers.

FastAPI documents what a route returns when it succeeds, and a 422 for routes whose
parameters it parses itself. The errors wangge answers from elsewhere (the token check,
scope checks, the abuse limits, an unreachable database, hand-parsed queries) are the same
for whole classes of operations, so they are declared here, once, by rule:

============  =======================================================================
status        declared on
============  =======================================================================
401, 403,     every operation that takes a token (all but :data:`PUBLIC_PATHS`);
429           429: the failed-authentication limit (``service.edge.limits``)
404           every operation with a path or query parameter (an id, an area, a
              generation, a layer that does not exist or is not yours to see)
409           every write (POST, PUT, PATCH, DELETE): a constraint or an
              ``Idempotency-Key`` reused for another request
400, 413      every operation with a request body: a body that cannot be decoded (not
              UTF-8 JSON, a broken multipart form); over its limit (``service.edge.limits``)
422           every operation with a parameter or a body
503           every operation: the database is unreachable (``service.errors``)
============  =======================================================================

All of them are ``application/problem+json`` (RFC 9457), described by the ``Problem``
schema; FastAPI's own 422 (``HTTPValidationError``, ``application/json``) is replaced, as
the app never answers it. Open311 (GeoReport v2) operations answer their errors in Open311's
format instead (a list of ``{code, description}``, JSON or XML after the path's suffix); what
middleware refuses before routing (413, 429, 503) may still be problem+json there.

A route adds statuses of its own with FastAPI's ``responses=`` (a description is enough: the
error content is filled in here) and keeps any it declares with content.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

__all__ = ["PUBLIC_PATHS", "PROBLEM_SCHEMA", "document_api"]

#: Operations that need no token.
PUBLIC_PATHS = frozenset({"/health"})

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

#: RFC 9457 problem details as wangge writes them (``service.errors.problem``).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error (RFC 9457). `field` names the input at fault; validation errors "
    "list every field in `errors`.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "a URI naming the kind of problem"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the request's path"},
        "field": {"type": "string", "description": "the input at fault"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
    # Some problems carry more: an import's per-row report, a limit's figures.
    "additionalProperties": True,
}

OPEN311_ERRORS_SCHEMA: dict[str, Any] = {
    "title": "Open311Errors",
    "description": "GeoReport v2 errors: a list of `{code, description}`.",
    "type": "array",
    "items": {
        "type": "object",
        "required": ["code", "description"],
        "properties": {"code": {"type": "integer"}, "description": {"type": "string"}},
    },
}

_RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}

#: status → (description, response headers).
ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("The body cannot be decoded", {}),
    401: (
        "Missing, malformed, unknown, expired or revoked token",
        {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    ),
    403: ("Outside your area or role", {}),
    404: ("Not found, or not in your area", {}),
    409: ("Conflicts with stored data (nothing was written), or a reused Idempotency-Key", {}),
    413: ("The request body is over its limit", {}),
    422: ("Invalid input; `field` (and `errors`) name what is wrong", {}),
    429: ("Too many failed authentications from your address", {"Retry-After": _RETRY_AFTER}),
    503: ("The database is unreachable; retry", {"Retry-After": _RETRY_AFTER}),
}

_WRITES = {"post", "put", "patch", "delete"}
_METHODS = {"get", "head", "post", "put", "patch", "delete", "options", "trace"}


def _statuses(path: str, method: str, op: dict[str, Any]) -> set[int]:
    """Return the error statuses the rules of this module give an operation."""
    parameters = op.get("parameters", [])
    has_body = "requestBody" in op
    statuses = {503}
    if path not in PUBLIC_PATHS:
        statuses |= {401, 403, 429}
    if any(p.get("in") in ("path", "query") for p in parameters):
        statuses.add(404)
    if method in _WRITES:
        statuses.add(409)
    if has_body:
        statuses |= {400, 413}
    if parameters or has_body:
        statuses.add(422)
    return statuses


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": PROBLEM_REF}}


def _open311_content(status: int) -> dict[str, Any]:
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": "#/components/schemas/Open311Errors"}},
        "text/xml": {"schema": {"type": "string"}},
    }
    if status in (413, 429, 503):
        # Refused by middleware before the Open311 router sees the request.
        content.update(_problem_content())
    return content


def _document_errors(path: str, method: str, op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    open311 = path.startswith("/open311/")
    declared = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
    for status in sorted(_statuses(path, method, op) | declared):
        key = str(status)
        response = responses.get(key)
        description, headers = ERRORS.get(status, ("Error", {}))
        if response is None:
            response = responses[key] = {"description": description}
        content = response.get("content") or {}
        fastapi_422 = status == 422 and "HTTPValidationError" in str(content)
        if not content or fastapi_422:
            response["content"] = _open311_content(status) if open311 else _problem_content()
            if fastapi_422:
                response["description"] = description
        if open311 and status == 401:
            continue  # Open311 errors carry no WWW-Authenticate challenge
        for name, header in headers.items():
            response.setdefault("headers", {}).setdefault(name, copy.deepcopy(header))


def _drop_unused_schemas(schema: dict[str, Any]) -> None:
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        text = str({k: v for k, v in schema.items() if k != "components"})
        others = str({k: v for k, v in schemas.items() if k != name})
        if f"#/components/schemas/{name}" not in text + others:
            schemas.pop(name, None)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """Return the OpenAPI document of ``app`` with its security and errors declared."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "wangge token"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components["schemas"]["Open311Errors"] = OPEN311_ERRORS_SCHEMA
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            if method not in _METHODS:
                continue
            if path not in PUBLIC_PATHS:
                # A route may declare its own (Open311's reads, when public, add `{}`).
                op.setdefault("security", [{"bearer": []}, {"apiKey": []}])
            _document_errors(path, method, op)
    _drop_unused_schemas(schema)
    return schema


def document_api(app: FastAPI) -> None:
    """Make ``app.openapi()`` return :func:`build_openapi`'s document (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi
