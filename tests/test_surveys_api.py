"""Orthophoto surveys over HTTP on both stores: real orthophotos' XYZ tiles against the same area sampled
independently from the file, the STAC catalogue and its bbox filter, TileJSON, bad tile addresses, unreadable
files; and pipeline cases' before/after chips under the case's scope."""

from __future__ import annotations

import hashlib
import io
import math
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pyproj
import pytest
import rasterio
from conftest import auth_headers
from PIL import Image

from api.demo import grid_username
from api.service import SYSTEM
from inspection.ortho import read_ortho_info, stac_item
from inspection.taxonomy import ILLEGAL_CONSTRUCTION

FIRST_GRID = "330102901001001"  # the demo account "worker"'s grid
OTHER_COMMUNITY_GRID = "330102901002001"
ORTHOS = ("rasterio-RGB.byte.tif", "rasterio-cogeo.tif", "webodm-orthophoto.tif")


@pytest.fixture
def client(demo_client):
    return demo_client


@pytest.fixture
def orthos(shared_data) -> Path:
    return shared_data / "drone" / "orthophotos"


def add_survey(client, path: Path, *, acquired: datetime, batch_id: str = "batch-test") -> dict:
    """Record ``path`` as a survey the way the job worker does (id: the file's SHA-256)."""
    survey_id = hashlib.sha256(path.read_bytes()).hexdigest()
    stac = stac_item(read_ortho_info(path), survey_id=survey_id, datetime=acquired)
    survey = {"id": survey_id, "batch_id": batch_id, "path": str(path), "acquired_at": acquired,
              "bounds": tuple(stac["bbox"]), "stac": stac}
    client.app.state.service.store.put_survey(survey)
    return survey


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    """The XYZ tile holding a point (the slippy-map formula, written out independently of the code)."""
    n = 2**z
    return z, int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def reference_tile(path: Path, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB and validity at the tile's 256x256 pixel centres, sampled from the file's full-resolution pixels."""
    steps = (np.arange(256) + 0.5) / 256
    lon = (x + steps) / 2**z * 360 - 180
    lat = np.degrees(np.arctan(np.sinh(np.pi * (1 - 2 * (y + steps) / 2**z))))
    lon, lat = np.meshgrid(lon, lat)
    with rasterio.open(path) as ds:
        xs, ys = pyproj.Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True).transform(lon, lat)
        cols, rows = ~ds.transform @ (xs, ys)
        cols, rows = np.floor(cols).astype(int), np.floor(rows).astype(int)
        inside = (cols >= 0) & (cols < ds.width) & (rows >= 0) & (rows < ds.height)
        cols, rows = np.clip(cols, 0, ds.width - 1), np.clip(rows, 0, ds.height - 1)
        rgb = ds.read((1, 2, 3))[:, rows, cols].transpose(1, 2, 0)
        valid = inside & (ds.dataset_mask()[rows, cols] > 0)
    return rgb, valid


@pytest.mark.parametrize("name", ORTHOS)
def test_a_tile_shows_the_image_where_it_is(client, orthos, name):
    path = orthos / name
    survey = add_survey(client, path, acquired=datetime(2024, 5, 1, tzinfo=timezone.utc))
    headers = auth_headers(client, "worker")
    meta = client.get(f"/surveys/{survey['id']}/tilejson.json", headers=headers).json()
    lon, lat = (survey["bounds"][0] + survey["bounds"][2]) / 2, (survey["bounds"][1] + survey["bounds"][3]) / 2
    for z in sorted({meta["minzoom"], meta["maxzoom"]}):
        z, x, y = tile_of(lon, lat, z)
        reply = client.get(f"/surveys/{survey['id']}/tiles/{z}/{x}/{y}.png", headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "image/png"
        tile = np.asarray(Image.open(io.BytesIO(reply.content)).convert("RGBA"))
        assert tile.shape == (256, 256, 4)
        rgb, valid = reference_tile(path, z, x, y)
        shown = tile[..., 3] > 0
        assert valid.mean() > 0.2 and shown.mean() > 0.2
        assert (shown == valid).mean() > 0.95, f"z{z}: transparency disagrees with the file's nodata/mask"
        both = shown & valid
        assert tile[..., :3][both].std() > 5  # real imagery, not a flat fill
        difference = np.abs(tile[..., :3][both].mean(axis=0) - rgb[both].mean(axis=0))
        assert (difference < 6).all(), f"z{z}: mean colour off by {difference}"
    for fmt, media in (("jpg", "image/jpeg"), ("webp", "image/webp")):
        reply = client.get(f"/surveys/{survey['id']}/tiles/{z}/{x}/{y}.{fmt}", headers=headers)
        assert reply.status_code == 200 and reply.headers["content-type"] == media
        assert Image.open(io.BytesIO(reply.content)).size == (256, 256)


def test_tiles_outside_bad_addresses_unknown_surveys_and_caching(client, orthos):
    survey = add_survey(client, orthos / "rasterio-cogeo.tif", acquired=datetime(2024, 5, 1, tzinfo=timezone.utc))
    headers = auth_headers(client, "pipeline")  # any account may read surveys
    base = f"/surveys/{survey['id']}/tiles"
    inside = "/".join(map(str, tile_of(128.658, 37.6686, 18)))
    first = client.get(f"{base}/{inside}.png", headers=headers)
    assert first.status_code == 200
    assert first.headers["cache-control"].startswith("public, max-age=") and first.headers["etag"]
    again = client.get(f"{base}/{inside}.png", headers={**headers, "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert client.get(f"{base}/{inside}.jpg", headers=headers).headers["etag"] != first.headers["etag"]

    outside = client.get(f"{base}/18/0/0.png", headers=headers)
    assert outside.status_code == 204 and not outside.content

    for address, words in (("25/0/0.png", "zoom 25"), ("-1/0/0.png", "zoom -1"), ("3/8/0.png", "column 8"),
                           ("3/0/-1.png", "row -1"), ("3/0/0.gif", "format 'gif'")):
        reply = client.get(f"{base}/{address}", headers=headers)
        assert reply.status_code == 400, address
        assert words in reply.json()["detail"]

    for path in ("/surveys/nope", "/surveys/nope/tilejson.json", f"/surveys/nope/tiles/{inside}.png"):
        reply = client.get(path, headers=headers)
        assert reply.status_code == 404 and reply.json() == {"detail": "no survey 'nope'"}
    assert client.get(f"{base}/{inside}.png").status_code == 401


def test_an_unreadable_image_is_a_clear_404(client, orthos, tmp_path):
    store = client.app.state.service.store
    headers = auth_headers(client, "supervisor")
    good = add_survey(client, orthos / "webodm-orthophoto.tif", acquired=datetime(2024, 5, 1, tzinfo=timezone.utc))
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00" + b"\x00" * 64)
    for survey_id, path in (("missing", tmp_path / "gone.tif"), ("garbage", garbage)):
        store.put_survey({**good, "id": survey_id, "path": str(path)})
        for url in (f"/surveys/{survey_id}/tiles/18/64084/92370.png", f"/surveys/{survey_id}/tilejson.json"):
            reply = client.get(url, headers=headers)
            assert reply.status_code == 404, reply.text
            detail = reply.json()["detail"]
            assert detail.startswith(f"survey {survey_id}'s image cannot be read") and "Traceback" not in detail
            assert str(tmp_path) not in detail  # no server paths


def test_the_catalogue_newest_first_with_links_job_state_and_bbox(client, orthos):
    store = client.app.state.service.store
    now = datetime(2024, 6, 1, tzinfo=timezone.utc)
    store.create_batch("batch-korea", "pipeline", {"files": []}, now)
    job = store.complete_batch("batch-korea", now)
    older = add_survey(client, orthos / "rasterio-cogeo.tif", acquired=datetime(2024, 4, 1, tzinfo=timezone.utc),
                       batch_id="batch-korea")
    newer = add_survey(client, orthos / "webodm-orthophoto.tif", acquired=datetime(2024, 5, 1, tzinfo=timezone.utc))
    headers = auth_headers(client, "worker")

    listing = client.get("/surveys", headers=headers).json()
    assert listing["type"] == "FeatureCollection" and listing["numberReturned"] == 2
    assert [f["id"] for f in listing["features"]] == [newer["id"], older["id"]]
    first, second = listing["features"]
    assert second["properties"]["gridmap:job"] == {"id": job["id"], "state": "queued"}
    assert first["properties"]["gridmap:job"] is None
    assert first["bbox"] == newer["stac"]["bbox"] and first["stac_version"] == "1.0.0"
    links = {link["rel"]: link["href"] for link in first["links"]}
    assert links["xyz"].endswith(f"/surveys/{newer['id']}/tiles/{{z}}/{{x}}/{{y}}.png")
    assert client.get(links["tilejson"], headers=headers).status_code == 200

    minx, miny, maxx, maxy = older["bounds"]
    near = client.get("/surveys", params={"bbox": f"{minx},{miny},{(minx + maxx) / 2},{maxy}"}, headers=headers)
    assert [f["id"] for f in near.json()["features"]] == [older["id"]]
    assert client.get("/surveys", params={"bbox": "0,0,1,1"}, headers=headers).json()["features"] == []
    bad = client.get("/surveys", params={"bbox": "1,2,3"}, headers=headers)
    assert bad.status_code == 400 and "bbox" in bad.json()["detail"]

    item = client.get(f"/surveys/{older['id']}", headers=headers).json()
    assert item["id"] == older["id"] and item["geometry"] == older["stac"]["geometry"]


def test_tilejson_bounds_and_zooms(client, orthos):
    headers = auth_headers(client, "worker")
    maxzooms = {}
    for name in ORTHOS:
        survey = add_survey(client, orthos / name, acquired=datetime(2024, 5, 1, tzinfo=timezone.utc))
        meta = client.get(f"/surveys/{survey['id']}/tilejson.json", headers=headers).json()
        maxzooms[name] = meta["maxzoom"]
        assert meta["tilejson"] == "3.0.0" and meta["scheme"] == "xyz"
        assert meta["tiles"][0].endswith(f"/surveys/{survey['id']}/tiles/{{z}}/{{x}}/{{y}}.png")
        minx, miny, maxx, maxy = survey["stac"]["bbox"]
        bounds = meta["bounds"]
        assert bounds[0] <= minx and bounds[1] <= miny and bounds[2] >= maxx and bounds[3] >= maxy, name
        assert 0 <= meta["minzoom"] <= meta["maxzoom"] <= 24
        # At maxzoom a Web Mercator pixel, scaled to the ground, is at most the survey's own resolution.
        lat = math.radians((miny + maxy) / 2)
        ground = 2 * math.pi * 6378137 / 256 / 2 ** meta["maxzoom"] * math.cos(lat)
        assert ground <= survey["stac"]["properties"]["gsd"] * 1.05 < 2 * ground, name
    assert maxzooms["rasterio-cogeo.tif"] == 18  # a Web Mercator COG at exactly the zoom-18 pixel size


def open_pipeline_case(client, chips: dict) -> dict:
    """A case as :meth:`Service.cases_from_candidates` opens one, in the first grid, with ``chips``."""
    svc = client.app.state.service
    units = svc.units
    point = units[units["code"] == FIRST_GRID].geometry.iloc[0].representative_point()
    case, _ = svc.open_case(ILLEGAL_CONSTRUCTION, "pipeline", point.x, point.y, actor=SYSTEM,
                            description="疑似违法建设", attributes={"candidate": "c1", "area_m2": 42.0, **chips},
                            source_ref=f"candidate:{hashlib.sha1(repr(chips).encode()).hexdigest()}")
    return case


def test_case_chips_follow_the_case_scope(client, orthos):
    svc = client.app.state.service
    with rasterio.open(orthos / "rasterio-cogeo.tif") as ds:
        crop = ds.read((3, 2, 1), window=((100, 164), (200, 264))).transpose(1, 2, 0)  # BGR for OpenCV
    chip_dir = svc.data_dir / "work" / "pair-1" / "vectorise" / "chips"
    chip_dir.mkdir(parents=True)
    # The pipeline writes JPEG chips; PNG ones from runs before it did are still served.
    files = {"before": "c1-before.jpg", "after": "c1-after.png"}
    for which, image in (("before", crop), ("after", crop[::-1])):
        cv2.imwrite(str(chip_dir / files[which]), np.ascontiguousarray(image))
    case = open_pipeline_case(client, {"pair_id": "pair-1", "chip_before": f"vectorise/chips/{files['before']}",
                                       "chip_after": f"vectorise/chips/{files['after']}"})
    assert case["assignee"] == "worker"

    for user in ("worker", "supervisor"):
        for which, media_type in (("before", "image/jpeg"), ("after", "image/png")):
            reply = client.get(f"/cases/{case['id']}/chips/{which}", headers=auth_headers(client, user))
            assert reply.status_code == 200 and reply.headers["content-type"] == media_type
            assert reply.content == (chip_dir / files[which]).read_bytes()
    outsider = auth_headers(client, grid_username(OTHER_COMMUNITY_GRID, FIRST_GRID))
    reply = client.get(f"/cases/{case['id']}/chips/before", headers=outsider)
    assert reply.status_code == 404 and reply.json()["detail"] == f"no case {case['id']} in your area"
    assert client.get(f"/cases/{case['id']}/chips/before", headers=auth_headers(client, "pipeline")).status_code == 403
    assert client.get(f"/cases/{case['id']}/chips/sideways", headers=auth_headers(client, "worker")).status_code == 422

    plain, _ = svc.open_case(ILLEGAL_CONSTRUCTION, "supervisor", case["lon"], case["lat"], actor=SYSTEM,
                             source_ref="no-chips")
    reply = client.get(f"/cases/{plain['id']}/chips/after", headers=auth_headers(client, "worker"))
    assert reply.status_code == 404 and "has no after chip" in reply.json()["detail"]


@pytest.mark.parametrize("chips", [
    {"pair_id": "pair-1", "chip_before": "../../etc/passwd"},
    {"pair_id": "pair-1", "chip_before": "../../../../../../../../etc/passwd"},
    {"pair_id": "../../../../../../../../etc", "chip_before": "passwd"},
    {"pair_id": "pair-1", "chip_before": "/etc/passwd"},
])
def test_a_chip_path_leaving_the_work_directory_is_refused(client, chips):
    case = open_pipeline_case(client, chips)
    reply = client.get(f"/cases/{case['id']}/chips/before", headers=auth_headers(client, "worker"))
    assert reply.status_code == 404 and "root:" not in reply.text
    assert reply.json()["detail"] == f"case {case['id']}'s before chip is not available on this server"
