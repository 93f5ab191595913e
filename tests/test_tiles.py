"""Vector tiles on both stores: contents against an independent selection, a new case in the next tile, role
scoping, bad tiles; the tile cache (served from memory, invalidated by writes through the API, through another
service on the same store and by raw SQL, kept apart per scope, ETags and 304); and GDAL's MVT driver reading
a tile from a running server."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import geopandas as gpd
import httpx
import mapbox_vector_tile
import pytest
import shapely
from conftest import auth_headers, require_gdal, served, uvicorn_argv
from fastapi.testclient import TestClient

from api.app import create_app
from api.demo import DEMO_PASSWORD
from api.settings import Settings
from api.tilecache import ENTRY_OVERHEAD, TileCache
from gridmap.tiles import LAYERS

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


def _report(client, username, point) -> int:
    body = {"client_id": os.urandom(8).hex(), "category": "event:0502", "lon": point.x, "lat": point.y,
            "observed_at": datetime.now(timezone.utc).isoformat()}
    reply = client.post("/reports", data={"report": json.dumps(body)}, headers=auth_headers(client, username))
    assert reply.status_code in (200, 201), reply.text
    return reply.json()["case"]["id"]


def _case_ids(reply) -> set[int]:
    return {f["properties"]["id"] for f in _decode(reply).get("cases", {}).get("features", [])}


def test_a_new_case_is_in_the_next_tile_and_tiles_are_scoped(client):
    mine_point = _grid_point(client, "330102901001001")
    other_point = _grid_point(client, "330102901002001")
    tile = "/".join(map(str, tile_of(mine_point.x, mine_point.y, 14)))
    assert tile == "/".join(map(str, tile_of(other_point.x, other_point.y, 14))), "both grids in one z14 tile"
    url = f"/tiles/cases/{tile}.pbf"
    worker, other, supervisor = (auth_headers(client, u) for u in ("worker", "gw002001", "supervisor"))
    cache = client.app.state.service.tiles
    assert client.get(url, headers=supervisor).headers["X-Cache"] == "miss"
    hits = cache.hits
    reply = client.get(url, headers=supervisor)
    assert _decode(reply) == {} and reply.headers["X-Cache"] == "hit" and cache.hits == hits + 1
    ids = [_report(client, "worker", mine_point), _report(client, "gw002001", other_point)]
    reply = client.get(url, headers=supervisor)
    assert reply.headers["X-Cache"] == "miss" and _case_ids(reply) == set(ids)
    # Each grid worker's tile is drawn and cached for their own scope: neither is served the other's.
    for headers, expected in ((worker, ids[0]), (other, ids[1]), (worker, ids[0]), (other, ids[1])):
        assert _case_ids(client.get(url, headers=headers)) == {expected}
    assert client.get(url, headers=worker).headers["X-Cache"] == "hit"
    assert client.get(url, headers=worker).headers["ETag"] != client.get(url, headers=other).headers["ETag"]
    assert client.get(url, headers=auth_headers(client, "pipeline")).status_code == 403


def test_writes_behind_the_services_back_invalidate_cached_tiles(client, demo_url, backend, tmp_path):
    """A second service on the same store (another process, or ``gridmap worker``) and raw SQL (psql): each
    write shows in the first service's next tile, though that tile was cached."""
    point = _grid_point(client, "330102901001001")
    cases = f"/tiles/cases/{'/'.join(map(str, tile_of(point.x, point.y, 15)))}.pbf"
    grids = f"/tiles/grids/{'/'.join(map(str, tile_of(point.x, point.y, 15)))}.pbf"
    headers = auth_headers(client, "supervisor")

    def cached(url):
        client.get(url, headers=headers)
        reply = client.get(url, headers=headers)
        assert reply.headers["X-Cache"] == "hit"
        return reply

    assert _case_ids(cached(cases)) == set()
    other = Settings(database_url=demo_url, data_dir=str(tmp_path / "other"), inprocess_worker=False)
    with TestClient(create_app(other)) as second:
        case_id = _report(second, "worker", point)
    reply = client.get(cases, headers=headers)
    assert reply.headers["X-Cache"] == "miss" and _case_ids(reply) == {case_id}

    assert _names(cached(grids))["330102901001001"] != "改名网格"
    _raw_sql(backend, demo_url, [('UPDATE "units" SET "name" = %s WHERE "code" = %s', ["改名网格", "330102901001001"]),
                                 ('UPDATE "cases" SET "state" = %s WHERE "id" = %s', ["closed", case_id])])
    assert _names(client.get(grids, headers=headers))["330102901001001"] == "改名网格"
    assert _case_ids(client.get(cases, headers=headers)) == set()


