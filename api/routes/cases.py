"""Cases: list, read with their audit trail, act on them; escalation and absences."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query

from api.deps import account, service
from api.errors import InvalidInputError, NotFoundError
from api.schemas import AbsenceIn, ActionIn, CaseIn
from api.service import Service
from inspection import cases as workflow
from storage.records import verify_chain

router = APIRouter(tags=["cases"])
State = Literal["reported", "registered", "dispatched", "handled", "verified", "closed", "cancelled"]


@router.get("/cases", summary="Cases in the caller's area")
def list_cases(state: list[State] | None = Query(None), category: str | None = Query(None, max_length=32),
               assignee: str | None = Query(None, max_length=64), mine: bool = False,
               overdue: bool = False, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
               who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    scope = svc.case_scope(who)
    filters = {"states": state, "scope": scope, "category": category,
               "assignee": who["username"] if mine else assignee}
    if overdue:
        filters["states"], filters["deadline_before"] = ["dispatched"], svc.clock()
    return {"total": svc.store.count_cases(**filters),
            "cases": svc.store.list_cases(**filters, limit=limit, offset=offset)}


@router.post("/cases", status_code=201, summary="Open a case from the office")
def open_case(body: CaseIn, who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    svc.require(who, "supervisor", "admin", doing="open cases")
    lon, lat, _ = svc.place_point(who, body.lon, body.lat, body.datum, None)
    case, _ = svc.open_case(body.category, "supervisor", lon, lat, actor=who, description=body.description)
    return case


@router.get("/cases/{case_id}", summary="A case with its audit trail, reports and what the caller may do")
def get_case(case_id: int, who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    case = svc.visible_case(who, case_id)
    events = svc.store.case_events(case_id)
    return {**case, "state_label": workflow.STATE_LABELS[case["state"]], "events": events,
            "audit_intact": not verify_chain(events), "reports": svc.store.list_reports(case_id=case_id),
            "allowed_actions": workflow.allowed_actions(case["state"], who["role"],
                                                        is_assignee=case["assignee"] == who["username"])}


@router.post("/cases/{case_id}/actions", summary="Take a workflow action (register, dispatch, handle, verify, close …)")
def act(case_id: int, body: ActionIn, who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    return svc.act(who, case_id, body.action, note=body.note, photos=body.photos, assignee=body.assignee,
                   version=body.version)


@router.post("/escalations", summary="Escalate overdue cases now (the worker also does it every minute)")
def escalate(who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    svc.require(who, "supervisor", "admin", doing="run escalation")
    return {"escalated": [case["id"] for case in svc.escalate()]}


@router.put("/accounts/{username}/absence", summary="Mark a worker absent (their new cases go to the backup)")
def set_absence(username: str, body: AbsenceIn, who: dict = Depends(account), svc: Service = Depends(service)):
    svc.require(who, "supervisor", "admin", doing="mark absences")
    target = svc.store.get_account(username)
    if target is None:
        raise NotFoundError(f"no account {username!r}")
    if who["role"] == "supervisor" and not set(target["scope"]) & _under(svc, who["scope"]):
        raise NotFoundError(f"no account {username!r} in your area")
    if target["role"] != "grid_worker":
        raise InvalidInputError("only grid workers' absences are tracked")
    svc.store.set_absent(username, body.absent)
    return {"username": username, "absent": body.absent}


def _under(svc: Service, scope: list[str]) -> set[str]:
    """Grid codes inside a supervisor's scope (a grid code starts with its community's and street's)."""
    grids = svc.units[svc.units["level"] == "grid"]["code"]
    return {code for code in grids if any(code.startswith(s) for s in scope)}
