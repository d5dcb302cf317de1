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
per page of messages marked for the catalog, translated into the page's language when the
page is built, with the names of :data:`maps.i18n.NAMES`); the scripts
(``maps/static/wangge/dispatch.js``, ``tablet.js``, ``cases.js``, ``sw.js``) hold no
user-visible text, and write dates with the page's ``locale`` in :data:`maps.i18n.TIME_ZONE`.
The pages' data and endpoints come from :mod:`service.pages`; nothing here touches a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from folium.elements import JSCSSMixin

from maps.elements import PageScript, html_text, js
from maps.i18n import N_, TIME_ZONE, Translator
from maps.pages import HTTP_TEXT, Page

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
    "state.reported": N_("Reported"),
    "state.registered": N_("Registered"),
    "state.dispatched": N_("Dispatched"),
    "state.signed": N_("Signed for"),
    "state.handled": N_("Handled"),
    "state.closed": N_("Closed"),
    "state.cancelled": N_("Cancelled"),
    "due_in": N_("due in {t}"),
    "overdue_by": N_("overdue by {t}"),
    "overdue": N_("overdue"),
    "t.min": N_("{m} min"),
    "t.hours": N_("{h} h {m} min"),
    "t.days": N_("{d} d {h} h"),
    "field.note": N_("Note"),
    "field.reason": N_("Reason"),
    "send": N_("Send"),
    "cancel": N_("Cancel"),
    "required": N_("{field} is required."),
    **HTTP_TEXT,
}

#: Every user-visible string of the dispatch page's live queue (``{x}`` are filled in).
DISPATCH_TEXT: dict[str, str] = {
    **_COMMON,
    "queue": N_("Case queue"),
    "live": N_("● live"),
    "connecting": N_("connecting…"),
    "reconnecting": N_("reconnecting…"),
    "loading": N_("Loading cases…"),
    "load_failed": N_("Cases could not be loaded: {detail}"),
    "all_states": N_("All open states"),
    "all_levels": N_("All levels"),
    "all_categories": N_("All categories"),
    "overdue_only": N_("Overdue only"),
    "count": N_("{n} open cases"),
    "count_of": N_("{shown} of {n} open cases"),
    "none": N_("No case matches the filters."),
    "no_deadline": N_("no deadline"),
    "back": N_("← Queue"),
    "field.state": N_("State"),
    "field.priority": N_("Priority"),
    "field.owner": N_("Owned by"),
    "field.assignee": N_("Handled by"),
    "field.due": N_("Deadline"),
    "field.reported": N_("Reported"),
    "field.address": N_("Address"),
    "field.description": N_("Description"),
    "field.flags": N_("Flags"),
    "flag.supervised": N_("supervised"),
    "flag.escalations": N_("escalated ×{n}"),
    "flag.reopens": N_("reopened ×{n}"),
    "assignee.grid": N_("grid team {code}"),
    "assignee.unit": N_("unit {code}"),
    "actions": N_("Actions"),
    "no_actions": N_("Nothing for you to do on this case now."),
    "team": N_("Grid team"),
    "no_team": N_("No team recorded for this grid."),
    "no_grid": N_("The case lies outside every grid."),
    "call": N_("Call"),
    "history": N_("History"),
    "by": N_("by {role}"),
    "photo": N_("photo {n}"),
    "field.assignee_kind": N_("Assign to"),
    "field.assignee_code": N_("Grid code or unit id"),
    "assignee_kind.grid": N_("a grid team"),
    "assignee_kind.unit": N_("a stationed unit"),
    "field.priority_new": N_("Priority"),
    "field.duplicate_of": N_("Duplicate of case #"),
    "field.satisfaction": N_("Resident's satisfaction (1–5)"),
    "field.area": N_("Centre below (area code)"),
    "priority.urgent": N_("urgent"),
    "priority.high": N_("high"),
    "priority.normal": N_("normal"),
    "reason.not_a_case": N_("not a case"),
    "reason.out_of_scope": N_("out of scope"),
    "reason.duplicate": N_("duplicate"),
    "action.accept": N_("Accept"),
    "action.reject": N_("Reject"),
    "action.dispatch": N_("Dispatch"),
    "action.sign": N_("Sign for"),
    "action.return": N_("Return"),
    "action.feedback": N_("Feed back"),
    "action.verify": N_("Verify and close"),
    "action.send_back": N_("Send back"),
    "action.callback": N_("Record callback"),
    "action.escalate": N_("Escalate"),
    "action.send_down": N_("Send down"),
    "action.supervise": N_("Supervise"),
    "action.take_over": N_("Take over"),
    "action.comment": N_("Comment"),
    "action.report": N_("Filed"),
    "action.import": N_("Imported"),
    "action.overdue": N_("Time limit passed"),
    "action.auto_escalate": N_("Escalated by the clock"),
    "action.redraw": N_("Boundaries redrawn: owner and grid team moved"),
    # What each button does (its tooltip, and the heading of its form).
    "hint.accept": N_("Register the case (accept it for handling)"),
    "hint.reject": N_("Cancel: not a case, outside the remit, or a duplicate"),
    "hint.dispatch": N_("Dispatch to a grid team or a stationed unit: the clock starts"),
    "hint.sign": N_("Sign for the case: the handler acknowledges it"),
    "hint.return": N_("Return: not in the handler's remit"),
    "hint.feedback": N_("Report back with a note and photos"),
    "hint.verify": N_("Verify on site and close"),
    "hint.send_back": N_("Send back for rework before closing"),
    "hint.callback": N_("Record the resident's callback (dissatisfied reopens the case)"),
    "hint.escalate": N_("Escalate to the level above"),
    "hint.send_down": N_("Send down to a lower centre"),
    "hint.supervise": N_("Supervise: flag the case and demand a reply"),
    "hint.take_over": N_("Take the case over"),
    "hint.comment": N_("Add a comment to the history"),
    "field.category": N_("Category"),
    "done": N_("Done: {action}."),
    "stale": N_(
        "Someone else changed this case first (it is now at version {version}). "
        "It has been reloaded: check it and try again."
    ),
    "refused": N_("Refused: {detail}"),
    "failed": N_("Not done: {detail}"),
    "network": N_("Not sent: the network is down. Try again."),
    "updated": N_("Changed just now: {action} by {role}."),
}

#: Every user-visible string of the tablet's cases and offline queue.
TABLET_TEXT: dict[str, str] = {
    **_COMMON,
    "my_cases": N_("My cases"),
    "no_cases": N_("No open case is dispatched to this grid."),
    "as_of": N_("as of {time}"),
    "waiting": N_("{n} waiting to send"),
    "nothing_waiting": N_("Nothing waiting to send"),
    "online": N_("Online"),
    "offline": N_("Offline: your work stays on this tablet and is sent when the network returns."),
    "ready_offline": N_("Online · ready to work offline"),
    "session": N_(
        "Your page session has ended: open the page again with your token. Nothing waiting is lost."
    ),
    "item.waiting": N_("waiting for the network"),
    "item.sending": N_("sending…"),
    "item.refused": N_("not accepted: {detail}"),
    "discard": N_("Discard"),
    "report_label": N_("New case: {category}"),
    "action_label": N_("{action}: case #{id}"),
    "saved": N_("Saved on this tablet: it will be sent once the network is back."),
    "pending": N_("Waiting to send: {what}"),
    "refused_case": N_("Not accepted: {detail}"),
    "action.sign": N_("Sign for"),
    "action.feedback": N_("Feed back"),
    "action.escalate": N_("Escalate"),
    "action.return": N_("Return"),
    "field.photos": N_("Photos"),
    "field.what_done": N_("What was done"),
    "field.why": N_("Why"),
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


def _words(t: Translator, text: Mapping[str, str]) -> dict[str, str]:
    """Return a page's words in its language: the marked messages, then the names of area
    levels and roles (``level.<key>``, ``role.<key>``) from the one table of names."""
    words = t.texts(text)
    for kind in ("level", "role"):
        words.update({f"{kind}.{key}": name for key, name in t.names(kind).items()})
    return words


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
        The words (:data:`DISPATCH_TEXT`), translated into the page's language.
    """
    t = page.t
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
        "categories": t.names("category"),
        "glyphs": t.names("category_glyph"),
        "teamRoles": t.names("team_role"),
        # The queue names an owner, an assignee or an actor's area by name (codes read as
        # numbers to a dispatcher); codes of areas not on the page stay codes.
        "names": dict(page.names),
        "locale": t.lang,
        "timeZone": TIME_ZONE,
        "text": _words(t, text),
    }
    css = (
        f"#{{map}} {{ position: fixed; top: 0; bottom: 0; right: 0; left: {QUEUE_WIDTH}px; "
        "width: auto; height: auto; } "
        f".wg-queue {{ width: {QUEUE_WIDTH}px; }}"
    )
    queue = html_text(t(DISPATCH_TEXT["queue"]))
    html = f'<aside id="wg-queue" class="wg-queue" aria-label="{queue}"></aside>'
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
        The words (:data:`TABLET_TEXT`), translated into the page's language.
    """
    t = page.t
    options = {
        "grid": grid,
        "cases": cases_url,
        "stream": stream_url,
        "csrf": csrf_token,
        "sw": service_worker,
        "handler": handler,
        "actions": list(actions),
        "pageSize": page_size,
        "categories": t.names("category"),
        "glyphs": t.names("category_glyph"),
        "locale": t.lang,
        "timeZone": TIME_ZONE,
        "text": _words(t, text),
    }
    html = '<div id="wg-desk" class="wg-desk"></div>'
    script = f"wg.tablet({{map}}, {js(options)});"
    _TabletDesk(html=html, script=script).add_to(page.map)
