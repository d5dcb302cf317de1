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
404           every operation with a parameter or a body (an id, an area, a generation,
              a layer that does not exist or is not yours to see)
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

# -- Open311 (GeoReport v2) ---------------------------------------------------------------------
# The Open311 router reads its parameters by hand (its errors must leave in Open311's format,
# which FastAPI's validation cannot give): what it reads is declared here, from the standard.
_S = {"type": "string"}
_NS = {"type": ["string", "null"]}
_OPEN311_SERVICE = {
    "type": "object",
    "required": ["service_code", "service_name", "description", "metadata", "type"],
    "properties": {
        "service_code": _S,
        "service_name": _S,
        "description": _S,
        "metadata": {"type": "boolean"},
        "type": {"enum": ["realtime", "batch", "blackbox"]},
        "keywords": {"type": "array", "items": _S},
        "group": _S,
    },
}
_OPEN311_REQUEST = {
    "type": "object",
    "required": ["service_request_id", "status", "service_code", "requested_datetime"],
    "properties": {
        "service_request_id": _S,
        "status": {"enum": ["open", "closed"]},
        "status_notes": _NS,
        "service_name": _NS,
        "service_code": _S,
        "description": _NS,
        "agency_responsible": _NS,
        "service_notice": _NS,
        "requested_datetime": _S,
        "updated_datetime": _NS,
        "expected_datetime": _NS,
        "address": _NS,
        "address_id": _NS,
        "zipcode": _NS,
        "lat": {"type": ["number", "null"]},
        "long": {"type": ["number", "null"]},
        "media_url": _NS,
    },
}
_OPEN311_UPDATE = {
    "type": "object",
    "required": ["update_id", "service_request_id", "status", "updated_datetime"],
    "properties": {
        "update_id": _S,
        "service_request_id": _S,
        "status": {"enum": ["open", "closed"]},
        "updated_datetime": _S,
        "description": _NS,
        "media_url": _NS,
    },
}
_OPEN311_CREATED = {
    "type": "object",
    "required": ["service_request_id"],
    "properties": {"service_request_id": _S, "service_notice": _NS, "account_id": _NS},
}
_OPEN311_DEFINITION = {
    "type": "object",
    "required": ["service_code", "attributes"],
    "properties": {"service_code": _S, "attributes": {"type": "array"}},
}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or _S,
    }


