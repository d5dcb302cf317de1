"""Request dependencies: connections, the principal the request acts as, shared parameters.

Handlers take what they need as parameters: ``ConnDep`` (SQLAlchemy, read),
``WriteConnDep`` (SQLAlchemy, one transaction committed when the request succeeds),
``PoolDep`` (the asyncpg pool of the hot read paths), ``PrimaryPoolDep`` (the primary's
asyncpg pool: writes), ``SyncEngineDep`` (the synchronous engine that worker threads use),
``ReadSyncEngineDep`` (the same, for reads), ``PrincipalDep`` / ``AdminDep``,
``ApiSettingsDep``. With read replicas configured (``service.replicas``), ``ConnDep``,
``PoolDep``, ``ReadSyncEngineDep`` and :func:`read_batcher` may be served by a replica,
which refuses writes; everything else is the primary's.
Parameters several routers read are parsed here too (``parse_generation``, ``query_model``,
``layer_or_404``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from cachetools import TTLCache
from fastapi import Depends, Request
from pydantic import BaseModel
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import Principal, split_token, verify_secret
from service.edge import sessions
from service.edge.limits import client_address
from service.errors import ForbiddenError, NotFoundError, UnauthorizedError, UnprocessableError
from service.inputs import INTEGER_MAX
from service.querymodels import parse_query
from service.settings import APISettings
from service.specs.map_layers import LAYERS, LayerSpec

__all__ = [
    "ConnDep",
    "WriteConnDep",
    "PoolDep",
    "PrimaryPoolDep",
    "SyncEngineDep",
    "ReadSyncEngineDep",
    "ApiSettingsDep",
    "PrincipalDep",
    "AdminDep",
    "get_conn",
    "get_write_conn",
    "get_pool",
    "get_primary_pool",
    "read_batcher",
    "get_sync_engine",
    "get_read_sync_engine",
    "get_api_settings",
    "get_principal",
    "principal_from_token",
    "principal_from_session",
    "start_page_session",
    "forget_token",
    "require_admin",
    "parse_generation",
    "query_model",
    "layer_or_404",
]

_TOKEN_SQL = text(
    "SELECT t.id, t.name, t.role, t.area_code, t.secret_sha256, t.source, "
    "(t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())) AS valid, "
    "(SELECT a.path FROM area a WHERE a.code = t.area_code "
    " ORDER BY a.generation_high DESC LIMIT 1) AS scope_path "
    "FROM api_token t WHERE t.id = :id"
)


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    """Yield a read connection for this request: a replica's when one may serve it
    (``service.replicas``), else the primary's. Nothing written on it is committed."""
    routing = getattr(request.app.state, "read_routing", None)
    replica = None if routing is None else await routing.replica_for(request)
    if replica is not None:
        conn = replica.engine.connect()
        try:
            await conn.start()
        except Exception as exc:
            if not routing.falls_back(replica, exc):
                raise
            # The replica is down (now marked so): this request reads on the primary.
            request.scope["state"]["wangge.replica"] = None
        else:
            try:
                yield conn
            except Exception as exc:
                # A connection that died under the handler marks its replica down: a GET
                # run again (service.errors) then reads elsewhere.
                routing.falls_back(replica, exc)
                raise
            finally:
                await conn.close()
            return
    async with request.app.state.engine.connect() as conn:
        yield conn


async def get_write_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    """Yield a primary connection in a transaction committed when the request succeeds."""
    async with request.app.state.engine.begin() as conn:
        yield conn


async def get_pool(request: Request):
    """Return the hot read paths' pool (lookups, layers, tiles, pages): a replica's when one
    may serve this request (``service.replicas``), else the primary's. Reads only."""
    routing = getattr(request.app.state, "read_routing", None)
    if routing is None:
        return request.app.state.pg_pool
    if _is_tile(request.scope):
        replica = await routing.tile_replica(request, request.app.state.tile_cache)
    else:
        replica = await routing.replica_for(request)
    return request.app.state.pg_pool if replica is None else replica.reads


def _is_tile(scope) -> bool:
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.startswith("/tiles/")


def get_primary_pool(request: Request):
    """Return the primary's asyncpg pool: writes, and reads that must see the latest commit."""
    return request.app.state.pg_pool


async def read_batcher(request: Request):
    """Return the single-lookup batcher of the server this request reads on."""
    routing = getattr(request.app.state, "read_routing", None)
    replica = None if routing is None else await routing.replica_for(request)
    return request.app.state.lookup_batcher if replica is None else replica.batcher


