"""Vector tiles on both stores: contents against an independent selection, a new case in the next tile, role
scoping, bad tiles; and GDAL's MVT driver reading a tile from a running server."""

from __future__ import annotations

import json
import math
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import geopandas as gpd
import httpx
import mapbox_vector_tile
import pytest
import shapely
from conftest import auth_headers, require_gdal, served, uvicorn_argv

from api.demo import DEMO_PASSWORD

BOUNDARIES = Path(__file__).resolve().parent.parent / "data" / "boundaries"


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    """The XYZ tile holding a point (the slippy-map formula, written out here independently of the code)."""
    n = 2**z
    return z, int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def expected_codes(layer_file: str, z: int, x: int, y: int) -> set[str]:
    """Codes of the features meeting the tile plus its 64/4096 buffer, from the source file, in Web Mercator."""
    side = 2 * 20037508.342789244 / 2**z
    minx, maxy = -20037508.342789244 + x * side, 20037508.342789244 - y * side
    pad = side * 64 / 4096
    frame = gpd.read_file(BOUNDARIES / layer_file).to_crs("EPSG:3857")
    return set(frame[frame.intersects(shapely.box(minx - pad, maxy - side - pad, minx + side + pad, maxy + pad))]["code"])


@pytest.fixture
def client(demo_client):
    return demo_client


def _decode(reply) -> dict:
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    return mapbox_vector_tile.decode(reply.content) if reply.content else {}


def _grid_point(client, code):
    units = client.app.state.service.units
    return units[units["code"] == code].geometry.iloc[0].representative_point()


@pytest.mark.parametrize(("layer", "source", "z"), [("grids", "demo-grids.geojson", 15),
                                                    ("buildings", "demo-buildings.geojson", 16),
                                                    ("communities", "demo-communities.geojson", 13)])
def test_tile_holds_exactly_the_features_meeting_it(client, layer, source, z):
    point = _grid_point(client, "330102901003004")
    tile = tile_of(point.x, point.y, z)
    decoded = _decode(client.get(f"/tiles/{layer}/{'/'.join(map(str, tile))}.pbf", headers=auth_headers(client, "supervisor")))
    got = {f["properties"]["code"] for f in decoded[layer]["features"]}
    assert got == expected_codes(source, *tile)


def test_low_zooms_leave_small_layers_out_and_bad_tiles_are_refused(client):
    headers = auth_headers(client, "supervisor")
    point = _grid_point(client, "330102901001001")
    z, x, y = tile_of(point.x, point.y, 12)
    assert client.get(f"/tiles/buildings/{z}/{x}/{y}.pbf", headers=headers).content == b""
    assert client.get("/tiles/grids/3/9/0.pbf", headers=headers).status_code == 400
    assert client.get("/tiles/grids/30/0/0.pbf", headers=headers).status_code == 400
    assert client.get("/tiles/roads/15/0/0.pbf", headers=headers).status_code == 404
    assert client.get("/tiles/grids/15/0/0.pbf").status_code == 401
    tilejson = client.get("/tiles/grids.json", headers=headers).json()
    assert tilejson["tilejson"] == "3.0.0" and tilejson["tiles"][0].endswith("/tiles/grids/{z}/{x}/{y}.pbf")
    assert tilejson["vector_layers"][0]["id"] == "grids"


def test_a_new_case_is_in_the_next_tile_and_tiles_are_scoped(client):
    mine_point = _grid_point(client, "330102901001001")
    other_point = _grid_point(client, "330102901002001")
    tile = "/".join(map(str, tile_of(mine_point.x, mine_point.y, 14)))
    worker, supervisor = auth_headers(client, "worker"), auth_headers(client, "supervisor")
    assert _decode(client.get(f"/tiles/cases/{tile}.pbf", headers=supervisor)) == {}
    ids = []
    for username, point in (("worker", mine_point), ("gw002001", other_point)):
        body = {"client_id": os.urandom(8).hex(), "category": "event:0502", "lon": point.x, "lat": point.y,
                "observed_at": datetime.now(timezone.utc).isoformat()}
        reply = client.post("/reports", data={"report": json.dumps(body)}, headers=auth_headers(client, username))
        ids.append(reply.json()["case"]["id"])
    assert tile == "/".join(map(str, tile_of(other_point.x, other_point.y, 14))), "both grids in one z14 tile"
    seen = {f["properties"]["id"] for f in _decode(client.get(f"/tiles/cases/{tile}.pbf", headers=supervisor))["cases"]["features"]}
    assert seen == set(ids)
    own = {f["properties"]["id"] for f in _decode(client.get(f"/tiles/cases/{tile}.pbf", headers=worker))["cases"]["features"]}
    assert own == {ids[0]}
    assert client.get(f"/tiles/cases/{tile}.pbf", headers=auth_headers(client, "pipeline")).status_code == 403


def test_gdal_reads_a_vector_tile(demo_url, tmp_path):
    require_gdal()
    env = {**os.environ, "GRIDMAP_DATABASE_URL": demo_url, "GRIDMAP_DATA_DIR": str(tmp_path / "data"),
           "GRIDMAP_INPROCESS_WORKER": "0"}
    grids = gpd.read_file(BOUNDARIES / "demo-grids.geojson")
    point = grids.geometry.iloc[40].representative_point()
    z, x, y = tile_of(point.x, point.y, 15)
    out = tmp_path / "tile.geojson"
    with served(uvicorn_argv(), env) as base:
        token = httpx.post(f"{base}/auth/token", json={"username": "supervisor", "password": DEMO_PASSWORD}
                           ).json()["access_token"]
        gdal = {**os.environ, "GDAL_HTTP_HEADERS": f"Authorization: Bearer {token}"}
        # CLIP=NO: keep the features that only reach into the tile's buffer, which the expectation counts too.
        done = subprocess.run(["ogr2ogr", "-f", "GeoJSON", "-t_srs", "EPSG:4326", "-oo", "CLIP=NO", str(out),
                               f"MVT:/vsicurl/{base}/tiles/grids/{z}/{x}/{y}.pbf", "grids"],
                              env=gdal, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    read = gpd.read_file(out)
    assert set(read["code"]) == expected_codes("demo-grids.geojson", z, x, y)
    names = dict(zip(grids["code"], grids["name"]))
    assert all(names[c] == n for c, n in zip(read["code"], read["name"]))
