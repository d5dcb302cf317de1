"""Limits on abuse: failed authentications per client address, request body sizes.

**Failed authentications.** :class:`AuthFailureLimiter` counts, per client address, the
tokens (and page session cookies) that were presented and refused: malformed, unknown,
revoked, expired. After ``WANGGE_API_AUTH_FAILURE_LIMIT`` of them (default 20) within
``WANGGE_API_AUTH_FAILURE_WINDOW_SECONDS`` (default 10), that address's tokens are no longer
checked: 429 problem+json with ``Retry-After`` until the oldest counted failure leaves the
window, so at most that many guesses per window reach the database. What it leaves alone:

- a token already verified and cached (``service.deps``' token cache) still works from a
  blocked address: it is proven, so neighbours behind the same NAT as a guesser keep
  working, and the pre-framework tile shortcut (which serves cached principals only) obeys
  the same rule without a check of its own;
- successful authentications do not count, and neither do requests sending no token
  (those get 401 and cost nothing).

The counts live in the process's memory (bounded: the least recently failing addresses are
forgotten first): each uvicorn worker counts on its own, so ``--workers 4`` lets up to four
times the limit through, and a restart forgets. The address is the ASGI client's, which is
the proxy's ``X-Forwarded-For`` only when uvicorn trusts that proxy (``--forwarded-allow-ips``).

**Body sizes.** :class:`BodyLimit`, a pure ASGI middleware, refuses a body over its route's
limit with 413 problem+json before anything reads or parses it: at once from
``Content-Length``, and, for a chunked body, as soon as the bytes received pass the limit
(the handler reading it is stopped). The limits (:func:`body_limits`): ``POST
/lookup/batch`` ``max_batch_points × batch_point_bytes`` plus an envelope, uploads
(``…/import``, ``/generations/{id}/areas``, ``/plans/{id}/edits/file``)
``max_upload_bytes`` plus multipart framing, a case's photos (``/cases/{id}/attachments``)
``max_attachment_bytes`` plus framing, any other body ``max_body_bytes``. The exact checks
(points per batch, bytes per file: :func:`read_upload`) stay in the handlers; this is the
bound that keeps a 50 MB body from being parsed at all.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from cachetools import TTLCache
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import UnprocessableError, WanggeError, problem
from service.settings import APISettings

__all__ = [
    "AuthFailureLimiter",
    "TooManyFailuresError",
    "client_address",
    "BodyLimit",
    "BodyTooLargeError",
    "body_limits",
    "too_many_failures_response",
    "body_too_large_response",
    "read_upload",
]

#: JSON around a batch's points (``crs``, ``generation``, brackets, whitespace).
BATCH_ENVELOPE_BYTES = 64 * 1024
#: Multipart framing and the form fields beside an uploaded file.
MULTIPART_SLACK_BYTES = 1024 * 1024


class TooManyFailuresError(WanggeError):
    """Too many failed authentications from the client's address: wait ``retry_after`` s."""

    status = 429
    title = "Too many failed authentications"

    def __init__(self, *, failures: int, window_s: float, retry_after: float):
        super().__init__(
            f"{failures} failed authentications from your address within {window_s:g} s; "
            f"tokens from it are not checked for {math.ceil(retry_after)} s",
            field="Authorization",
        )
        self.retry_after = max(1, math.ceil(retry_after))


def client_address(scope) -> str:
    """Return the client address of an ASGI scope (``"-"`` when the server gives none)."""
    client = scope.get("client")
    return client[0] if client else "-"


