"""Open311 GeoReport v2 (JSON), so a 12345 hotline system can file cases and follow them.

Deviations, decided and documented: every call needs ``api_key`` (a bearer token of a supervisor or admin
account; GET answers are scoped like the rest of the API, since cases name places and people), positions
are WGS84 as the spec says, and an optional ``external_id`` (the hotline's own ticket number) makes POST
idempotent: the same ticket filed twice is one case. ``status`` is ``open`` or ``closed``; the workflow's
finer state goes into ``status_notes``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query

from api.deps import service
from api.errors import InvalidInputError, NotFoundError
from api.schemas import Instant
from api.service import Service
from inspection import cases as workflow

router = APIRouter(prefix="/open311/v2", tags=["open311"])
Key = Annotated[str, Query(min_length=8, max_length=128, description="A bearer token of a supervisor/admin")]


def _caller(svc: Service, api_key: str) -> dict:
    who = svc.authenticate(api_key)
    svc.require(who, "supervisor", "admin", doing="use the Open311 interface")
    return who


def _service(category) -> dict:
    return {"service_code": category.id, "service_name": category.name, "description": category.major_name,
            "metadata": False, "type": "realtime", "keywords": category.kind, "group": category.major_name}


def _request(svc: Service, case: dict) -> dict:
    category = svc.taxonomy.get(case["category"]) if case["category"] in svc.taxonomy else None
    state = case["state"]
    notes = f"{workflow.STATE_LABELS[state]} {state}"
    if case["assignee"]:
        notes += f"; assigned to {case['assignee']}"
    if case["grid"]:
        notes += f"; grid {case['grid']}"
    return {"service_request_id": str(case["id"]),
            "status": "open" if state in workflow.OPEN_STATES else "closed", "status_notes": notes,
            "service_name": category.name if category else case["category"], "service_code": case["category"],
            "description": case["description"], "agency_responsible": case["street"],
            "service_notice": None, "requested_datetime": case["reported_at"],
            "updated_datetime": case["updated_at"], "expected_datetime": case["deadline_at"],
            "address": None, "address_id": case["courtyard"], "zipcode": None,
            "lat": case["lat"], "long": case["lon"], "media_url": None}


@router.get("/services.json", summary="GeoReport v2 service list (the category taxonomy)")
def services(svc: Service = Depends(service)) -> list[dict]:
    return [_service(c) for c in svc.taxonomy.categories()]


@router.get("/requests.json", summary="GeoReport v2 requests")
def requests(api_key: Key, service_request_id: str | None = Query(None, max_length=2000),
             service_code: str | None = Query(None, max_length=32), status: str | None = Query(None, max_length=6),
             start_date: Instant | None = None, end_date: Instant | None = None,
             svc: Service = Depends(service)) -> list[dict]:
    who = _caller(svc, api_key)
    ids = None
    if service_request_id:
        try:
            ids = [int(v) for v in service_request_id.split(",") if v.strip()]
        except ValueError:
            raise InvalidInputError("service_request_id is a comma-separated list of numbers") from None
    if status not in (None, "open", "closed"):
        raise InvalidInputError("status is open or closed")
    states = None if status is None else (sorted(workflow.OPEN_STATES) if status == "open" else ["closed", "cancelled"])
    cases = svc.store.list_cases(scope=svc.case_scope(who), ids=ids, category=service_code, states=states,
                                 reported_from=start_date, reported_to=end_date, limit=None if ids else 1000)
    return [_request(svc, c) for c in cases]


@router.get("/requests/{request_id}.json", summary="GeoReport v2 one request")
def one_request(request_id: str, api_key: Key, svc: Service = Depends(service)) -> list[dict]:
    who = _caller(svc, api_key)
    if not request_id.isdigit() or len(request_id) > 18:
        raise NotFoundError(f"no request {request_id}")
    return [_request(svc, svc.visible_case(who, int(request_id)))]


@router.post("/requests.json", status_code=201, summary="GeoReport v2 file a request (form-encoded)")
def post_request(api_key: Annotated[str, Form(min_length=8, max_length=128)],
                 service_code: Annotated[str, Form(max_length=32)],
                 lat: Annotated[float, Form(ge=-90, le=90)], long: Annotated[float, Form(ge=-180, le=180)],
                 description: Annotated[str, Form(max_length=4000)] = "",
                 address_string: Annotated[str | None, Form(max_length=500)] = None,
                 external_id: Annotated[str | None, Form(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = None,
                 svc: Service = Depends(service)) -> list[dict]:
    who = _caller(svc, api_key)
    text = description + (f"（地址：{address_string}）" if address_string else "")
    lon, lat, _ = svc.place_point(who, long, lat, "wgs84", None)
    case, created = svc.open_case(service_code, "hotline", lon, lat, actor=who, description=text,
                                  source_ref=f"hotline:{external_id}" if external_id else None,
                                  attributes={"external_id": external_id} if external_id else {})
    notice = "已受理 filed" if created else "already filed under this external_id"
    return [{"service_request_id": str(case["id"]), "service_notice": notice, "account_id": None}]



