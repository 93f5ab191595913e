"""OGC API - Features Part 1 (Core, GeoJSON, OpenAPI 3.0) at ``/ogc``: the units of every level and the cases,
as GeoJSON (RFC 7946) with paging links, readable by GDAL's OAPIF driver and QGIS.

Decisions: every collection needs a bearer token like the rest of the API (GDAL: ``GDAL_HTTP_HEADERS=
"Authorization: Bearer …"``); ``cases`` are scoped to the caller's area (a pipeline account gets 403), the
boundary collections are the same for everyone who may log in. ``datetime`` filters cases by when they were
reported; the boundary collections have no time and ignore it. ``limit`` defaults to 100, at most 10,000.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from urllib.parse import urlencode

import pandas as pd
import shapely
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from api.deps import account, service
from api.errors import BadParameterError, NotFoundError
from api.schemas import check_instant
from api.service import Service

router = APIRouter(prefix="/ogc", tags=["ogc-features"])
GEOJSON = "application/geo+json"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
]
#: collection id -> (title, unit level, or None for cases)
COLLECTIONS = {
    "streets": ("街道 Streets", "street"),
    "communities": ("社区 Communities", "community"),
    "grids": ("网格 Unit grids", "grid"),
    "courtyards": ("院落 Courtyards", "courtyard"),
    "buildings": ("建筑 Buildings", "building"),
    "cases": ("案件 Cases", None),
}
_CASE_PROPERTIES = ("category", "source", "state", "street", "community", "grid", "courtyard", "assignee",
                    "description", "reported_at", "dispatched_at", "deadline_at", "closed_at", "updated_at")


def _geojson(payload: dict) -> Response:
    return Response(json.dumps(payload, default=_default, ensure_ascii=False).encode("utf-8"), media_type=GEOJSON)


def _default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/ogc"


@router.get("", summary="OGC API landing page")
def landing(request: Request) -> dict:
    base = _base(request)
    return {"title": "gridmap", "description": "Units and cases of the street office",
            "links": [{"href": base, "rel": "self", "type": "application/json", "title": "this document"},
                      {"href": str(request.base_url) + "openapi.json", "rel": "service-desc",
                       "type": "application/vnd.oai.openapi+json;version=3.0", "title": "the API definition"},
                      {"href": f"{base}/conformance", "rel": "conformance", "type": "application/json"},
                      {"href": f"{base}/collections", "rel": "data", "type": "application/json"}]}


@router.get("/conformance", summary="OGC API conformance classes")
def conformance() -> dict:
    return {"conformsTo": CONFORMANCE}


def _collection(request: Request, cid: str, svc: Service) -> dict:
    title, level = COLLECTIONS[cid]
    units = svc.units
    bounds = units[units["level"] == "street"].total_bounds.tolist()
    base = _base(request)
    extent = {"spatial": {"bbox": [bounds], "crs": CRS84}}
    if level is None:
        extent["temporal"] = {"interval": [[None, None]], "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"}
    return {"id": cid, "title": title, "itemType": "feature", "crs": [CRS84], "extent": extent,
            "links": [{"href": f"{base}/collections/{cid}", "rel": "self", "type": "application/json"},
                      {"href": f"{base}/collections/{cid}/items", "rel": "items", "type": GEOJSON}]}


@router.get("/collections", summary="The feature collections")
def collections(request: Request, who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    visible = [c for c in COLLECTIONS if c != "cases" or who["role"] != "pipeline"]
    return {"collections": [_collection(request, c, svc) for c in visible],
            "links": [{"href": f"{_base(request)}/collections", "rel": "self", "type": "application/json"}]}


@router.get("/collections/{collection_id}", summary="One feature collection")
def collection(collection_id: str, request: Request, who: dict = Depends(account),
               svc: Service = Depends(service)) -> dict:
    _check_collection(collection_id, who, svc)
    return _collection(request, collection_id, svc)


def _check_collection(cid: str, who: dict, svc: Service) -> None:
    if cid not in COLLECTIONS:
        raise NotFoundError(f"no collection {cid!r}; known: {', '.join(COLLECTIONS)}")
    if COLLECTIONS[cid][1] is None:
        svc.case_scope(who)  # 403 for roles that may not read cases


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise BadParameterError("bbox is four numbers: minlon,minlat,maxlon,maxlat") from None
    if len(values) != 4 or not all(abs(v) < 1e9 for v in values):
        raise BadParameterError("bbox is four numbers: minlon,minlat,maxlon,maxlat")
    minx, miny, maxx, maxy = values
    if minx > maxx or miny > maxy or not (-180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90
                                          and -90 <= maxy <= 90):
        raise BadParameterError("bbox must be minlon,minlat,maxlon,maxlat in CRS84 with min <= max")
    return minx, miny, maxx, maxy


def parse_datetime(text: str | None) -> tuple[datetime | None, datetime | None]:
    """An RFC 3339 instant or an interval ``start/end`` (either end open as ``..`` or empty) as [start, end]."""
    if text is None:
        return None, None

    def instant(value: str) -> datetime | None:
        if value in ("", ".."):
            return None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadParameterError(f"datetime {value!r} is not RFC 3339 (2026-11-25T09:00:00Z)") from None
        if moment.tzinfo is None:
            raise BadParameterError(f"datetime {value!r} needs a timezone (Z or +08:00)")
        try:
            return check_instant(moment)
        except ValueError as error:
            raise BadParameterError(f"datetime {error}") from None

    if "/" in text:
        start, _, end = text.partition("/")
        return instant(start), instant(end)
    moment = instant(text)
    return moment, moment


@router.get("/collections/{collection_id}/items", summary="Features of a collection (GeoJSON)",
            response_class=JSONResponse)
def items(collection_id: str, request: Request, bbox: str | None = Query(None, max_length=200),
          limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0, le=10_000_000),
          datetime_: str | None = Query(None, alias="datetime", max_length=100),
          who: dict = Depends(account), svc: Service = Depends(service)):
    _check_collection(collection_id, who, svc)
    box = parse_bbox(bbox)
    start, end = parse_datetime(datetime_)
    level = COLLECTIONS[collection_id][1]
    if level is None:
        # Intervals are closed: the store's upper bound is exclusive, so step one microsecond past ``end``.
        filters = {"scope": svc.case_scope(who), "bbox": box, "reported_from": start,
                   "reported_to": None if end is None else end + timedelta(microseconds=1)}
        matched = svc.store.count_cases(**filters)
        features = [_case_feature(c) for c in svc.store.list_cases(**filters, limit=limit, offset=offset)]
    else:
        units = svc.store.get_units(level, bbox=box)
        matched = len(units)
        page = units.iloc[offset:offset + limit]
        features = [_unit_feature(row) for row in page.itertuples(index=False)]
    base = f"{_base(request)}/collections/{collection_id}/items"
    query = {k: v for k, v in {"bbox": bbox, "datetime": datetime_}.items() if v is not None}
    links = [{"href": f"{base}?{urlencode({**query, 'limit': limit, 'offset': offset})}", "rel": "self",
              "type": GEOJSON}]
    if offset + len(features) < matched:
        links.append({"href": f"{base}?{urlencode({**query, 'limit': limit, 'offset': offset + limit})}",
                      "rel": "next", "type": GEOJSON})
    if offset > 0:
        links.append({"href": f"{base}?{urlencode({**query, 'limit': limit, 'offset': max(0, offset - limit)})}",
                      "rel": "prev", "type": GEOJSON})
    return _geojson({"type": "FeatureCollection", "features": features, "numberMatched": matched,
                     "numberReturned": len(features), "timeStamp": svc.clock(), "links": links})


@router.get("/collections/{collection_id}/items/{feature_id}", summary="One feature (GeoJSON)",
            response_class=JSONResponse)
def item(collection_id: str, feature_id: str, who: dict = Depends(account), svc: Service = Depends(service)):
    _check_collection(collection_id, who, svc)
    level = COLLECTIONS[collection_id][1]
    if level is None:
        if not feature_id.isdigit() or len(feature_id) > 18:
            raise NotFoundError(f"no case {feature_id}")
        return _geojson(_case_feature(svc.visible_case(who, int(feature_id))))
    units = svc.store.get_units(level, codes=[feature_id[:64]])
    if not len(units) or units["code"].iloc[0] != feature_id:
        raise NotFoundError(f"no {level} {feature_id}")
    return _geojson(_unit_feature(next(units.itertuples(index=False))))


def _unit_feature(row) -> dict:
    return {"type": "Feature", "id": row.code, "geometry": shapely.geometry.mapping(row.geometry),
            "properties": {"code": row.code, "level": row.level, "name": row.name, "parent_code": row.parent_code,
                           "worker": row.worker, "population": None if pd.isna(row.population)
                           else int(row.population)}}


def _case_feature(case: dict) -> dict:
    return {"type": "Feature", "id": case["id"],
            "geometry": {"type": "Point", "coordinates": [case["lon"], case["lat"]]},
            "properties": {"id": case["id"], **{k: case[k] for k in _CASE_PROPERTIES}}}
