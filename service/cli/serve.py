"""``wangge serve``: the HTTP API under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["serve"]


def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option()] = 1,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from service.cli.common import connect

    # The app connects as it starts: a database that is away is said here in one line,
    # not in uvicorn's startup traceback.
    with connect():
        pass
    typer.echo(f"wangge on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )
