"""The case lifecycle: states, who may do what in each, and what follows. Pure.

One declaration table (:data:`ACTIONS`) says for every action the states it leaves, who may
take it (a relation of the actor to the case: the owning dispatch centre, the handler, a
level above, the system), what it requires and what follows. Generic code reads it:

- :func:`decide` judges an action on a case and returns the :class:`Event` it makes, or
  raises :class:`TransitionRefused` (409: not in this state), :class:`NotPermittedError`
  (403: not for this actor), :class:`ActionInputError` (422: a field missing or wrong) or
  :class:`UnknownActionError` (404);
- :func:`apply` folds an event into the case (the ONLY way a case changes: the API and the
  deadline sweep both write the state it returns);
- :func:`replay` folds a case's events from nothing: it equals the row, always;
- :func:`allowed_actions` lists what an actor may do now.

No database and no HTTP here: the callers resolve what needs a query (the path of an
assignee, of a child area, that a duplicate exists) and pass it in ``params``; time limits
come in as a mapping ``(category, priority, step) -> minutes``.

Example::

    >>> from datetime import datetime, timezone
    >>> now = datetime(2025, 5, 1, 9, tzinfo=timezone.utc)
    >>> case = CaseState(category="gas", state="reported", status="new",
    ...     owner_level="community", owner_area_code="520102001",
    ...     owner_area_path="5201/520102/520102001", step="accept", version=1)
    >>> centre = Actor("community_dispatcher", "520102001", "5201/520102/520102001")
    >>> event = decide(case, "accept", centre, {}, now=now, limits={})
    >>> apply(case, event).state
    'registered'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "STATES",
    "OPEN_STATES",
    "IN_WORK",
    "STATUS_OF_STATE",
    "STEP_OF_STATE",
    "PRIORITIES",
    "STEPS",
    "CATEGORIES",
    "OWNER_LEVELS",
    "REJECT_REASONS",
    "DISSATISFIED_AT_MOST",
    "OWNER",
    "HANDLER",
    "ABOVE",
    "SYSTEM",
    "Actor",
    "CaseState",
    "Event",
    "Action",
    "ACTIONS",
    "API_ACTIONS",
    "INITIAL_ACTIONS",
    "LIFECYCLE_COLUMNS",
    "TransitionRefused",
    "NotPermittedError",
    "ActionInputError",
    "UnknownActionError",
    "relations",
    "allowed_actions",
    "judge",
    "decide",
    "apply",
    "replay",
    "initial_state",
]

#: Every state, in the order a case normally passes them.
STATES = ("reported", "registered", "dispatched", "signed", "handled", "closed", "cancelled")
#: States with work left (a clock may run).
OPEN_STATES = STATES[:5]
#: Open states in which a handler holds the case (the work is under way).
IN_WORK = ("dispatched", "signed", "handled")
#: The coarse status Open311, layers and filters show (the table checks it).
STATUS_OF_STATE = {
    "reported": "new",
    "registered": "open",
    "dispatched": "open",
    "signed": "open",
    "handled": "open",
    "closed": "closed",
    "cancelled": "closed",
}
#: The step whose clock runs in each open state (time limits are per step).
STEP_OF_STATE = {
    "reported": "accept",
    "registered": "accept",
    "dispatched": "sign",
    "signed": "handle",
    "handled": "verify",
}
STEPS = ("accept", "sign", "handle", "verify")
PRIORITIES = ("urgent", "high", "normal")
CATEGORIES = ("water", "gas", "street_light", "road", "sanitation", "public_order", "other")
#: Area levels, top down; a grid handles cases but no grid owns one.
LEVELS = ("city", "district", "community", "grid")
OWNER_LEVELS = LEVELS[:3]
#: The dispatch level each role acts at.
ROLE_LEVEL = {
    "city_dispatcher": "city",
    "district_dispatcher": "district",
    "community_dispatcher": "community",
    "grid_officer": "grid",
}
REJECT_REASONS = ("not_a_case", "out_of_scope", "duplicate")
#: A callback with this satisfaction (1..5) or less reopens the case (返工).
DISSATISFIED_AT_MOST = 2

# Relations of an actor to a case.
OWNER = "owner"  #: the dispatcher of the owning level and area (admin acts as any)
HANDLER = "handler"  #: the grid officer of the assigned grid; for a unit, its owner on its behalf
ABOVE = "above"  #: a dispatcher of a higher level whose area contains the owner's
SYSTEM = "system"  #: the deadline sweep (actor role "system")


@dataclass(frozen=True)
class Actor:
    """Who acts: role, area (code and materialised path; None for admin and system)."""

    role: str
    area_code: str | None = None
    area_path: str | None = None
    token_id: str | None = None

    @property
    def level(self) -> str | None:
        return ROLE_LEVEL.get(self.role)


@dataclass(frozen=True)
class CaseState:
    """A case's lifecycle fields: exactly the incident columns :func:`apply` writes, plus
    its category (fixed; time limits and duplicates depend on it)."""

    category: str | None = None
    state: str | None = None  #: None before the first event
    status: str | None = None
    priority: str = "normal"
    owner_level: str | None = None
    owner_area_code: str | None = None
    owner_area_path: str | None = None
    assignee_kind: str | None = None  #: "grid" or "unit"
    assignee_code: str | None = None  #: the grid code, or the unit id as text
    assignee_path: str | None = None  #: the grid's path, or the path of the unit's cell
    step: str | None = None
    step_due_at: datetime | None = None
    step_overdue: bool = False
    dispatched_at: datetime | None = None
    signed_at: datetime | None = None
    handled_at: datetime | None = None
    closed_at: datetime | None = None
    supervised: bool = False
    escalations: int = 0
    reopens: int = 0
    duplicate_of: int | None = None
    satisfaction: int | None = None
    version: int = 0  #: the number of events (If-Match: ETag ``"<version>"``)

    def columns(self) -> dict[str, Any]:
        """Return the incident columns to write: every field but the category."""
        return {name: getattr(self, name) for name in LIFECYCLE_COLUMNS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CaseState:
        """Return the state held by an incident row (extra keys are ignored)."""
        return cls(**{f.name: row[f.name] for f in fields(cls) if f.name in row})


#: The incident columns the lifecycle owns (written only through :func:`apply`).
LIFECYCLE_COLUMNS = tuple(f.name for f in fields(CaseState) if f.name != "category")


@dataclass(frozen=True)
class Event:
    """One entry of a case's history (a ``case_event`` row without its id and case)."""

    action: str
    at: datetime
    to_state: str
    actor_role: str
    actor_token_id: str | None = None
    actor_area_code: str | None = None
    seq: int | None = None
    from_state: str | None = None
    from_owner_area_code: str | None = None
    to_owner_area_code: str | None = None
    #: the assignee after the event
    assignee_kind: str | None = None
    assignee_code: str | None = None
    note: str | None = None
    reason: str | None = None
    attachments: tuple[str, ...] = ()
    #: what :func:`apply` needs besides the columns: ``owner_level``/``owner_area_path`` when
    #: the owner changes, ``assignee_path``, ``due_at`` (the step's deadline), ``priority``,
    #: ``duplicate_of``, ``satisfaction``, ``reopened``; a first event (report, import)
    #: carries the whole lifecycle of the row (the migration's SNAPSHOT)
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def row(self) -> dict[str, Any]:
        """Return the ``case_event`` columns (without ``id`` and ``incident_id``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["attachments"] = list(self.attachments)
        out["data"] = dict(self.data)
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        """Return the event a ``case_event`` row holds (extra keys are ignored)."""
        values = {f.name: row[f.name] for f in fields(cls) if f.name in row}
        values["attachments"] = tuple(values.get("attachments") or ())
        values["data"] = dict(values.get("data") or {})
        return cls(**values)


# -- refusals -------------------------------------------------------------------------------


class TransitionRefused(Exception):
    """The action is not possible in the case's state (409, naming the allowed actions)."""

    def __init__(self, state: str | None, action: str, allowed: Iterable[str], detail: str = ""):
        self.state = state
        self.action = action
        self.allowed = tuple(allowed)
        self.detail = detail or f"cannot {action} a case that is {state}"
        super().__init__(self.detail)


class NotPermittedError(Exception):
    """The actor may not take this action on this case (403)."""

    def __init__(self, action: str, detail: str):
        self.action = action
        self.detail = detail
        super().__init__(detail)


class ActionInputError(Exception):
    """A field of the action is missing or wrong (422, naming the field)."""

    def __init__(self, field: str, detail: str):
        self.field = field
        self.detail = detail
        super().__init__(f"{field}: {detail}")


class UnknownActionError(Exception):
    """No such action (404)."""

    def __init__(self, action: str):
        self.action = action
        self.detail = f"no action {action!r}; one of {', '.join(API_ACTIONS)}"
        super().__init__(self.detail)


# -- the declaration table ------------------------------------------------------------------

#: ``guard(case, relations) -> why not, or None``: a refusal beyond the state (409).
Guard = Callable[[CaseState, frozenset[str]], "str | None"]
#: ``target(case, params) -> the state that follows``, when it depends on the input.
Target = Callable[[CaseState, Mapping[str, Any]], str]
#: ``rule(case) -> keep | set | clear``: what happens to the assignee, when it depends on the case.
AssigneeRule = Callable[[CaseState], str]


@dataclass(frozen=True)
class Action:
    """One action: from which states, by whom, with what, and what follows."""

    name: str
    title: str  #: the everyday name (Chinese term of CJJ/T 106 where there is one)
    states: tuple[str, ...]  #: states it may leave (empty: a first event, never via the API)
    actors: frozenset[str]  #: relations that may take it
    to: str | Target | None = None  #: the state that follows (None: unchanged)
    requires: tuple[str, ...] = ()  #: params that must be given (non-blank)
    accepts: tuple[str, ...] = ("note", "attachments")  #: further params it takes
    #: keep | parent (one level up) | child (params["area"], a centre below) | actor |
    #: area (params["area"]: wherever the case now lies; the system, after a redraw)
    owner: str = "keep"
    assignee: str | AssigneeRule = "keep"  #: keep | set (params["assignee"]) | clear
    clock: str = "keep"  #: keep | start (the step of the new state runs from now)
    counts: str | None = None  #: a counter the action adds one to
    flags: tuple[str, ...] = ()  #: boolean fields it sets
    guard: Guard | None = None

    @property
    def api(self) -> bool:
        """Whether people take it through the API (not a first event, not the system's)."""
        return bool(self.states) and self.actors != frozenset({SYSTEM})


def _not_at_top(case: CaseState, rels: frozenset[str]) -> str | None:
    if case.owner_level is None:
        return "the case lies outside every area and has no owner"
    # The owner (or the clock) moves the case up; a handler alone hands it to the owner.
    if case.owner_level == "city" and rels & {OWNER, SYSTEM}:
        return "the city has no level above"
    return None


def _has_lower_centre(case: CaseState, rels: frozenset[str]) -> str | None:
    if case.owner_level not in ("city", "district"):
        return f"a {case.owner_level or 'case without owner'} has no dispatch centre below"
    return None


def _has_owner_above(case: CaseState, rels: frozenset[str]) -> str | None:
    if case.owner_level == "city" or case.owner_level is None:
        return "the case has no owner below the city"
    return None


def _clock_running(case: CaseState, rels: frozenset[str]) -> str | None:
    if case.step_due_at is None:
        return "no deadline runs"
    if case.step_overdue:
        return "the step is already flagged overdue"
    return None


def _up_from(case: CaseState, params: Mapping[str, Any]) -> str:
    # Waiting in a centre's queue, it joins the queue above (registered there); in work, the
    # handler keeps it and only the supervision (the owner) moves up.
    return case.state if case.state in IN_WORK else "registered"


def _kept_in_work(case: CaseState) -> str:
    return "keep" if case.state in IN_WORK else "clear"


def _after_callback(case: CaseState, params: Mapping[str, Any]) -> str:
    if params["satisfaction"] > DISSATISFIED_AT_MOST:
        return "closed"
    # Rework goes back to the handler; a case closed without one goes back to the queue.
    return "dispatched" if case.assignee_code is not None else "registered"


ALL_PEOPLE = frozenset({OWNER, HANDLER, ABOVE})

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            "report",
            "filed: hotline, patrol, camera (信息采集)",
            states=(),
            actors=frozenset({SYSTEM}),
            to="reported",
        ),
        Action("import", "imported with its state", states=(), actors=frozenset({SYSTEM})),
        Action(
            "accept",
            "accept (受理/立案)",
            states=("reported",),
            actors=frozenset({OWNER}),
            to="registered",
            accepts=("note", "priority"),
        ),
        Action(
            "reject",
            "cancel: not a case, out of scope, duplicate (不予立案)",
            states=("reported", "registered"),
            actors=frozenset({OWNER}),
            to="cancelled",
            requires=("reason",),
            accepts=("note", "duplicate_of"),
        ),
        Action(
            "dispatch",
            "dispatch to a grid team or a unit (派遣)",
            states=("registered",),
            actors=frozenset({OWNER}),
            to="dispatched",
            requires=("assignee",),
            accepts=("note", "priority", "due_at"),
            assignee="set",
            clock="start",
        ),
        Action(
            "sign",
            "sign for (签收)",
            states=("dispatched",),
            actors=frozenset({HANDLER}),
            to="signed",
            accepts=("note",),
        ),
        Action(
            "return",
            "return: not in the handler's remit (退回)",
            states=("dispatched", "signed"),
            actors=frozenset({HANDLER}),
            to="registered",
            requires=("reason",),
            accepts=("note",),
            assignee="clear",
            clock="start",
        ),
        Action(
            "feedback",
            "report back with a note and photos (反馈)",
            states=("signed",),
            actors=frozenset({HANDLER}),
            to="handled",
            requires=("note",),
        ),
        Action(
            "verify",
            "verify and close (核查结案)",
            states=("handled",),
            actors=frozenset({OWNER}),
            to="closed",
        ),
        Action(
            "send_back",
            "send back for rework before closing (核查不通过)",
            states=("handled",),
            actors=frozenset({OWNER}),
            to="dispatched",
            requires=("note",),
            accepts=("due_at",),
            clock="start",
        ),
        Action(
            "callback",
            "resident callback; dissatisfied reopens (回访/返工)",
            states=("closed",),
            actors=frozenset({OWNER}),
            to=_after_callback,
            requires=("satisfaction",),
            accepts=("note",),
        ),
        Action(
            "escalate",
            "escalate to the level above (上报)",
            states=("reported", "registered", "dispatched", "signed"),
            actors=frozenset({OWNER, HANDLER}),
            to="registered",
            requires=("reason",),
            accepts=("note",),
            owner="parent",
            assignee="clear",
            clock="start",
            counts="escalations",
            guard=_not_at_top,
        ),
        Action(
            "send_down",
            "send down to a lower centre (回退)",
            states=("reported", "registered"),
            actors=frozenset({OWNER}),
            to="registered",
            requires=("area", "reason"),
            accepts=("note",),
            owner="child",
            clock="start",
            guard=_has_lower_centre,
        ),
        Action(
            "supervise",
            "supervise: flag and demand a reply (督办)",
            states=OPEN_STATES,
            actors=frozenset({ABOVE}),
            requires=("note",),
            flags=("supervised",),
        ),
        Action(
            "take_over",
            "take the case over (提级办理)",
            states=OPEN_STATES,
            actors=frozenset({ABOVE}),
            to="registered",
            requires=("note",),
            owner="actor",
            assignee="clear",
            clock="start",
            guard=_has_owner_above,
        ),
        Action(
            "comment",
            "comment",
            states=STATES,
            actors=ALL_PEOPLE,
            requires=("note",),
        ),
        Action(
            "overdue",
            "the step's time limit passed (超时)",
            states=OPEN_STATES,
            actors=frozenset({SYSTEM}),
            accepts=(),
            flags=("step_overdue", "supervised"),
            guard=_clock_running,
        ),
        Action(
            # A new generation of boundaries is activated: the case (open; closed ones keep
            # the cells they were handled in) now lies in other areas. Its owner becomes the
            # centre of the same level on its new chain (the lowest it has, when shorter), a
            # grid team as handler becomes the grid it lies in now, a unit keeps its post
            # (its path follows). Written for the cases that change, with the activation.
            "redraw",
            "boundaries redrawn: the owner and grid team follow the case's place (区划调整)",
            states=OPEN_STATES,
            actors=frozenset({SYSTEM}),
            accepts=("area", "assignee"),
            owner="area",
            assignee="set",
        ),
        Action(
            # Waiting in a queue (reported, registered): registered one level up, as an
            # owner's escalation. In work (dispatched, signed, handled): the owner becomes
            # the centre above (it now verifies, sends back or takes over), the state and the
            # handler stay. Either way the step's clock starts again at the new level, so
            # each deadline escalates once (evaluation judges on-time by the first deadline).
            "auto_escalate",
            "escalated by the clock (超时上报): supervision moves up",
            states=OPEN_STATES,
            actors=frozenset({SYSTEM}),
            to=_up_from,
            accepts=(),
            owner="parent",
            assignee=_kept_in_work,
            clock="start",
            counts="escalations",
            guard=_not_at_top,
        ),
    )
}
#: Actions people take through ``POST /cases/{id}/actions/{action}``.
API_ACTIONS = tuple(name for name, a in ACTIONS.items() if a.api)
#: Actions that start a case's history (written by the database when an incident is inserted).
INITIAL_ACTIONS = tuple(name for name, a in ACTIONS.items() if not a.states)


