"""Performance indicators per grid, worker, community, street or category over a period."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from fastapi import APIRouter, Depends, Query

from api.deps import account, service
from api.errors import InvalidInputError
from api.schemas import Grouping, Instant
from api.service import Service
from inspection.indicators import indicators

router = APIRouter(tags=["indicators"])
_COLUMNS = ("id", "category", "source", "state", "grid", "community", "assignee", "reported_at", "dispatched_at",
            "handled_at", "verified_at", "closed_at", "deadline_at", "lon", "lat")


@router.get("/indicators", summary="Cases, closure, on-time rate, median times and repeats per group")
def get_indicators(by: Grouping = "grid", start: Instant | None = None, end: Instant | None = None,
                   repeat_radius_m: float = Query(50.0, gt=0, le=5000),
                   who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    svc.require(who, "supervisor", "admin", "grid_worker", doing="read indicators")
    end = end or svc.clock()
    start = start or end - timedelta(days=30)
    if start >= end:
        raise InvalidInputError("start must be before end")
    rows = svc.store.list_cases(scope=svc.case_scope(who))
    frame = pd.DataFrame(rows, columns=list(_COLUMNS)) if rows else pd.DataFrame(columns=list(_COLUMNS))
    for column in _COLUMNS:
        if column.endswith("_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
    table = indicators(frame, by=by, start=start, end=end, repeat_radius_m=repeat_radius_m)
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    return {"by": by, "start": start, "end": end, "groups": records}
