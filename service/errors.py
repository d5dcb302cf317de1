"""Domain errors, and the handlers that turn every error into RFC 9457 problem+json."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.outage import (
    RETRY_AFTER_S,
    UNAVAILABLE_ERRORS,
    is_lost_connection,
    is_unavailable,
    reason,
)
from service.responses import JSON

__all__ = [
    "WanggeError",
    "NotFoundError",
    "ForbiddenError",
    "UnauthorizedError",
    "ConflictError",
    "UnprocessableError",
    "PreconditionFailedError",
    "PreconditionRequiredError",
    "PayloadTooLargeError",
    "problem",
    "register_error_handlers",
]

log = logging.getLogger("wangge")
PROBLEM_JSON = "application/problem+json"


class WanggeError(Exception):
    """Base of the errors a client can be told about; ``field`` names the input at fault."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None, extra: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra or {}


class UnauthorizedError(WanggeError):
    status = 401
    title = "Authentication required"


class ForbiddenError(WanggeError):
    status = 403
    title = "Outside your area or role"


class NotFoundError(WanggeError):
    status = 404
    title = "Not found"


class ConflictError(WanggeError):
    status = 409
    title = "Conflict"


class PreconditionFailedError(WanggeError):
    """``If-Match`` names a version other than the stored one (a stale write)."""

    status = 412
    title = "Precondition failed"


class PreconditionRequiredError(WanggeError):
    """A write that could overwrite another's needs ``If-Match`` (RFC 6585)."""

    status = 428
    title = "Precondition required"


class PayloadTooLargeError(WanggeError):
    status = 413
    title = "Request too large"


class UnprocessableError(WanggeError):
    status = 422
    title = "Invalid input"


def problem(
    status: int, title: str, detail: str, *, instance: str | None = None, **extra: Any
) -> JSON:
    """Return an RFC 9457 problem+json response."""
    body: dict[str, Any] = {
        "type": f"https://wangge.example/problems/{status}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSON(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# Pydantic names the member of a union it tried (``BatchPoint``, ``str``, ``constrained-int``,
# ``tuple[...]``) inside an error's location; a client knows its fields, not our types.
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "bytes", "none"})


def _is_union_member(part: str) -> bool:
    return part in _TYPE_NAMES or "[" in part or "-" in part or part[:1].isupper()


def _loc(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    if parts and parts[0] in ("query", "path", "header"):
        parts = parts[1:]
    # The first part is a parameter or body field as the client sent it (a header may be
    # ``Idempotency-Key``); union members appear only below it.
    parts = parts[:1] + [p for p in parts[1:] if not _is_union_member(p)]
    return ".".join(parts) or "body"


async def _wangge_error(request: Request, exc: WanggeError) -> JSON:
    return problem(
        exc.status, exc.title, exc.detail, instance=request.url.path, field=exc.field, **exc.extra
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSON:
    errors = [
        {"field": _loc(tuple(e.get("loc", ()))), "reason": e.get("msg", "invalid")}
        for e in exc.errors()
    ]
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:10])
    # `field` names the first input at fault, as in every other problem; `errors` lists all.
    return problem(
        422,
        f"Invalid input in {fields}",
        detail,
        instance=request.url.path,
        field=errors[0]["field"] if errors else None,
        errors=errors,
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSON:
    titles = {
        400: "Bad request",
        401: "Authentication required",
        404: "Not found",
        405: "Method not allowed",
    }
    response = problem(
        exc.status_code,
        titles.get(exc.status_code, "HTTP error"),
        str(exc.detail),
        instance=request.url.path,
    )
    # The raiser's headers go out too: a 405 must say which methods the path allows (Allow).
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        response.headers["Allow"] = _allowed_methods(request) or response.headers.get("Allow", "")
    return response


def _allowed_methods(request: Request) -> str:
    """Return every method served at the request's path, by all the routes that share it.

    Starlette's own ``Allow`` names only the first route matching the path, and GET, PATCH
    and DELETE of ``/units/{id}`` are three routes.
    """
    from starlette.routing import Match, Route

    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            if route.matches(request.scope)[0] is not Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))


async def _integrity_error(request: Request, exc: Exception) -> JSON:
    # A constraint refused a write (e.g. two concurrent loads of one generation): the
    # request is safe to retry; the constraint's text stays in the log.
    log.warning("integrity error on %s %s: %s", request.method, request.url.path, exc)
    return problem(
        409,
        "Conflict",
        "the write conflicts with data stored meanwhile; nothing was written, retry",
        instance=request.url.path,
    )


async def _unexpected(request: Request, exc: Exception) -> JSON:
    # The traceback stays in the log; the client learns nothing internal.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "Internal error", "the server failed; the error was logged")


class _RunAgain(BaseException):
    # Not an Exception: it passes every exception handler and reaches UnhandledErrorMiddleware.
    pass


class UnhandledErrorMiddleware:
    """ASGI middleware: answer an error no handler took with a 500 problem, keeping the
    client's connection; run a read once more when a handler asks (``_RunAgain``).

    Starlette answers an ``Exception`` handler's 500 from its outermost middleware and then
    re-raises, and uvicorn closes the keep-alive connection on an escaped exception: a
    client's next request on it failed. Here the 500 is an answer like any other.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sender(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            try:
                await self.app(scope, receive, sender)
            except _RunAgain:
                scope["wangge.run_again"] = True
                await self.app(scope, receive, sender)
        except Exception as exc:
            if started:  # half an answer was sent: only closing the connection ends it
                raise
            response = await _unexpected(Request(scope), exc)
            await response(scope, receive, send)


async def _database_unavailable(request: Request, exc: Exception) -> JSON:
    # The database is away (stopped, restarting, refusing connections): the request was
    # fine and may be retried. Other errors of these classes are server errors.
    if not is_unavailable(exc):
        return await _unexpected(request, exc)
    if (
        request.method in ("GET", "HEAD")
        and is_lost_connection(exc)
        and "wangge.run_again" not in request.scope
    ):
        # A pooled connection died unseen (the database restarted): the pool replaces it
        # on the next use, and a read can run again. Nothing was sent yet.
        raise _RunAgain from exc
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, reason(exc))
    response = problem(
        503,
        "Database unavailable",
        "the database is unavailable; retry in a few seconds",
        instance=request.url.path,
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def register_error_handlers(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app`` and the middleware of the last resort."""
    app.add_exception_handler(WanggeError, _wangge_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _database_unavailable)
    # Any other error is a 500: answered by this middleware (added first, it is the
    # innermost), or by Starlette's outermost one for errors of middleware outside it.
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_exception_handler(Exception, _unexpected)
