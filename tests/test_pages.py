"""The two pages in a real headless Chromium (Debian's, driven by Playwright), against a real server.

The phone page runs in a phone viewport with emulated geolocation and with every host but the server
unreachable (DNS mapped away and any such request aborted and recorded), as on a street office's closed
network. Screenshots go to ``test-artifacts/pages/``. What the pages show is checked against what the API
says, asked separately by the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import geopandas as gpd
import httpx
import numpy as np
import pytest
from conftest import REQUIRE_POSTGIS_ENV, served, uvicorn_argv

from api.demo import DEMO_PASSWORD

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "pages"
BOUNDARIES = Path(__file__).resolve().parent.parent / "data" / "boundaries"
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True,
         "locale": "zh-CN", "timezone_id": "Asia/Shanghai"}
OFFLINE_WORLD = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


def _require_browser() -> None:
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        if os.environ.get(REQUIRE_POSTGIS_ENV) == "1":
            pytest.fail("Debian's chromium is required in CI (scripts/test installs it)", pytrace=False)
        pytest.skip("chromium not installed")
    if not (Path(__file__).resolve().parent.parent / "api" / "pages" / "node_modules" / "leaflet").is_dir():
        pytest.fail("the pages' libraries are missing: run `npm ci --prefix api/pages` (scripts/test does)",
                    pytrace=False)


def jpeg(seed: int) -> bytes:
    import cv2

    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (9, 9), 0)
    return cv2.imencode(".jpg", image)[1].tobytes()


def photo(seed: int) -> dict:
    return {"name": f"site-{seed}.jpg", "mimeType": "image/jpeg", "buffer": jpeg(seed)}


class Api:
    """The test's own view of the server, through the API."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.tokens: dict[str, str] = {}

    def headers(self, user: str) -> dict:
        if user not in self.tokens:
            reply = httpx.post(f"{self.base}/auth/token", json={"username": user, "password": DEMO_PASSWORD})
            reply.raise_for_status()
            self.tokens[user] = reply.json()["access_token"]
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def get(self, user: str, path: str, **params):
        reply = httpx.get(f"{self.base}{path}", headers=self.headers(user), params=params, timeout=30)
        reply.raise_for_status()
        return reply.json()

    def post(self, user: str, path: str, **kwargs):
        reply = httpx.post(f"{self.base}{path}", headers=self.headers(user), timeout=30, **kwargs)
        assert reply.status_code < 300, reply.text
        return reply.json()

    def reports_with(self, note: str) -> list[dict]:
        cases = self.get("supervisor", "/cases", limit=1000)["cases"]
        found = []
        for case in cases:
            found += [r for r in self.get("supervisor", f"/cases/{case['id']}")["reports"] if r["note"] == note]
        return found


def worker_grid() -> tuple[str, object]:
    grids = gpd.read_file(BOUNDARIES / "demo-grids.geojson").sort_values("code")
    first = grids.iloc[0]
    return first["code"], first.geometry


def points_inside(polygon, n: int, spacing_m: float = 25.0) -> list[tuple[float, float]]:
    """``n`` points inside ``polygon`` (5 m from its edge), at least ``spacing_m`` apart."""
    import shapely

    inner = polygon.buffer(-0.00005)
    minx, miny, maxx, maxy = inner.bounds
    rng = np.random.default_rng(3)
    chosen: list[tuple[float, float]] = []
    for _ in range(100_000):
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if inner.contains(shapely.Point(x, y)) and all(
                np.hypot((x - a) * 96_000, (y - b) * 111_000) > spacing_m for a, b in chosen):
            chosen.append((x, y))
            if len(chosen) == n:
                return chosen
    raise AssertionError(f"cannot place {n} points {spacing_m} m apart in the grid")


def pipeline_case_with_chips(url: str, data_dir: Path, orthophoto: Path, where: tuple[float, float]) -> int:
    """A drone-pipeline case in ``worker``'s grid whose before/after chips are cut from a real orthophoto, put
    where the pipeline puts them (``<data_dir>/work/<pair-id>/chips``)."""
    import cv2
    import rasterio
    from rasterio.windows import Window

    from api.service import SYSTEM, Service
    from api.settings import Settings
    from inspection.taxonomy import ILLEGAL_CONSTRUCTION
    from storage import open_store

    chips = data_dir / "work" / "pair-demo" / "chips"
    chips.mkdir(parents=True)
    with rasterio.open(orthophoto) as source:
        for name, col in (("before", 200), ("after", 420)):
            rgb = source.read((1, 2, 3), window=Window(col, 300, 128, 128))
            cv2.imwrite(str(chips / f"1-{name}.png"), cv2.cvtColor(rgb.transpose(1, 2, 0), cv2.COLOR_RGB2BGR))
    attributes = {"pair_id": "pair-demo", "chip_before": "chips/1-before.png", "chip_after": "chips/1-after.png"}
    with open_store(url) as store:
        service = Service(store, Settings(database_url=url, data_dir=str(data_dir)))
        case, _ = service.open_case(ILLEGAL_CONSTRUCTION, "pipeline", *where, actor=SYSTEM, attributes=attributes,
                                    description="疑似违法建设：新增建筑（无人机巡查比对）", source_ref="candidate:page-test")
    return case["id"]


