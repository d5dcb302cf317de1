"""Page sessions: a map page's ``?access_token=`` exchanged once for a cookie, and CSRF.

A browser opens a map page as ``/pages/…?access_token=<token>`` (it cannot send headers).
Left in the address bar, the token would stay in the history, bookmarks and screenshots,
so the page answers ``303 See Other`` to the same address without it and sets a cookie
(:func:`session_redirect`); the page, its drill-down links and its report form then work
from the cookie.

The cookie is not the token. It is ``<token id>.<expiry>.<signature>``: an HMAC of the id
and the expiry keyed by the token's stored hash (and ``WANGGE_API_SESSION_KEY`` when set),
so it is verified with what the database already holds (any worker, any restart, no session
table), it dies with the token (revoked or expired: refused), and it is worth less than the
token if it leaks: it expires (``WANGGE_API_SESSION_SECONDS``, default 12 h) and is accepted
only on the paths it is scoped to. Its flags: ``HttpOnly`` (scripts cannot read it),
``SameSite=Strict`` (no other site's page or link makes the browser send it), ``Secure``
when the page was requested over TLS (``https``, including through a proxy uvicorn trusts,
which sets the scheme from ``X-Forwarded-Proto``). It is set once per path of
:data:`COOKIE_PATHS` (a cookie has one path): the pages, the tiles, ``/incidents`` where
the tablet's form files cases, and ``/cases`` where the live pages read, follow and act on
them; the server accepts it on those paths only.

Strict has one cost: a page link followed from another site (webmail) arrives without the
cookie after the redirect, and the page answers 401; opening it from the address bar, a
bookmark or an app works.

Writes authenticated by the cookie alone need the header ``X-CSRF-Token`` with the value
the page was given (:func:`csrf_token`: derived from the cookie, which no other site can
read); SameSite=Strict already keeps other sites' requests from carrying the cookie, this is
the second lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "COOKIE",
    "COOKIE_PATHS",
    "CSRF_HEADER",
    "SAFE_METHODS",
    "Session",
    "parse_session",
    "sign_session",
    "verify_session",
    "csrf_token",
    "csrf_ok",
    "accepts_cookie",
    "session_cookie",
    "session_redirect",
]

COOKIE = "wg_session"
#: Where the cookie is sent and accepted: the map pages, the tiles, the report form's POST,
#: and the cases the live pages read, follow (``/cases/stream``) and act on.
COOKIE_PATHS = ("/pages", "/tiles", "/incidents", "/cases")
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_KEY = b"wangge page session v1"
_SHAPE = re.compile(r"([A-Za-z0-9]{1,64})\.([0-9]{1,12})\.([A-Za-z0-9_\-]{43})")


@dataclass(frozen=True)
class Session:
    """A parsed (not yet verified) session cookie."""

    value: str
    token_id: str
    expires: int
    signature: str

    def expired(self, now: float | None = None) -> bool:
        return self.expires <= (time.time() if now is None else now)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signature(token_id: str, expires: int, secret_sha256: bytes, key: bytes | None) -> str:
    token_key = hmac.new(key or _DEFAULT_KEY, bytes(secret_sha256), hashlib.sha256).digest()
    return _b64(hmac.new(token_key, f"{token_id}.{expires}".encode(), hashlib.sha256).digest())


def sign_session(
    token_id: str, secret_sha256: bytes, *, seconds: int, key: bytes | None = None
) -> str:
    """Return a cookie value for the token ``token_id`` valid for ``seconds``."""
    expires = int(time.time()) + seconds
    return f"{token_id}.{expires}.{_signature(token_id, expires, secret_sha256, key)}"


def parse_session(value: str | None) -> Session | None:
    """Return the parts of a well-formed cookie value, else None (nothing is verified)."""
    match = _SHAPE.fullmatch(value) if value else None
    if match is None:
        return None
    return Session(value, match.group(1), int(match.group(2)), match.group(3))


def verify_session(session: Session, secret_sha256: bytes, key: bytes | None = None) -> bool:
    """Return whether ``session`` was signed for its token (whose stored hash is given)."""
    expected = _signature(session.token_id, session.expires, secret_sha256, key)
    return hmac.compare_digest(expected, session.signature)


def csrf_token(session_value: str) -> str:
    """Return the CSRF token of a session: what its page sends as ``X-CSRF-Token``."""
    return _b64(hashlib.sha256(b"wangge csrf|" + session_value.encode()).digest())


def csrf_ok(session_value: str, header: str | None) -> bool:
    """Return whether ``header`` is the CSRF token of the session."""
    return header is not None and hmac.compare_digest(csrf_token(session_value), header)


def accepts_cookie(path: str) -> bool:
    """Return whether the cookie authenticates a request to ``path`` (as a browser sends it)."""
    for prefix in COOKIE_PATHS:
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return True
    return False


def session_cookie(headers) -> str | None:
    """Return the session cookie's value from ASGI headers (``(name, value)`` bytes pairs)."""
    for name, value in headers:
        if name == b"cookie" and b"wg_session=" in value:
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == COOKIE:
                    return val
    return None


def session_redirect(request: Request, value: str, *, seconds: int) -> Response:
    """Return the 303 to the request's address without ``access_token``, setting the cookie."""
    root = request.scope.get("root_path", "").rstrip("/")
    path = request.url.path
    if root and not path.startswith(root + "/"):
        path = root + path
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "access_token"]
    query = urlencode(kept)
    response = Response(
        status_code=303,
        headers={
            "Location": path + (f"?{query}" if query else ""),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )
    secure = request.url.scheme == "https"
    for prefix in COOKIE_PATHS:
        response.set_cookie(
            COOKIE,
            value,
            max_age=seconds,
            path=root + prefix,
            secure=secure,
            httponly=True,
            samesite="strict",
        )
    return response