# -- judging --------------------------------------------------------------------------------


def _inside(path: str | None, ancestor: str | None) -> bool:
    if path is None or ancestor is None:
        return False
    return path == ancestor or path.startswith(ancestor + "/")


def relations(case: CaseState, actor: Actor) -> frozenset[str]:
    """Return how ``actor`` stands to the case: owner, handler, above (or system)."""
    if actor.role == SYSTEM:
        return frozenset({SYSTEM})
    if actor.role == "admin":
        return ALL_PEOPLE
    out: set[str] = set()
    level = actor.level
    is_owner = (
        level is not None
        and level == case.owner_level
        and actor.area_code is not None
        and actor.area_code == case.owner_area_code
    ) or (
        # A case outside every area waits in the city's queue (as incidents do).
        case.owner_level is None and level == "city"
    )
    if is_owner:
        out.add(OWNER)
    if case.assignee_kind == "grid":
        if actor.role == "grid_officer" and actor.area_code == case.assignee_code:
            out.add(HANDLER)
    elif case.assignee_kind == "unit" and is_owner:
        out.add(HANDLER)  # units have no tokens: their owner acts for them
    if (
        level in OWNER_LEVELS
        and case.owner_level in OWNER_LEVELS
        and LEVELS.index(level) < LEVELS.index(case.owner_level)
        and case.owner_area_path is not None
        and case.owner_area_path.startswith((actor.area_path or "\0") + "/")
    ):
        out.add(ABOVE)
    return frozenset(out)


def _open_to(action: Action, case: CaseState, rels: frozenset[str]) -> bool:
    if case.state not in action.states or not rels & action.actors:
        return False
    return action.guard is None or action.guard(case, rels) is None


def allowed_actions(case: CaseState, actor: Actor) -> tuple[str, ...]:
    """Return the actions ``actor`` may take on the case now, in declaration order."""
    rels = relations(case, actor)
    return tuple(
        name
        for name, action in ACTIONS.items()
        if (action.api or actor.role == SYSTEM) and _open_to(action, case, rels)
    )


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def _path_level(path: str) -> str:
    return LEVELS[path.count("/")]