def two_surveys(url: str, orthophoto: Path, directory: Path) -> list[str]:
    """Two surveys of one area, recorded as the job worker records them: the real orthophoto, and a later copy
    with a blue colour-steel 'new roof' painted into it."""
    import hashlib
    from datetime import datetime, timezone

    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from inspection.ortho import read_ortho_info, stac_item
    from storage import open_store

    later = directory / "later.tif"
    shutil.copyfile(orthophoto, later)
    with rasterio.open(later, "r+") as target:
        roof = np.broadcast_to(np.array([40, 90, 200], dtype=np.uint8)[:, None, None], (3, 200, 200))
        target.write(roof, window=Window(400, 400, 200, 200))
        target.build_overviews([2, 4, 8], Resampling.average)  # the tiles read these at low zooms
    ids = []
    with open_store(url) as store:
        for path, day in ((orthophoto, 1), (later, 20)):
            survey_id = hashlib.sha256(path.read_bytes()).hexdigest()
            acquired = datetime(2026, 11, day, 10, tzinfo=timezone.utc)
            stac = stac_item(read_ortho_info(path), survey_id=survey_id, datetime=acquired)
            store.put_survey({"id": survey_id, "batch_id": f"batch-{day}", "path": str(path), "acquired_at": acquired,
                              "bounds": tuple(stac["bbox"]), "stac": stac})
            ids.append(survey_id)
    return ids


@pytest.fixture(scope="module")
def site(demo_sqlite_template, tmp_path_factory, shared_data):
    """A server on a private copy of the demo store, with three open cases of ``worker``'s filed through the
    API and one from the drone pipeline with its image chips."""
    _require_browser()
    directory = tmp_path_factory.mktemp("pages")
    database = directory / "demo.db"
    shutil.copyfile(demo_sqlite_template, database)
    _, polygon = worker_grid()
    where = points_inside(polygon, 4)[3]
    orthophoto = shared_data / "drone" / "orthophotos" / "rasterio-cogeo.tif"
    chip_case = pipeline_case_with_chips(f"sqlite:///{database}", directory / "data", orthophoto, where)
    surveys = two_surveys(f"sqlite:///{database}", orthophoto, directory)
    env = {**os.environ, "GRIDMAP_DATABASE_URL": f"sqlite:///{database}", "GRIDMAP_DATA_DIR": str(directory / "data")}
    with served(uvicorn_argv(), env) as base:
        api = Api(base)
        api.chip_case, api.surveys = chip_case, surveys
        # Three categories, so no report joins another's case however close they are.
        categories = ("event:0502", "event:0601", "event:0102")
        for i, (lon, lat) in enumerate(points_inside(polygon, 3)):
            report = {"client_id": f"seed-case-{i:04d}", "category": categories[i], "lon": lon, "lat": lat,
                      "observed_at": "2026-11-24T09:00:00+08:00", "note": f"种子案件 {i}"}
            api.post("worker", "/reports", data={"report": json.dumps(report)},
                     files={"photos": ("p.jpg", jpeg(100 + i), "image/jpeg")})
        yield api


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[OFFLINE_WORLD])
        yield chromium
        chromium.close()


class Outside:
    """Records every request for a host other than the server (the browser cannot reach any: its DNS maps
    them away). Observed, not intercepted: Playwright's interception loses the files of multipart bodies."""

    def __init__(self, context, base: str) -> None:
        self.requests: list[str] = []
        context.on("request", lambda request: None if request.url.startswith((base, "data:", "blob:"))
                   else self.requests.append(request.url))


def log_in(page, base: str, path: str, user: str) -> None:
    page.goto(f"{base}{path}")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_function("window.gridmapReady === true", timeout=30_000)


def wait_until(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what() if callable(what) else what}"
        time.sleep(0.25)


