"""``wangge token create|list|revoke``: API tokens (only their hashes are stored)."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.common import run

__all__ = ["app"]

app = typer.Typer(help="API tokens", no_args_is_help=True)


@app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin, planner, city_dispatcher, ...")],
    name: Annotated[str, typer.Option(help="who or what holds it")],
    area: Annotated[str | None, typer.Option(help="area code the token is scoped to")] = None,
    source: Annotated[
        str | None, typer.Option(help="intake tokens: hotline_12319, camera, ...")
    ] = None,
) -> None:
    """Create a token and print it (it is shown once; only its hash is stored)."""
    from service.auth import create_token

    typer.echo(run(lambda c: create_token(c, name=name, role=role, area_code=area, source=source)))


@app.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    from service.auth import list_tokens

    for r in run(list_tokens):
        state = "revoked" if r.revoked_at else "active"
        typer.echo(f"{r.id}\t{state}\t{r.role}\t{r.area_code or '-'}\t{r.name}")


@app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a token by id."""
    from service.auth import revoke_token

    run(lambda c: revoke_token(c, token_id=token_id))
    typer.echo(f"token {token_id} revoked")