def _check_params(action: Action, case: CaseState, params: Mapping[str, Any], now: datetime):
    """Raise ActionInputError for a missing, unexpected or malformed field."""
    for name in action.requires:
        if _blank(params.get(name)):
            raise ActionInputError(name, f"{action.name} needs a {name}")
    taken = {*action.requires, *action.accepts}
    for name, value in params.items():
        if name not in taken and not _blank(value):
            raise ActionInputError(name, f"{action.name} takes no {name}")
    reason = params.get("reason")
    if action.name == "reject":
        if reason not in REJECT_REASONS:
            raise ActionInputError("reason", f"one of {', '.join(REJECT_REASONS)}")
        if (reason == "duplicate") == _blank(params.get("duplicate_of")):
            raise ActionInputError(
                "duplicate_of",
                "a duplicate names the case it repeats"
                if reason == "duplicate"
                else "only a duplicate names another case",
            )
    priority = params.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise ActionInputError("priority", f"one of {', '.join(PRIORITIES)}")
    satisfaction = params.get("satisfaction")
    if satisfaction is not None and not (
        isinstance(satisfaction, int)
        and not isinstance(satisfaction, bool)
        and 1 <= satisfaction <= 5
    ):
        raise ActionInputError("satisfaction", "a whole number from 1 to 5")
    due_at = params.get("due_at")
    if due_at is not None and (not isinstance(due_at, datetime) or due_at <= now):
        raise ActionInputError("due_at", "a deadline in the future, with its time zone")
    assignee = params.get("assignee")
    if assignee is not None:
        if assignee.get("kind") not in ("grid", "unit") or not assignee.get("code"):
            raise ActionInputError("assignee", "a grid code or a unit id")
        if assignee["kind"] == "grid" and _path_level(assignee.get("path") or "") != "grid":
            raise ActionInputError("assignee", f"{assignee['code']} is not a grid")
        # People choose a handler inside the owner's area; the system (a redraw) re-derives it.
        if SYSTEM not in action.actors and not _inside(assignee.get("path"), case.owner_area_path):
            raise ActionInputError(
                "assignee",
                f"{assignee['kind']} {assignee['code']} is outside "
                f"{case.owner_level} {case.owner_area_code}",
            )
    area = params.get("area")
    if area is not None and action.owner == "area":
        if (area.get("path") or "").count("/") >= len(OWNER_LEVELS):
            raise ActionInputError("area", f"{area.get('code')} is not a dispatch centre")
    elif area is not None:
        path = area.get("path") or ""
        if path.rpartition("/")[0] != case.owner_area_path or _path_level(path) == "grid":
            raise ActionInputError(
                "area",
                f"{area.get('code')} is not a dispatch centre directly below "
                f"{case.owner_level} {case.owner_area_code}",
            )


def _owner_after(
    action: Action, case: CaseState, actor: Actor, rels: frozenset[str], params
) -> tuple[str | None, str | None, str | None]:
    """Return (level, code, path) of the owner after the action."""
    keep = (case.owner_level, case.owner_area_code, case.owner_area_path)
    how = action.owner
    if how == "parent":
        if OWNER not in rels and SYSTEM not in rels:
            return keep  # a handler escalates to the centre that owns the case
        path = case.owner_area_path.rpartition("/")[0]
    elif how == "area":
        if "area" not in params:
            return keep
        path = params["area"]["path"]
    elif how == "child":
        path = params["area"]["path"]
    elif how == "actor":
        # admin (no area) takes it to the top: the city the case lies in
        path = actor.area_path or case.owner_area_path.split("/")[0]
    else:
        return keep
    return _path_level(path), path.rpartition("/")[2], path


def _minutes(limits: Mapping[tuple[str, str, str], int], case, priority, step) -> int | None:
    return limits.get((case.category, priority, step)) if step else None


