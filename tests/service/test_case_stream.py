"""The live case stream (GET /cases/stream): scoping, resuming, one delivery per event.

The first half checks the fan-out in memory (no database); the second runs live servers on
a real PostGIS and reads the stream as a browser would.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from service.auth import Principal
from service.dispatch.stream import OPENING, CaseEvent, CaseStream, Subscriber, sees_event

CITY = "99"
D1, D2 = f"{CITY}/01", f"{CITY}/02"
C11, C12, C21 = f"{D1}/011", f"{D1}/012", f"{D2}/021"
G111, G112, G121, G211 = f"{C11}/1", f"{C11}/2", f"{C12}/1", f"{C21}/1"
PATHS = [CITY, D1, D2, C11, C12, C21, G111, G112, G121, G211]


def _who(scope: str | None, role: str = "community_dispatcher") -> Principal:
    code = None if scope is None else scope.rsplit("/", 1)[-1]
    return Principal(token_id=f"t{scope}", name="x", role=role, area_code=code, scope_path=scope)


def _event(id: int, area_path: str | None, *paths: str) -> CaseEvent:
    return CaseEvent(id=id, area_path=area_path, paths=paths, frame=b"%d" % id)


# -- who sees what ---------------------------------------------------------------------


def test_a_grid_officer_sees_its_grid_and_what_is_dispatched_to_it_never_a_sibling():
    officer = _who(G111, "grid_officer")
    assert sees_event(officer, _event(1, G111, C11))
    # Located in the sibling grid but dispatched to this one.
    assert sees_event(officer, _event(2, G112, C11, G111))
    assert not sees_event(officer, _event(3, G112, C11))
    assert not sees_event(officer, _event(4, G112, C11, G112))
    assert not sees_event(officer, _event(5, G121, C12, G121))
    # Owned by the community above it, located elsewhere: not its business.
    assert not sees_event(officer, _event(6, G112, C11, D1))


def test_a_dispatcher_sees_its_area_and_below_never_a_neighbour():
    community, district = _who(C11), _who(D1, "district_dispatcher")
    assert sees_event(community, _event(1, G111, C11))
    assert sees_event(community, _event(2, G112, D1))  # escalated to the district: still in it
    assert not sees_event(community, _event(3, G121, C12))
    assert sees_event(community, _event(4, G121, D1, C11))  # it just left this community
    assert sees_event(district, _event(5, G121, C12))
    assert not sees_event(district, _event(6, G211, C21))


def test_cases_outside_every_area_belong_to_city_level_scopes():
    outside = _event(1, None, CITY)
    assert sees_event(_who(None, "admin"), outside)
    assert sees_event(_who(CITY, "city_dispatcher"), outside)
    assert not sees_event(_who(D1), _event(2, None))
    assert sees_event(_who(CITY, "city_dispatcher"), _event(3, None))


def test_fan_out_reaches_exactly_the_subscribers_that_see_each_event():
    stream = CaseStream("postgresql://x/y", pool=None, queue_events=10_000)
    scopes = [None, *PATHS, f"{CITY}9", f"{C11}9"]  # prefixes that are not ancestors
    subs = [stream.subscribe(_who(scope)) for scope in scopes for _ in range(2)]
    rng = random.Random(7)
    events = []
    for i in range(1, 400):
        area = rng.choice([*PATHS, None, f"{G111}9"])
        events.append(_event(i, area, *rng.sample(PATHS + [f"{C11}9/1"], rng.randint(0, 3))))
    stream.deliver(events)
    for sub in subs:
        got = [e.id for e in sub._events]
        assert got == [e.id for e in events if sees_event(sub.principal, e)], sub.principal
    assert stream.last_id == 399
    stream.deliver(events[:5])  # already delivered: not again
    assert all(len(sub._events) == len(set(e.id for e in sub._events)) for sub in subs)


# -- bounded queues and the seam -------------------------------------------------------


def test_a_subscriber_that_falls_behind_is_dropped_and_holds_nothing():
    async def run():
        sub = Subscriber(_who(C11), limit=3)
        for i in range(3):
            sub.offer(_event(i, G111))
        assert not sub.overflowed
        sub.offer(_event(4, G111))
        assert sub.overflowed and not sub._events
        sub.offer(_event(5, G111))
        assert not sub._events
        assert await sub.next_batch() == []

    asyncio.run(run())


class _FakeLog:
    """A pool whose replay query answers from a list of events (rows of encode_event)."""

    def __init__(self, rows):
        self.rows = rows
        self.reads = 0

    async def fetch(self, sql, after, scope, limit):
        self.reads += 1
        return [r for r in self.rows if r["id"] > after][:limit]


def _row(id: int, area_path: str) -> dict:
    from service.dispatch import stream as s

    row = {name: None for name in s._EVENT_FIELDS}
    row.update({f"c_{name}": None for name in s._CASE_EXPRESSIONS})
    row.update(id=id, c_area_path=area_path, c_step_overdue=False)
    row.update(from_owner_path=None, step_minutes=None, data="{}")
    return row


def _ids(chunks: list[bytes]) -> list[int]:
    frames = b"".join(chunks).split(b"\n\n")[:-1]
    return [int(f.split(b"\n", 1)[0].removeprefix(b"id: ")) for f in frames]


def test_resume_replays_the_log_then_goes_live_without_repeating_the_seam():
    from service.dispatch.stream import encode_event

    async def run():
        log_rows = [_row(i, G111 if i % 2 else G121) for i in range(1, 8)]
        stream = CaseStream("postgresql://x/y", pool=_FakeLog(log_rows))
        stream.last_id = 0
        follower = stream.follow(_who(C11), last_event_id=2)
        assert await follower.__anext__() == OPENING  # subscribed
        frames = [await follower.__anext__()]  # events 3, 5 and 7, from the log
        # Events 5 and 7 were committed before the log was read, but the listener hands
        # them to the subscriber only now (it read them before the follower did).
        stream.deliver(encode_event(r) for r in log_rows[4:])
        stream.deliver([encode_event(_row(9, G111)), encode_event(_row(10, G121))])
        frames += [await asyncio.wait_for(follower.__anext__(), 5)]
        await follower.aclose()
        assert _ids(frames) == [3, 5, 7, 9]
        assert stream.subscribers == 0

    asyncio.run(run())


def test_a_dropped_subscriber_resumes_from_the_log_where_it_stopped():
    from service.dispatch.stream import encode_event

    async def run():
        rows = [_row(i, G111) for i in range(1, 30)]
        pool = _FakeLog([])
        stream = CaseStream("postgresql://x/y", pool=pool, queue_events=4)
        follower = stream.follow(_who(G111, "grid_officer"))
        assert await follower.__anext__() == OPENING
        pending = asyncio.ensure_future(follower.__anext__())
        await asyncio.sleep(0)
        stream.deliver([encode_event(rows[0])])
        frames = [await pending]
        # Ten events while the screen does not read: more than its queue holds.
        pool.rows = rows[:11]
        stream.deliver(encode_event(r) for r in rows[1:11])
        while len(_ids(frames)) < 11:
            frames.append(await asyncio.wait_for(follower.__anext__(), 5))
        await follower.aclose()
        assert _ids(frames) == list(range(1, 12))
        assert pool.reads >= 1

    asyncio.run(run())


class _FakeDatabase:
    """A pool for the listener: the log after an id, and which tokens are still valid."""

    def __init__(self, rows, valid_tokens=()):
        self.rows = rows
        self.valid = set(valid_tokens)
        self.reads: list[float] = []
        self.token_queries = 0

    async def fetch(self, sql, *args):
        from service.dispatch import stream as s

        if sql == s._TOKENS_VALID_SQL:
            self.token_queries += 1
            return [(t,) for t in args[0] if t in self.valid]
        (after,) = args
        self.reads.append(asyncio.get_running_loop().time())
        return [r for r in self.rows if r["id"] > after][: s.LOG_PAGE]


def _listening(stream: CaseStream) -> CaseStream:
    # The listener's delivering task without a database connection: notifications by hand.
    stream._pump_task = asyncio.ensure_future(stream._pump())
    return stream


def test_a_burst_of_events_reaches_a_screen_in_one_write_and_a_lone_event_at_once():
    async def run():
        db = _FakeDatabase([])
        stream = _listening(CaseStream("postgresql://x/y", pool=db, read_every_s=0.2))
        follower = stream.follow(_who(C11))
        assert await follower.__anext__() == OPENING
        loop = asyncio.get_running_loop()
        # A lone event after a quiet spell: read and sent at once (and not lost though it
        # came while the opening frame was still with the screen's writer).
        db.rows.append(_row(1, G111))
        sent = loop.time()
        stream._notified(None, 0, "", "1")
        assert _ids([await asyncio.wait_for(follower.__anext__(), 5)]) == [1]
        assert loop.time() - sent < 0.1
        # Three more, each notified as it commits, right after: one read, one write.
        for i in (2, 3, 4):
            db.rows.append(_row(i, G121 if i == 3 else G111))
            stream._notified(None, 0, "", str(i))
            await asyncio.sleep(0.01)
        chunk = await asyncio.wait_for(follower.__anext__(), 5)
        assert _ids([chunk]) == [2, 4]
        assert len(db.reads) == 2 and db.reads[1] - db.reads[0] >= 0.2
        await follower.aclose()
        await stream.close()

    asyncio.run(run())


def test_screens_whose_token_was_revoked_end_before_the_next_event_one_query_for_all():
    async def run():
        valid, revoked = _who(G111, "grid_officer"), _who(C11)
        db = _FakeDatabase([_row(1, G111)], valid_tokens=[valid.token_id])
        stream = _listening(CaseStream("postgresql://x/y", pool=db, token_check_s=0))
        followers = [stream.follow(valid), stream.follow(valid), stream.follow(revoked)]
        for f in followers:
            assert await f.__anext__() == OPENING
        stream._notified(None, 0, "", "1")
        for f in followers[:2]:
            assert _ids([await asyncio.wait_for(f.__anext__(), 5)]) == [1]
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(followers[2].__anext__(), 5)
        assert db.token_queries == 1
        assert stream.subscribers == 2
        for f in followers[:2]:
            await f.aclose()
        await stream.close()

    asyncio.run(run())


# -- live servers on PostGIS -----------------------------------------------------------

OWN_GRID = "990101001001001"
SIBLING_GRID = "990101001001002"  # same community
OWN_COMMUNITY = "990101001001"
NEIGHBOUR_COMMUNITY = "990101001002"  # same district
NEIGHBOUR_GRID = "990101001002001"
OTHER_DISTRICT_GRID = "990102001001001"
# A point well inside each grid (fixtures/tiny.py).
POINT = {
    OWN_GRID: (106.005, 26.015),
    SIBLING_GRID: (106.015, 26.015),
    NEIGHBOUR_GRID: (106.005, 26.005),
    OTHER_DISTRICT_GRID: (106.025, 26.015),
}


@pytest.fixture
def tokens(tiny_db_url):
    from tests.conftest import make_tokens

    return make_tokens(
        tiny_db_url,
        {
            "officer": ("grid_officer", OWN_GRID),
            "sibling": ("grid_officer", SIBLING_GRID),
            "community": ("community_dispatcher", OWN_COMMUNITY),
            "neighbour": ("community_dispatcher", NEIGHBOUR_COMMUNITY),
            "district": ("district_dispatcher", "990101"),
            "admin": ("admin", None),
        },
    )


def _dsn(url: str) -> str:
    return f"postgresql://{url.split('://', 1)[1]}"


async def _report(conn, grid: str, n: int = 1) -> list[int]:
    """File ``n`` incidents in ``grid`` (one statement); return the ids of their events."""
    lon, lat = POINT[grid]
    cases = await conn.fetch(
        "INSERT INTO incident (category, source, geom) "
        "SELECT 'road', 'patrol', ST_SetSRID(ST_MakePoint($1, $2), 4326) "
        "FROM generate_series(1, $3) RETURNING id",
        lon,
        lat,
        n,
    )
    # The insert's statement trigger wrote their first events (after its snapshot).
    rows = await conn.fetch(
        "SELECT id FROM case_event WHERE incident_id = ANY($1) ORDER BY id",
        [r["id"] for r in cases],
    )
    return [r["id"] for r in rows]


async def _dispatch(conn, case_id: int, grid: str) -> int:
    """Send case ``case_id`` to ``grid``'s team (as the lifecycle would); return the event id."""
    path = await conn.fetchval(
        "SELECT path FROM area WHERE code = $1 ORDER BY generation_high DESC LIMIT 1", grid
    )
    async with conn.transaction():
        version = await conn.fetchval(
            "UPDATE incident SET state = 'dispatched', status = 'open', assignee_kind = 'grid', "
            "assignee_code = $2, assignee_path = $3, step = 'sign', version = version + 1 "
            "WHERE id = $1 RETURNING version",
            case_id,
            grid,
            path,
        )
        return await conn.fetchval(
            "INSERT INTO case_event (incident_id, seq, action, actor_role, from_state, "
            "to_state, assignee_kind, assignee_code) "
            "VALUES ($1, $2, 'dispatch', 'community_dispatcher', 'registered', 'dispatched', "
            "'grid', $3) RETURNING id",
            case_id,
            version,
            grid,
        )


class Screen:
    """A dispatch screen following /cases/stream, as EventSource does (httpx, asyncio)."""

    def __init__(self, base_url: str, token: str, *, last_event_id: int | None = None):
        import httpx

        self.client = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30, read=None))
        self.token = token
        self.last_event_id = last_event_id
        self.events: list[dict] = []
        self.status: int | None = None
        self._opened = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def ids(self) -> list[int]:
        return [e["id"] for e in self.events]

    async def open(self) -> Screen:
        self._task = asyncio.ensure_future(self._read())
        await asyncio.wait_for(self._opened.wait(), 20)
        return self

    async def _read(self) -> None:
        import orjson

        headers = {"Authorization": f"Bearer {self.token}"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        try:
            async with self.client.stream("GET", "/cases/stream", headers=headers) as r:
                self.status = r.status_code
                if r.status_code != 200:
                    await r.aread()
                    return
                fields: dict[str, str] = {}
                async for line in r.aiter_lines():
                    if line.startswith(":"):
                        continue
                    if line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                        continue
                    if "retry" in fields:
                        self._opened.set()
                    if "data" in fields:
                        event = orjson.loads(fields["data"])
                        assert fields["id"] == str(event["id"])
                        assert fields["event"] == "case"
                        self.events.append(event)
                        self._changed.set()
                    fields = {}
        finally:
            self._opened.set()

    async def wait_for(self, event_id: int, timeout: float = 20) -> None:
        async def seen():
            while event_id not in self.ids:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(seen(), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self.client.aclose()


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_an_officer_never_receives_a_sibling_grids_event(tiny_db_url, tokens, tiny_server):
    import asyncpg

    async def run():
        conn = await asyncpg.connect(_dsn(tiny_db_url))
        screens = {
            name: await Screen(tiny_server.base_url, tokens[name]).open()
            for name in ("officer", "sibling", "admin")
        }
        try:
            (own,) = await _report(conn, OWN_GRID)
            (sibling,) = await _report(conn, SIBLING_GRID)
            (far,) = await _report(conn, OTHER_DISTRICT_GRID)
            # Who sees an event is judged on the case as it is when the event is read: let
            # the reports go out before one of them changes hands.
            await screens["admin"].wait_for(far)
            # A case in the sibling's grid dispatched to the officer's team reaches both.
            case_id = await conn.fetchval(
                "SELECT incident_id FROM case_event WHERE id = $1", sibling
            )
            sent = await _dispatch(conn, case_id, OWN_GRID)
            # A last event everyone sees (admin) or each officer sees: delivery is in id
            # order, so once it has arrived nothing earlier is still on its way.
            for name in screens:
                await screens[name].wait_for(sent)
            assert screens["admin"].ids == [own, sibling, far, sent]
            assert screens["officer"].ids == [own, sent]
            assert screens["sibling"].ids == [sibling, sent]
            # The payload: the event row and the case after it, located.
            event = screens["officer"].events[-1]
            assert event["action"] == "dispatch" and event["case_id"] == case_id
            case = event["case"]
            assert case["state"] == "dispatched" and case["assignee_code"] == OWN_GRID
            assert (case["lon"], case["lat"]) == pytest.approx(POINT[SIBLING_GRID])
            assert case["category"] == "road" and case["owner_area_code"] == OWN_COMMUNITY
            assert case["id"] == case_id and case["clock"] == "green"
            # The shapes of GET /cases/{id} and its history, so a screen treats them alike.
            from service.schemas.cases import CaseEventRead, CaseRead

            assert set(case) == set(CaseRead.model_fields)
            assert set(event) - {"case", "case_id"} == set(CaseEventRead.model_fields)
            first = screens["officer"].events[0]
            assert first["action"] == "report" and first["case"]["state"] == "reported"
        finally:
            for screen in screens.values():
                await screen.close()
            await conn.close()

    _run(run())


def test_a_community_dispatcher_receives_its_community_and_not_the_neighbours(
    tiny_db_url, tokens, tiny_server
):
    import asyncpg

    async def run():
        conn = await asyncpg.connect(_dsn(tiny_db_url))
        names = ("community", "neighbour", "district", "admin")
        screens = {n: await Screen(tiny_server.base_url, tokens[n]).open() for n in names}
        try:
            mine = await _report(conn, OWN_GRID, 2) + await _report(conn, SIBLING_GRID)
            theirs = await _report(conn, NEIGHBOUR_GRID, 3)
            elsewhere = await _report(conn, OTHER_DISTRICT_GRID)
            last = await _report(conn, OWN_GRID)
            await screens["admin"].wait_for(last[0])
            await screens["community"].wait_for(last[0])
            await screens["district"].wait_for(last[0])
            await screens["neighbour"].wait_for(theirs[-1])
            await asyncio.sleep(0.3)  # anything else for the neighbour would be here by now
            assert screens["community"].ids == mine + last
            assert screens["neighbour"].ids == theirs
            assert screens["district"].ids == sorted(mine + theirs + last)
            assert screens["admin"].ids == sorted(mine + theirs + elsewhere + last)
        finally:
            for screen in screens.values():
                await screen.close()
            await conn.close()

    _run(run())


def test_resume_after_a_dropped_connection_loses_and_repeats_nothing(
    tiny_db_url, tokens, tiny_server
):
    import asyncpg

    async def run():
        conn = await asyncpg.connect(_dsn(tiny_db_url))
        screen = await Screen(tiny_server.base_url, tokens["community"]).open()
        try:
            # A burst written in the background; the screen drops in the middle of it.
            async def burst(n: int) -> list[int]:
                ids = []
                for i in range(n):
                    ids += await _report(conn, OWN_GRID if i % 3 else NEIGHBOUR_GRID)
                return ids

            writing = asyncio.ensure_future(burst(60))
            while len(screen.ids) < 10:
                await asyncio.sleep(0.01)
            await screen.close()
            seen = list(screen.ids)
            written = await writing
            written += await burst(15)  # and more while it is away
            mine = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT e.id FROM case_event e JOIN incident i ON i.id = e.incident_id "
                    "WHERE e.id = ANY($1) AND i.grid_code LIKE $2 ORDER BY e.id",
                    written,
                    OWN_COMMUNITY + "%",
                )
            ]
            assert 10 <= len(seen) < len(mine)
            assert seen == mine[: len(seen)]
            again = await Screen(
                tiny_server.base_url, tokens["community"], last_event_id=seen[-1]
            ).open()
            try:
                # And live again after the replay.
                tail = await burst(6)
                await again.wait_for(tail[-1])
                assert seen + again.ids == mine + [i for i in tail if i in again.ids]
                assert len(again.ids) == len(set(again.ids))
                assert again.ids == sorted(again.ids)
            finally:
                await again.close()
        finally:
            await screen.close()
            await conn.close()

    _run(run())


def test_two_server_processes_each_deliver_every_event_once(tiny_db_url, tokens):
    import asyncpg

    from tests.conftest import LiveServer

    async def run(servers):
        conn = await asyncpg.connect(_dsn(tiny_db_url))
        names = ("admin", "admin", "community", "officer") * len(servers)
        screens = [
            await Screen(server.base_url, tokens[name]).open()
            for server in servers
            for name in names[:4]
        ]
        try:
            written = []
            for i in range(40):
                grid = (OWN_GRID, SIBLING_GRID, NEIGHBOUR_GRID)[i % 3]
                written += await _report(conn, grid, 1 + i % 4)
            grids = dict(
                await conn.fetch(
                    "SELECT e.id, i.grid_code FROM case_event e "
                    "JOIN incident i ON i.id = e.incident_id WHERE e.id = ANY($1)",
                    written,
                )
            )
            expected = {
                "admin": written,
                "community": [i for i in written if grids[i].startswith(OWN_COMMUNITY)],
                "officer": [i for i in written if grids[i] == OWN_GRID],
            }
            for screen, name in zip(screens, names, strict=True):
                await screen.wait_for(expected[name][-1])
            await asyncio.sleep(0.3)
            for screen, name in zip(screens, names, strict=True):
                assert screen.ids == expected[name], name
        finally:
            for screen in screens:
                await screen.close()
            await conn.close()

    with LiveServer(tiny_db_url) as one, LiveServer(tiny_db_url) as two:
        _run(run([one, two]))