def _names(reply) -> dict[str, str]:
    return {f["properties"]["code"]: f["properties"]["name"] for f in _decode(reply)["grids"]["features"]}


def _raw_sql(backend: str, url: str, statements: list[tuple[str, list]]) -> None:
    """Run ``statements`` (``%s`` placeholders) on the store's database with the plain driver, in one transaction."""
    if backend == "postgis":
        import psycopg2

        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            for sql, params in statements:
                cur.execute(sql, params)
        conn.close()
    else:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            for sql, params in statements:
                conn.execute(sql.replace("%s", "?"), params)
        conn.close()


def test_if_none_match_gets_304_until_the_tile_changes(client):
    point = _grid_point(client, "330102901001001")
    url = f"/tiles/cases/{'/'.join(map(str, tile_of(point.x, point.y, 14)))}.pbf"
    headers = auth_headers(client, "worker")
    first = client.get(url, headers=headers)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and first.headers["Cache-Control"] == "private, no-cache"
    same = client.get(url, headers={**headers, "If-None-Match": f'"other", W/{etag}'})
    assert same.status_code == 304 and same.content == b"" and same.headers["ETag"] == etag
    assert client.get(url, headers={**headers, "If-None-Match": '"other"'}).status_code == 200
    # Another scope's ETag for the same URL is not this one's.
    assert client.get(url, headers={**auth_headers(client, "supervisor"), "If-None-Match": etag}).status_code == 200
    case_id = _report(client, "worker", point)
    changed = client.get(url, headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag and _case_ids(changed) == {case_id}


class _Store:
    """Just enough of a store for the cache: 1 KB tiles, and an epoch the test moves."""

    def __init__(self) -> None:
        self.epoch, self.drawn, self.reads = 7, [], 0

    def tile_epochs(self) -> dict[str, int]:
        self.reads += 1
        return {"units": self.epoch, "cases": 0}

    def vector_tile(self, layer, z, x, y, *, scope=None) -> tuple[int, bytes]:
        self.drawn.append(x)
        return self.epoch, b"x" * 1000


def test_the_cache_keeps_the_most_recently_used_tiles_within_its_bytes_and_follows_the_epoch():
    store = _Store()
    cache = TileCache(store, max_bytes=3 * (1000 + ENTRY_OVERHEAD))

    def get(x) -> bool:
        return asyncio.run(cache.fetch(LAYERS["grids"], 15, x, 0, None))[2]

    assert [get(x) for x in (1, 2, 3, 1, 4, 1, 3)] == [False, False, False, True, False, True, True]
    assert store.drawn == [1, 2, 3, 4], "4 pushed out 2, the least recently used"
    assert store.reads == 3, "the epoch is read only for a tile held"
    assert [get(x) for x in (2, 1, 3)] == [False, True, True] and store.drawn[-1] == 2
    assert (cache.hits, cache.misses) == (5, 5)
    store.epoch += 1
    assert not get(1) and store.drawn[-1] == 1, "a write moved the epoch: drawn again"
    reads = store.reads
    assert not get(3) and store.drawn[-1] == 3 and store.reads == reads, "known stale: drawn without a read"
    assert get(3)

    async def together():  # requests waiting when a read begins share it; a later request gets its own
        first = await asyncio.gather(*(cache.fetch(LAYERS["grids"], 15, x, 0, None) for x in (1, 3, 3)))
        return [hit for _, _, hit in first], store.reads, (await cache.fetch(LAYERS["grids"], 15, 1, 0, None))[2]

    reads = store.reads
    assert asyncio.run(together()) == ([True] * 3, reads + 1, True) and store.reads == reads + 2


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