def judge(case: CaseState, action: str, actor: Actor) -> Action:
    """Return the declaration of ``action`` if ``actor`` may take it on the case now (its
    fields aside); raise UnknownActionError, TransitionRefused or NotPermittedError."""
    declared = ACTIONS.get(action)
    if declared is None:
        raise UnknownActionError(action)
    rels = relations(case, actor)
    if case.state not in declared.states:
        raise TransitionRefused(case.state, action, allowed_actions(case, actor))
    why = declared.guard(case, rels) if declared.guard else None
    if why is not None:
        raise TransitionRefused(
            case.state, action, allowed_actions(case, actor), f"cannot {action}: {why}"
        )
    if not rels & declared.actors:
        raise NotPermittedError(action, _who_may(declared, case))
    return declared


def decide(
    case: CaseState,
    action: str,
    actor: Actor,
    params: Mapping[str, Any],
    *,
    now: datetime,
    limits: Mapping[tuple[str, str, str], int],
) -> Event:
    """Return the event ``actor`` taking ``action`` on the case makes, or raise a refusal.

    ``params`` (absent and None alike): ``note``, ``reason``, ``attachments``, ``priority``,
    ``satisfaction``, ``duplicate_of`` (an id the caller checked), ``due_at`` (an aware
    datetime), ``assignee`` (``{"kind", "code", "path"}`` resolved by the caller),
    ``area`` (``{"code", "path"}`` of the centre to send down to). ``limits`` maps
    ``(category, priority, step)`` to minutes; a step without one has no deadline.
    """
    declared = judge(case, action, actor)
    params = {k: v for k, v in params.items() if v is not None}
    rels = relations(case, actor)
    _check_params(declared, case, params, now)

    to = declared.to(case, params) if callable(declared.to) else declared.to or case.state
    data: dict[str, Any] = {}
    level, owner_code, owner_path = _owner_after(declared, case, actor, rels, params)
    if owner_code != case.owner_area_code or owner_path != case.owner_area_path:
        data["owner_level"], data["owner_area_path"] = level, owner_path

    assignee_kind, assignee_code = case.assignee_kind, case.assignee_code
    assignee_rule = declared.assignee(case) if callable(declared.assignee) else declared.assignee
    if assignee_rule == "set" and "assignee" in params:  # (a redraw may leave it out: kept)
        assignee = params["assignee"]
        assignee_kind, assignee_code = assignee["kind"], str(assignee["code"])
        data["assignee_path"] = assignee["path"]
    elif assignee_rule == "clear":
        assignee_kind = assignee_code = None
    elif assignee_code is not None:
        data["assignee_path"] = case.assignee_path

    priority = params.get("priority", case.priority)
    if priority != case.priority:
        data["priority"] = priority
    step = STEP_OF_STATE.get(to)
    due = case.step_due_at
    if step is None:
        due = None
    elif (
        declared.clock == "start"
        or step != case.step
        or priority != case.priority
        or "due_at" in params
    ):
        minutes = _minutes(limits, case, priority, step)
        due = params.get("due_at") or (now + timedelta(minutes=minutes) if minutes else None)
    if due != case.step_due_at or step != case.step:
        data["due_at"] = due.isoformat() if due else None
    for key in ("duplicate_of", "satisfaction"):
        if key in params:
            data[key] = params[key]
    if action == "callback" and to != "closed":
        data["reopened"] = True

    return Event(
        action=action,
        at=now,
        seq=case.version + 1,
        actor_role=actor.role,
        actor_token_id=actor.token_id,
        actor_area_code=actor.area_code,
        from_state=case.state,
        to_state=to,
        from_owner_area_code=case.owner_area_code,
        to_owner_area_code=owner_code,
        assignee_kind=assignee_kind,
        assignee_code=assignee_code,
        note=params.get("note"),
        reason=params.get("reason"),
        attachments=tuple(params.get("attachments") or ()),
        data=data,
    )


_WHO = {
    OWNER: "the dispatch centre that owns the case ({owner})",
    HANDLER: "the handler it is dispatched to ({assignee})",
    ABOVE: "a dispatch centre above {owner}",
    SYSTEM: "the deadline sweep",
}


