"""``GET /cases/stream``: the live case events of the caller's area, as Server-Sent Events.

Must be routed before ``/cases/{id}`` (app.py's router list), or "stream" would be read as
a case id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from service.auth import STAFF_ROLES
from service.deps import PrincipalDep
from service.errors import ForbiddenError
from service.inputs import Offset

__all__ = ["router"]

router = APIRouter(tags=["cases"])

#: Seconds between keep-alive comments: proxies close connections idle for a minute or so.
PING_S = 15
#: Seconds a frame may wait for a client that stopped reading before its stream is closed
#: (it reconnects with Last-Event-ID and misses nothing).
SEND_TIMEOUT_S = 30

_EVENT_DOC = """\
A stream of `case` events, one per case event in the caller's area, in the order they
were committed; a comment line every 15 s keeps idle connections open. Each event's `id`
is the case event id, its `data` the event (`action`, `from_state`, `to_state`, owners,
assignee, `note`, `data`, …) with `case`: the case after it (`state`, `owner_*`,
`assignee_*`, `step`, `step_due_at`, `category`, `lon`, `lat`, …), so a screen can move its
marker without another request.
"""


@router.get(
    "/cases/stream",
    summary="Live case events of the caller's area (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={200: {"description": _EVENT_DOC, "content": {"text/event-stream": {}}}},
)
async def stream_cases(
    request: Request,
    principal: PrincipalDep,
    last_event_id_header: Annotated[
        Offset | None,
        Header(
            alias="Last-Event-ID",
            description="Resume after this event id: the events missed since come first "
            "(browsers send it when they reconnect).",
        ),
    ] = None,
    last_event_id: Annotated[
        Offset | None,
        Query(description="As the Last-Event-ID header, for clients that cannot set it."),
    ] = None,
) -> EventSourceResponse:
    """Stream the case events the caller may see: a grid officer's grid (cases in it or
    dispatched to it), a dispatcher's or planner's area, everything for admins; never a
    sibling area's. Tokens may come as ``?access_token=``, since EventSource sends no headers.
    """
    if principal.role not in STAFF_ROLES:
        raise ForbiddenError(f"a {principal.role} token does not follow cases")
    # The header wins: a browser reconnecting sends it and keeps the URL it was opened with.
    resume = last_event_id_header if last_event_id_header is not None else last_event_id
    stream = request.app.state.case_stream
    return EventSourceResponse(
        stream.follow(principal, last_event_id=resume),
        ping=PING_S,
        send_timeout=SEND_TIMEOUT_S,
    )
