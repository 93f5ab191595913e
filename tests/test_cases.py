"""Case workflow: every action x state x role against a table written out here, paths, deadlines, escalation."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from inspection.cases import (
    ACTIONS,
    OPEN_STATES,
    STATE_LABELS,
    STATES,
    allowed_actions,
    deadline,
    escalation_due,
    is_overdue,
    transition,
)
from inspection.errors import InspectionError, WorkflowError
from inspection.taxonomy import Category, load_taxonomy

UTC = timezone.utc
BEIJING = timezone(timedelta(hours=8))
ALL_STATES = ["reported", "registered", "dispatched", "handled", "verified", "closed", "cancelled"]
ALL_ROLES = ["grid_worker", "supervisor", "admin", "pipeline", "system"]
# The workflow as the brief states it, written out independently of inspection.cases.ACTIONS:
# action: (from states, to state, roles; "grid_worker" here means the assigned grid worker only).
TABLE = {
    "register": ({"reported"}, "registered", {"supervisor", "admin", "system"}),
    "cancel": ({"reported", "registered"}, "cancelled", {"supervisor", "admin"}),
    "dispatch": ({"registered"}, "dispatched", {"supervisor", "admin", "system"}),
    "redispatch": ({"dispatched"}, "dispatched", {"supervisor", "admin", "system"}),
    "return": ({"dispatched"}, "registered", {"grid_worker", "supervisor", "admin"}),
    "handle": ({"dispatched"}, "handled", {"grid_worker", "supervisor", "admin"}),
    "reject": ({"handled"}, "dispatched", {"supervisor", "admin"}),
    "verify": ({"handled"}, "verified", {"grid_worker", "supervisor", "admin"}),
    "reopen": ({"verified"}, "dispatched", {"supervisor", "admin"}),
    "close": ({"verified"}, "closed", {"supervisor", "admin"}),
}
NOTE_ACTIONS = ["cancel", "return", "handle", "reject", "reopen"]


def attempt(state, action, role, *, is_assignee=True, **overrides):
    """A transition with every supporting argument supplied, so that only state, role and assignment matter."""
    arguments = {
        "role": role,
        "actor": "wang",
        "assignee": "wang" if is_assignee else "li",
        "note": "理由",
        "photos": ["photo-1.jpg"],
        "new_assignee": "zhao",
    }
    arguments.update(overrides)
    return transition(state, action, **arguments)


def expected_outcome(state, action, role, is_assignee):
    sources, target, roles = TABLE[action]
    if state in sources and role in roles and (role != "grid_worker" or is_assignee):
        return target
    return None


def test_constants():
    assert list(STATES) == ALL_STATES
    assert set(ACTIONS) == set(TABLE)
    assert STATE_LABELS == {
        "reported": "上报",
        "registered": "立案",
        "dispatched": "派遣",
        "handled": "处置",
        "verified": "核查",
        "closed": "结案",
        "cancelled": "作废",
    }
    assert set(OPEN_STATES) == {"reported", "registered", "dispatched", "handled", "verified"}


@pytest.mark.parametrize(
    ("state", "action", "role", "is_assignee"),
    list(itertools.product(ALL_STATES, list(TABLE), ALL_ROLES, [True, False])),
)
def test_every_transition_matches_the_table(state, action, role, is_assignee):
    expected = expected_outcome(state, action, role, is_assignee)
    if expected is None:
        with pytest.raises(WorkflowError):
            attempt(state, action, role, is_assignee=is_assignee)
    else:
        assert attempt(state, action, role, is_assignee=is_assignee) == expected


@pytest.mark.parametrize(
    ("state", "role", "is_assignee"), list(itertools.product(ALL_STATES, ALL_ROLES, [True, False]))
)
def test_allowed_actions_match_the_table(state, role, is_assignee):
    expected = [a for a in TABLE if expected_outcome(state, a, role, is_assignee) is not None]
    assert sorted(allowed_actions(state, role, is_assignee=is_assignee)) == sorted(expected)


def test_allowed_actions_spot_checks():
    assert allowed_actions("dispatched", "supervisor", is_assignee=False) == ["redispatch", "return", "handle"]
    assert allowed_actions("handled", "grid_worker", is_assignee=True) == ["verify"]
    assert allowed_actions("closed", "admin", is_assignee=True) == []
    assert allowed_actions("reported", "pipeline", is_assignee=False) == []


def test_full_path_reported_to_closed():
    state = "reported"
    state = transition(state, "register", role="system", actor="system", assignee=None, note=None)
    assert state == "registered"
    state = transition(state, "dispatch", role="system", actor="system", assignee=None, note=None, new_assignee="wang")
    assert state == "dispatched"
    state = transition(state, "handle", role="grid_worker", actor="wang", assignee="wang", note="已责令拆除")
    assert state == "handled"
    state = transition(state, "verify", role="grid_worker", actor="wang", assignee="wang", note=None, photos=["a.jpg"])
    assert state == "verified"
    state = transition(state, "close", role="supervisor", actor="zhao", assignee="wang", note=None)
    assert state == "closed"


def test_return_path():
    state = transition("dispatched", "return", role="grid_worker", actor="wang", assignee="wang", note="不是我的网格")
    assert state == "registered"
    state = transition(state, "dispatch", role="supervisor", actor="zhao", assignee=None, note=None, new_assignee="li")
    assert state == "dispatched"
    assert transition(state, "handle", role="grid_worker", actor="li", assignee="li", note="已处置") == "handled"


def test_reject_path():
    state = transition("handled", "reject", role="supervisor", actor="zhao", assignee="wang", note="未拆除干净")
    assert state == "dispatched"
    assert transition(state, "handle", role="grid_worker", actor="wang", assignee="wang", note="已返工") == "handled"


def test_reopen_path():
    state = transition("verified", "reopen", role="admin", actor="root", assignee="wang", note="现场仍有棚子")
    assert state == "dispatched"
    state = transition(state, "handle", role="grid_worker", actor="wang", assignee="wang", note="已拆除")
    state = transition(state, "verify", role="supervisor", actor="zhao", assignee="wang", note=None)
    assert transition(state, "close", role="supervisor", actor="zhao", assignee="wang", note=None) == "closed"


def test_cancel_path():
    assert transition("reported", "cancel", role="supervisor", actor="zhao", assignee=None, note="误报") == "cancelled"
    assert transition("registered", "cancel", role="admin", actor="root", assignee=None, note="重复") == "cancelled"


def test_unknown_action():
    with pytest.raises(WorkflowError, match=r"unknown action 'approve'; known: register, cancel"):
        attempt("reported", "approve", "supervisor")


def test_unknown_state_and_role():
    with pytest.raises(WorkflowError, match="unknown state 'open'"):
        attempt("open", "register", "supervisor")
    with pytest.raises(WorkflowError, match="unknown role 'mayor'"):
        attempt("reported", "register", "mayor")
    with pytest.raises(WorkflowError, match="unknown role 'mayor'"):
        allowed_actions("reported", "mayor", is_assignee=False)


def test_wrong_state_names_the_actions_allowed_from_it():
    with pytest.raises(WorkflowError) as caught:
        attempt("registered", "handle", "supervisor")
    message = str(caught.value)
    assert "cannot handle a case that is registered (立案)" in message
    assert "handle is allowed from dispatched" in message
    assert "from registered: cancel, dispatch" in message


def test_finished_case_says_nothing_is_allowed():
    with pytest.raises(WorkflowError, match=r"from closed: none, the case is finished"):
        attempt("closed", "reopen", "admin")


def test_role_refused_names_the_roles():
    with pytest.raises(WorkflowError, match=r"role grid_worker may not close; allowed roles: admin, supervisor"):
        attempt("verified", "close", "grid_worker")
    with pytest.raises(WorkflowError, match=r"role pipeline may not register"):
        attempt("reported", "register", "pipeline")


def test_grid_worker_not_the_assignee():
    with pytest.raises(WorkflowError, match=r"grid worker wang may handle only their own cases; this one is assigned to li"):
        attempt("dispatched", "handle", "grid_worker", is_assignee=False)
    with pytest.raises(WorkflowError, match=r"this one is not assigned to anyone"):
        attempt("dispatched", "return", "grid_worker", assignee=None)


@pytest.mark.parametrize("action", NOTE_ACTIONS)
@pytest.mark.parametrize("note", [None, "", "   "])
def test_note_required(action, note):
    state = sorted(TABLE[action][0])[0]
    with pytest.raises(WorkflowError, match=rf"{action} \(.+\) needs a note"):
        attempt(state, action, "supervisor", note=note)


@pytest.mark.parametrize("action", ["register", "dispatch", "redispatch", "verify", "close"])
def test_note_optional(action):
    state = sorted(TABLE[action][0])[0]
    assert attempt(state, action, "supervisor", note=None) == TABLE[action][1]


@pytest.mark.parametrize("photos", [(), [], [""]])
def test_grid_worker_verify_needs_a_photo(photos):
    with pytest.raises(WorkflowError, match=r"verify \(核查\) by a grid_worker needs at least one on-site photo"):
        attempt("handled", "verify", "grid_worker", photos=photos)


def test_supervisor_verifies_without_a_new_photo():
    assert attempt("handled", "verify", "supervisor", photos=()) == "verified"


@pytest.mark.parametrize("action", ["dispatch", "redispatch"])
@pytest.mark.parametrize("new_assignee", [None, "", " "])
def test_dispatch_needs_an_assignee(action, new_assignee):
    state = "registered" if action == "dispatch" else "dispatched"
    with pytest.raises(WorkflowError, match=rf"{action} \(.+\) needs the assignee"):
        attempt(state, action, "system", new_assignee=new_assignee)


def test_redispatch_to_the_same_assignee_is_refused():
    with pytest.raises(WorkflowError, match="already assigned to wang"):
        attempt("dispatched", "redispatch", "supervisor", assignee="wang", new_assignee="wang")


def test_deadline_adds_calendar_hours():
    illegal = load_taxonomy().get("event:0304")  # 72 hours
    started = datetime(2025, 4, 30, 20, 0, tzinfo=UTC)
    assert deadline(illegal, started) == datetime(2025, 5, 3, 20, 0, tzinfo=UTC)
    half = Category("event:9901", "event", "99", "测试", "9901", "测试", 2.5, 24.0)
    assert deadline(half, datetime(2025, 5, 1, 23, 0, tzinfo=UTC)) == datetime(2025, 5, 2, 1, 30, tzinfo=UTC)


def test_deadline_keeps_the_instant_of_other_zones():
    vending = load_taxonomy().get("event:0502")  # 2 hours
    started = datetime(2025, 5, 1, 9, 0, tzinfo=BEIJING)  # 01:00 UTC
    assert deadline(vending, started) == datetime(2025, 5, 1, 3, 0, tzinfo=UTC)


def test_deadline_refuses_naive_times():
    illegal = load_taxonomy().get("event:0304")
    with pytest.raises(InspectionError, match="started is a naive datetime"):
        deadline(illegal, datetime(2025, 5, 1, 8, 0))


def test_is_overdue():
    due = datetime(2025, 5, 1, 10, 0, tzinfo=UTC)
    assert not is_overdue("dispatched", due, due)
    assert is_overdue("dispatched", due, due + timedelta(minutes=1))
    assert not is_overdue("dispatched", due, due - timedelta(minutes=1))
    assert not is_overdue("handled", due, due + timedelta(days=3))
    assert not is_overdue("registered", None, due)
    with pytest.raises(InspectionError, match="now is a naive datetime"):
        is_overdue("dispatched", due, datetime(2025, 5, 2))
    with pytest.raises(WorkflowError, match="unknown state"):
        is_overdue("late", due, due)


NOW = datetime(2025, 5, 10, 12, 0, tzinfo=UTC)


def escalation_frame():
    past, future = NOW - timedelta(hours=1), NOW + timedelta(hours=1)
    return pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6, 7],
            "state": ["dispatched", "dispatched", "dispatched", "dispatched", "handled", "dispatched", "dispatched"],
            "deadline_at": pd.Series([past, past, past, future, past, pd.NaT, NOW], dtype="datetime64[ns, UTC]"),
            "escalation_level": [0, 1, 2, 0, 0, 0, 0],
        }
    )


def test_escalation_due_picks_overdue_dispatched_cases():
    due = escalation_due(escalation_frame(), NOW)
    # 1: level 0 -> 1; 2: level 1 -> 2; 3 is at the top level; 4 not yet due; 5 handled; 6 no deadline;
    # 7 due exactly now, not past.
    assert due.to_dict("records") == [{"id": 1, "level": 1}, {"id": 2, "level": 2}]
    assert list(due.columns) == ["id", "level"]


def test_escalation_is_idempotent_once_applied():
    cases = escalation_frame()
    first = escalation_due(cases, NOW)
    assert escalation_due(cases, NOW).equals(first)  # not applied yet: the same rows, no higher level
    # Apply as the docstring says: store the level and restart the deadline at the redispatch (72 h).
    for record in first.to_dict("records"):
        row = cases["id"] == record["id"]
        cases.loc[row, "escalation_level"] = record["level"]
        cases.loc[row, "deadline_at"] = pd.Timestamp(NOW + timedelta(hours=72))
    assert escalation_due(cases, NOW).empty
    assert escalation_due(cases, NOW).empty
    later = NOW + timedelta(hours=73)
    # Case 1's new assignee (level 1) missed too: level 2. Case 2 is at 2 already. Cases 4 and 7 are late now.
    assert escalation_due(cases, later).to_dict("records") == [
        {"id": 1, "level": 2},
        {"id": 4, "level": 1},
        {"id": 7, "level": 1},
    ]


def test_escalation_refuses_naive_times_and_missing_columns():
    with pytest.raises(InspectionError, match="now is a naive datetime"):
        escalation_due(escalation_frame(), datetime(2025, 5, 10, 12, 0))
    naive = escalation_frame().assign(deadline_at=pd.Timestamp("2025-05-10 11:00"))
    with pytest.raises(InspectionError, match="deadline_at holds naive times"):
        escalation_due(naive, NOW)
    with pytest.raises(InspectionError, match="lack column.*escalation_level"):
        escalation_due(escalation_frame().drop(columns="escalation_level"), NOW)


def test_escalation_of_no_cases():
    empty = pd.DataFrame({"id": [], "state": [], "deadline_at": [], "escalation_level": []})
    due = escalation_due(empty, NOW)
    assert due.empty and list(due.columns) == ["id", "level"]
