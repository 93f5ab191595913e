"""Case density for the supervisor's map: a kernel heatmap and a choropleth by grid, as GeoJSON, filterable by
category, source and reporting window; scoped to the caller's area like every case read. ``/heatmaps/map.html``
draws both with folium for the supervisor's page (which fetches it with its token and shows it in a frame)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import pandas as pd
from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse

from api.basemaps import basemap
from api.deps import account, service
from api.errors import BadParameterError
from api.maps import density_map
from api.schemas import Instant
from api.service import Service
from inspection.errors import InspectionError
from inspection.heatmap import choropleth, kernel_density

router = APIRouter(prefix="/heatmaps", tags=["heatmaps"])
Source = Literal["report", "pipeline", "hotline", "supervisor"]


def _cases(svc: Service, who: dict, category, source, start, end) -> pd.DataFrame:
    end = end or svc.clock()
    start = start or end - timedelta(days=90)
    if start >= end:
        raise BadParameterError("start must be before end")
    rows = svc.store.list_cases(scope=svc.case_scope(who), category=category, source=source,
                                 reported_from=start, reported_to=end)
    return pd.DataFrame(rows, columns=["id", "lon", "lat", "grid"]) if rows else pd.DataFrame(
        columns=["id", "lon", "lat", "grid"])


def _geojson(frame) -> JSONResponse:
    return JSONResponse(content=frame.__geo_interface__ if len(frame) else {"type": "FeatureCollection", "features": []},
                        media_type="application/geo+json")


@router.get("/density", summary="Kernel density of cases (cases/km²) on cell centres, GeoJSON")
def density(category: str | None = Query(None, max_length=32), source: Source | None = None,
            start: Instant | None = None, end: Instant | None = None,
            bandwidth_m: float = Query(150.0, ge=10, le=5000), cell_m: float = Query(25.0, ge=5, le=1000),
            who: dict = Depends(account), svc: Service = Depends(service)):
    return _geojson(_density(svc, _cases(svc, who, category, source, start, end), bandwidth_m, cell_m))


def _density(svc: Service, cases: pd.DataFrame, bandwidth_m: float, cell_m: float):
    street = svc.units[svc.units["level"] == "street"].geometry.union_all()
    try:
        surface = kernel_density(cases, street, bandwidth_m=bandwidth_m, cell_m=cell_m)
    except InspectionError as error:
        raise BadParameterError(str(error)) from None
    surface["density"] = surface["density"].round(2)
    return surface


@router.get("/grids", summary="Cases per grid (count and per hectare), GeoJSON")
def by_grid(category: str | None = Query(None, max_length=32), source: Source | None = None,
            start: Instant | None = None, end: Instant | None = None,
            who: dict = Depends(account), svc: Service = Depends(service)):
    return _geojson(_by_grid(svc, who, _cases(svc, who, category, source, start, end)))


def _by_grid(svc: Service, who: dict, cases: pd.DataFrame):
    grids = svc.units[svc.units["level"] == "grid"]
    scope = svc.case_scope(who)
    if scope is not None:
        grids = grids[grids["code"].map(lambda code: any(code.startswith(s) for s in scope))]
    return choropleth(cases, grids)


@router.get("/map.html", summary="The density and the cases per grid drawn on one folium map (HTML)",
            response_class=HTMLResponse)
def density_page(category: str | None = Query(None, max_length=32), source: Source | None = None,
                 start: Instant | None = None, end: Instant | None = None,
                 bandwidth_m: float = Query(150.0, ge=10, le=5000), cell_m: float = Query(25.0, ge=5, le=1000),
                 who: dict = Depends(account), svc: Service = Depends(service)):
    cases = _cases(svc, who, category, source, start, end)
    grids = _by_grid(svc, who, cases)
    area = grids.geometry if len(grids) else svc.units[svc.units["level"] == "street"].geometry
    settings = svc.settings
    html = density_map(_density(svc, cases, bandwidth_m, cell_m), grids, area,
                       basemap(settings.basemap, tianditu_key=settings.tianditu_key))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