def test_phone_page_shows_grid_and_cases_nearest_first_with_the_world_offline(site, browser):
    code, polygon = worker_grid()
    here = polygon.representative_point()
    context = browser.new_context(**PHONE, geolocation={"longitude": here.x, "latitude": here.y, "accuracy": 8},
                                  permissions=["geolocation"])
    outside = Outside(context, site.base)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, site.base, "/m/", "worker")
    page.wait_for_function("document.querySelector('#fix').textContent.includes('±')")

    me = site.get("worker", "/me")
    grids = site.get("worker", "/ogc/collections/grids/items", limit=10000)["features"]
    mine = [g for g in grids if any(g["id"].startswith(s) for s in me["scope"])]
    assert code in me["scope"] and len(mine) == len(me["scope"])
    assert page.locator("#map path.leaflet-interactive").count() >= len(mine)  # grids and case markers

    expected = site.get("worker", "/cases", mine="true", state=["dispatched", "handled"], limit=500)["cases"]
    assert len(expected) >= 3
    shown = [int(v) for v in page.locator("#cases li").evaluate_all("els => els.map(e => e.dataset.caseId)")]
    assert sorted(shown) == sorted(c["id"] for c in expected)
    distance = {c["id"]: np.hypot((c["lon"] - here.x) * 96_000, (c["lat"] - here.y) * 111_000) for c in expected}
    assert shown == sorted(shown, key=distance.get), "cases are not listed nearest first"
    page.screenshot(path=str(ARTIFACTS / "phone-cases.png"))
    assert outside.requests == [] and errors == []
    context.close()


def test_phone_report_with_photo_and_offline_queue_sent_once(site, browser):
    _, polygon = worker_grid()
    (lon, lat), (lon2, lat2) = points_inside(polygon, 2, spacing_m=40)
    context = browser.new_context(**PHONE, geolocation={"longitude": lon, "latitude": lat, "accuracy": 6},
                                  permissions=["geolocation"])
    outside = Outside(context, site.base)
    page = context.new_page()
    log_in(page, site.base, "/m/", "worker")
    page.wait_for_function("document.querySelector('#fix').textContent.includes('±')")
    page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=15_000)

    def report(note: str, seed: int) -> None:
        page.click("#report-open")
        page.select_option("#report-form select[name=category]", "event:0101")
        page.fill("#report-form textarea[name=note]", note)
        page.set_input_files("#report-form input[name=photo]", photo(seed))
        page.click("#report-form button[type=submit]")

    report("网页上报：占道堆物", 1)
    sent = wait_until(lambda: site.reports_with("网页上报：占道堆物"),
                      what=lambda: f"the online report (page says {page.locator('#toast').text_content()!r})")
    assert len(sent) == 1 and sent[0]["photos"] and abs(sent[0]["lon"] - lon) < 1e-6
    page.wait_for_selector("#outbox", state="hidden")

    context.set_offline(True)
    context.set_geolocation({"longitude": lon2, "latitude": lat2, "accuracy": 9})
    page.wait_for_function("document.querySelector('#net').textContent === '离线'")
    report("离线上报：私搭乱建", 2)
    page.wait_for_function("document.querySelector('#outbox').textContent === '待发送 1'")
    page.screenshot(path=str(ARTIFACTS / "phone-offline-queued.png"))
    time.sleep(1.5)
    assert site.reports_with("离线上报：私搭乱建") == [], "an offline report reached the server"

    # The page still opens with no network at all: the service worker has the shell and the last reads.
    page.reload()
    page.wait_for_function("window.gridmapReady === true", timeout=30_000)
    assert page.locator("#cases li").count() >= 3
    assert page.locator("#outbox").text_content() == "待发送 1"

    context.set_offline(False)
    page.wait_for_selector("#outbox", state="hidden", timeout=30_000)
    queued = wait_until(lambda: site.reports_with("离线上报：私搭乱建"), what="the queued report")
    assert len(queued) == 1 and abs(queued[0]["lon"] - lon2) < 1e-6 and queued[0]["photos"]
    page.screenshot(path=str(ARTIFACTS / "phone-back-online.png"))
    page.reload()
    page.wait_for_function("window.gridmapReady === true", timeout=30_000)
    time.sleep(2)
    assert len(site.reports_with("离线上报：私搭乱建")) == 1, "the queued report was sent more than once"
    assert outside.requests == []
    context.close()


def test_phone_case_shows_before_and_after_chips(site, browser):
    context = browser.new_context(**PHONE)
    page = context.new_page()
    log_in(page, site.base, "/m/", "worker")
    page.click(f"#cases li[data-case-id='{site.chip_case}']")
    page.wait_for_selector("#case-dialog[open]")
    for which in ("before", "after"):
        page.wait_for_function(f"document.getElementById('chip-{which}').naturalWidth === 128")
    page.screenshot(path=str(ARTIFACTS / "phone-chips.png"))
    context.close()


