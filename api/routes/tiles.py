"""Vector tiles (Mapbox Vector Tile 2.1) of the units and the open cases, and a TileJSON per layer.

Tiles are drawn from the store on every request (``ST_AsMVT`` on PostGIS, :func:`gridmap.tiles.encode_tile`
on the embedded store), so a case filed now is in the next tile asked for; they are sent with
``Cache-Control: no-cache`` for the same reason. Cases are limited to the caller's area.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api.deps import account, service
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


@router.get("/{layer}/{z}/{x}/{y}.pbf", summary="One vector tile", response_class=Response,
            responses={200: {"content": {MVT: {}}}})
def tile(layer: str, z: int, x: int, y: int, who: dict = Depends(account), svc: Service = Depends(service)):
    spec, scope = _layer(layer, who, svc)
    try:
        data = svc.store.vector_tile(spec.name, z, x, y, scope=scope)
    except InputError as error:
        raise BadParameterError(str(error)) from None
    return Response(data, media_type=MVT, headers={"Cache-Control": "no-cache"})
