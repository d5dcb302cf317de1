"""Live case events for the dispatch screens: one LISTEN per server process, fanned out in
memory to subscribers, each seeing only the events of its area.

The database announces case events on ``wangge_case_events`` (a statement trigger of
migration 0010; the payload is the newest event id of the statement). PostgreSQL delivers a
notification when its transaction commits, so nothing reaches a screen before the event is
committed, and every server process hears of every event. Each process keeps one listening
connection (``CaseStream``); a notification wakes one task that reads every event after the
last one delivered, in one query however many notifications came meanwhile (a bulk import
of thousands of events notifies once), and at most every ``READ_EVERY_S`` (20 ms): under a
steady flow each screen gets the events of that span in one write, not one write per
event. Each event is encoded once (``CaseEvent.frame``: the SSE frame with the event row and
the case's summary after it) and offered to the subscribers whose scope covers the case —
found by looking up the case's paths and their ancestors among the subscribers' scopes, not
by testing every subscriber.

Who sees an event (``sees_event``): a principal whose scope covers where the case lies
(``incident.area_path``; cases outside every area belong to city-level scopes, as in
``covers_entity``), its owning centre (``owner_area_path``), its assignee (``assignee_path``:
the grid, or the unit's location) or the owner it just left. So a grid officer gets the cases
in its grid and those dispatched to it, a community dispatcher its community's, a district
or city dispatcher everything below, admins everything — and never a sibling's. The case is
judged as it stands when the event is read (as ``GET /cases`` judges it, the previous owner
aside), and the ``case`` in the payload is that case: at most a moment newer than the event.

Resuming (``CaseStream.follow``): a screen that reconnects with ``Last-Event-ID`` first gets
the events after that id from the log (``case_event``), then the live ones; it subscribes
before reading the log and drops live events it has already sent, so the seam neither loses
nor repeats one. This relies on event ids committing in id order: every insert into
``case_event`` takes a transaction-level advisory lock before drawing ids (a statement
trigger, migration 0010), so an event with a lower id cannot commit after one with a higher
id, and "after id N" is exact, for the listener as for a resuming screen.

Memory is bounded: a subscriber holds at most ``queue_events`` undelivered events; one that
falls further behind (a stalled client) loses its queue and is served from the log again
once it reads, exactly as if it had reconnected with ``Last-Event-ID``. A lost listening
connection is re-opened (at most 2 s apart, like the tile listener) and the events committed
meanwhile are read from the log, from the last id seen, so nothing is lost either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from service.auth import Principal
from service.dispatch.cases import clock_of
from service.dispatch.lifecycle import LIFECYCLE_COLUMNS
from service.listening import Listening

__all__ = [
    "CHANNEL",
    "OPENING",
    "CaseEvent",
    "CaseStream",
    "Subscriber",
    "sees_event",
    "encode_event",
]

CHANNEL = "wangge_case_events"
#: Events a subscriber may hold undelivered before it is served from the log instead.
QUEUE_EVENTS = 1_000
#: The first frame of every stream, sent once subscribed: browsers reconnect 1 s after a
#: drop (their default is 3 s); a client may take it as "live from here".
OPENING = b"retry: 1000\n\n"
#: Seconds between checks that the following screens' tokens are still valid (as the token
#: cache's lifetime for requests): a revoked or expired token's stream ends at its next event.
TOKEN_CHECK_S = 30.0
#: Seconds between the starts of two reads of the log: under load the events committed
#: meanwhile are read together and go to each screen as one write (a read and a write per
#: event per screen were most of the server's time); the first event after a quiet spell is
#: read at once.
READ_EVERY_S = 0.02
#: Events read from the log per query when catching up or replaying.
LOG_PAGE = 500

log = logging.getLogger("wangge.dispatch.stream")

#: The event as ``GET /cases/{id}/events`` gives it (``CaseEventRead``), and its case.
_EVENT_FIELDS = (
    "id",
    "case_id",
    "seq",
    "at",
    "action",
    "actor_role",
    "actor_token_id",
    "actor_name",
    "actor_area_code",
    "from_state",
    "to_state",
    "from_owner_area_code",
    "to_owner_area_code",
    "assignee_kind",
    "assignee_code",
    "note",
    "reason",
    "attachments",
)
#: The case after the event as ``GET /cases/{id}`` gives it (``CaseRead``; ``clock`` added).
_CASE_EXPRESSIONS = {
    "id": "i.id",
    "category": "i.category",
    "description": "i.description",
    "address": "i.address",
    "source": "i.source",
    "reported_at": "i.reported_at",
    "attachments": "i.attachments",
    "lon": "ST_X(i.geom)",
    "lat": "ST_Y(i.geom)",
    "area_path": "i.area_path",
    "grid_code": "i.grid_code",
    **{name: f"i.{name}" for name in LIFECYCLE_COLUMNS},
}
# The paths decide who sees it; the previous owner's lets the centre that just lost a case
# (escalated, sent down, taken over) see it leave.
_COLUMNS = f"""
    e.id, e.incident_id AS case_id, e.seq, e.at, e.action, e.actor_role, e.actor_token_id,
    (SELECT k.name FROM api_token k WHERE k.id = e.actor_token_id) AS actor_name,
    e.actor_area_code, e.from_state, e.to_state,
    e.from_owner_area_code, e.to_owner_area_code, e.assignee_kind, e.assignee_code, e.note,
    e.reason, e.attachments, e.data::text AS data,
    {", ".join(f"{sql} AS c_{name}" for name, sql in _CASE_EXPRESSIONS.items())},
    (SELECT l.minutes FROM case_time_limit l WHERE l.category = i.category
      AND l.priority = i.priority AND l.step = i.step) AS step_minutes,
    fo.path AS from_owner_path
"""
# Codes never change meaning: the path of a code is that of its newest version. Every lookup
# is per event row (lateral, scalar): the hot pool's generic plans know no row counts, and
# joins planned for a large log (hash joins, parallel workers) cost a read of a few new
# events tens of milliseconds. The case is read in its month's partition only (its month
# from incident_month, migration 0020, pruned as each event's read starts); a case the map
# lacks is read by id alone (the map is a shortcut: service.repositories.byid).
_JOINS = """
JOIN LATERAL (
    SELECT * FROM incident WHERE id = e.incident_id
       AND reported_at = (SELECT m.reported_at FROM incident_month m WHERE m.id = e.incident_id)
    UNION ALL
    SELECT * FROM incident WHERE id = e.incident_id
       AND NOT EXISTS (SELECT FROM incident_month m WHERE m.id = e.incident_id)
    LIMIT 1
) i ON true
LEFT JOIN LATERAL (
    SELECT a.path FROM area a WHERE a.code = e.from_owner_area_code
    ORDER BY a.generation_high DESC LIMIT 1
) fo ON true
"""
# The events after $1, every scope's (what the listener delivers), a page at most.
_AFTER_SQL = f"""
SELECT {_COLUMNS}
FROM (SELECT * FROM case_event WHERE id > $1 ORDER BY id LIMIT {LOG_PAGE}) e
{_JOINS}ORDER BY e.id
"""
# The events after $1 that a scope ($2, NULL for everything) may see: a superset, narrowed
# by sees_event, so the log and the live stream judge by one function. The id order and the
# primary key make each page one index range; starts_with keeps LIKE's wildcards out.
_REPLAY_SQL = f"""
SELECT {_COLUMNS}
FROM case_event e
{_JOINS}WHERE e.id > $1
  AND ($2::text IS NULL
       OR i.area_path IS NULL
       OR i.area_path = $2 OR starts_with(i.area_path, $2 || '/')
       OR i.owner_area_path = $2 OR starts_with(i.owner_area_path, $2 || '/')
       OR i.assignee_path = $2 OR starts_with(i.assignee_path, $2 || '/')
       OR fo.path = $2 OR starts_with(fo.path, $2 || '/'))
ORDER BY e.id
LIMIT $3
"""

_TOKEN_VALID_SQL = (
    "SELECT revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
    "FROM api_token WHERE id = $1"
)
# Of the given token ids, those still valid (every following screen's, in one query).
_TOKENS_VALID_SQL = (
    "SELECT id FROM api_token WHERE id = ANY($1::text[]) "
    "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
)


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One committed case event as the stream sends it: who may see it, and its SSE frame."""

    id: int
    #: Where the case lies (None: outside every area).
    area_path: str | None
    #: The other paths whose scopes see it: owner, assignee, previous owner.
    paths: tuple[str, ...]
    #: ``id: …\\nevent: case\\ndata: {json}\\n\\n``, encoded once for every subscriber.
    frame: bytes


def encode_event(row, now: datetime | None = None) -> CaseEvent:
    """Return the ``CaseEvent`` of a row of the stream's queries (a mapping); ``now`` sets
    the case's clock (default: now)."""
    body = {name: row[name] for name in _EVENT_FIELDS}
    body["attachments"] = list(body["attachments"] or ())
    data = row["data"]
    body["data"] = orjson.Fragment(data) if data is not None else {}
    case = {name: row[f"c_{name}"] for name in _CASE_EXPRESSIONS}
    case["attachments"] = list(case["attachments"] or ())
    case["clock"] = clock_of(case, row["step_minutes"], now or datetime.now(UTC))
    body["case"] = case
    frame = b"id: %d\nevent: case\ndata: %s\n\n" % (row["id"], orjson.dumps(body))
    paths = tuple(
        p for p in (case["owner_area_path"], case["assignee_path"], row["from_owner_path"]) if p
    )
    return CaseEvent(id=row["id"], area_path=case["area_path"], paths=paths, frame=frame)


