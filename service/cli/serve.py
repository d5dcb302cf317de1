"""``wangge serve``: the HTTP API under uvicorn, in one process or several.

With ``--workers N`` uvicorn's supervisor runs N processes (and restarts one that dies).
Each binds its own listening socket with ``SO_REUSEPORT``, so the kernel spreads new
connections evenly over them. With uvicorn's default, one socket shared by every process,
whichever process woke first accepted a whole burst of connections: of wrk's 32, one
process took 28 and the other 4 (bench/workers.py prints the spread).
"""

from __future__ import annotations

import socket
from typing import Annotated

import typer
from uvicorn.supervisors import multiprocess

__all__ = ["serve"]


class _ReusePortProcess(multiprocess.Process):
    """A uvicorn worker process that listens on a ``SO_REUSEPORT`` socket of its own."""

    def target(self, sockets=None) -> None:  # pragma: no cover (runs in the worker)
        config = self.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, config.port))
        sock.set_inheritable(True)
        super().target([sock])


def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="server processes on the port; each has its own pools, tile cache, token "
            "cache and listeners (bench/workers.py measures what they give)",
        ),
    ] = 1,
    access_log: Annotated[
        bool, typer.Option(help="log every request (a proxy in front usually does)")
    ] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn's: debug, info, warning, error")] = "info",
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from service.cli.common import connect

    # The app connects as it starts: a database that is away is said here in one line,
    # not in uvicorn's startup traceback.
    with connect():
        pass
    typer.echo(
        f"wangge on http://{host}:{port}  (API docs: http://{host}:{port}/docs)"
        + (f", {workers} processes" if workers > 1 else "")
    )
    options = dict(
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
    )
    if workers == 1:
        uvicorn.run("service.app:create_app", **options)
        return
    config = uvicorn.Config("service.app:create_app", **options)
    # uvicorn.run(workers=N) binds one socket here and shares it; instead each worker binds
    # its own (_ReusePortProcess) and the supervisor holds none. Taken from uvicorn.run.
    multiprocess.Process = _ReusePortProcess
    multiprocess.Multiprocess(config, sockets=[]).run()
