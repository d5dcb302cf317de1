"""The case lifecycle alone (service.dispatch.lifecycle): no database, no HTTP."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.dispatch.lifecycle import (
    ABOVE,
    ACTIONS,
    API_ACTIONS,
    HANDLER,
    INITIAL_ACTIONS,
    OPEN_STATES,
    OWNER,
    STATES,
    STATUS_OF_STATE,
    STEP_OF_STATE,
    ActionInputError,
    Actor,
    CaseState,
    Event,
    NotPermittedError,
    TransitionRefused,
    UnknownActionError,
    allowed_actions,
    apply,
    decide,
    relations,
    replay,
)

NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
CITY, DISTRICT, COMMUNITY = "5201", "5201/520102", "5201/520102/520102001"
GRID = COMMUNITY + "/520102001001"
OTHER_GRID = COMMUNITY + "/520102001002"
SIBLING = "5201/520102/520102002"
LIMITS = {
    ("gas", p, s): m
    for p, factor in (("urgent", 1), ("high", 2), ("normal", 4))
    for s, m in (("accept", 15 * factor), ("sign", 30 * factor), ("handle", 240 * factor))
}  # no "verify" limit: that step has no deadline here

COMMUNITY_CENTRE = Actor("community_dispatcher", "520102001", COMMUNITY, "t-c")
DISTRICT_CENTRE = Actor("district_dispatcher", "520102", DISTRICT, "t-d")
CITY_CENTRE = Actor("city_dispatcher", "5201", CITY, "t-city")
SIBLING_CENTRE = Actor("community_dispatcher", "520102002", SIBLING, "t-s")
OFFICER = Actor("grid_officer", "520102001001", GRID, "t-g")
OTHER_OFFICER = Actor("grid_officer", "520102001002", OTHER_GRID, "t-g2")
ADMIN = Actor("admin", token_id="t-a")
SYSTEM = Actor("system")
ASSIGN_GRID = {"kind": "grid", "code": "520102001001", "path": GRID}


def _report(at: datetime = NOW) -> Event:
    """The first event the database writes for a new gas case in the community."""
    return Event(
        action="report",
        at=at,
        seq=1,
        to_state="reported",
        actor_role="grid_officer",
        to_owner_area_code="520102001",
        data={
            "category": "gas",
            "priority": "normal",
            "state": "reported",
            "owner_level": "community",
            "owner_area_path": COMMUNITY,
            "step": "accept",
            "due_at": (at + timedelta(minutes=60)).isoformat(),
        },
    )


def _run(steps, case: CaseState | None = None, limits=LIMITS) -> tuple[CaseState, list[Event]]:
    """Decide and apply ``(actor, action, params)`` steps, a minute apart."""
    events = [] if case is not None else [_report()]
    case = case or apply(CaseState(), events[0])
    for i, (actor, action, params) in enumerate(steps, start=1):
        event = decide(case, action, actor, params, now=NOW + timedelta(minutes=i), limits=limits)
        case = apply(case, event)
        events.append(event)
    return case, events


PATHS = {
    "reported": [],
    "registered": [(COMMUNITY_CENTRE, "accept", {})],
    "dispatched": [
        (COMMUNITY_CENTRE, "accept", {}),
        (COMMUNITY_CENTRE, "dispatch", {"assignee": ASSIGN_GRID}),
    ],
    "signed": [
        (COMMUNITY_CENTRE, "accept", {}),
        (COMMUNITY_CENTRE, "dispatch", {"assignee": ASSIGN_GRID}),
        (OFFICER, "sign", {}),
    ],
    "handled": [
        (COMMUNITY_CENTRE, "accept", {}),
        (COMMUNITY_CENTRE, "dispatch", {"assignee": ASSIGN_GRID}),
        (OFFICER, "sign", {}),
        (OFFICER, "feedback", {"note": "done"}),
    ],
    "closed": [
        (COMMUNITY_CENTRE, "accept", {}),
        (COMMUNITY_CENTRE, "dispatch", {"assignee": ASSIGN_GRID}),
        (OFFICER, "sign", {}),
        (OFFICER, "feedback", {"note": "done"}),
        (COMMUNITY_CENTRE, "verify", {}),
    ],
    "cancelled": [(COMMUNITY_CENTRE, "reject", {"reason": "not_a_case"})],
}


def _case(state: str) -> CaseState:
    case, _ = _run(PATHS[state])
    assert case.state == state
    return case


# -- the declaration table ----------------------------------------------------------------


def test_the_declaration_table_is_consistent():
    for action in ACTIONS.values():
        assert set(action.states) <= set(STATES), action.name
        for state in action.states:
            case = CaseState(state=state)
            to = action.to(case, {"satisfaction": 3}) if callable(action.to) else action.to
            assert to is None or to in STATES, action.name
            assignee = action.assignee(case) if callable(action.assignee) else action.assignee
            assert assignee in ("keep", "set", "clear"), action.name
        if isinstance(action.to, str):
            assert action.to in STATES, action.name
        assert action.owner in ("keep", "parent", "child", "actor", "area")
        assert action.clock in ("keep", "start")
    assert set(INITIAL_ACTIONS) == {"report", "import"}
    assert not {"overdue", "auto_escalate", "redraw", *INITIAL_ACTIONS} & set(API_ACTIONS)
    # Every open state has a way forward for someone; the status of every state is declared.
    for state in OPEN_STATES:
        assert any(state in a.states and a.to not in (None, state) for a in ACTIONS.values())
    assert set(STATUS_OF_STATE) == set(STATES)
    assert set(STEP_OF_STATE) == set(OPEN_STATES)


def test_the_module_is_pure():
    code = (
        "import sys, service.dispatch.lifecycle;"
        "bad = [m for m in ('sqlalchemy', 'fastapi', 'asyncpg', 'psycopg', 'starlette')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- judging ------------------------------------------------------------------------------


def test_relations():
    dispatched = _case("dispatched")
    assert relations(dispatched, COMMUNITY_CENTRE) == {OWNER}
    assert relations(dispatched, OFFICER) == {HANDLER}
    assert relations(dispatched, DISTRICT_CENTRE) == {ABOVE}
    assert relations(dispatched, CITY_CENTRE) == {ABOVE}
    assert relations(dispatched, SIBLING_CENTRE) == set()
    assert relations(dispatched, OTHER_OFFICER) == set()
    assert relations(dispatched, Actor("planner", "5201", CITY)) == set()
    assert relations(dispatched, ADMIN) == {OWNER, HANDLER, ABOVE}
    # A unit has no token: its owner acts for it.
    unit = replace(dispatched, assignee_kind="unit", assignee_code="17", assignee_path=GRID)
    assert relations(unit, COMMUNITY_CENTRE) == {OWNER, HANDLER}
    assert relations(unit, OFFICER) == set()


@pytest.mark.parametrize("state", STATES)
def test_allowed_actions_are_exactly_those_decide_takes(state):
    case = _case(state)
    params = {
        "note": "n",
        "reason": "not_a_case",
        "assignee": ASSIGN_GRID,
        "satisfaction": 4,
        "area": {"code": "520102002", "path": SIBLING},
    }
    for actor in (COMMUNITY_CENTRE, DISTRICT_CENTRE, OFFICER, SIBLING_CENTRE, ADMIN):
        allowed = allowed_actions(case, actor)
        for name, action in ACTIONS.items():
            if not action.api:
                continue
            taken = {k: v for k, v in params.items() if k in {*action.requires, *action.accepts}}
            try:
                decide(case, name, actor, taken, now=NOW + timedelta(hours=1), limits=LIMITS)
            except (TransitionRefused, NotPermittedError):
                assert name not in allowed, (state, actor.role, name)
            except ActionInputError:
                assert name in allowed, (state, actor.role, name)  # only send_down's area here
            else:
                assert name in allowed, (state, actor.role, name)


@pytest.mark.parametrize("action", [a for a in ACTIONS])
def test_refused_in_every_state_it_does_not_leave(action):
    for state in STATES:
        if state in ACTIONS[action].states:
            continue
        with pytest.raises(TransitionRefused) as refused:
            decide(_case(state), action, ADMIN, {}, now=NOW, limits=LIMITS)
        assert refused.value.state == state and refused.value.action == action
        assert refused.value.allowed == allowed_actions(_case(state), ADMIN)


def test_refusals_say_why():
    with pytest.raises(UnknownActionError):
        decide(_case("reported"), "launch", ADMIN, {}, now=NOW, limits=LIMITS)
    with pytest.raises(NotPermittedError, match="community 520102001"):
        decide(_case("reported"), "accept", DISTRICT_CENTRE, {}, now=NOW, limits=LIMITS)
    with pytest.raises(NotPermittedError):
        decide(_case("handled"), "verify", OFFICER, {}, now=NOW, limits=LIMITS)
    bad = [
        ("reported", "reject", {}, "reason"),
        ("reported", "reject", {"reason": "bored"}, "reason"),
        ("reported", "reject", {"reason": "duplicate"}, "duplicate_of"),
        ("reported", "reject", {"reason": "out_of_scope", "duplicate_of": 3}, "duplicate_of"),
        ("reported", "accept", {"assignee": ASSIGN_GRID}, "assignee"),
        ("reported", "accept", {"priority": "asap"}, "priority"),
        ("registered", "dispatch", {}, "assignee"),
        (
            "registered",
            "dispatch",
            {"assignee": {"kind": "grid", "code": "x", "path": SIBLING + "/1"}},
            "assignee",
        ),
        ("registered", "dispatch", {"assignee": {**ASSIGN_GRID, "path": COMMUNITY}}, "assignee"),
        (
            "registered",
            "dispatch",
            {"assignee": ASSIGN_GRID, "due_at": NOW - timedelta(minutes=1)},
            "due_at",
        ),
        ("signed", "feedback", {"note": " "}, "note"),
        ("closed", "callback", {"satisfaction": 0}, "satisfaction"),
        ("reported", "escalate", {}, "reason"),
    ]
    for state, action, params, field in bad:
        actor = OFFICER if action == "feedback" else COMMUNITY_CENTRE
        with pytest.raises(ActionInputError) as error:
            decide(_case(state), action, actor, params, now=NOW, limits=LIMITS)
        assert error.value.field == field, (action, params)
    district_owned, _ = _run([(COMMUNITY_CENTRE, "escalate", {"reason": "x"})])
    for area in (None, {"code": "520102002", "path": SIBLING + "/5"}, {"code": "1", "path": CITY}):
        with pytest.raises(ActionInputError) as error:
            decide(
                district_owned,
                "send_down",
                DISTRICT_CENTRE,
                {"reason": "x", "area": area},
                now=NOW,
                limits=LIMITS,
            )
        assert error.value.field == "area"


# -- what follows -------------------------------------------------------------------------


def test_the_loop_and_its_clocks():
    case, events = _run(PATHS["closed"])
    assert [e.action for e in events] == [
        "report",
        "accept",
        "dispatch",
        "sign",
        "feedback",
        "verify",
    ]
    dispatched = apply(replay(events[:2]), events[2])
    assert dispatched.step == "sign"
    assert dispatched.step_due_at == events[2].at + timedelta(minutes=120)  # gas, normal
    signed = apply(dispatched, events[3])
    assert signed.step_due_at == events[3].at + timedelta(minutes=960)
    handled = apply(signed, events[4])
    assert handled.step == "verify" and handled.step_due_at is None  # no limit declared
    assert case.status == "closed" and case.closed_at == events[5].at and case.step is None
    assert case.version == 6 == len(events)
    # An urgent dispatch with a deadline of its own.
    due = NOW + timedelta(minutes=10)
    urgent, _ = _run(
        [
            (COMMUNITY_CENTRE, "accept", {"priority": "urgent"}),
            (COMMUNITY_CENTRE, "dispatch", {"assignee": ASSIGN_GRID, "due_at": due}),
        ]
    )
    assert urgent.priority == "urgent" and urgent.step_due_at == due


def test_callback_reopens_only_when_dissatisfied():
    closed = _case("closed")
    happy, _ = _run([(COMMUNITY_CENTRE, "callback", {"satisfaction": 3})], closed)
    assert happy.state == "closed" and happy.satisfaction == 3 and happy.reopens == 0
    unhappy, _ = _run([(COMMUNITY_CENTRE, "callback", {"satisfaction": 2})], closed)
    assert unhappy.state == "dispatched" and unhappy.reopens == 1
    assert unhappy.assignee_code == "520102001001" and unhappy.closed_at is None
    assert unhappy.signed_at is None and unhappy.step == "sign"
    # Closed without a handler (imported history): back to the queue.
    bare = replace(closed, assignee_kind=None, assignee_code=None, assignee_path=None)
    again, _ = _run([(COMMUNITY_CENTRE, "callback", {"satisfaction": 1})], bare)
    assert again.state == "registered"


def test_escalation_and_the_ways_down():
    up, _ = _run([(COMMUNITY_CENTRE, "escalate", {"reason": "too big"})], _case("reported"))
    assert (up.state, up.owner_level, up.owner_area_code, up.owner_area_path) == (
        "registered",
        "district",
        "520102",
        DISTRICT,
    )
    assert up.escalations == 1 and up.step == "accept"
    top, _ = _run([(DISTRICT_CENTRE, "escalate", {"reason": "budget"})], up)
    assert top.owner_level == "city"
    with pytest.raises(TransitionRefused, match="no level above"):
        decide(top, "escalate", CITY_CENTRE, {"reason": "x"}, now=NOW, limits=LIMITS)
    down, _ = _run(
        [(CITY_CENTRE, "send_down", {"reason": "r", "area": {"code": "520102", "path": DISTRICT}})],
        top,
    )
    assert down.owner_area_path == DISTRICT
    # A grid escalates to the centre that owns the case: owner kept, assignee cleared.
    grid_up, _ = _run([(OFFICER, "escalate", {"reason": "no tools"})], _case("signed"))
    assert (grid_up.state, grid_up.owner_area_code, grid_up.assignee_code) == (
        "registered",
        "520102001",
        None,
    )
    assert grid_up.signed_at is None and grid_up.escalations == 1
    # Take over by a centre above; by admin: the city.
    taken, _ = _run([(DISTRICT_CENTRE, "take_over", {"note": "ours"})], _case("dispatched"))
    assert (taken.owner_level, taken.assignee_code, taken.state) == ("district", None, "registered")
    by_admin, _ = _run([(ADMIN, "take_over", {"note": "ours"})], _case("dispatched"))
    assert by_admin.owner_area_path == CITY


def test_the_system_flags_overdue_once_and_escalates():
    case = _case("dispatched")
    flagged, _ = _run([(SYSTEM, "overdue", {})], case)
    assert flagged.step_overdue and flagged.supervised and flagged.state == "dispatched"
    assert flagged.step_due_at == case.step_due_at
    with pytest.raises(TransitionRefused, match="already flagged"):
        decide(flagged, "overdue", SYSTEM, {}, now=NOW, limits=LIMITS)
    assert "overdue" not in allowed_actions(flagged, SYSTEM)
    escalated, _ = _run([(SYSTEM, "auto_escalate", {})], flagged)
    # In work: supervision moves up; the grid team keeps the case, on a new sign-for clock.
    assert (escalated.owner_level, escalated.owner_area_path, escalated.state) == (
        "district",
        DISTRICT,
        "dispatched",
    )
    assert (escalated.assignee_code, escalated.assignee_path) == ("520102001001", GRID)
    assert escalated.dispatched_at == case.dispatched_at and escalated.escalations == 1
    assert escalated.step == "sign" and not escalated.step_overdue and not escalated.supervised
    assert escalated.step_due_at == NOW + timedelta(minutes=1 + LIMITS[("gas", "normal", "sign")])
    with pytest.raises(NotPermittedError):
        decide(case, "overdue", ADMIN, {}, now=NOW, limits=LIMITS)


@pytest.mark.parametrize("state", ["dispatched", "signed", "handled"])
def test_a_late_case_in_work_keeps_its_handler_and_moves_supervision_up(state):
    limits = {**LIMITS, ("gas", "normal", "verify"): 60}
    case = _case(state)
    if state == "handled":  # LIMITS has no verify limit: the verify clock starts now
        case = replace(case, step_due_at=NOW + timedelta(minutes=60))
    flagged, _ = _run([(SYSTEM, "overdue", {})], case, limits)
    escalated, (event,) = _run([(SYSTEM, "auto_escalate", {})], flagged, limits)
    assert (escalated.state, escalated.owner_level, event.to_state) == (state, "district", state)
    assert (escalated.assignee_kind, escalated.assignee_code) == ("grid", "520102001001")
    assert escalated.escalations == 1 and escalated.handled_at == flagged.handled_at
    # The district now acts as the owner (verifies a handled case, sends it back, takes it
    # over); the community is no longer the owner; the grid officer still handles it.
    district = allowed_actions(escalated, DISTRICT_CENTRE)
    community = allowed_actions(escalated, COMMUNITY_CENTRE)
    if state == "handled":
        assert {"verify", "send_back"} <= set(district) and "verify" not in community
    assert "escalate" in district or state == "handled"
    assert "take_over" not in district and "take_over" in allowed_actions(escalated, CITY_CENTRE)
    officer = allowed_actions(escalated, OFFICER)
    assert {"dispatched": "sign", "signed": "feedback", "handled": "comment"}[state] in officer
    # Late again at the district: flagged again, then the city supervises; there it stays.
    again, _ = _run([(SYSTEM, "overdue", {}), (SYSTEM, "auto_escalate", {})], escalated, limits)
    assert (again.owner_level, again.state, again.escalations) == ("city", state, 2)
    at_city, _ = _run([(SYSTEM, "overdue", {})], again, limits)
    with pytest.raises(TransitionRefused, match="no level above"):
        decide(at_city, "auto_escalate", SYSTEM, {}, now=NOW, limits=limits)


def test_a_redraw_moves_owner_and_grid_team_with_the_case():
    case = _case("signed")
    new_community = "5201/520102/520102003"
    new_grid = new_community + "/520102003001"
    params = {
        "area": {"code": "520102003", "path": new_community},
        "assignee": {"kind": "grid", "code": "520102003001", "path": new_grid},
    }
    moved, (event,) = _run([(SYSTEM, "redraw", params)], case)
    assert (moved.owner_level, moved.owner_area_code, moved.owner_area_path) == (
        "community",
        "520102003",
        new_community,
    )
    assert (moved.assignee_code, moved.assignee_path, moved.state) == (
        "520102003001",
        new_grid,
        "signed",
    )
    assert moved.step_due_at == case.step_due_at and moved.signed_at == case.signed_at
    assert event.from_owner_area_code == "520102001" and event.to_owner_area_code == "520102003"
    # The new grid's officer handles it; the old one no longer does.
    officer = Actor("grid_officer", "520102003001", new_grid)
    assert "feedback" in allowed_actions(moved, officer)
    assert "feedback" not in allowed_actions(moved, OFFICER)
    # A centre whose code stays but whose path moved: the path follows, the code is kept.
    path_only = {"area": {"code": "520102001", "path": "5201/520109/520102001"}}
    kept, _ = _run([(SYSTEM, "redraw", path_only)], _case("reported"))
    assert (kept.owner_area_code, kept.owner_area_path) == ("520102001", "5201/520109/520102001")
    with pytest.raises(NotPermittedError):
        decide(case, "redraw", COMMUNITY_CENTRE, params, now=NOW, limits=LIMITS)
    with pytest.raises(ActionInputError, match="not a dispatch centre"):
        decide(case, "redraw", SYSTEM, {**params, "area": params["assignee"]}, now=NOW, limits={})


@pytest.mark.parametrize("state", ["reported", "registered"])
def test_a_late_case_in_a_queue_goes_up_the_queues(state):
    flagged, _ = _run([(SYSTEM, "overdue", {})], _case(state))
    escalated, _ = _run([(SYSTEM, "auto_escalate", {})], flagged)
    assert (escalated.state, escalated.owner_level, escalated.assignee_code) == (
        "registered",
        "district",
        None,
    )
    assert escalated.step == "accept" and not escalated.step_overdue


def test_reject_as_duplicate_links_the_original():
    dup, _ = _run(
        [(COMMUNITY_CENTRE, "reject", {"reason": "duplicate", "duplicate_of": 7})],
        _case("reported"),
    )
    assert (dup.state, dup.status, dup.duplicate_of) == ("cancelled", "closed", 7)
    assert dup.closed_at is not None and dup.step_due_at is None


def test_events_survive_their_row_form():
    _, events = _run(PATHS["closed"] + [(COMMUNITY_CENTRE, "callback", {"satisfaction": 1})])
    rows = [{**e.row(), "id": i, "incident_id": 1} for i, e in enumerate(events)]
    assert [Event.from_row(r) for r in rows] == events


# -- replay -------------------------------------------------------------------------------

PARAMS = st.fixed_dictionaries(
    {
        "note": st.sampled_from(["n", "longer note"]),
        "reason": st.sampled_from(["not_a_case", "out_of_scope", "x"]),
        "satisfaction": st.integers(1, 5),
        "priority": st.sampled_from(["urgent", "high", "normal"]),
    }
)
ACTORS = [COMMUNITY_CENTRE, DISTRICT_CENTRE, CITY_CENTRE, OFFICER, ADMIN, SYSTEM]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5), PARAMS), max_size=30))
def test_any_walk_replays_to_the_same_case(walk):
    case = apply(CaseState(), _report())
    events = [_report()]
    now = NOW
    for pick, who, raw in walk:
        actor = ACTORS[who]
        allowed = allowed_actions(case, actor)
        if not allowed:
            continue
        action = ACTIONS[allowed[pick % len(allowed)]]
        params = {k: v for k, v in raw.items() if k in {*action.requires, *action.accepts}}
        if action.name == "dispatch":
            params["assignee"] = ASSIGN_GRID
        if action.name == "send_down":
            child = case.owner_area_path + (
                "/520102" if case.owner_level == "city" else "/520102001"
            )
            params["area"] = {"code": child.rpartition("/")[2], "path": child}
        if action.name == "reject":
            params["reason"] = "out_of_scope"
        now += timedelta(minutes=7)
        event = decide(case, action.name, actor, params, now=now, limits=LIMITS)
        case = apply(case, event)
        events.append(event)
        # The invariants the table's checks hold the row to.
        assert case.status == STATUS_OF_STATE[case.state]
        assert (case.closed_at is not None) == (case.status == "closed")
        assert case.step == STEP_OF_STATE.get(case.state)
        assert (case.assignee_kind is None) == (case.assignee_code is None)
        assert case.assignee_path is None or case.assignee_path.startswith(case.owner_area_path)
    assert replay(events) == case
    assert case.version == len(events)


def test_a_case_outside_every_area_waits_for_the_city():
    outside = CaseState(category="gas", state="reported", status="new", step="accept", version=1)
    assert relations(outside, CITY_CENTRE) == {OWNER}
    assert relations(outside, DISTRICT_CENTRE) == set()
    assert "escalate" not in allowed_actions(outside, CITY_CENTRE)
    cancelled, _ = _run([(CITY_CENTRE, "reject", {"reason": "out_of_scope"})], outside)
    assert cancelled.state == "cancelled"