_JURISDICTION = _q("jurisdiction_id", "ignored (one jurisdiction)")
_EMPTY = {"type": "string", "maxLength": 0}
# Between the years 1000 and 9000, as service.inputs.Moment (the router checks the same).
_DATE_TIME = {"type": "string", "format": "date-time", "pattern": "^(1[0-9]{3}|[2-8][0-9]{3})-"}
_OPEN311: dict[tuple[str, str], tuple[list[dict[str, Any]], str, dict[str, Any]]] = {
    # (method, path without the prefix): (query parameters, success status, JSON schema)
    ("get", "/services.{fmt}"): (
        [_JURISDICTION],
        "200",
        {"type": "array", "items": _OPEN311_SERVICE},
    ),
    ("get", "/services/{service_code}.{fmt}"): ([_JURISDICTION], "200", _OPEN311_DEFINITION),
    ("get", "/requests.{fmt}"): (
        [
            _JURISDICTION,
            _q(
                "service_request_id",
                "comma-separated ids; the other filters are then ignored",
                {"type": "string", "pattern": "^([0-9]{1,19}(,[0-9]{1,19})*)?$"},
            ),
            _q("service_code", "comma-separated service codes"),  # pattern: _document_open311
            _q(
                "start_date",
                "reported at or after (ISO 8601; default: end_date − 90 days)",
                {"anyOf": [_DATE_TIME, _EMPTY]},
            ),
            _q(
                "end_date",
                "reported before (ISO 8601; default: now)",
                {"anyOf": [_DATE_TIME, _EMPTY]},
            ),
            _q(
                "status",
                "open, closed or both (comma-separated)",
                {"enum": ["", "open", "closed", "open,closed", "closed,open"]},
            ),
        ],
        "200",
        {"type": "array", "items": _OPEN311_REQUEST},
    ),
    ("get", "/requests/{service_request_id}.{fmt}"): (
        [_JURISDICTION],
        "200",
        {"type": "array", "items": _OPEN311_REQUEST, "maxItems": 1},
    ),
    ("post", "/requests.{fmt}"): ([], "201", {"type": "array", "items": _OPEN311_CREATED}),
    ("get", "/servicerequestupdates.{fmt}"): (
        [
            _JURISDICTION,
            _q(
                "service_request_id",
                "comma-separated ids",
                {"type": "string", "pattern": "^([0-9]{1,19}(,[0-9]{1,19})*)?$"},
            ),
            _q(
                "start_date",
                "updated at or after (ISO 8601; default: end_date − 24 hours)",
                {"anyOf": [_DATE_TIME, _EMPTY]},
            ),
            _q(
                "end_date",
                "updated before (ISO 8601; default: now)",
                {"anyOf": [_DATE_TIME, _EMPTY]},
            ),
        ],
        "200",
        {"type": "array", "items": _OPEN311_UPDATE},
    ),
}
_OPEN311_FORM = {
    "type": "object",
    "required": ["service_code", "lat", "long"],
    # Fields it does not know are ignored, but no name or value may hold a NUL.
    "propertyNames": {"pattern": "^[^\\u0000]*$"},
    "properties": {
        "service_code": _S,
        "lat": {"type": "number"},
        "long": {"type": "number"},
        "description": _S,
        "address_string": _S,
        "media_url": {"type": "string", "format": "uri"},
        "api_key": _S,
        "jurisdiction_id": _S,
    },
}


def _document_open311(path: str, method: str, op: dict[str, Any]) -> None:
    """Declare an Open311 operation's format, parameters, form and answers (GeoReport v2).

    An Open311 route this table does not know keeps what its router declares, plus the
    format, the key and its errors.
    """
    from service.routers.open311 import SERVICES

    known = _OPEN311.get((method, path.removeprefix("/open311/v2")))
    code = "|".join(SERVICES)
    for p in op.get("parameters", []):
        if p["name"] == "fmt":
            p["schema"] = {"enum": ["json", "xml"]}
            p["description"] = "the answer's format (errors too)"
        elif p["name"] == "service_request_id":
            p["schema"] = {"type": "string", "pattern": "^[0-9]{1,19}$"}
    # GeoReport v2's key: ?api_key= (or the form's api_key) as well as the headers.
    op["security"] = [*op.get("security", [{"bearer": []}, {"apiKey": []}]), {"open311Key": []}]
    # Its handlers validate by hand and answer 400, never FastAPI's 422.
    op["responses"].pop("422", None)
    if known is None:
        for content in (op["responses"].get("200") or {}).get("content", {}).values():
            content.setdefault("schema", {})
        if "200" in op["responses"]:
            op["responses"]["200"].setdefault("content", {})["text/xml"] = {"schema": _S}
        return
    parameters, status, schema = known
    parameters = copy.deepcopy(parameters)
    for p in parameters:
        if p["name"] == "service_code":
            p["schema"] = {"type": "string", "pattern": f"^(({code})(,({code}))*)?$"}
    op["parameters"] = [*op.get("parameters", []), *parameters]
    if method == "post":
        op["requestBody"] = {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _OPEN311_FORM}},
        }
    op["responses"].pop("200", None)
    op["responses"][status] = {
        "description": "GeoReport v2: JSON, or XML for .xml",
        "content": {"application/json": {"schema": schema}, "text/xml": {"schema": _S}},
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
    if has_body or any(p.get("in") in ("path", "query") for p in parameters):
        statuses.add(404)
    if method in _WRITES:
        statuses.add(409)
    if has_body:
        statuses |= {400, 413}
    if parameters or has_body:
        statuses.add(422)
    if path.startswith("/open311/"):
        # Open311 answers 400 where the REST API answers 422 (GeoReport v2 errors).
        statuses = (statuses - {422}) | {400}
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
        if open311 and status == 400:
            description = "A parameter is missing or wrong (named in the error's description)"
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


#: Text without NUL, which PostgreSQL cannot store: ``service.inputs`` refuses it in every
#: query and path parameter (``RejectNul``) and in every JSON body and form field.
NO_NUL = "^[^\\u0000]*$"


def _forbid_nul(
    schema: Any, components: dict[str, Any], seen: set[str], *, keys: bool = False
) -> None:
    """Give every free text in ``schema`` (following ``$ref``) the :data:`NO_NUL` pattern;
    with ``keys``, object keys too (JSON bodies: a form ignores the fields it does not read).
    """
    if isinstance(schema, list):
        for item in schema:
            _forbid_nul(item, components, seen, keys=keys)
        return
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[1]
        if name not in seen:
            seen.add(name)
            _forbid_nul(components.get(name), components, seen, keys=keys)
        return
    types = schema.get("type")
    text = types == "string" or (isinstance(types, list) and "string" in types)
    if text and not {"pattern", "enum", "const", "format"} & set(schema):
        schema["pattern"] = NO_NUL
    if keys and types == "object" and schema.get("additionalProperties") is not False:
        schema.setdefault("propertyNames", {"pattern": NO_NUL})
    for key in ("properties", "$defs"):
        for sub in (schema.get(key) or {}).values():
            _forbid_nul(sub, components, seen, keys=keys)
    for key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "prefixItems"):
        _forbid_nul(schema.get(key), components, seen, keys=keys)


def _not_null(parameter: dict[str, Any]) -> None:
    """Drop the ``null`` of an optional parameter's schema: a parameter is left out, never
    sent as null (a client sending ``Last-Event-ID: null`` was refused)."""
    schema = parameter.get("schema") or {}
    branches = schema.get("anyOf")
    if not branches or {"type": "null"} not in branches:
        return
    rest = [b for b in branches if b != {"type": "null"}]
    del schema["anyOf"]
    if len(rest) == 1:
        for key, value in rest[0].items():
            schema.setdefault(key, value)
    else:
        schema["anyOf"] = rest
    if schema.get("default", 0) is None:
        del schema["default"]


#: The header that makes a write safe to retry (``service.idempotency``), as it is checked.
IDEMPOTENCY_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": "^[\\x20-\\x7e\\xa1-\\xac\\xae-\\xff]+$",
    "description": "1-200 printable characters; a retry with the same key and body is "
    "answered as the first request was",
}


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
        "open311Key": {"type": "apiKey", "in": "query", "name": "api_key"},
    }
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components["schemas"]["Open311Errors"] = OPEN311_ERRORS_SCHEMA
    seen: set[str] = set()  # request body components already given NO_NUL
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            if method not in _METHODS:
                continue
            if path not in PUBLIC_PATHS:
                # A route may declare its own (Open311's reads, when public, add `{}`).
                op.setdefault("security", [{"bearer": []}, {"apiKey": []}])
            if path.startswith("/open311/"):
                _document_open311(path, method, op)
            for parameter in op.get("parameters", []):
                _not_null(parameter)
                if parameter.get("in") == "header" and parameter["name"] == "Idempotency-Key":
                    # As run_idempotent checks it, unless the route states bounds of its own
                    # (one that takes the key without using it).
                    if "maxLength" not in parameter.get("schema", {}):
                        parameter["schema"] = dict(IDEMPOTENCY_KEY)
                if parameter.get("in") in ("path", "query"):
                    _forbid_nul(parameter.get("schema"), components["schemas"], set())
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                keys = media == "application/json"
                _forbid_nul(content.get("schema"), components["schemas"], seen, keys=keys)
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
