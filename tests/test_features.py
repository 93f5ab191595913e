"""OGC API - Features: read by GDAL's OAPIF driver from a real server, paging, filters and role scoping."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import geopandas as gpd
import httpx
import pytest
import shapely
from conftest import auth_headers, require_gdal, served, uvicorn_argv

from api.demo import DEMO_PASSWORD

BOUNDARIES = Path(__file__).resolve().parent.parent / "data" / "boundaries"


@pytest.fixture
def client(demo_client):
    return demo_client


def _report(client, headers, grid_point, category="event:0502", dx=0.0):
    body = {"client_id": os.urandom(8).hex(), "category": category, "lon": grid_point.x + dx, "lat": grid_point.y,
            "observed_at": datetime.now(timezone.utc).isoformat()}
    reply = client.post("/reports", data={"report": json.dumps(body)}, headers=headers)
    assert reply.status_code == 201, reply.text
    return reply.json()["case"]


def test_landing_conformance_and_collections(client):
    headers = auth_headers(client, "supervisor")
    landing = client.get("/ogc").json()
    assert {"service-desc", "conformance", "data"} <= {link["rel"] for link in landing["links"]}
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson" in client.get("/ogc/conformance").json()["conformsTo"]
    ids = [c["id"] for c in client.get("/ogc/collections", headers=headers).json()["collections"]]
    assert ids == ["streets", "communities", "grids", "courtyards", "buildings", "cases"]
    assert client.get("/ogc/collections/nothing", headers=headers).status_code == 404


def test_paging_walks_every_grid_once(client):
    headers = auth_headers(client, "supervisor")
    expected = set(gpd.read_file(BOUNDARIES / "demo-grids.geojson")["code"])
    seen, url, pages = [], "/ogc/collections/grids/items?limit=50", 0
    while url:
        page = client.get(url, headers=headers)
        assert page.headers["content-type"].startswith("application/geo+json")
        body = page.json()
        assert body["numberMatched"] == len(expected) and body["numberReturned"] == len(body["features"])
        seen += [f["id"] for f in body["features"]]
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        url = nxt[0].replace(str(client.base_url), "") if nxt else None
        pages += 1
    assert pages == 4 and len(seen) == len(expected) and set(seen) == expected


def test_bbox_matches_an_independent_intersection(client):
    headers = auth_headers(client, "supervisor")
    buildings = gpd.read_file(BOUNDARIES / "demo-buildings.geojson")
    minx, miny, maxx, maxy = buildings.total_bounds
    box = (minx, miny, (minx + maxx) / 2, (miny + maxy) / 2)
    expected = set(buildings[buildings.intersects(shapely.box(*box))]["code"])
    body = client.get("/ogc/collections/buildings/items", headers=headers,
                      params={"bbox": ",".join(map(str, box)), "limit": 10000}).json()
    assert {f["id"] for f in body["features"]} == expected and body["numberMatched"] == len(expected)
    one = client.get(f"/ogc/collections/buildings/items/{sorted(expected)[0]}", headers=headers).json()
    assert one["id"] == sorted(expected)[0] and one["geometry"]["type"] == "Polygon"
    for bad in ("1,2,3", "a,b,c,d", "10,10,0,0", "0,0,1,100"):
        assert client.get("/ogc/collections/buildings/items", headers=headers, params={"bbox": bad}).status_code == 400


def test_cases_are_scoped_and_filtered_by_time(client):
    grids = client.app.state.service.units
    point = grids[grids["code"] == "330102901001001"].geometry.iloc[0].representative_point()
    other = grids[grids["code"] == "330102901002001"].geometry.iloc[0].representative_point()
    mine = _report(client, auth_headers(client, "worker"), point)
    theirs = _report(client, auth_headers(client, "gw002001"), other)
    worker = auth_headers(client, "worker")
    ids = {f["id"] for f in client.get("/ogc/collections/cases/items", headers=worker).json()["features"]}
    assert mine["id"] in ids and theirs["id"] not in ids
    assert client.get(f"/ogc/collections/cases/items/{theirs['id']}", headers=worker).status_code == 404
    assert client.get("/ogc/collections/cases/items", headers=auth_headers(client, "pipeline")).status_code == 403
    assert client.get("/ogc/collections/cases/items").status_code == 401
    admin = auth_headers(client, "admin")
    reported = datetime.fromisoformat(mine["reported_at"])
    window = f"{(reported - timedelta(minutes=1)).isoformat()}/{(reported + timedelta(minutes=1)).isoformat()}"
    found = client.get("/ogc/collections/cases/items", headers=admin, params={"datetime": window}).json()
    assert mine["id"] in {f["id"] for f in found["features"]}
    before = client.get("/ogc/collections/cases/items", headers=admin,
                        params={"datetime": f"../{(reported - timedelta(days=1)).isoformat()}"}).json()
    assert before["numberMatched"] == 0
    assert client.get("/ogc/collections/cases/items", headers=admin, params={"datetime": "yesterday"}).status_code == 400


def test_gdal_reads_the_features_endpoint(demo_url, tmp_path):
    require_gdal()
    env = {**os.environ, "GRIDMAP_DATABASE_URL": demo_url, "GRIDMAP_DATA_DIR": str(tmp_path / "data"),
           "GRIDMAP_INPROCESS_WORKER": "0"}
    with served(uvicorn_argv(), env) as base:
        token = httpx.post(f"{base}/auth/token", json={"username": "supervisor", "password": DEMO_PASSWORD}
                           ).json()["access_token"]
        gdal = {**os.environ, "GDAL_HTTP_HEADERS": f"Authorization: Bearer {token}"}
        listing = subprocess.run(["ogrinfo", "-ro", "-so", f"OAPIF:{base}/ogc"], env=gdal, capture_output=True,
                                 text=True, timeout=120)
        assert listing.returncode == 0, listing.stderr
        for name in ("streets", "communities", "grids", "courtyards", "buildings", "cases"):
            assert f": {name} (" in listing.stdout
        out = tmp_path / "grids.geojson"
        copied = subprocess.run(["ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{base}/ogc", "grids"], env=gdal,
                                capture_output=True, text=True, timeout=300)
        assert copied.returncode == 0, copied.stderr
    got = gpd.read_file(out).sort_values("code", ignore_index=True)
    want = gpd.read_file(BOUNDARIES / "demo-grids.geojson").sort_values("code", ignore_index=True)
    assert len(got) == len(want) == 182
    assert got["name"].tolist() == want["name"].tolist() and got["worker"].tolist() == want["worker"].tolist()
    assert got.geometry.geom_equals_exact(want.geometry, tolerance=1e-9).all()
