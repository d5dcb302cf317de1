"""Return the wangge FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager
from datetime import timedelta

from cachetools import TTLCache
from fastapi import FastAPI

from maps.i18n import translator
from service import __version__
from service.background import stop_jobs
from service.db import make_async_engine, make_engine, make_pg_pool
from service.dispatch.deadlines import sweep_forever
from service.dispatch.stream import CaseStream
from service.edge import install as install_edge
from service.errors import register_error_handlers
from service.inputs import RejectNul
from service.openapi import document_api
from service.replicas import ReadRouting, ReadYourWrites
from service.repositories.lookup import PointLookupBatcher
from service.repositories.partitions import keep_months_ahead
from service.responses import JSON
from service.routers import (
    analysis,
    analysis_report,
    areas,
    attachments,
    basemap,
    case_stream,
    cases,
    entities,
    evaluation,
    generations,
    health,
    lookup,
    network,
    ogc,
    open311,
    pages,
    plan_analysis,
    plans,
    tiles,
    time_limits,
    tokens,
)
from service.settings import Settings, get_settings
from service.tiles import CachedTileShortcut, TileCache, listen_for_changes

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
        url = settings.db.resolved_url()
        app.state.engine = make_async_engine(url, pool_size=settings.db.pool_size)
        # Bulk work (imports, re-mapping) is CPU-heavy numpy and COPY: it runs in worker
        # threads on a synchronous psycopg engine, off the event loop.
        app.state.sync_engine = make_engine(url)
        app.state.pg_pool = await make_pg_pool(url, size=settings.db.pool_size)
        app.state.lookup_batcher = PointLookupBatcher(app.state.pg_pool)
        # Reads on streaming replicas (DATABASE_REPLICA_URLS; service.replicas), if any.
        app.state.read_routing = None
        if settings.db.replica_urls:
            app.state.read_routing = await ReadRouting(
                url,
                settings.db.replica_urls,
                primary_pool=app.state.pg_pool,
                pool_size=settings.db.pool_size,
                wait_s=settings.db.replica_wait_ms / 1000,
                max_lag_s=settings.db.replica_max_lag_s,
            ).start()
        app.state.tile_cache = TileCache(settings.api.tile_cache_bytes)
        listener = await listen_for_changes(url, app.state.tile_cache)
        # One LISTEN for case events per process, fanned out to the /cases/stream screens.
        app.state.case_stream = await CaseStream(
            url, app.state.pg_pool, token_check_s=settings.api.token_cache_seconds
        ).start()
        # The coming months of incidents get their partitions (now, then daily).
        # Background jobs stop between rounds, never mid-statement (service/background.py).
        stopping = asyncio.Event()
        keeping_months = asyncio.create_task(
            keep_months_ahead(app.state.engine, stopping), name="incident partitions"
        )
        # Every process sweeps deadlines; row locks make each one fire once (deadlines.py).
        dispatch = settings.dispatch
        sweeping = None
        if dispatch.sweep_seconds > 0:
            sweeping = asyncio.create_task(
                sweep_forever(
                    app.state.engine,
                    stopping,
                    every_seconds=dispatch.sweep_seconds,
                    escalate_after=timedelta(minutes=dispatch.escalate_after_minutes),
                )
            )
        # The pages' message catalog (Babel reads the .po, ~0.3 s once per process) is read
        # now, not while the first page's reader waits; frozen below with the rest.
        await asyncio.to_thread(translator)
        # Everything allocated so far lives as long as the process: move it out of the
        # collector's sight, so full collections do not walk the app on every request burst
        # (they were the p99 of lookups, and a fifth of their throughput).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await stop_jobs(stopping, (sweeping, keeping_months))
            await listener.close()
            if app.state.read_routing is not None:
                await app.state.read_routing.close()
            await app.state.case_stream.close()
            await app.state.pg_pool.close()
            await app.state.engine.dispose()
            app.state.sync_engine.dispose()

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
    document_api(app)
    app.add_middleware(CachedTileShortcut)
    if settings.db.replica_urls:
        # After a write, its position for the caller's reads on replicas (service.replicas).
        app.add_middleware(ReadYourWrites)
    # Around the tile shortcut and the routes: a NUL in a query or path parameter is refused
    # before either reads it (service.inputs).
    app.add_middleware(RejectNul)
    # CORS, the body limit (outermost: before anything reads a body), the failed-authentication
    # limiter and the log redaction (service.edge).
    install_edge(app, settings)
    routers = [
        m.router
        for m in (
            health,
            lookup,
            areas,
            generations,
            tokens,
            case_stream,
            cases,
            attachments,
            time_limits,
            evaluation,
            open311,
            ogc,
            basemap,
            tiles,
            pages,
            analysis,
            network,
            analysis_report,
            plans,
            plan_analysis,
        )
    ]
    for router in [*routers, *entities.routers]:
        # Routes are added to the app itself rather than as an included router: on the
        # lookup hot path FastAPI's included-router matching is a measurable share.
        for route in router.routes:
            app.router.routes.append(route)
    return app