def test_event_ids_commit_in_id_order_so_a_resume_misses_none(tiny_db_url, tokens, tiny_server):
    """The advisory lock of migration 0010: a second transaction writing an event waits
    for the first to commit, so no event with a lower id can commit after a higher one."""
    import asyncpg

    async def run():
        first = await asyncpg.connect(_dsn(tiny_db_url))
        second = await asyncpg.connect(_dsn(tiny_db_url))
        watcher = await asyncpg.connect(_dsn(tiny_db_url))
        (case_id,) = [
            await watcher.fetchval(
                "SELECT incident_id FROM case_event WHERE id = $1",
                (await _report(watcher, OWN_GRID))[0],
            )
        ]
        screen = await Screen(tiny_server.base_url, tokens["community"]).open()
        insert = (
            "INSERT INTO case_event (incident_id, seq, action, actor_role, to_state) "
            "VALUES ($1, $2, 'comment', 'community_dispatcher', 'reported') RETURNING id"
        )
        try:
            t1 = first.transaction()
            await t1.start()
            low = await first.fetchval(insert, case_id, 10)
            t2 = second.transaction()
            await t2.start()
            # The second writer waits for the lock before it draws an id...
            pending = asyncio.ensure_future(second.fetchval(insert, case_id, 11))
            for _ in range(100):
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND pid = $1",
                    second.get_server_pid(),
                )
                if waiting:
                    break
                await asyncio.sleep(0.02)
            assert waiting == 1
            assert not pending.done()
            await t1.commit()
            high = await pending
            await t2.commit()
            # ...so it commits later and its id is higher: nothing committed below "after".
            assert low < high
            await screen.wait_for(high)
            assert screen.ids[-2:] == [low, high]
            # A screen that had seen only the first resumes after it and gets the second.
            again = await Screen(
                tiny_server.base_url, tokens["community"], last_event_id=low
            ).open()
            try:
                await again.wait_for(high)
                assert again.ids == [high]
            finally:
                await again.close()
        finally:
            await screen.close()
            for conn in (first, second, watcher):
                await conn.close()

    _run(run())