def test_phone_verify_with_photo(site, browser):
    case = site.get("worker", "/cases", mine="true", state="dispatched", limit=1)["cases"][0]
    site.post("worker", f"/cases/{case['id']}/actions", json={"action": "handle", "note": "已整改"})
    fix = {"longitude": case["lon"], "latitude": case["lat"], "accuracy": 5}
    context = browser.new_context(**PHONE, geolocation=fix, permissions=["geolocation"])
    Outside(context, site.base)
    page = context.new_page()
    log_in(page, site.base, "/m/", "worker")
    page.click(f"#cases li[data-case-id='{case['id']}']")
    page.wait_for_selector("#case-dialog[open]")
    offered = page.locator("#case-action select[name=action] option").evaluate_all("els => els.map(e => e.value)")
    assert offered == ["verify"]
    page.select_option("#case-action select[name=action]", "verify")
    page.set_input_files("#case-action input[name=photo]", photo(9))
    page.screenshot(path=str(ARTIFACTS / "phone-verify.png"))
    page.click("#case-submit")
    detail = wait_until(lambda: (d := site.get("supervisor", f"/cases/{case['id']}"))["state"] == "verified" and d,
                        what="the verification")
    assert len(detail["events"][-1]["photos"]) == 1 and detail["events"][-1]["actor"] == "worker"
    context.close()


def test_supervisor_page_draws_heatmap_indicators_and_audit_trail(site, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
    outside = Outside(context, site.base)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, site.base, "/supervisor/", "supervisor")
    frame = page.frame_locator("#heatmap")
    frame.locator("canvas.leaflet-heatmap-layer").wait_for(timeout=20_000)
    grids = site.get("supervisor", "/heatmaps/grids")["features"]
    assert frame.locator("path.leaflet-interactive").count() == len(grids)

    # The heat layer really drew: its canvas holds coloured pixels.
    coloured = frame.locator("canvas.leaflet-heatmap-layer").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }")
    assert coloured > 1000

    groups = site.get("supervisor", "/indicators", by="grid")["groups"]
    assert page.locator("#indicators tbody tr").count() == len(groups)
    total = site.get("supervisor", "/cases", limit=1)["total"]
    assert page.locator("#cases tbody tr").count() == min(total, 200)
    first = page.locator("#cases tbody tr").first
    case_id = int(first.get_attribute("data-case-id"))
    first.click()
    events = site.get("supervisor", f"/cases/{case_id}")["events"]
    page.wait_for_function(f"document.querySelectorAll('#audit li').length === {len(events)}")
    assert "完整" in page.locator("#audit-intact").text_content()
    page.screenshot(path=str(ARTIFACTS / "supervisor.png"), full_page=True)
    assert outside.requests == [] and errors == []
    context.close()


def test_supervisor_page_swipes_between_two_surveys(site, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
    page = context.new_page()
    log_in(page, site.base, "/supervisor/", "supervisor")
    page.wait_for_selector("#swipe-panel", state="visible")
    before, after = site.surveys
    assert page.locator("#swipe-before").input_value() == before
    assert page.locator("#swipe-after").input_value() == after
    for pane in ("before", "after"):  # each pane shows its survey's tiles, fetched with the token
        page.wait_for_function(f"[...document.querySelectorAll('.leaflet-{pane}-pane img')]"
                               ".some(img => img.complete && img.naturalWidth === 256)", timeout=20_000)
    page.locator("#swipe-map").scroll_into_view_if_needed()
    page.fill("#swipe", "200")
    page.dispatch_event("#swipe", "input")
    width = page.locator("#swipe-map").bounding_box()["width"]
    clips = page.evaluate("['before', 'after'].map(p => document.querySelector(`.leaflet-${p}-pane`).style.clip)")
    (_, before_right, _, before_left), (_, _, _, after_left) = (
        [float(v) for v in re.findall(r"(-?[\d.]+)px", clip)] for clip in clips)  # rect(top, right, bottom, left)
    assert before_right == after_left, clips  # the two panes meet at the slider, a fifth of the way across
    assert abs((before_right - before_left) - width * 0.2) < 2, clips
    page.fill("#swipe", "500")
    page.dispatch_event("#swipe", "input")
    page.screenshot(path=str(ARTIFACTS / "supervisor-swipe.png"), clip=page.locator("#swipe-panel").bounding_box())
    context.close()


def test_supervisor_page_refuses_a_grid_worker(site, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{site.base}/supervisor/")
    page.fill("input[name=username]", "worker")
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_function("document.querySelector('#login-error').textContent.length > 0")
    assert "监督员" in page.locator("#login-error").text_content()
    assert page.locator("#app").is_hidden()
    context.close()