class AuthFailureLimiter:
    """Counts failed authentications per client address in a sliding window.

    Parameters
    ----------
    limit : int
        Failures within ``window_s`` after which the address is refused.
    window_s : float
        The window, in seconds.
    max_addresses : int
        How many addresses are remembered at most (the least recently failing go first).
    clock : callable
        Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        max_addresses: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        # Each address's last `limit` failure times; an address that stops failing is
        # dropped once its newest failure leaves the window.
        self._failures: TTLCache[str, deque[float]] = TTLCache(
            maxsize=max_addresses, ttl=window_s, timer=clock
        )

    def check(self, address: str) -> None:
        """Refuse (429) an address that failed ``limit`` times within the window."""
        times = self._failures.get(address)
        if times is None or len(times) < self.limit:
            return
        wait = times[0] + self.window_s - self._clock()
        if wait > 0:
            raise TooManyFailuresError(
                failures=self.limit, window_s=self.window_s, retry_after=wait
            )

    def failed(self, address: str) -> None:
        """Count a failed authentication from ``address``."""
        times = self._failures.get(address)
        if times is None:
            times = deque(maxlen=self.limit)
        times.append(self._clock())
        self._failures[address] = times  # (re)starts the entry's time to live


def too_many_failures_response(request, exc: TooManyFailuresError):
    """Return the 429 problem+json of ``exc`` with its ``Retry-After``."""
    response = problem(
        exc.status, exc.title, exc.detail, instance=request.url.path, field=exc.field
    )
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


# -- body sizes -------------------------------------------------------------------------------
class BodyTooLargeError(StarletteHTTPException):
    """A streamed body passed its limit (raised from ``receive``, inside the handler).

    An HTTPException, so that FastAPI's body reading passes it on rather than answering 400;
    the app's handler for it (:func:`body_too_large_response`) answers problem+json.
    """

    def __init__(self, limit: int, method: str, path: str) -> None:
        super().__init__(413, f"the body exceeds {limit} bytes, the limit of {method} {path}")
        self.limit = limit


def body_too_large_response(request, exc: BodyTooLargeError):
    """Return the 413 problem+json of ``exc``."""
    return problem(413, "Request too large", exc.detail, instance=request.url.path, field="body")


async def read_upload(file, api: APISettings) -> bytes:
    """Return an uploaded file's bytes; refuse (422, field ``file``) one over
    ``max_upload_bytes``."""
    limit = api.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise UnprocessableError(f"the file exceeds {limit} bytes", field="file")
    return data


def body_limits(api: APISettings) -> Callable[[str], int]:
    """Return ``path -> the largest body (bytes) a request to it may send``."""
    batch = api.max_batch_points * api.batch_point_bytes + BATCH_ENVELOPE_BYTES
    upload = api.max_upload_bytes + MULTIPART_SLACK_BYTES
    default = api.max_body_bytes
    attachment = api.max_attachment_bytes + MULTIPART_SLACK_BYTES

    def limit_for(path: str) -> int:
        # endswith: the path may carry the root path of a proxy's prefix.
        if path.endswith("/lookup/batch"):
            return batch
        if path.endswith("/import") or (path.endswith("/areas") and "/generations/" in path):
            return upload
        if path.endswith("/edits/file") and "/plans/" in path:  # a redrawn set of grids
            return upload
        if path.endswith("/attachments") and "/cases/" in path:
            return attachment
        return default

    return limit_for


class BodyLimit:
    """ASGI middleware: 413 problem+json for a body over its route's limit, before parsing.

    With ``Content-Length`` the check costs one header lookup and the request passes
    untouched (the server never hands on more than the announced length). A chunked body
    is counted as it arrives; past the limit, ``receive`` raises :class:`BodyTooLargeError`
    in the handler that reads it, and the 413 leaves as the handler's answer (or from here,
    if nothing answered yet).
    """

    def __init__(self, app, *, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = chunked = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = value
        if length is None and chunked is None:
            return await self.app(scope, receive, send)  # no body
        path = scope["path"]
        limit = self.limit_for(path)
        if length is not None and length.isdigit():
            if int(length) <= limit:
                return await self.app(scope, receive, send)
            # Answered without reading the body: the server discards what still arrives
            # and keeps the connection.
            exc = BodyTooLargeError(limit, scope["method"], path)
            response = problem(
                413,
                "Request too large",
                f"the body is {int(length)} bytes; {exc.detail}",
                instance=path,
                field="body",
            )
            return await response(scope, receive, send)
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope, receive, send, limit: int) -> None:
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit, scope["method"], scope["path"])
            return message

        async def watching_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLargeError as exc:
            if started:
                raise
            response = problem(
                413, "Request too large", exc.detail, instance=scope["path"], field="body"
            )
            await response(scope, receive, send)