def _who_may(action: Action, case: CaseState) -> str:
    owner = f"{case.owner_level} {case.owner_area_code}"
    assignee = f"{case.assignee_kind} {case.assignee_code}" if case.assignee_code else "none yet"
    who = " or ".join(
        _WHO[r].format(owner=owner, assignee=assignee)
        for r in (OWNER, HANDLER, ABOVE, SYSTEM)
        if r in action.actors
    )
    return f"only {who} may {action.name} this case"


# -- folding --------------------------------------------------------------------------------


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def initial_state(event: Event) -> CaseState:
    """Return the case a first event (report, import) starts: the snapshot it carries."""
    d = event.data
    return CaseState(
        category=d.get("category"),
        state=event.to_state,
        status=STATUS_OF_STATE[event.to_state],
        priority=d.get("priority", "normal"),
        owner_level=d.get("owner_level"),
        owner_area_code=event.to_owner_area_code,
        owner_area_path=d.get("owner_area_path"),
        assignee_kind=event.assignee_kind,
        assignee_code=event.assignee_code,
        assignee_path=d.get("assignee_path"),
        step=d.get("step", STEP_OF_STATE.get(event.to_state)),
        step_due_at=_time(d.get("due_at")),
        step_overdue=d.get("step_overdue", False),
        dispatched_at=_time(d.get("dispatched_at")),
        signed_at=_time(d.get("signed_at")),
        handled_at=_time(d.get("handled_at")),
        closed_at=_time(d.get("closed_at")),
        supervised=d.get("supervised", False),
        escalations=d.get("escalations", 0),
        reopens=d.get("reopens", 0),
        duplicate_of=d.get("duplicate_of"),
        satisfaction=d.get("satisfaction"),
        version=event.seq or 1,
    )


def apply(case: CaseState, event: Event) -> CaseState:
    """Return the case after ``event`` (the only way a case changes)."""
    declared = ACTIONS[event.action]
    if not declared.states:
        return initial_state(event)
    d = event.data
    to, before = event.to_state, case.state
    changes: dict[str, Any] = {
        "state": to,
        "status": STATUS_OF_STATE[to],
        "step": STEP_OF_STATE.get(to),
        "assignee_kind": event.assignee_kind,
        "assignee_code": event.assignee_code,
        "assignee_path": d.get("assignee_path") if event.assignee_code is not None else None,
        "priority": d.get("priority", case.priority),
        "version": event.seq or case.version + 1,
    }
    owner_moved = event.to_owner_area_code != case.owner_area_code
    # A redraw may move a centre's path while its code stays: the path is in the data.
    if owner_moved or "owner_area_path" in d:
        changes["owner_area_code"] = event.to_owner_area_code
        changes["owner_level"] = d.get("owner_level")
        changes["owner_area_path"] = d.get("owner_area_path")
    if "due_at" in d:
        changes["step_due_at"] = _time(d["due_at"])
        changes["step_overdue"] = False
    if changes["step"] is None:
        changes["step_due_at"] = None
    if to != before:
        if to == "dispatched":
            changes.update(dispatched_at=event.at, signed_at=None, handled_at=None)
        elif to == "signed":
            changes["signed_at"] = event.at
        elif to == "handled":
            changes["handled_at"] = event.at
        elif to in ("reported", "registered"):
            changes.update(dispatched_at=None, signed_at=None, handled_at=None)
    closed_before = case.status == "closed"
    if changes["status"] == "closed":
        if not closed_before:
            changes["closed_at"] = event.at
    else:
        changes["closed_at"] = None
    if owner_moved or changes["status"] == "closed":
        changes["supervised"] = False
    for flag in declared.flags:
        changes[flag] = True
    if declared.counts:
        changes[declared.counts] = getattr(case, declared.counts) + 1
    if d.get("reopened"):
        changes["reopens"] = case.reopens + 1
    for key in ("duplicate_of", "satisfaction"):
        if key in d:
            changes[key] = d[key]
    return replace(case, **changes)


def replay(events: Iterable[Event]) -> CaseState:
    """Return the case its events, in order, make from nothing."""
    case = CaseState()
    for event in events:
        case = apply(case, event)
    return case