def get_sync_engine(request: Request) -> Engine:
    """Return the primary's synchronous engine; bulk work and writes use it in worker threads."""
    return request.app.state.sync_engine


async def get_read_sync_engine(request: Request) -> Engine:
    """Return a synchronous engine for reads in worker threads (analyses, reports): a
    replica's when one may serve this request (``service.replicas``), else the primary's."""
    routing = getattr(request.app.state, "read_routing", None)
    replica = None if routing is None else await routing.replica_for(request)
    return request.app.state.sync_engine if replica is None else replica.sync_engine


def get_api_settings(request: Request) -> APISettings:
    """Return the API settings (page sizes, upload and batch limits)."""
    return request.app.state.settings.api


def _bearer(authorization: str | None, api_key: str | None) -> str | None:
    if api_key:
        return api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


async def get_principal(request: Request) -> Principal:
    """Return the principal of the request's token (``Authorization: Bearer``, ``X-API-Key``,
    ``?access_token=``) or, on the map pages' paths, of its page session cookie."""
    # Headers are read directly rather than declared as parameters: this runs on every
    # request and FastAPI's parameter machinery costs more than the cache lookup itself.
    headers = request.headers
    token = _bearer(headers.get("authorization"), headers.get("x-api-key"))
    if token is None:
        # Map clients (Leaflet tile layers, GIS URLs) cannot set headers.
        token = request.query_params.get("access_token")
    if token is None:
        cookie = _page_session_cookie(request)
        if cookie is not None:
            return await principal_from_session(request, cookie)
        raise UnauthorizedError(
            "send a token as 'Authorization: Bearer <token>' or 'X-API-Key: <token>'",
            field="Authorization",
        )
    return await principal_from_token(request.app, token, client=client_address(request.scope))


async def principal_from_token(app, token: str, *, client: str | None = None) -> Principal:
    """Return the principal of ``token`` (cached for the configured seconds).

    With ``client`` (the caller's address), a refused token counts as a failed
    authentication of that address, and an address over the limit is refused (429) before
    its token is checked; a cached token is served in any case (``service.edge.limits``).
    """
    cache: TTLCache = app.state.token_cache
    principal = cache.get(token)
    if principal is not None:
        return principal
    limiter = getattr(app.state, "auth_limiter", None) if client else None
    if limiter is not None:
        limiter.check(client)
    parts = split_token(token)
    row = None
    if parts is not None:
        row = await _token_row(app, parts[0])
    if row is None or not verify_secret(parts[1], row.secret_sha256) or not row.valid:
        if limiter is not None:
            limiter.failed(client)
        reason = "malformed token" if parts is None else "unknown, revoked or expired token"
        raise UnauthorizedError(reason, field="Authorization")
    principal = _principal_of(row)
    cache[token] = principal
    return principal


async def _token_row(app, token_id: str):
    async with app.state.engine.connect() as conn:
        return (await conn.execute(_TOKEN_SQL, {"id": token_id})).first()


def _principal_of(row) -> Principal:
    if row.area_code is not None and row.scope_path is None:
        raise ForbiddenError(f"the token's area {row.area_code} no longer exists")
    return Principal(
        token_id=row.id,
        name=row.name,
        role=row.role,
        area_code=row.area_code,
        scope_path=row.scope_path,
        source=row.source,
    )


# -- page sessions (service.edge.sessions) ----------------------------------------------------
def _session_key(app) -> bytes | None:
    key = app.state.settings.api.session_key
    return key.get_secret_value().encode() if key else None


def _page_session_cookie(request: Request) -> str | None:
    """Return the page session cookie, on the paths it is scoped to (else None)."""
    scope = request.scope
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if not sessions.accepts_cookie(path):
        return None
    return request.cookies.get(sessions.COOKIE)


