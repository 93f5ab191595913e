"""Orthophoto surveys: the STAC catalogue, XYZ tiles and TileJSON of each, and pipeline cases' image chips.

Decisions recorded here:

* Any logged-in account may read surveys, the pipeline account included: an orthophoto is the street's
  shared basemap, spanning many grids, not a case; cutting it at grid edges per worker would help nobody.
  Chips are part of a case and follow the case's scope exactly as ``GET /cases/{id}`` does (a grid worker
  outside the case's area gets 404, the pipeline account 403).
* A tile that does not meet the survey's bounds is ``204 No Content``: nothing to draw is not an error,
  and MapLibre and Leaflet show a 204 as an empty tile without logging a failed request (clients that
  honour the TileJSON ``bounds`` never ask). Inside the bounds, pixels the survey lacks are transparent.
* Tiles carry ``Cache-Control: public`` and an ETag: a survey's id is its content hash, so a tile URL always
  names the same pixels (the ETag also names :data:`RENDERING`, bumped when drawing changes). "public" lets
  a shared cache keep tiles fetched with a token; the URL holds a 64-hex hash nobody can guess.
* A survey whose image cannot be read is 404 with the reason (and logged): the tile cannot be had, and
  retrying will not help.
"""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response

from api.deps import account, service
from api.errors import BadParameterError, NotFoundError
from api.routes.features import parse_bbox
from api.service import Service
from inspection import rastertiles
from inspection.errors import RasterError

router = APIRouter(tags=["surveys"])
log = logging.getLogger("gridmap.api")
#: Part of every tile's ETag: bump it when tiles are drawn differently, so caches refetch.
RENDERING = "1"
TILE_CACHE = "public, max-age=86400"
CHIP_CACHE = "private, max-age=86400"
# The pipeline writes JPEG chips; runs before 2026-11-25 wrote PNG ones, which stay servable.
CHIP_MEDIA_TYPES = {".jpg": "image/jpeg", ".png": "image/png"}
WEB_MAP_LINKS = "https://stac-extensions.github.io/web-map-links/v1.2.0/schema.json"
IMAGE_RESPONSES = {200: {"content": {media: {} for media in rastertiles.MEDIA_TYPES.values()}},
                   204: {"description": "The tile does not meet the survey"}}


@router.get("/surveys", summary="Orthophoto surveys as a STAC ItemCollection, newest first")
def list_surveys(request: Request, bbox: str | None = Query(None, max_length=200,
                                                             description="minlon,minlat,maxlon,maxlat (CRS84)"),
                 who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    jobs = {job["batch_id"]: job for job in svc.store.list_jobs()}
    base = _base(request)
    features = [_item(s, base, jobs.get(s["batch_id"])) for s in svc.store.list_surveys(bbox=parse_bbox(bbox))]
    return {"type": "FeatureCollection", "features": features, "numberReturned": len(features),
            "links": [{"rel": "self", "href": str(request.url), "type": "application/geo+json"}]}


@router.get("/surveys/{survey_id}", summary="One survey's STAC Item")
def get_survey(survey_id: str, request: Request, who: dict = Depends(account),
               svc: Service = Depends(service)) -> dict:
    survey = _survey(svc, survey_id)
    job = next((j for j in svc.store.list_jobs() if j["batch_id"] == survey["batch_id"]), None)
    return _item(survey, _base(request), job)


@router.get("/surveys/{survey_id}/tilejson.json", summary="TileJSON 3.0 of a survey's XYZ tiles")
def survey_tilejson(survey_id: str, request: Request, fmt: Literal["png", "jpg", "webp"] = "png",
                    who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    survey = _survey(svc, survey_id)
    tiles = f"{_base(request)}/surveys/{survey_id}/tiles/{{z}}/{{x}}/{{y}}.{fmt}"
    try:
        return rastertiles.tilejson(survey["path"], tiles, name=survey_id)
    except RasterError as error:
        raise _unreadable(survey_id, error) from None


@router.get("/surveys/{survey_id}/tiles/{z}/{x}/{y}.{fmt}", summary="One XYZ tile (png, jpg or webp)",
            response_class=Response, responses=IMAGE_RESPONSES)
def survey_tile(survey_id: str, z: int, x: int, y: int, fmt: str, request: Request,
                who: dict = Depends(account), svc: Service = Depends(service)) -> Response:
    try:
        rastertiles.check_tile(z, x, y, fmt)
    except rastertiles.TileRequestError as error:
        raise BadParameterError(str(error)) from None
    survey = _survey(svc, survey_id)
    headers = {"Cache-Control": TILE_CACHE, "ETag": f'"{survey_id}-{z}-{x}-{y}-{RENDERING}.{fmt}"'}
    if headers["ETag"] in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    try:
        data = rastertiles.render_tile(survey["path"], z, x, y, fmt=fmt)
    except rastertiles.TileOutsideError:
        return Response(status_code=204, headers=headers)
    except RasterError as error:
        raise _unreadable(survey_id, error) from None
    return Response(data, media_type=rastertiles.MEDIA_TYPES[fmt], headers=headers)


@router.get("/cases/{case_id}/chips/{which}", tags=["cases"], summary="A pipeline case's before or after chip",
            response_class=FileResponse, responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
def case_chip(case_id: int, which: Literal["before", "after"], who: dict = Depends(account),
              svc: Service = Depends(service)) -> FileResponse:
    case = svc.visible_case(who, case_id)
    attributes = case["attributes"] or {}
    relative, pair = attributes.get(f"chip_{which}"), attributes.get("pair_id")
    if not relative or not pair:
        raise NotFoundError(f"case {case_id} has no {which} chip (only cases found by the drone pipeline have one)")
    # The pipeline writes chips under <data_dir>/work/<pair-id>/; anything resolving elsewhere is refused.
    work = svc.data_dir / "work"
    path = (work / str(pair) / str(relative)).resolve()
    inside = path.is_relative_to(work)
    if not inside:
        log.warning("case %s: %s chip path %r leaves the work directory", case_id, which, relative)
    media_type = CHIP_MEDIA_TYPES.get(path.suffix.lower())
    if not inside or media_type is None or not path.is_file():
        raise NotFoundError(f"case {case_id}'s {which} chip is not available on this server")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": CHIP_CACHE})


def _survey(svc: Service, survey_id: str) -> dict:
    # The store looks surveys up by area, not id; a street keeps a few hundred at most, so a scan is cheap.
    found = next((s for s in svc.store.list_surveys() if s["id"] == survey_id), None)
    if found is None:
        raise NotFoundError(f"no survey {survey_id!r}")
    return found


def _item(survey: dict, base: str, job: dict | None) -> dict:
    """The stored STAC Item with links to itself, its tiles and TileJSON, and its upload job's state."""
    href = f"{base}/surveys/{survey['id']}"
    item = dict(survey["stac"])
    item["stac_extensions"] = [*item.get("stac_extensions", []), WEB_MAP_LINKS]
    item["properties"] = {**item["properties"], "gridmap:batch_id": survey["batch_id"],
                          "gridmap:job": None if job is None else {"id": job["id"], "state": job["state"]}}
    item["links"] = [*item.get("links", []),
                     {"rel": "self", "href": href, "type": "application/geo+json"},
                     {"rel": "xyz", "href": f"{href}/tiles/{{z}}/{{x}}/{{y}}.png", "type": "image/png"},
                     {"rel": "tilejson", "href": f"{href}/tilejson.json", "type": "application/json"}]
    return item


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _unreadable(survey_id: str, error: RasterError) -> NotFoundError:
    log.error("survey %s: image unreadable: %s", survey_id, error)
    return NotFoundError(f"survey {survey_id}'s image cannot be read on this server: {error}")
