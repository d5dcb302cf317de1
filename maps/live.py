"""The live parts of the served map pages: the dispatch queue and the tablet's cases.

* :func:`add_dispatch_queue` puts a queue beside the dispatch page's map: the cases of the
  page's area (``GET /cases``) with filters by state, owning level, category and overdue,
  kept current by the case stream (``EventSource('/cases/stream')``, resumed from the event
  the page was rendered at, and by the browser after a drop): markers change colour by state
  and clock (amber past 80 % of the step's limit, red overdue) and come and go without a
  reload. A click opens a case: its history, its grid's team, and the actions the caller
  may take as buttons (sent with ``If-Match``; a 412 or 409 is said plainly).
* :func:`add_tablet_desk` gives the tablet page "my cases" (those dispatched to the grid)
  with sign-for, feedback (a note and photos) and escalate buttons, and an offline queue:
  a service worker keeps the page and its scripts, IndexedDB keeps the grid's cases and
  every report and action not yet sent; each goes out once (its own ``Idempotency-Key``)
  when the network returns, and the officer sees what is still waiting.

Everything a person reads is in :data:`DISPATCH_TEXT` and :data:`TABLET_TEXT` (one flat dict
per page, ready for a message catalog); the scripts (``maps/static/wangge/dispatch.js``,
``tablet.js``, ``cases.js``, ``sw.js``) hold no user-visible text. The pages' data and
endpoints come from :mod:`service.pages`; nothing here touches a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from folium.elements import JSCSSMixin

from maps.elements import PageScript, js
from maps.pages import Page
from maps.style import CATEGORY_GLYPHS, INCIDENT_CATEGORIES, TEAM_ROLES

__all__ = [
    "DISPATCH_TEXT",
    "TABLET_TEXT",
    "QUEUE_WIDTH",
    "add_dispatch_queue",
    "add_tablet_desk",
]

#: Width of the dispatch queue beside the map (pixels).
QUEUE_WIDTH = 380

# Words both pages use: states, clocks, levels. Each page's dict holds its own copy.
_COMMON = {
    "state.reported": "Reported",
    "state.registered": "Registered",
    "state.dispatched": "Dispatched",
    "state.signed": "Signed for",
    "state.handled": "Handled",
    "state.closed": "Closed",
    "state.cancelled": "Cancelled",
    "due_in": "due in {t}",
    "overdue_by": "overdue by {t}",
    "overdue": "overdue",
    "t.min": "{m} min",
    "t.hours": "{h} h {m} min",
    "t.days": "{d} d {h} h",
    "field.note": "Note",
    "field.reason": "Reason",
    "send": "Send",
    "cancel": "Cancel",
    "required": "{field} is required.",
}

#: Every user-visible string of the dispatch page's live queue (``{x}`` are filled in).
DISPATCH_TEXT: dict[str, str] = {
    **_COMMON,
    "queue": "Case queue",
    "live": "● live",
    "connecting": "connecting…",
    "reconnecting": "reconnecting…",
    "loading": "Loading cases…",
    "load_failed": "Cases could not be loaded: {detail}",
    "all_states": "All open states",
    "all_levels": "All levels",
    "all_categories": "All categories",
    "overdue_only": "Overdue only",
    "count": "{n} open cases",
    "count_of": "{shown} of {n} open cases",
    "none": "No case matches the filters.",
    "level.city": "City",
    "level.district": "District",
    "level.community": "Community",
    "no_deadline": "no deadline",
    "back": "← Queue",
    "field.state": "State",
    "field.priority": "Priority",
    "field.owner": "Owned by",
    "field.assignee": "Handled by",
    "field.due": "Deadline",
    "field.reported": "Reported",
    "field.address": "Address",
    "field.description": "Description",
    "field.flags": "Flags",
    "flag.supervised": "supervised",
    "flag.escalations": "escalated ×{n}",
    "flag.reopens": "reopened ×{n}",
    "assignee.grid": "grid team {code}",
    "assignee.unit": "unit {code}",
    "actions": "Actions",
    "no_actions": "Nothing for you to do on this case now.",
    "team": "Grid team",
    "no_team": "No team recorded for this grid.",
    "no_grid": "The case lies outside every grid.",
    "call": "Call",
    "history": "History",
    "by": "by {role}",
    "photo": "photo {n}",
    "field.assignee_kind": "Assign to",
    "field.assignee_code": "Grid code or unit id",
    "assignee_kind.grid": "a grid team",
    "assignee_kind.unit": "a stationed unit",
    "field.priority_new": "Priority",
    "field.duplicate_of": "Duplicate of case #",
    "field.satisfaction": "Resident's satisfaction (1–5)",
    "field.area": "Centre below (area code)",
    "priority.urgent": "urgent",
    "priority.high": "high",
    "priority.normal": "normal",
    "reason.not_a_case": "not a case",
    "reason.out_of_scope": "out of scope",
    "reason.duplicate": "duplicate",
    "action.accept": "Accept",
    "action.reject": "Reject",
    "action.dispatch": "Dispatch",
    "action.sign": "Sign for",
    "action.return": "Return",
    "action.feedback": "Feed back",
    "action.verify": "Verify and close",
    "action.send_back": "Send back",
    "action.callback": "Record callback",
    "action.escalate": "Escalate",
    "action.send_down": "Send down",
    "action.supervise": "Supervise",
    "action.take_over": "Take over",
    "action.comment": "Comment",
    "action.report": "Filed",
    "action.import": "Imported",
    "action.overdue": "Time limit passed",
    "action.auto_escalate": "Escalated by the clock",
    "action.redraw": "Boundaries redrawn: owner and grid team moved",
    "role.admin": "administrator",
    "role.planner": "planner",
    "role.city_dispatcher": "city dispatcher",
    "role.district_dispatcher": "district dispatcher",
    "role.community_dispatcher": "community dispatcher",
    "role.grid_officer": "grid officer",
    "role.intake": "intake",
    "role.system": "the system",
    "done": "Done: {action}.",
    "stale": "Someone else changed this case first (it is now at version {version}). "
    "It has been reloaded: check it and try again.",
    "refused": "Refused: {detail}",
    "failed": "Not done: {detail}",
    "network": "Not sent: the network is down. Try again.",
    "updated": "Changed just now: {action} by {role}.",
}

#: Every user-visible string of the tablet's cases and offline queue.
TABLET_TEXT: dict[str, str] = {
    **_COMMON,
    "my_cases": "My cases",
    "no_cases": "No open case is dispatched to this grid.",
    "as_of": "as of {time}",
    "waiting": "{n} waiting to send",
    "nothing_waiting": "Nothing waiting to send",
    "online": "Online",
    "offline": "Offline: your work stays on this tablet and is sent when the network returns.",
    "ready_offline": "Online · ready to work offline",
    "session": "Your page session has ended: open the page again with your token. "
    "Nothing waiting is lost.",
    "item.waiting": "waiting for the network",
    "item.sending": "sending…",
    "item.refused": "not accepted: {detail}",
    "discard": "Discard",
    "report_label": "New case: {category}",
    "action_label": "{action}: case #{id}",
    "saved": "Saved on this tablet: it will be sent once the network is back.",
    "pending": "Waiting to send: {what}",
    "refused_case": "Not accepted: {detail}",
    "action.sign": "Sign for",
    "action.feedback": "Feed back",
    "action.escalate": "Escalate",
    "action.return": "Return",
    "field.photos": "Photos",
    "field.what_done": "What was done",
    "field.why": "Why",
}


class _LivePart(JSCSSMixin, PageScript):
    """A page's live part: HTML after the map, a script run once the map exists, and the
    vendored files it needs (listed by name; :func:`maps.pages.render_page` links or
    inlines them)."""

    default_css = [("wangge_live_css", "")]


class _DispatchQueue(_LivePart):
    default_js = [("wangge_cases_js", ""), ("wangge_dispatch_js", "")]


class _TabletDesk(_LivePart):
    default_js = [("wangge_cases_js", ""), ("wangge_tablet_js", "")]


def add_dispatch_queue(
    page: Page,
    *,
    cases_url: str,
    stream_url: str,
    team_url: str,
    csrf_token: str | None,
    actions: Mapping[str, Mapping[str, Any]],
    time_limits: Mapping[str, int],
    last_event_id: int,
    area: str | None = None,
    area_path: str | None = None,
    page_size: int = 500,
    max_cases: int = 5000,
    text: Mapping[str, str] = DISPATCH_TEXT,
) -> None:
    """Add the live queue beside a dispatch page's map (from :func:`maps.pages.dispatch_page`).

    Parameters
    ----------
    page : Page
        The dispatch page; its "Open incidents" cluster becomes the live markers.
    cases_url, stream_url : str
        ``/cases`` and ``/cases/stream`` (with the service's root path).
    team_url : str
        A grid's team as JSON, with ``{code}``.
    csrf_token : str, optional
        Sent as ``X-CSRF-Token`` with actions (the page session's).
    actions : mapping
        Per action the caller may take through the API: ``title``, ``requires``, ``accepts``.
    time_limits : mapping
        ``"category|priority|step" -> minutes``: the clocks turn amber and red in the browser.
    last_event_id : int
        The case event the page's data is as of: the stream resumes after it.
    area, area_path : str, optional
        The focused area's code and path: only cases lying in it are shown.
    page_size, max_cases : int
        Cases per ``GET /cases`` page, and at most this many in the queue.
    text : mapping
        The words (:data:`DISPATCH_TEXT`).
    """
    cluster = page.layers["Open incidents"]
    options = {
        "cases": cases_url,
        "stream": stream_url,
        "team": team_url,
        "csrf": csrf_token,
        "area": area,
        "areaPath": area_path,
        "lastEventId": last_event_id,
        "limits": dict(time_limits),
        "actions": {k: dict(v) for k, v in actions.items()},
        "pageSize": page_size,
        "maxCases": max_cases,
        "categories": INCIDENT_CATEGORIES,
        "glyphs": CATEGORY_GLYPHS,
        "teamRoles": TEAM_ROLES,
        "text": dict(text),
    }
    css = (
        f"#{{map}} {{ position: fixed; top: 0; bottom: 0; right: 0; left: {QUEUE_WIDTH}px; "
        "width: auto; height: auto; } "
        f".wg-queue {{ width: {QUEUE_WIDTH}px; }}"
    )
    html = '<aside id="wg-queue" class="wg-queue" aria-label="queue"></aside>'
    script = f"wg.dispatchLive({{map}}, {cluster.get_name()}, {js(options)});"
    _DispatchQueue(html=html, script=script, css=css).add_to(page.map)


def add_tablet_desk(
    page: Page,
    *,
    grid: str,
    cases_url: str,
    stream_url: str,
    csrf_token: str | None,
    service_worker: str | None,
    handler: bool,
    actions: Sequence[str] = ("sign", "feedback", "escalate", "return"),
    page_size: int = 500,
    text: Mapping[str, str] = TABLET_TEXT,
) -> None:
    """Add "my cases" and the offline queue to a tablet page (from
    :func:`maps.pages.tablet_page`); its report form then files through the queue.

    Parameters
    ----------
    page : Page
        The tablet page.
    grid : str
        The grid's code: its cases are those dispatched to it.
    cases_url, stream_url : str
        ``/cases`` and ``/cases/stream`` (with the service's root path).
    csrf_token : str, optional
        Sent as ``X-CSRF-Token`` with every write.
    service_worker : str, optional
        The worker's URL (``/pages/sw.js``): it keeps the page for offline use.
    handler : bool
        Whether the caller handles the grid's cases (its officer, or an admin): the action
        buttons are shown to handlers only.
    actions : sequence of str
        The handler's actions, in button order.
    page_size : int
        Cases per ``GET /cases`` page.
    text : mapping
        The words (:data:`TABLET_TEXT`).
    """
    options = {
        "grid": grid,
        "cases": cases_url,
        "stream": stream_url,
        "csrf": csrf_token,
        "sw": service_worker,
        "handler": handler,
        "actions": list(actions),
        "pageSize": page_size,
        "categories": INCIDENT_CATEGORIES,
        "glyphs": CATEGORY_GLYPHS,
        "text": dict(text),
    }
    html = '<div id="wg-desk" class="wg-desk"></div>'
    script = f"wg.tablet({{map}}, {js(options)});"
    _TabletDesk(html=html, script=script).add_to(page.map)
