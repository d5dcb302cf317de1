"""``wangge analysis report --area CODE -o DIR``: the coverage report of an area, as files.

Runs every analysis (:func:`service.analysis.report.run_report`), one line per step with
its time, and writes into ``DIR``:

* ``report.json``: the whole report (summaries, findings with GeoJSON, timings, tables);
* ``gaps.gpkg``: one layer per kind of gap (:data:`maps.gaps.GAP_LAYERS`);
* ``tables/*.csv``: one CSV per table (:data:`service.analysis.report.TABLES`);
* ``report.html``: one self-contained page, readable offline (:func:`maps.report.report_html`):
  the key figures, bar charts drawn as inline SVG, and a map of the grids with the gap layers.

The CLI acts as the operator, so care details are in ``report.json`` and logged under the
token id ``cli``; the other files hold care counts only. Siting (``--siting-k``, default 5
new facilities) runs unless ``--no-siting``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import dumps, operator, run

__all__ = ["report"]


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
    lang: Annotated[
        str, typer.Option("--lang", help="report.html's language: zh-CN (default) or en")
    ] = "zh-CN",
) -> None:
    """Run every analysis of an area; write report.json, gaps.gpkg, tables/*.csv, report.html."""
    from maps.i18n import LANGUAGES

    if lang not in LANGUAGES:
        raise typer.BadParameter(f"one of {', '.join(LANGUAGES)}", param_hint="--lang")
    body = _gather(area=area, generation=generation, siting_k=siting_k if siting else None)
    typer.echo(f"analyses done in {body['timings']['total']:.2f} s")
    _write_files(body, out, lang=lang)
    where = body["area"]["code"] or "all areas"
    typer.echo(f"report of {where} written to {out}")


def _gather(*, area: str | None, generation: int | None, siting_k: int | None) -> dict:
    """Return the report, its analyses run on one snapshot, a line per step with its time."""
    from sqlalchemy import text

    from service.analysis.report import run_report

    def progress(step: str, done: int, total: int, seconds: float | None) -> None:
        if seconds is None:
            typer.echo(f"[{done + 1}/{total}] {step:<13}", nl=False)
        else:
            typer.echo(f"{seconds:8.2f} s")

    def work(conn) -> dict:
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        return run_report(
            conn,
            principal=operator(),
            area_code=area,
            generation=generation,
            siting_k=siting_k,
            progress=progress,
        )

    return run(work)


def _report_html(body: dict, lang: str) -> str:
    """Return report.html, its map on the offline basemap of its view (tiles inline) and
    WANGGE_BASEMAP's keyless providers."""
    from maps.report import report_html
    from service.basemap import static_file_basemaps
    from service.cli.common import database_url

    shown = body["analyses"]["workload"]["items"]
    basemaps = static_file_basemaps(database_url(), operator(), shown)
    return report_html(body, lang=lang, basemaps=basemaps)


def _write_files(body: dict, out: Path, *, lang: str = "zh-CN") -> None:
    """Write the report's files into ``out``, a line per file with its time."""
    from service.analysis.report import report_geopackage, report_tables, table_csv

    out.mkdir(parents=True, exist_ok=True)
    tables_dir = out / "tables"
    tables_dir.mkdir(exist_ok=True)

    def tables() -> None:
        for name, frame in report_tables(body).items():
            (tables_dir / f"{name}.csv").write_bytes(table_csv(frame))

    files: list[tuple[str, Callable[[], object]]] = [
        ("report.json", lambda: (out / "report.json").write_text(dumps(body), encoding="utf-8")),
        ("gaps.gpkg", lambda: (out / "gaps.gpkg").write_bytes(report_geopackage(body))),
        ("tables/*.csv", tables),
        (
            "report.html",
            lambda: (out / "report.html").write_text(_report_html(body, lang), "utf-8"),
        ),
    ]
    for label, write in files:
        started = time.perf_counter()
        typer.echo(f"writing {label:<13}", nl=False)
        write()
        typer.echo(f"{time.perf_counter() - started:8.2f} s")
