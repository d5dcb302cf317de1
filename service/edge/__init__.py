"""What the service does at its edge, before handlers run: CORS, body size limits, failed
authentication limits, page session cookies, tokens kept out of the logs.

:func:`install` puts it on an app (``create_app`` calls it once, after its other
middleware, so CORS and the body limit are outermost: a preflight, a 413 or a 429 carries
CORS headers too). The parts: :mod:`service.edge.limits` (429 and 413),
:mod:`service.edge.sessions` (the cookie and CSRF), :mod:`service.edge.redaction` (logs).
Authentication itself stays in :mod:`service.deps`, which uses these.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from service.edge.limits import (
    AuthFailureLimiter,
    BodyLimit,
    BodyTooLargeError,
    TooManyFailuresError,
    body_limits,
    body_too_large_response,
    too_many_failures_response,
)
from service.edge.redaction import install_log_redaction
from service.settings import Settings

__all__ = ["install", "CORS_ALLOW_HEADERS", "CORS_EXPOSE_HEADERS"]

#: Request headers a cross-origin page may send: the token, the write preconditions.
CORS_ALLOW_HEADERS = [
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "Wangge-LSN",  # read-your-writes on replicas (service.replicas)
]
#: Response headers a cross-origin page may read.
CORS_EXPOSE_HEADERS = ["ETag", "Retry-After", "Location", "Content-Disposition", "Wangge-LSN"]


def install(app: FastAPI, settings: Settings) -> None:
    """Add CORS (when origins are set), the body limit, the failed-authentication limiter,
    their error answers and the log redaction to ``app``."""
    api = settings.api
    app.state.auth_limiter = AuthFailureLimiter(
        api.auth_failure_limit, api.auth_failure_window_seconds
    )
    app.add_exception_handler(TooManyFailuresError, too_many_failures_response)
    app.add_exception_handler(BodyTooLargeError, body_too_large_response)
    app.add_middleware(BodyLimit, limit_for=body_limits(api))
    if api.cors_origins:
        # No credentials: cross-origin callers send their token in a header; the page
        # session cookie is for the service's own pages and never travels cross-origin.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=api.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            allow_credentials=False,
            max_age=600,
        )
    install_log_redaction()