async def principal_from_session(request: Request, value: str) -> Principal:
    """Return the principal of a page session cookie; a write must carry its CSRF token."""
    app = request.app
    session = sessions.parse_session(value)
    if session is not None and session.expired():
        raise UnauthorizedError(
            "the page session expired; open the page again with ?access_token=<token>",
            field="Cookie",
        )
    cache: TTLCache = app.state.token_cache
    principal = cache.get(value) if session is not None else None
    if principal is None:
        client = client_address(request.scope)
        limiter = getattr(app.state, "auth_limiter", None)
        if limiter is not None:
            limiter.check(client)
        row = await _token_row(app, session.token_id) if session is not None else None
        if (
            row is None
            or not row.valid
            or not sessions.verify_session(session, row.secret_sha256, _session_key(app))
        ):
            if limiter is not None:
                limiter.failed(client)
            raise UnauthorizedError(
                "unknown, revoked or expired page session; "
                "open the page again with ?access_token=<token>",
                field="Cookie",
            )
        principal = _principal_of(row)
        cache[value] = principal
    if request.method not in sessions.SAFE_METHODS and not sessions.csrf_ok(
        value, request.headers.get(sessions.CSRF_HEADER)
    ):
        raise ForbiddenError(
            f"a write authenticated by the page session cookie needs the "
            f"{sessions.CSRF_HEADER} header its page was given",
            field=sessions.CSRF_HEADER,
        )
    request.state.page_session = value
    return principal


async def start_page_session(request: Request, principal: Principal) -> str:
    """Return a new page session cookie value for the principal's token."""
    app = request.app
    row = await _token_row(app, principal.token_id)
    if row is None or not row.valid:
        raise UnauthorizedError("unknown, revoked or expired token", field="Authorization")
    return sessions.sign_session(
        row.id,
        row.secret_sha256,
        seconds=app.state.settings.api.session_seconds,
        key=_session_key(app),
    )


def forget_token(app, *, token_id: str) -> None:
    """Drop every cached principal of ``token_id`` (a revoked token stops working at once)."""
    cache: TTLCache = app.state.token_cache
    for key in [k for k, p in cache.items() if p.token_id == token_id]:
        cache.pop(key, None)


def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    """Return the principal if it is an admin, else refuse with 403."""
    if not principal.is_admin:
        raise ForbiddenError(f"this needs the admin role; you are {principal.role}")
    return principal


def parse_generation(raw: str | None) -> int | None:
    """Return the generation named by a hand-read ``generation`` parameter (None: current)."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise UnprocessableError("generation is a number", field="generation")
    if len(raw) > 10 or not 1 <= int(raw) <= INTEGER_MAX:
        raise UnprocessableError(
            f"generation must be between 1 and {INTEGER_MAX}", field="generation"
        )
    return int(raw)


def page_limit(api: APISettings, limit: int | None) -> int:
    """Return the page size asked for (None: the default); refuse one above the maximum."""
    limit = limit or api.default_page_size
    if limit > api.max_page_size:
        raise UnprocessableError(f"limit {limit} exceeds {api.max_page_size}", field="limit")
    return limit


def page(request: Request, items: list, total: int, *, limit: int, offset: int, **more) -> dict:
    """Return one page of a list: its items, the total, ``more`` and the link to the next
    page (None on the last)."""
    next_url = None
    if offset + len(items) < total:
        next_url = str(request.url.include_query_params(offset=offset + limit, limit=limit))
    return {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        **more,
        "next": next_url,
    }


M = TypeVar("M", bound=BaseModel)


def query_model(model: type[M]) -> Callable[[Request], M]:
    """Return a dependency giving the query string validated as ``model`` (422 on bad input).

    The query is read by hand (``service.querymodels``), so FastAPI documents no parameter:
    pass ``openapi_extra=query_parameters_doc(model)`` to the route as well.
    """

    def dependency(request: Request) -> M:
        return parse_query(model, request)

    return dependency


def layer_or_404(name: str) -> LayerSpec:
    """Return the map layer called ``name``, or refuse with 404 listing the layers."""
    spec = LAYERS.get(name)
    if spec is None:
        raise NotFoundError(f"no layer {name!r}; layers: {', '.join(LAYERS)}", field="collectionId")
    return spec


ConnDep = Annotated[AsyncConnection, Depends(get_conn)]
# scope="function": the transaction commits when the handler returns, before the response
# is sent. With FastAPI's default ("request") the commit ran after the answer had gone out,
# so a commit that failed still answered 2xx: an acknowledged write that was never stored.
WriteConnDep = Annotated[AsyncConnection, Depends(get_write_conn, scope="function")]
PoolDep = Annotated[Any, Depends(get_pool)]
PrimaryPoolDep = Annotated[Any, Depends(get_primary_pool)]
SyncEngineDep = Annotated[Engine, Depends(get_sync_engine)]
ReadSyncEngineDep = Annotated[Engine, Depends(get_read_sync_engine)]
ApiSettingsDep = Annotated[APISettings, Depends(get_api_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]
