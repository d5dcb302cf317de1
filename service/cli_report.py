"""``wangge analysis report --area CODE -o DIR``: the coverage report of an area, as files.

Runs every analysis (:func:`service.analysis.report.run_report`), one line per step with
its time, and writes into ``DIR``:

* ``report.json``: the whole report (summaries, findings with GeoJSON, timings, tables);
* ``gaps.gpkg``: one layer per kind of gap (:data:`service.analysis.report.GAP_LAYERS`);
* ``tables/*.csv``: one CSV per table (:data:`service.analysis.report.TABLES`);
* ``report.html``: one self-contained page, readable offline (:func:`maps.report.report_html`):
  the key figures, bar charts drawn as inline SVG, and a map of the grids with the gap layers.

The CLI acts as an operator with the admin role (it holds the database already), so care
details are in ``report.json`` and logged under the token id ``cli``; the other files hold
care counts only. Siting (``--siting-k``, default 5 new facilities) runs unless
``--no-siting``.

``report`` is a plain typer command function; the ``analysis`` group registers it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["report"]


def _principal():
    from service.auth import OPERATOR

    return OPERATOR


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def report(
    out: Annotated[
        Path,
        typer.Option("-o", "--out", file_okay=False, help="directory to write the report into"),
    ],
    area: Annotated[
        str | None, typer.Option("--area", help="area code (default: everything; the CLI is admin)")
    ] = None,
    generation: Annotated[
        int | None, typer.Option(help="boundary generation (default: the current one)", min=1)
    ] = None,
    siting: Annotated[
        bool, typer.Option("--siting/--no-siting", help="also place new facilities (MCLP)")
    ] = True,
    siting_k: Annotated[
        int, typer.Option("--siting-k", help="new facilities to place", min=1, max=100)
    ] = 5,
) -> None:
    """Run every analysis of an area; write report.json, gaps.gpkg, tables/*.csv, report.html."""
    from sqlalchemy import text

    from maps.report import report_html
    from service.analysis.report import report_geopackage, report_tables, run_report
    from service.db import make_engine
    from service.errors import WanggeError
    from service.settings import get_settings

    def progress(step: str, done: int, total: int, seconds: float | None) -> None:
        if seconds is None:
            typer.echo(f"[{done + 1}/{total}] {step:<13}", nl=False)
        else:
            typer.echo(f"{seconds:8.2f} s")

    engine = make_engine(get_settings().db.resolved_url())
    try:
        with engine.begin() as conn:
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            body = run_report(
                conn,
                principal=_principal(),
                area_code=area,
                generation=generation,
                siting_k=siting_k if siting else None,
                progress=progress,
            )
    except WanggeError as exc:
        label = f"{exc.field}: " if exc.field else ""
        _fail(f"{label}{exc.detail}")
    finally:
        engine.dispose()
    typer.echo(f"analyses done in {body['timings']['total']:.2f} s")

    out.mkdir(parents=True, exist_ok=True)
    tables_dir = out / "tables"
    tables_dir.mkdir(exist_ok=True)

    def write(label: str, fn) -> None:
        started = time.perf_counter()
        typer.echo(f"writing {label:<13}", nl=False)
        fn()
        typer.echo(f"{time.perf_counter() - started:8.2f} s")

    write(
        "report.json",
        lambda: (out / "report.json").write_text(
            json.dumps(body, ensure_ascii=False, default=str), encoding="utf-8"
        ),
    )
    write("gaps.gpkg", lambda: (out / "gaps.gpkg").write_bytes(report_geopackage(body)))

    def tables() -> None:
        from service.analysis.report import table_csv

        for name, frame in report_tables(body).items():
            (tables_dir / f"{name}.csv").write_bytes(table_csv(frame))

    write("tables/*.csv", tables)
    write("report.html", lambda: (out / "report.html").write_text(report_html(body), "utf-8"))
    where = body["area"]["code"] or "all areas"
    typer.echo(f"report of {where} written to {out}")