def test_events_written_while_the_listener_is_away_are_delivered_once(
    tiny_db_url, tokens, tiny_server
):
    import asyncpg

    async def run():
        conn = await asyncpg.connect(_dsn(tiny_db_url))
        screen = await Screen(tiny_server.base_url, tokens["admin"]).open()
        try:
            before = await _report(conn, OWN_GRID, 3)
            await screen.wait_for(before[-1])
            # Cut the stream's listening connection (a database restart, a network cut).
            cut = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%wangge_case_events%'"
            )
            assert cut == 1
            during = await _report(conn, SIBLING_GRID, 4)
            await screen.wait_for(during[-1])
            after = await _report(conn, NEIGHBOUR_GRID, 2)
            await screen.wait_for(after[-1])
            assert screen.ids == before + during + after
        finally:
            await screen.close()
            await conn.close()

    _run(run())


def test_the_stream_takes_tokens_as_query_parameters_and_refuses_what_it_should(
    tiny_db_url, tokens, tiny_server
):
    import httpx

    from service.auth import create_token
    from service.db import make_engine

    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        intake = create_token(
            conn, name="hotline", role="intake", area_code="990101", source="hotline_12319"
        )
    engine.dispose()
    url = f"{tiny_server.base_url}/cases/stream"
    with httpx.Client(timeout=10) as client:
        assert client.get(url).status_code == 401
        r = client.get(url, headers={"Authorization": f"Bearer {intake}"})
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
        for bad in ("abc", "-1", str(2**63)):
            r = client.get(
                url, headers={"Authorization": f"Bearer {tokens['admin']}", "Last-Event-ID": bad}
            )
            assert r.status_code == 422, (bad, r.text)
            assert "Last-Event-ID" in r.text
        r = client.get(url, params={"access_token": tokens["admin"], "last_event_id": "x"})
        assert r.status_code == 422 and "last_event_id" in r.text
        # EventSource cannot set headers: the token and the resume point ride in the URL.
        params = {"access_token": tokens["officer"], "last_event_id": 0}
        with client.stream("GET", url, params=params) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-store"
            lines = r.iter_lines()
            assert next(lines) == "retry: 1000"


def test_a_revoked_tokens_stream_ends_before_its_next_event(tiny_db_url, tokens, tiny_server):
    import asyncpg

    from service.auth import split_token

    async def run():
        conn = await asyncpg.connect(_dsn(tiny_db_url))
        screen = await Screen(tiny_server.base_url, tokens["community"]).open()
        try:
            (before,) = await _report(conn, OWN_GRID)
            await screen.wait_for(before)
            token_id, _ = split_token(tokens["community"])
            await conn.execute("UPDATE api_token SET revoked_at = now() WHERE id = $1", token_id)
            (after,) = await _report(conn, OWN_GRID)
            # The live server checks at every event (its token cache lasts 0 s).
            await asyncio.wait_for(asyncio.shield(screen._task), 20)
            assert screen.ids == [before]
            again = await Screen(tiny_server.base_url, tokens["community"]).open()
            assert again.status == 401 and after not in again.ids
            await again.close()
        finally:
            await screen.close()
            await conn.close()

    _run(run())
