"""``wangge demo``: load the Guiyang demo once and print a token per role.

The tokens are kept in ``.demo-tokens.json`` at the repository root (``WANGGE_DEMO_TOKENS``
names another file) and printed again while they are alive, so ``make run`` shows the same
tokens every time.

``wangge demo --province 520000 --database wangge_province`` builds a whole province instead
(:mod:`fixtures.province`: every county of Guizhou, ~35,000 generated grids and their
entities), best into a database of its own (``--database``: created and migrated on the
configured server when missing); its tokens go to ``.demo-tokens-<province>.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import database_url, fail, run

__all__ = ["DEMO_TOKENS_FILE", "demo"]

DEMO_TOKENS_FILE = Path(
    os.environ.get("WANGGE_DEMO_TOKENS", Path(__file__).resolve().parents[2] / ".demo-tokens.json")
)


def demo(
    seed: Annotated[int, typer.Option(help="seed of the generated communities and grids")] = 2014,
    province: Annotated[
        str | None,
        typer.Option(help="build this province instead of the Guiyang demo (520000: Guizhou)"),
    ] = None,
    city: Annotated[
        list[str] | None,
        typer.Option(help="with --province: only this prefecture city (repeatable)"),
    ] = None,
    county: Annotated[
        list[str] | None,
        typer.Option(help="with --province: only this county-level division (repeatable)"),
    ] = None,
    grids: Annotated[
        int | None,
        typer.Option(min=1, help="with --province: grids in all (default: one per 1,100 people)"),
    ] = None,
    incidents: Annotated[
        int | None,
        typer.Option(min=0, help="with --province: incidents (default: the last 30 days)"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="with --province: processes cutting counties")
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(help="build into this database of the configured server (made if missing)"),
    ] = None,
) -> None:
    """Load the Guiyang demo (once) and print a token per role; or a whole province."""
    if database is not None:
        _use_database(database)
    if province is None:
        if city or county or grids is not None or incidents is not None or workers is not None:
            fail("--city, --county, --grids, --incidents and --workers need --province")
        tokens = run(lambda conn: _load_demo(conn, seed=seed))
    else:
        tokens = _load_province(
            province,
            seed=seed,
            cities=city or None,
            counties=county or None,
            grids=grids,
            incidents=incidents,
            workers=workers,
        )
    typer.echo("\nDemo tokens (send as 'Authorization: Bearer <token>'):")
    for t in tokens:
        typer.echo(f"  {t['role']:<22} {t['area_code'] or '-':<16} {t['token']}")


def _use_database(name: str) -> None:
    """Point this command (and the settings it reads) at database ``name``, made and migrated."""
    from sqlalchemy.engine import make_url

    from service.db import ensure_database, migrate, sync_url

    if not name or not all(c.isalnum() or c == "_" for c in name):
        fail(f"--database: a database name is letters, digits and _, got {name!r}")
    url = make_url(sync_url(database_url())).set(database=name)
    url = url.render_as_string(hide_password=False)
    if ensure_database(url):
        typer.echo(f"created database {name}")
    migrate(url)
    os.environ["DATABASE_URL"] = url
    typer.echo(f"database: {make_url(url).render_as_string(hide_password=True)}")


def _load_province(province: str, **options) -> list[dict]:
    """Build ``province`` into an empty database and return tokens for it (saved beside the
    city demo's, in ``.demo-tokens-<province>.json``)."""
    from fixtures.province import PROVINCES, build_province_demo, create_province_tokens
    from service.repositories import boundaries

    if province not in PROVINCES:
        fail(
            f"--province: no province {province!r} in the demo builder (known: "
            f"{', '.join(sorted(PROVINCES))})"
        )

    def build(conn) -> None:
        if boundaries.current_generation(conn) is not None:
            typer.echo("boundaries already loaded; the province is not rebuilt (data kept)")
            return
        try:
            summary = build_province_demo(
                conn, province, progress=lambda m: typer.echo(m), **options
            )
        except ValueError as exc:
            fail(str(exc))
        typer.echo(summary)

    run(build)
    path = DEMO_TOKENS_FILE.with_name(f".demo-tokens-{province}.json")
    return run(lambda conn: _saved_tokens(conn, path, create_province_tokens))


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
    from fixtures.guiyang import create_demo_tokens

    return _saved_tokens(conn, DEMO_TOKENS_FILE, create_demo_tokens)


def _saved_tokens(conn, path: Path, create) -> list[dict]:
    """Return the tokens saved in ``path`` while all are alive, else ``create(conn)``'s."""
    from sqlalchemy import text

    if path.exists():
        saved = json.loads(path.read_text())
        ids = [t["token"].split("_")[1] for t in saved]
        alive = conn.execute(
            text("SELECT count(*) FROM api_token WHERE id = ANY(:ids) AND revoked_at IS NULL"),
            {"ids": ids},
        ).scalar()
        if alive == len(saved):
            return saved
    tokens = create(conn)
    path.write_text(json.dumps(tokens, ensure_ascii=False, indent=1))
    path.chmod(0o600)
    return tokens