def sees_event(principal: Principal, event: CaseEvent) -> bool:
    """Return whether ``principal`` may receive ``event``."""
    scope = principal.scope_path
    if scope is None:
        return True
    if event.area_path is None:
        # Outside every area: the city-level queue's, as for every point entity.
        if "/" not in scope:
            return True
    elif principal.covers_path(event.area_path):
        return True
    return any(principal.covers_path(p) for p in event.paths)


def _scope_keys(event: CaseEvent, city_keys: Iterable[str]) -> set[str | None]:
    # The scopes that see the event: every ancestor-or-self of its paths (None: admins).
    keys: set[str | None] = {None}
    paths = event.paths if event.area_path is None else (event.area_path, *event.paths)
    for path in paths:
        end = path.find("/")
        while end != -1:
            keys.add(path[:end])
            end = path.find("/", end + 1)
        keys.add(path)
    if event.area_path is None:
        keys.update(city_keys)
    return keys


class Subscriber:
    """A screen's queue of events not yet sent; bounded (``overflowed`` when it was not)."""

    __slots__ = ("principal", "limit", "overflowed", "closed", "_events", "_wake")

    def __init__(self, principal: Principal, limit: int = QUEUE_EVENTS):
        self.principal = principal
        self.limit = limit
        self.overflowed = False
        self.closed = False
        self._events: deque[CaseEvent] = deque()
        self._wake = asyncio.Event()

    def offer(self, event: CaseEvent) -> None:
        if self.overflowed:
            return
        if len(self._events) >= self.limit:
            # Too far behind: forget the queue (memory stays bounded); the follower reads
            # the log from its last sent id instead.
            self.overflowed = True
            self._events.clear()
        else:
            self._events.append(event)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next_batch(self) -> list[CaseEvent]:
        """Return the queued events (waiting for one); empty once overflowed or closed."""
        while not self._events and not self.overflowed and not self.closed:
            self._wake.clear()
            await self._wake.wait()
        if self.overflowed or self.closed:
            return []
        batch = list(self._events)
        self._events.clear()
        return batch


class CaseStream(Listening):
    """The process's listener of ``wangge_case_events`` and its subscribers."""

    channel = CHANNEL
    what = "case stream"
    on_lost = "reconnecting, then reading the log"
    log = log

    def __init__(
        self,
        url: str,
        pool,
        *,
        queue_events: int = QUEUE_EVENTS,
        token_check_s: float = TOKEN_CHECK_S,
        read_every_s: float = READ_EVERY_S,
    ):
        super().__init__(url)
        self.pool = pool
        self.queue_events = queue_events
        self.token_check_s = token_check_s
        self.read_every_s = read_every_s
        self._tokens_checked = time.monotonic()
        #: The highest event id delivered (or committed before this process listened).
        self.last_id = 0
        self._by_scope: dict[str | None, set[Subscriber]] = {}
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task | None = None

    # -- listening -------------------------------------------------------------------------

    async def start(self) -> CaseStream:
        """Listen, note the last committed event, start delivering; return self."""
        await self._connect()
        # Listening first, then the newest id: an event committed in between is at most that
        # id, so its notification is not news (and nobody is subscribed yet to miss it).
        self.last_id = await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM case_event")
        self._pump_task = asyncio.ensure_future(self._pump())
        return self

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        # The payload is the newest event id of a committed statement: read the log if it
        # is news (the id itself is not needed: the read takes everything after last_id).
        try:
            newest = int(payload)
        except ValueError:
            newest = None
        if newest is None or newest > self.last_id:
            self._wake.set()

    def _listening_again(self) -> None:
        # Whatever committed while away was not notified: read it from the log.
        self._wake.set()

    async def close(self) -> None:
        """Stop listening and end every subscriber's stream (the app is shutting down)."""
        self.closing = True
        if self._pump_task is not None:
            self._pump_task.cancel()
        for subs in self._by_scope.values():
            for sub in subs:
                sub.close()
        await super().close()

    # -- delivering ------------------------------------------------------------------------

    async def _pump(self) -> None:
        # One task reads and delivers, so events are delivered in id order, and the
        # notifications that arrive during a read, or within read_every_s of its start, are
        # served by the next read together.
        while not self.closing:
            await self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            try:
                await self._read_log()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database is away: the listening connection drops too, and its return
                # wakes this task to read the log from last_id, which covers this read.
                log.warning("case stream: reading events failed", exc_info=True)
                await asyncio.sleep(0.2)
                if self.listening:
                    self._wake.set()
            pause = started + self.read_every_s - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)

    async def _read_log(self) -> None:
        # Every committed event after the last one delivered. Ids commit in order (the
        # advisory lock), so the committed ids are always all of those up to the newest:
        # "after last_id" misses none, and a notification names only the newest id of its
        # statement (a bulk import writes thousands of events and notifies once).
        while True:
            rows = await self.pool.fetch(_AFTER_SQL, self.last_id)
            if rows:
                await self._check_tokens()
            self.deliver(encode_event(r) for r in rows)
            if len(rows) < LOG_PAGE:
                return

    async def _check_tokens(self) -> None:
        # Every token_check_s, one query for the tokens of every following screen, before
        # delivering: a screen whose token was revoked or expired ends without the events
        # read since (as a request's token is cached for as long).
        now = time.monotonic()
        if now - self._tokens_checked < self.token_check_s:
            return
        self._tokens_checked = now
        subs = [sub for group in self._by_scope.values() for sub in group]
        if not subs:
            return
        ids = list({sub.principal.token_id for sub in subs})
        valid = {r[0] for r in await self.pool.fetch(_TOKENS_VALID_SQL, ids)}
        for sub in subs:
            if sub.principal.token_id not in valid:
                sub.close()

    def deliver(self, events: Iterable[CaseEvent]) -> None:
        """Offer each event after ``last_id`` to the subscribers that see it (in id order)."""
        city_keys = None
        for event in events:
            if event.id <= self.last_id:
                continue
            self.last_id = event.id
            if event.area_path is None and city_keys is None:
                city_keys = [k for k in self._by_scope if k is not None and "/" not in k]
            for key in _scope_keys(event, city_keys or ()):
                for sub in self._by_scope.get(key, ()):
                    sub.offer(event)

    # -- subscribers -----------------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._by_scope.values())

    def subscribe(self, principal: Principal) -> Subscriber:
        """Return a new subscriber of the events ``principal`` sees."""
        sub = Subscriber(principal, self.queue_events)
        self._by_scope.setdefault(principal.scope_path, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._by_scope.get(sub.principal.scope_path)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_scope[sub.principal.scope_path]

    async def replay(self, principal: Principal, *, after: int) -> AsyncIterator[list[CaseEvent]]:
        """Yield the logged events after id ``after`` that ``principal`` sees, oldest first,
        a page at a time (a page may be empty: none of it was the principal's)."""
        while True:
            rows = await self.pool.fetch(_REPLAY_SQL, after, principal.scope_path, LOG_PAGE)
            yield [e for e in map(encode_event, rows) if sees_event(principal, e)]
            if len(rows) < LOG_PAGE:
                return
            after = rows[-1]["id"]

    async def follow(
        self, principal: Principal, *, last_event_id: int | None = None
    ) -> AsyncIterator[bytes]:
        """Yield the SSE frames of the events ``principal`` sees, for as long as it reads.

        The first frame (``OPENING``) says the subscription is in place. With
        ``last_event_id`` the logged events after it come next; without, only events
        committed from now on. Each event is yielded once, in id order; a chunk may hold
        several frames. The stream ends before the first event after its token was revoked
        or expired (the listener checks every live screen's token in one query at most every
        ``token_check_s``, a replay page by page: a stream outlives no revocation for longer
        than a request's cached token does).
        """
        checked = time.monotonic()

        async def revoked() -> bool:
            nonlocal checked
            if time.monotonic() - checked < self.token_check_s:
                return False
            checked = time.monotonic()
            return not await self.pool.fetchval(_TOKEN_VALID_SQL, principal.token_id)

        opening = OPENING
        while not self.closing:
            # Subscribe before reading the log: an event committed while the log is read is
            # then either in the log or queued (or both: the id check drops the second).
            sub = self.subscribe(principal)
            # Live from the subscription on: read before the opening frame is yielded, or
            # an event delivered while it is being sent would count as sent, and be lost.
            last = self.last_id if last_event_id is None else last_event_id
            try:
                if opening:
                    yield opening
                    opening = b""
                if last_event_id is not None:
                    async for page in self.replay(principal, after=last):
                        if page:
                            if await revoked():
                                return
                            yield b"".join(e.frame for e in page)
                            last = page[-1].id
                while True:
                    # The listener checks the tokens of the live screens (_check_tokens):
                    # a revoked one's subscriber is closed, and its batch comes back empty.
                    batch = await sub.next_batch()
                    if not batch:
                        break  # overflowed (read the log again), closing or revoked
                    # What queued up while the screen was being written to goes out in one
                    # write (under load, a send per frame is most of the cost).
                    frames = [e.frame for e in batch if e.id > last]
                    if frames:
                        last = max(last, batch[-1].id)
                        yield b"".join(frames)
            finally:
                self.unsubscribe(sub)
            if sub.closed:
                return
            log.info("case stream: a subscriber fell %d events behind", self.queue_events)
            last_event_id = last
