"""A server's background jobs stop between rounds: a round in flight ends, it is not cancelled."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import text

from service.background import pause, stop_jobs
from service.db import make_async_engine, make_engine
from service.repositories.partitions import keep_months_ahead
from tests.conftest import _drop_database, tiny_database


def test_a_round_in_flight_ends_before_the_job_stops():
    events: list[str] = []

    async def job(stop: asyncio.Event) -> None:
        while True:
            events.append("round starts")
            await asyncio.sleep(0.2)  # a statement in flight
            events.append("round ends")
            if await pause(stop, 3600):
                return

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(job(stop))
        await asyncio.sleep(0.05)
        await stop_jobs(stop, [task, None])
        assert task.done() and not task.cancelled()

    asyncio.run(main())
    assert events == ["round starts", "round ends"]


def test_a_job_pausing_stops_at_once_and_a_stuck_one_is_cancelled_after_the_grace():
    async def main() -> tuple[float, bool]:
        stop = asyncio.Event()
        pausing = asyncio.create_task(pause(stop, 3600))
        stuck = asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await stop_jobs(stop, [pausing, stuck], grace_s=0.3)
        assert pausing.result() is True
        return loop.time() - start, stuck.cancelled()

    took, cancelled = asyncio.run(main())
    assert cancelled
    assert 0.25 <= took < 2


def test_a_server_stopping_while_months_are_created_lets_the_creation_finish():
    # The partition round waits on a lock held elsewhere when the server stops: stopping waits
    # for it (the month is made once the lock goes), it does not cancel ATTACH PARTITION.
    url = tiny_database("wangge_test_background")
    sync = make_engine(url)
    try:
        with sync.begin() as conn:
            name = conn.execute(
                text(
                    "SELECT 'incident_' || to_char(date_trunc('month', now() AT TIME ZONE "
                    "'Asia/Shanghai') + interval '12 months', 'YYYY_MM')"
                )
            ).scalar()
            conn.execute(text(f"ALTER TABLE incident DETACH PARTITION {name}"))
            conn.execute(text(f"DROP TABLE {name}"))
        holder = sync.connect()
        holder.execute(text("LOCK TABLE incident_default IN ACCESS EXCLUSIVE MODE"))
        release = threading.Timer(0.8, holder.commit)

        async def main() -> bool:
            engine = make_async_engine(url, pool_size=2)
            stop = asyncio.Event()
            job = asyncio.create_task(keep_months_ahead(engine, stop))
            with sync.connect() as watch:
                for _ in range(100):  # until the round waits for the lock
                    waiting = watch.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND query LIKE '%incident_ensure_partitions%'"
                        )
                    ).scalar()
                    if waiting:
                        break
                    watch.rollback()
                    await asyncio.sleep(0.05)
                assert waiting, "the partition round never started"
            release.start()
            await stop_jobs(stop, [job])
            await engine.dispose()
            return job.cancelled()

        assert asyncio.run(main()) is False
        holder.close()
        with sync.connect() as conn:
            assert conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar()
    finally:
        sync.dispose()
        _drop_database(url)
