"""Return the wangge FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

from contextlib import asynccontextmanager

from cachetools import TTLCache
from fastapi import FastAPI
from service.responses import JSON

from service import __version__
from service.db import make_async_engine
from service.errors import register_error_handlers
from service.routers import areas, generations, health, lookup, tokens
from service.settings import Settings, get_settings

__all__ = ["create_app"]

DESCRIPTION = """
Spatial heart of a city – district – community grid command and dispatch platform:
the boundary hierarchy and its generations, point → grid lookup, area-scoped access.

Every endpoint except `/health` and the docs needs a token:
`Authorization: Bearer <token>` or `X-API-Key: <token>`. What you see is limited to your
role's area. Errors are `application/problem+json` (RFC 9457) naming the field at fault.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Return a configured app; nothing connects until the app starts."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = make_async_engine(
            settings.db.resolved_url(), pool_size=settings.db.pool_size
        )
        try:
            yield
        finally:
            await app.state.engine.dispose()

    app = FastAPI(
        title="wangge",
        version=__version__,
        description=DESCRIPTION,
        default_response_class=JSON,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.token_cache = TTLCache(maxsize=10_000, ttl=settings.api.token_cache_seconds or 1e-9)
    register_error_handlers(app)
    for module in (health, lookup, areas, generations, tokens):
        app.include_router(module.router)
    return app
