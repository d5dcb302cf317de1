"""``wangge demo``: load the Guiyang demo once and print a token per role.

The tokens are kept in ``.demo-tokens.json`` at the repository root (``WANGGE_DEMO_TOKENS``
names another file) and printed again while they are alive, so ``make run`` shows the same
tokens every time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import run

__all__ = ["DEMO_TOKENS_FILE", "demo"]

DEMO_TOKENS_FILE = Path(
    os.environ.get("WANGGE_DEMO_TOKENS", Path(__file__).resolve().parents[2] / ".demo-tokens.json")
)


def demo(
    seed: Annotated[int, typer.Option(help="seed of the generated communities and grids")] = 2014,
) -> None:
    """Load the Guiyang demo (once) and print a token per role."""
    tokens = run(lambda conn: _load_demo(conn, seed=seed))
    typer.echo("\nDemo tokens (send as 'Authorization: Bearer <token>'):")
    for t in tokens:
        typer.echo(f"  {t['role']:<22} {t['area_code'] or '-':<16} {t['token']}")


def _load_demo(conn, *, seed: int) -> list[dict]:
    """Return the demo tokens, after loading the demo into an empty database.

    A database with boundaries keeps its data; only the demo entities are added when it
    has no units.
    """
    from sqlalchemy import text

    from fixtures.guiyang import build_guiyang_demo
    from service.repositories import boundaries

    if boundaries.current_generation(conn) is None and boundaries.pending_generation(conn) is None:
        summary = build_guiyang_demo(conn, seed=seed, progress=lambda m: typer.echo(m))
        typer.echo(summary)
    else:
        typer.echo("boundaries already loaded; the demo is not rebuilt (data kept)")
        if not conn.execute(text("SELECT EXISTS (SELECT 1 FROM unit)")).scalar():
            from fixtures.guiyang_entities import build_demo_entities

            typer.echo(build_demo_entities(conn, seed=seed))
    return _demo_tokens(conn)


def _demo_tokens(conn) -> list[dict]:
    """Return the saved demo tokens while all are alive, else new ones (saved, mode 600)."""
    from sqlalchemy import text

    from fixtures.guiyang import create_demo_tokens

    if DEMO_TOKENS_FILE.exists():
        saved = json.loads(DEMO_TOKENS_FILE.read_text())
        ids = [t["token"].split("_")[1] for t in saved]
        alive = conn.execute(
            text("SELECT count(*) FROM api_token WHERE id = ANY(:ids) AND revoked_at IS NULL"),
            {"ids": ids},
        ).scalar()
        if alive == len(saved):
            return saved
    tokens = create_demo_tokens(conn)
    DEMO_TOKENS_FILE.write_text(json.dumps(tokens, ensure_ascii=False, indent=1))
    DEMO_TOKENS_FILE.chmod(0o600)
    return tokens
