"""The case workflow of digital urban management (GB/T 30428, CJ/T 315): states, who may move a case, deadlines.

A case goes 上报 reported → 立案 registered → 派遣 dispatched → 处置 handled → 核查 verified → 结案 closed,
with the side paths the standards describe: 不予立案/作废 (cancel), 退回 (the grid worker returns a case that
is not theirs), 处置不合格 (reject: rework), 核查不通过 (reopen) and redispatch (a new assignee, which is how
escalation moves an overdue case).

This module only decides: :func:`transition` says what state an action leads to, or raises
:class:`~inspection.errors.WorkflowError` saying exactly why not. Storing the new state, the audit trail
and the assignee is the store's job.

==========  ====================  ==========  ===============================  ===================
action      from                  to          roles (* = assignee only)        needs
==========  ====================  ==========  ===============================  ===================
register    reported              registered  supervisor, admin, system
cancel      reported, registered  cancelled   supervisor, admin                note
dispatch    registered            dispatched  supervisor, admin, system        new_assignee
redispatch  dispatched            dispatched  supervisor, admin, system        new_assignee
return      dispatched            registered  grid_worker*, supervisor, admin  note
handle      dispatched            handled     grid_worker*, supervisor, admin  note
reject      handled               dispatched  supervisor, admin                note
verify      handled               verified    grid_worker*, supervisor, admin  photo (grid_worker)
reopen      verified              dispatched  supervisor, admin                note
close       verified              closed      supervisor, admin
==========  ====================  ==========  ===============================  ===================

``system`` is the platform itself: it registers drone candidates and hotline requests that auto-register,
dispatches to the grid's worker and redispatches on escalation. ``pipeline`` (the drone pipeline) only
creates reported cases, which is not a transition. A grid worker verifies on site, so must attach a photo;
a supervisor or admin verifying from the office relies on the photos already on the case. After
``return`` the case is nobody's: the store clears its assignee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from inspection.errors import InspectionError, WorkflowError
from inspection.taxonomy import Category

STATES = ("reported", "registered", "dispatched", "handled", "verified", "closed", "cancelled")
STATE_LABELS = {
    "reported": "上报",
    "registered": "立案",
    "dispatched": "派遣",
    "handled": "处置",
    "verified": "核查",
    "closed": "结案",
    "cancelled": "作废",
}
OPEN_STATES = frozenset({"reported", "registered", "dispatched", "handled", "verified"})
ROLES = ("grid_worker", "supervisor", "admin", "pipeline", "system")
# Level 1: the grid's backup worker or the community supervisor; level 2: the street supervisor.
MAX_ESCALATION_LEVEL = 2


@dataclass(frozen=True)
class Action:
    """One row of the workflow table.

    Attributes
    ----------
    name, label : str
        Machine name and Chinese label.
    sources : tuple of str
        States the action may be taken from.
    target : str
        State it leads to.
    roles : frozenset of str
        Roles that may take it.
    assignee_roles : frozenset of str
        Those of ``roles`` that may take it only on a case assigned to themselves.
    needs_note : bool
        A non-blank note is required (a reason the audit trail must show).
    photo_roles : frozenset of str
        Roles that must attach at least one photo.
    needs_new_assignee : bool
        The action names who the case goes to.
    """

    name: str
    label: str
    sources: tuple[str, ...]
    target: str
    roles: frozenset[str]
    assignee_roles: frozenset[str] = frozenset()
    needs_note: bool = False
    photo_roles: frozenset[str] = frozenset()
    needs_new_assignee: bool = False


_OFFICE = frozenset({"supervisor", "admin"})
_OFFICE_AND_SYSTEM = _OFFICE | {"system"}
_WORKER_AND_OFFICE = _OFFICE | {"grid_worker"}
_WORKER = frozenset({"grid_worker"})

ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Action("register", "立案", ("reported",), "registered", _OFFICE_AND_SYSTEM),
        Action("cancel", "作废", ("reported", "registered"), "cancelled", _OFFICE, needs_note=True),
        Action("dispatch", "派遣", ("registered",), "dispatched", _OFFICE_AND_SYSTEM, needs_new_assignee=True),
        Action("redispatch", "重新派遣", ("dispatched",), "dispatched", _OFFICE_AND_SYSTEM, needs_new_assignee=True),
        Action("return", "退回", ("dispatched",), "registered", _WORKER_AND_OFFICE, _WORKER, needs_note=True),
        Action("handle", "处置反馈", ("dispatched",), "handled", _WORKER_AND_OFFICE, _WORKER, needs_note=True),
        Action("reject", "处置不合格", ("handled",), "dispatched", _OFFICE, needs_note=True),
        Action("verify", "核查", ("handled",), "verified", _WORKER_AND_OFFICE, _WORKER, photo_roles=_WORKER),
        Action("reopen", "核查不通过", ("verified",), "dispatched", _OFFICE, needs_note=True),
        Action("close", "结案", ("verified",), "closed", _OFFICE),
    )
}


def transition(
    case_state: str,
    action: str,
    *,
    role: str,
    actor: str,
    assignee: str | None,
    note: str | None,
    photos: Sequence[str] = (),
    new_assignee: str | None = None,
) -> str:
    """The state ``action`` takes a case in ``case_state`` to, or a :class:`WorkflowError` saying why not.

    Parameters
    ----------
    case_state : str
        The case's current state, one of :data:`STATES`.
    action : str
        A key of :data:`ACTIONS`.
    role, actor : str
        The acting user's role (one of :data:`ROLES`) and username.
    assignee : str or None
        Who the case is assigned to now; a grid worker may act only on their own cases.
    note : str or None
        The reason; required (non-blank) for cancel, return, handle, reject and reopen.
    photos : sequence of str
        Photo references; a grid worker's verify needs at least one.
    new_assignee : str or None
        Who a dispatch or redispatch sends the case to; must differ from ``assignee`` on redispatch.

    Examples
    --------
    >>> transition("dispatched", "handle", role="grid_worker", actor="wang", assignee="wang", note="已拆除")
    'handled'
    >>> transition("dispatched", "handle", role="grid_worker", actor="li", assignee="wang", note="已拆除")
    Traceback (most recent call last):
    ...
    inspection.errors.WorkflowError: grid worker li may handle only their own cases; this one is assigned to wang
    """
    spec = ACTIONS.get(action)
    if spec is None:
        raise WorkflowError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    _check_state(case_state)
    if role not in ROLES:
        raise WorkflowError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    if case_state not in spec.sources:
        possible = [name for name, other in ACTIONS.items() if case_state in other.sources]
        allowed = ", ".join(possible) if possible else "none, the case is finished"
        raise WorkflowError(
            f"cannot {action} a case that is {case_state} ({STATE_LABELS[case_state]}): "
            f"{action} is allowed from {', '.join(spec.sources)}; from {case_state}: {allowed}"
        )
    if role not in spec.roles:
        raise WorkflowError(f"role {role} may not {action}; allowed roles: {', '.join(sorted(spec.roles))}")
    if role in spec.assignee_roles and (assignee is None or actor != assignee):
        holder = f"assigned to {assignee}" if assignee is not None else "not assigned to anyone"
        raise WorkflowError(f"grid worker {actor} may {action} only their own cases; this one is {holder}")
    if spec.needs_note and (note is None or not note.strip()):
        raise WorkflowError(f"{action} ({spec.label}) needs a note saying why")
    if role in spec.photo_roles and not [photo for photo in photos if photo]:
        raise WorkflowError(f"{action} ({spec.label}) by a {role} needs at least one on-site photo")
    if spec.needs_new_assignee:
        if new_assignee is None or not new_assignee.strip():
            raise WorkflowError(f"{action} ({spec.label}) needs the assignee the case goes to")
        if action == "redispatch" and new_assignee == assignee:
            raise WorkflowError(f"redispatch needs a different assignee; the case is already assigned to {assignee}")
    return spec.target


def allowed_actions(state: str, role: str, *, is_assignee: bool) -> list[str]:
    """The actions ``role`` may take on a case in ``state``, in table order, for the UI to offer.

    Notes, photos and the new assignee are not checked here: they are what the user supplies next.

    Examples
    --------
    >>> allowed_actions("dispatched", "grid_worker", is_assignee=True)
    ['return', 'handle']
    >>> allowed_actions("dispatched", "grid_worker", is_assignee=False)
    []
    """
    _check_state(state)
    if role not in ROLES:
        raise WorkflowError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    return [
        name
        for name, spec in ACTIONS.items()
        if state in spec.sources and role in spec.roles and (is_assignee or role not in spec.assignee_roles)
    ]


def deadline(category: Category, started: datetime) -> datetime:
    """When handling is due: ``started`` (the dispatch time) plus the category's ``deadline_hours``.

    Calendar hours, nights and holidays included: the national standards leave working-hour calendars to
    each city, and a calendar-hour rule is one nobody can dispute. ``started`` must be timezone-aware.

    Examples
    --------
    >>> from datetime import timezone
    >>> from inspection.taxonomy import load_taxonomy
    >>> illegal = load_taxonomy().get("event:0304")
    >>> deadline(illegal, datetime(2025, 5, 1, 8, 0, tzinfo=timezone.utc)).isoformat()
    '2025-05-04T08:00:00+00:00'
    """
    _check_aware(started, "started")
    return started + timedelta(hours=category.deadline_hours)


def is_overdue(state: str, deadline_at: datetime | None, now: datetime) -> bool:
    """Whether a case waits past its deadline for handling: dispatched and ``now`` later than ``deadline_at``.

    Handled, verified and closed cases stopped the clock, and one due exactly now is not yet late; a case
    without a deadline (never dispatched) is never overdue.
    """
    _check_state(state)
    _check_aware(now, "now")
    if deadline_at is None:
        return False
    _check_aware(deadline_at, "deadline_at")
    return state == "dispatched" and now > deadline_at


def escalation_due(cases: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Overdue dispatched cases that need a higher escalation level now.

    Parameters
    ----------
    cases : DataFrame
        Columns ``id, state, deadline_at, escalation_level`` (level 0 = never escalated); ``deadline_at``
        timezone-aware or NaT.
    now : datetime
        Timezone-aware.

    Returns
    -------
    DataFrame
        Columns ``id, level`` for each case in ``dispatched`` whose ``deadline_at`` is before ``now`` and
        whose ``escalation_level`` is below 2; ``level = escalation_level + 1``: 1 sends it to the grid's
        backup worker or the community supervisor, 2 to the street supervisor. Nothing goes past 2.

    Notes
    -----
    Idempotent when the caller applies each row as one redispatch that stores ``level`` as the case's
    ``escalation_level`` and restarts ``deadline_at`` (:func:`deadline` from the redispatch time): the
    same call on the updated cases then returns nothing until the new assignee's deadline passes too.
    Repeating the call before applying returns the same rows, never a level twice as high.

    Examples
    --------
    >>> from datetime import timezone
    >>> now = datetime(2025, 5, 2, 12, 0, tzinfo=timezone.utc)
    >>> cases = pd.DataFrame({"id": [1, 2, 3], "state": ["dispatched", "dispatched", "handled"],
    ...                       "deadline_at": pd.to_datetime(["2025-05-02 10:00"] * 3, utc=True),
    ...                       "escalation_level": [0, 2, 0]})
    >>> escalation_due(cases, now).to_dict("records")
    [{'id': 1, 'level': 1}]
    """
    _check_aware(now, "now")
    missing = [c for c in ("id", "state", "deadline_at", "escalation_level") if c not in cases.columns]
    if missing:
        raise InspectionError(f"cases lack column(s) {', '.join(missing)}")
    deadlines = as_utc(cases["deadline_at"], "deadline_at")
    levels = cases["escalation_level"].fillna(0).astype(int)
    due = (
        (cases["state"] == "dispatched")
        & deadlines.notna()
        & (deadlines < pd.Timestamp(now))
        & (levels < MAX_ESCALATION_LEVEL)
    )
    return pd.DataFrame({"id": cases["id"][due].to_numpy(), "level": (levels[due] + 1).to_numpy()})


