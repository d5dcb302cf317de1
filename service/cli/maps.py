"""``wangge map``: a map page as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import database_url, describe, fail, operator

__all__ = ["map_page"]


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
    lang: Annotated[str, typer.Option(help="the page's language: zh-CN (default) or en")] = "zh-CN",
) -> None:
    """Write a map page as one self-contained HTML file (data and scripts inline, no token).

    The file opens offline from disk. It is drawn as an admin sees it; its tablet form is
    disabled (it holds no token to file cases with).
    """
    from maps.geojson import PageDataError
    from maps.i18n import LANGUAGES
    from service.errors import WanggeError
    from service.pages import PAGE_ROLES, export_page

    if lang not in LANGUAGES:
        fail(f"--lang is one of {', '.join(LANGUAGES)}, not {lang!r}")
    if page not in PAGE_ROLES:
        fail(f"unknown page {page!r}; one of {', '.join(PAGE_ROLES)}")
    if page == "tablet" and grid is None:
        fail("the tablet page needs --grid CODE")
    try:
        html = export_page(
            database_url(),
            operator(),
            page,
            area=area,
            grid=grid,
            metric=metric,
            link_base=link_base,
            lang=lang,
        )
    except WanggeError as exc:
        fail(describe(exc))
    except PageDataError as exc:
        fail(str(exc))
    data = html.encode("utf-8")
    output.write_bytes(data)
    typer.echo(f"wrote {output} ({len(data):,} bytes)")
