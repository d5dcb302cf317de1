"""Return principals from API tokens; create tokens. Every request acts as a principal.

A token looks like ``wg_<id>_<secret>``. Only the SHA-256 of the secret is stored: the secret
is 32 random bytes, so a slow password hash would add nothing but latency to every request.
Verified tokens are cached in memory for ``WANGGE_API_TOKEN_CACHE_SECONDS`` (default 30 s),
so a revocation takes effect within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, Row, func, insert, select, update

from service.errors import NotFoundError, UnprocessableError
from service.tables import api_token, area

__all__ = [
    "ROLES",
    "ROLE_LEVEL",
    "Principal",
    "PENDING_ROLES",
    "DISPATCHER_ROLES",
    "MANAGER_ROLES",
    "CARE_DETAIL_ROLES",
    "STAFF_ROLES",
    "OPERATOR",
    "require_readable_generation",
    "split_token",
    "hash_secret",
    "create_token",
    "revoke_token",
    "list_tokens",
]

#: Roles and the level of area their scope must be (None: any level; admin: everything).
ROLE_LEVEL: dict[str, tuple[str, ...] | None] = {
    "admin": None,
    "planner": ("city", "district", "community"),
    "city_dispatcher": ("city",),
    "district_dispatcher": ("district",),
    "community_dispatcher": ("community",),
    "grid_officer": ("grid",),
    # A system that files cases (the 12319 hotline, a camera platform): it creates incidents
    # in its area, stamped with its source, and reads them back (Open311).
    "intake": ("city", "district"),
}
SOURCES = ("hotline_12319", "patrol", "resident", "camera", "referral")
ROLES = tuple(ROLE_LEVEL)


@dataclass(frozen=True)
class Principal:
    """Who is asking: role and area scope (``scope_path`` None means the whole system)."""

    token_id: str
    name: str
    role: str
    area_code: str | None
    scope_path: str | None
    source: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def covers_path(self, path: str) -> bool:
        """Return whether an area with materialised ``path`` is inside this scope."""
        if self.scope_path is None:
            return True
        return path == self.scope_path or path.startswith(self.scope_path + "/")

    def sees_path(self, path: str) -> bool:
        """Return whether the area is inside the scope or one of the scope's ancestors."""
        if self.covers_path(path):
            return True
        return self.scope_path.startswith(path + "/")

    def as_dict(self) -> dict:
        return {
            "token_id": self.token_id,
            "name": self.name,
            "role": self.role,
            "area_code": self.area_code,
        }


#: Who the command line acts as: an operator at the database already, with the admin role.
#: Its reads of sensitive data are logged under the token id "cli".
OPERATOR = Principal(token_id="cli", name="cli", role="admin", area_code=None, scope_path=None)

# Role groups. Each names its members in full, admin included where admin belongs (admin is
# never added implicitly); DISPATCHER_ROLES alone is a building block without admin.

#: The three dispatch centres (city, district, community), without admin.
DISPATCHER_ROLES = frozenset({"city_dispatcher", "district_dispatcher", "community_dispatcher"})
#: Who manages the records of an area: writes every entity kind, deletes, imports files.
MANAGER_ROLES = frozenset({"admin", *DISPATCHER_ROLES})
#: Who reads care households in detail (and records them): those who visit and those who
#: direct the visits. Planners and the city centre see counts only.
CARE_DETAIL_ROLES = frozenset(
    {"admin", "district_dispatcher", "community_dispatcher", "grid_officer"}
)
#: Everyone who works in the system, as opposed to the machines that file cases (intake).
STAFF_ROLES = frozenset({"admin", "planner", *DISPATCHER_ROLES, "grid_officer"})
#: Roles that may read a pending (not yet activated) generation: they review plans.
PENDING_ROLES = frozenset({"admin", "planner"})


def require_readable_generation(principal: Principal, generation: int, active: bool) -> None:
    """Refuse (403) a pending generation to roles that may only read current boundaries."""
    from service.errors import ForbiddenError

    if not active and principal.role not in PENDING_ROLES:
        raise ForbiddenError(
            f"generation {generation} is pending; only planners and admins may read it",
            field="generation",
        )


def hash_secret(secret: str) -> bytes:
    """Return the SHA-256 digest stored for ``secret``."""
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[str, str] | None:
    """Return (id, secret) of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "wg" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def verify_secret(secret: str, digest: bytes) -> bool:
    """Return whether ``secret`` hashes to ``digest`` (constant time)."""
    return hmac.compare_digest(hash_secret(secret), bytes(digest))


def create_token(
    conn: Connection, *, name: str, role: str, area_code: str | None, source: str | None = None
) -> str:
    """Return a new token (shown once) for ``role`` scoped to ``area_code``; store its hash.

    An ``intake`` token names the ``source`` its incidents come from (e.g. hotline_12319).
    """
    if (role == "intake") != (source is not None):
        raise UnprocessableError(
            "an intake token needs a source, and only intake tokens have one", field="source"
        )
    if source is not None and source not in SOURCES:
        raise UnprocessableError(
            f"unknown source {source!r}; one of {', '.join(SOURCES)}", field="source"
        )
    if role not in ROLE_LEVEL:
        raise UnprocessableError(f"unknown role {role!r}; one of {', '.join(ROLES)}", field="role")
    allowed = ROLE_LEVEL[role]
    if allowed is not None:
        if not area_code:
            raise UnprocessableError(f"a {role} needs an area", field="area_code")
        # Codes never change meaning: the level of a code is that of its newest version.
        level = conn.execute(
            select(area.c.level)
            .where(area.c.code == area_code)
            .order_by(area.c.generation_high.desc())
            .limit(1)
        ).scalar()
        if level is None:
            raise NotFoundError(f"no area with code {area_code}", field="area_code")
        if level not in allowed:
            raise UnprocessableError(
                f"a {role} is scoped to a {' or '.join(allowed)}, {area_code} is a {level}",
                field="area_code",
            )
    elif area_code:
        raise UnprocessableError("an admin token is not scoped to an area", field="area_code")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    conn.execute(
        insert(api_token).values(
            id=token_id,
            name=name,
            role=role,
            area_code=area_code,
            secret_sha256=hash_secret(secret),
            source=source,
        )
    )
    return f"wg_{token_id}_{secret}"


def revoke_token(conn: Connection, *, token_id: str) -> None:
    """Revoke the token ``token_id``."""
    res = conn.execute(
        update(api_token)
        .where(api_token.c.id == token_id, api_token.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    if res.rowcount == 0:
        raise NotFoundError(f"no active token {token_id}", field="token_id")


def list_tokens(conn: Connection) -> list[Row]:
    """Return every token, oldest first: who holds it, role, area, source, dates; never the
    secret's hash."""
    t = api_token.c
    return conn.execute(
        select(
            t.id, t.name, t.role, t.area_code, t.source, t.created_at, t.expires_at, t.revoked_at
        ).order_by(t.created_at)
    ).all()