def as_utc(values: pd.Series, name: str) -> pd.Series:
    """``values`` as UTC timestamps (NaT kept); naive times are an error, since their zone is a guess.

    Accepts a timezone-aware datetime column, or objects (datetimes, ISO strings with an offset, None).

    Examples
    --------
    >>> as_utc(pd.Series(["2025-05-01T08:00+08:00", None]), "reported_at").tolist()
    [Timestamp('2025-05-01 00:00:00+0000', tz='UTC'), NaT]
    >>> as_utc(pd.Series(["2025-05-01T08:00"]), "reported_at")
    Traceback (most recent call last):
    ...
    inspection.errors.InspectionError: reported_at holds naive times (e.g. 2025-05-01T08:00); give timezone-aware UTC times
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if values.isna().all():
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    for value in values.dropna():
        try:
            stamp = pd.Timestamp(value)
        except (TypeError, ValueError):
            raise InspectionError(f"{name} holds {value!r}, which is not a time") from None
        if stamp.tzinfo is None:
            raise InspectionError(f"{name} holds naive times (e.g. {value}); give timezone-aware UTC times")
    return pd.to_datetime(values, utc=True)


def _check_state(state: str) -> None:
    if state not in STATE_LABELS:
        raise WorkflowError(f"unknown state {state!r}; known: {', '.join(STATES)}")


def _check_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime):
        raise InspectionError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InspectionError(f"{name} is a naive datetime ({value.isoformat()}); give a timezone-aware UTC time")
