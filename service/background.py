"""A server process's periodic jobs (partition upkeep, deadline sweeps), stopped between rounds.

A job runs a round, then :func:`pause` s until its next one or until the process stops. On
shutdown :func:`stop_jobs` sets the stop signal and waits for a round in flight to end rather
than cancelling it: a cancelled round would make the driver send PostgreSQL a cancel request
in the middle of a statement (``ATTACH PARTITION`` with its index builds, a sweep's updates).
That is legal, but rare cancels landing there aborted the PostgreSQL 15 / PostGIS 3.3 backend
(a glibc malloc assertion, once in ~1,000 test-server shutdowns, taking the whole cluster
through crash recovery), and it wastes the round's work. A round still running after
``grace_s`` is cancelled as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

__all__ = ["pause", "stop_jobs"]

log = logging.getLogger(__name__)

#: How long a stopping process waits for a job's round in flight before cancelling it.
STOP_GRACE_S = 30.0


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; return True when the job should stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def stop_jobs(
    stop: asyncio.Event, jobs: Iterable[asyncio.Task | None], *, grace_s: float = STOP_GRACE_S
) -> None:
    """Set ``stop`` and wait for each job to end its round (cancel it after ``grace_s``)."""
    stop.set()
    running = [job for job in jobs if job is not None]
    if not running:
        return
    _, late = await asyncio.wait(running, timeout=grace_s)
    for job in late:
        job.cancel()
    for job in running:
        try:
            await job
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - shutting down: say what failed, stop the rest
            log.exception("background job %s failed", job.get_name())
