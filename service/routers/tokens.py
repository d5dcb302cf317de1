"""Who am I; tokens (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from service import auth
from service.deps import AdminDep, PrincipalDep, WriteConnDep, forget_token
from service.schemas.areas import PrincipalRead, TokenCreate, TokenCreated

router = APIRouter(tags=["tokens"])


@router.get("/me", response_model=PrincipalRead, summary="The principal of your token")
async def me(principal: PrincipalDep) -> dict:
    return principal.as_dict()


@router.post("/tokens", status_code=201, response_model=TokenCreated, summary="Create a token")
async def create_token(conn: WriteConnDep, admin: AdminDep, body: TokenCreate) -> dict:
    """Create a token for a role and area; the token is shown once, only its hash is kept."""
    token = await conn.run_sync(
        lambda c: auth.create_token(
            c, name=body.name, role=body.role, area_code=body.area_code, source=body.source
        )
    )
    return {"token": token, "name": body.name, "role": body.role, "area_code": body.area_code}


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token")
async def revoke_token(
    request: Request,
    conn: WriteConnDep,
    admin: AdminDep,
    token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{6,32}$")],
) -> None:
    await conn.run_sync(lambda c: auth.revoke_token(c, token_id=token_id))
    # This process forgets the token at once; other workers within the cache TTL.
    forget_token(request.app, token_id=token_id)
