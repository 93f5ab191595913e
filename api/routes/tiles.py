"""Vector tiles (Mapbox Vector Tile 2.1) of the units and the open cases, and a TileJSON per layer.

Tiles come from the process's tile cache (:mod:`api.tilecache`), which draws them from the store
(``ST_AsMVT`` on PostGIS, :func:`gridmap.tiles.encode_tile` on the embedded store) once per change of their
data, so a case filed now is in the next tile asked for. They are sent with ``Cache-Control: private,
no-cache`` and an ETag: a client revalidates each time and gets 304 while the tile is unchanged. Cases are
limited to the caller's area.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.routing import Route

from api.deps import account, account_of, service
from api.errors import BadParameterError, NotFoundError
from api.service import Service
from gridmap.errors import InputError
from gridmap.tiles import LAYERS, MAX_ZOOM

router = APIRouter(prefix="/tiles", tags=["tiles"])
MVT = "application/vnd.mapbox-vector-tile"


def _layer(name: str, who: dict, svc: Service):
    spec = LAYERS.get(name)
    if spec is None:
        raise NotFoundError(f"no tile layer {name!r}; known: {', '.join(LAYERS)}")
    scope = svc.case_scope(who) if spec.level is None else None  # 403 for roles that may not read cases
    return spec, scope


@router.get("/{layer}.json", summary="TileJSON 3.0 of a layer")
def tilejson(layer: str, request: Request, who: dict = Depends(account), svc: Service = Depends(service)) -> dict:
    spec, _ = _layer(layer, who, svc)
    units = svc.units
    bounds = units[units["level"] == "street"].total_bounds.tolist()
    base = str(request.base_url).rstrip("/")
    return {"tilejson": "3.0.0", "name": spec.name, "scheme": "xyz",
            "tiles": [f"{base}/tiles/{spec.name}/{{z}}/{{x}}/{{y}}.pbf"], "minzoom": spec.minzoom,
            "maxzoom": MAX_ZOOM, "bounds": bounds, "center": [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, 15],
            "vector_layers": [{"id": spec.name, "fields": {p: "String" for p in spec.properties},
                               "minzoom": spec.minzoom, "maxzoom": MAX_ZOOM}]}


async def tile(request: Request) -> Response:
    """``GET /tiles/{layer}/{z}/{x}/{y}.pbf``: one vector tile; 304 when If-None-Match names its ETag."""
    svc: Service = request.app.state.service
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    who = await account_of(svc, token.strip() if scheme.lower() == "bearer" else None)
    params = request.path_params
    spec, scope = _layer(params["layer"], who, svc)
    try:
        etag, data, hit = await svc.tiles.fetch(spec, params["z"], params["x"], params["y"], scope)
    except InputError as error:
        raise BadParameterError(str(error)) from None
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "X-Cache": "hit" if hit else "miss"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=MVT, headers=headers)


#: A plain Starlette route, which :func:`api.app.create_app` puts before all others: FastAPI's routing through
#: the included routers and its parameter and dependency handling cost several times what serving a cached
#: tile does. So it is not in /openapi.json; the TileJSON documents it.
TILE_ROUTE = Route("/tiles/{layer}/{z:int}/{x:int}/{y:int}.pbf", tile, methods=["GET"], name="tile")


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (weak comparison, as RFC 9110 asks for it) or is ``*``."""
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags
