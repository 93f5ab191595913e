"""The HTTP service on both stores: every role's allowed and refused actions, the case workflow with its
returns and escalation, the audit log, reports, uploads, Open311 and bad input."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from gridmap.crs import wgs84_to_gcj02
from storage.records import event_hash, verify_chain
from api.demo import DEMO_PASSWORD

FIRST_GRID = "330102901001001"  # the demo account "worker"'s grid; its backup is gw001002
SECOND_GRID = "330102901001002"
OTHER_COMMUNITY_GRID = "330102901002001"
PHOTO_LIMIT = 6 * 1024**2


class Api:
    """A TestClient that logs in as the demo accounts."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.service = client.app.state.service
        self._tokens: dict[str, str] = {}

    def auth(self, username: str) -> dict:
        if username not in self._tokens:
            reply = self.client.post("/auth/token", json={"username": username, "password": DEMO_PASSWORD})
            assert reply.status_code == 200, reply.text
            self._tokens[username] = reply.json()["access_token"]
        return {"Authorization": f"Bearer {self._tokens[username]}"}

    def get(self, path: str, user: str, **kw):
        return self.client.get(path, headers=self.auth(user), **kw)

    def post(self, path: str, user: str, **kw):
        return self.client.post(path, headers={**self.auth(user), **kw.pop("headers", {})}, **kw)

    def point(self, grid: str, dx_m: float = 0.0):
        """A point inside ``grid``, moved ``dx_m`` metres east."""
        units = self.service.units
        p = units[units["code"] == grid].geometry.iloc[0].representative_point()
        return p.x + dx_m / (111_320 * np.cos(np.radians(p.y))), p.y

    def report(self, user: str, grid: str, *, category="event:0502", dx_m=0.0, photos=(), client_id=None, **extra):
        lon, lat = self.point(grid, dx_m)
        body = {"client_id": client_id or uuid.uuid4().hex, "category": category, "lon": lon, "lat": lat,
                "accuracy_m": 5.0, "observed_at": datetime.now(timezone.utc).isoformat(), **extra}
        files = [("photos", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
        return self.post("/reports", user, data={"report": json.dumps(body)}, files=files or None)

    def act(self, user: str, case_id: int, action: str, **body):
        return self.post(f"/cases/{case_id}/actions", user, json={"action": action, **body})


@pytest.fixture
def api(demo_url, tmp_path):
    settings = Settings(database_url=demo_url, data_dir=str(tmp_path / "data"), inprocess_worker=False,
                        max_photo_bytes=PHOTO_LIMIT)
    with TestClient(create_app(settings)) as client:
        yield Api(client)


def jpeg(seed: int = 0, size=(64, 48)) -> bytes:
    import cv2

    rng = np.random.default_rng(seed)
    ok, data = cv2.imencode(".jpg", rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return data.tobytes()


# ---------------------------------------------------------------------------------------- authentication


def test_login_refusals_are_401_with_a_reason(api):
    c = api.client
    assert c.post("/auth/token", json={"username": "worker", "password": "wrong-password"}).status_code == 401
    assert c.post("/auth/token", json={"username": "nobody", "password": DEMO_PASSWORD}).status_code == 401
    missing = c.get("/cases")
    assert missing.status_code == 401 and "bearer token" in missing.json()["detail"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    forged = c.get("/cases", headers={"Authorization": "Bearer " + "x" * 43})
    assert forged.status_code == 401 and "unknown or expired" in forged.json()["detail"]
    assert FIRST_GRID in api.get("/me", "worker").json()["scope"]
    assert api.get("/me", "gw001002").json()["scope"] == [FIRST_GRID, SECOND_GRID]


def test_logout_ends_every_session(api):
    first, second = (api.service.issue_token("sup001")["access_token"] for _ in range(2))
    assert api.client.post("/auth/logout", headers={"Authorization": f"Bearer {first}"}).json() == {"revoked": 2}
    assert api.client.get("/me", headers={"Authorization": f"Bearer {second}"}).status_code == 401


def test_expired_token_is_refused(api):
    token = api.service.issue_token("supervisor")["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/me", headers=headers).status_code == 200
    real = api.service.clock
    api.service.clock = lambda: real() + timedelta(hours=api.service.settings.token_ttl_hours, seconds=1)
    try:
        assert api.client.get("/me", headers=headers).status_code == 401
    finally:
        api.service.clock = real


# ------------------------------------------------------------------------------------------------ roles


@pytest.mark.parametrize(("user", "method", "path", "body"), [
    ("pipeline", "get", "/cases", None),
    ("pipeline", "get", "/cases/1", None),
    ("pipeline", "post", "/cases", {"category": "event:0502", "lon": 120.18, "lat": 30.26}),
    ("pipeline", "get", "/indicators", None),
    ("pipeline", "post", "/escalations", None),
    ("worker", "post", "/uploads", {"files": [{"name": "a.tif", "size": 1, "sha256": "0" * 64}]}),
    ("worker", "post", "/escalations", None),
    ("worker", "post", "/cases", {"category": "event:0502", "lon": 120.18, "lat": 30.26}),
    ("worker", "get", "/jobs", None),
    ("supervisor", "post", "/uploads", {"files": [{"name": "a.tif", "size": 1, "sha256": "0" * 64}]}),
])
def test_role_refusals_are_403_with_a_reason(api, user, method, path, body):
    reply = getattr(api.client, method)(path, headers=api.auth(user), **({"json": body} if body else {}))
    assert reply.status_code == 403, reply.text
    assert "may not" in reply.json()["detail"]


def test_pipeline_cannot_file_reports(api):
    reply = api.report("pipeline", FIRST_GRID)
    assert reply.status_code == 403


def test_grid_worker_sees_and_acts_only_in_their_grids(api):
    mine = api.report("worker", FIRST_GRID).json()["case"]
    theirs = api.report("gw002001", OTHER_COMMUNITY_GRID).json()["case"]
    assert theirs["assignee"] == "gw002001"
    listed = {c["id"] for c in api.get("/cases", "worker").json()["cases"]}
    assert mine["id"] in listed and theirs["id"] not in listed
    assert api.get(f"/cases/{theirs['id']}", "worker").status_code == 404
    assert api.act("worker", theirs["id"], "handle", note="x").status_code == 404
    # gw001002 backs up the first grid: sees its cases but may not act on one assigned to its worker.
    assert api.get(f"/cases/{mine['id']}", "gw001002").status_code == 200
    refused = api.act("gw001002", mine["id"], "handle", note="x")
    assert refused.status_code == 403 and "assigned to worker" in refused.json()["detail"]
    # Office-only actions are refused to grid workers whatever the state.
    assert api.act("worker", mine["id"], "close").status_code == 403


def test_community_supervisor_scope(api):
    case = api.report("gw002001", OTHER_COMMUNITY_GRID).json()["case"]
    assert api.get(f"/cases/{case['id']}", "sup001").status_code == 404
    assert api.get(f"/cases/{case['id']}", "sup002").status_code == 200
    assert api.get(f"/cases/{case['id']}", "supervisor").status_code == 200  # the street supervisor
    assert api.get(f"/cases/{case['id']}", "admin").status_code == 200


# ---------------------------------------------------------------------------------------------- reports


def test_report_opens_a_dispatched_case_and_a_resend_changes_nothing(api):
    client_id = uuid.uuid4().hex
    first = api.report("worker", FIRST_GRID, client_id=client_id, photos=[jpeg(1)])
    assert first.status_code == 201, first.text
    body = first.json()
    case = body["case"]
    assert body["outcome"] == "opened"
    assert (case["state"], case["assignee"], case["grid"]) == ("dispatched", "worker", FIRST_GRID)
    assert case["deadline_at"] is not None
    again = api.report("worker", FIRST_GRID, client_id=client_id, photos=[jpeg(1)])
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert again.json()["report"]["id"] == body["report"]["id"]
    assert len(api.service.store.list_reports(case_id=case["id"])) == 1
    events = api.get(f"/cases/{case['id']}", "worker").json()["events"]
    assert [(e["action"], e["to_state"]) for e in events] == [
        ("report", "reported"), ("register", "registered"), ("dispatch", "dispatched")]


def test_reports_near_an_open_case_join_it(api):
    first = api.report("worker", FIRST_GRID, category="event:0101").json()["case"]
    near = api.report("worker", FIRST_GRID, category="event:0101", dx_m=30).json()
    assert (near["outcome"], near["case"]["id"]) == ("attached", first["id"])
    other_kind = api.report("worker", FIRST_GRID, category="event:0102", dx_m=30).json()
    assert other_kind["outcome"] == "opened"
    far = api.report("worker", FIRST_GRID, category="event:0101", dx_m=70).json()
    assert far["outcome"] == "opened" and far["case"]["id"] != first["id"]
    assert len(api.service.store.list_reports(case_id=first["id"])) == 2
    actions = [e["action"] for e in api.service.store.case_events(first["id"])]
    assert actions.count("attach_report") == 1


def test_gcj02_positions_are_converted_and_a_wrong_datum_is_explained(api):
    store_units = api.service.units
    grids = store_units[store_units["level"] == "grid"]
    street = store_units[store_units["level"] == "street"].geometry.iloc[0]
    from shapely import Point

    for code, geometry in zip(grids["code"], grids.geometry):
        p = geometry.representative_point()
        glon, glat = (float(v[0]) for v in wgs84_to_gcj02(np.array([p.x]), np.array([p.y])))
        if not street.contains(Point(glon, glat)):
            break
    else:
        pytest.fail("no grid whose GCJ-02 shift leaves the street")
    user = "admin"
    body = {"client_id": uuid.uuid4().hex, "category": "event:0502", "lon": glon, "lat": glat,
            "observed_at": datetime.now(timezone.utc).isoformat()}
    wrong = api.post("/reports", user, data={"report": json.dumps({**body, "datum": "wgs84"})})
    assert wrong.status_code == 422 and "resend with datum=gcj02" in wrong.json()["detail"]
    right = api.post("/reports", user, data={"report": json.dumps({**body, "datum": "gcj02"})})
    assert right.status_code == 201, right.text
    case = right.json()["case"]
    assert case["grid"] == code
    assert abs(case["lon"] - p.x) < 1e-5 and abs(case["lat"] - p.y) < 1e-5  # ~1 m


@pytest.mark.parametrize(("change", "status", "words"), [
    ({"lon": 116.397, "lat": 39.909}, 422, "outside the street"),
    ({"datum": "epsg3857"}, 422, "datum"),
    ({"lon": "east"}, 422, "lon"),
    ({"category": "event:9999"}, 422, "event:9999"),
    ({"observed_at": "2020-01-01T00:00:00+08:00"}, 422, "days old"),
    ({"observed_at": "2031-01-01T00:00:00+08:00"}, 422, "future"),
    ({"observed_at": "2025-01-01T00:00:00"}, 422, "observed_at"),
    ({"accuracy_m": 5000}, 422, "accuracy"),
    ({"unexpected": 1}, 422, "unexpected"),
])
def test_bad_reports_are_refused_and_store_nothing(api, change, status, words):
    reply = api.report("worker", FIRST_GRID, **change)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["detail"]
    assert api.service.store.count_cases() == 0
    assert api.service.store.list_reports() == []


def test_worker_outside_their_grids_is_refused(api):
    reply = api.report("worker", OTHER_COMMUNITY_GRID)
    assert reply.status_code == 422 and "not in your grids" in reply.json()["detail"]


def test_malformed_json_and_photos(api):
    bad = api.post("/reports", "worker", data={"report": "{not json"})
    assert bad.status_code == 422 and "JSON" in bad.json()["detail"]
    text = api.report("worker", FIRST_GRID, photos=[b"this is not an image"])
    assert text.status_code == 422 and "not an image" in text.json()["detail"]
    truncated = api.report("worker", FIRST_GRID, photos=[jpeg(3, (640, 480))[:4000]])
    assert truncated.status_code == 422 and "truncated" in truncated.json()["detail"]
    huge = api.report("worker", FIRST_GRID, photos=[b"\xff\xd8\xff" + b"0" * PHOTO_LIMIT])
    assert huge.status_code == 413
    # A PNG whose header claims 100,000 x 100,000 pixels: refused from the header, nothing decoded.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    refused = api.report("worker", FIRST_GRID, photos=[bomb])
    assert refused.status_code == 422 and "too many pixels" in refused.json()["detail"]
    assert api.service.store.count_cases() == 0
    assert not any((api.service.data_dir / "photos").rglob("*"))
    assert api.post("/cases/1/actions", "worker", content=b"{", headers={"Content-Type": "application/json"}
                    ).status_code == 422


def test_exif_position_and_time_are_compared(api, shared_data):
    photo = (shared_data / "drone" / "odm-toledo-2015").glob("*.JPG").__next__().read_bytes()
    reply = api.report("admin", FIRST_GRID, photos=[photo])
    assert reply.status_code == 201, reply.text
    codes = {f["code"] for f in reply.json()["report"]["flags"]}
    # Toledo, Ohio in 2015 is neither here nor now.
    assert {"photo_position_mismatch", "photo_time_mismatch"} <= codes


# -------------------------------------------------------------------------------------------- workflow


def _trail(api, case_id):
    events = api.service.store.case_events(case_id)
    assert verify_chain(events) == []
    return [(e["action"], e["from_state"], e["to_state"], e["actor"]) for e in events]


def test_whole_workflow_with_reject_and_reopen(api):
    case = api.report("worker", FIRST_GRID).json()["case"]
    cid = case["id"]
    assert api.act("worker", cid, "handle").status_code == 409  # no note
    assert api.act("worker", cid, "handle", note="已劝离").json()["state"] == "handled"
    assert api.act("worker", cid, "verify").status_code == 409  # a worker's verify needs a photo
    assert api.act("supervisor", cid, "reject", note="仍有摊位").json()["state"] == "dispatched"
    assert api.act("worker", cid, "handle", note="已清理").json()["state"] == "handled"
    unknown_photo = api.act("worker", cid, "verify", photos=["a" * 64])
    assert unknown_photo.status_code == 422 and "not uploaded" in unknown_photo.json()["detail"]
    photo = api.post("/photos", "worker", files={"photo": ("v.jpg", jpeg(5), "image/jpeg")}).json()["sha256"]
    assert api.act("worker", cid, "verify", photos=[photo]).json()["state"] == "verified"
    assert api.act("supervisor", cid, "reopen", note="复查发现反弹").json()["state"] == "dispatched"
    api.act("worker", cid, "handle", note="再次清理")
    api.act("worker", cid, "verify", photos=[photo])
    assert api.act("worker", cid, "close").status_code == 403
    closed = api.act("supervisor", cid, "close")
    assert closed.json()["state"] == "closed"
    assert api.act("supervisor", cid, "close").status_code == 409
    assert _trail(api, cid) == [
        ("report", None, "reported", "worker"), ("register", "reported", "registered", "system"),
        ("dispatch", "registered", "dispatched", "system"), ("handle", "dispatched", "handled", "worker"),
        ("reject", "handled", "dispatched", "supervisor"), ("handle", "dispatched", "handled", "worker"),
        ("verify", "handled", "verified", "worker"), ("reopen", "verified", "dispatched", "supervisor"),
        ("handle", "dispatched", "handled", "worker"), ("verify", "handled", "verified", "worker"),
        ("close", "verified", "closed", "supervisor")]
    detail = api.get(f"/cases/{cid}", "supervisor").json()
    assert detail["audit_intact"] and detail["allowed_actions"] == []
    assert detail["events"][6]["photos"] == [photo]


def test_return_cancel_and_manual_dispatch(api):
    cid = api.report("worker", FIRST_GRID).json()["case"]["id"]
    assert api.act("worker", cid, "return").status_code == 409  # a return needs its reason
    back = api.act("worker", cid, "return", note="不属于本网格").json()
    assert (back["state"], back["assignee"]) == ("registered", None)
    assert api.act("supervisor", cid, "dispatch", assignee="nobody").status_code == 422
    sent = api.act("supervisor", cid, "dispatch", assignee="gw001002").json()
    assert (sent["state"], sent["assignee"]) == ("dispatched", "gw001002")
    assert api.act("supervisor", cid, "cancel", note="x").status_code == 409  # not from dispatched
    other = api.report("worker", FIRST_GRID, category="event:0601").json()["case"]["id"]
    api.act("worker", other, "return", note="重复上报")
    assert api.act("supervisor", other, "cancel").status_code == 409
    assert api.act("supervisor", other, "cancel", note="重复").json()["state"] == "cancelled"


def test_stale_version_is_a_conflict(api):
    case = api.report("worker", FIRST_GRID).json()["case"]
    api.act("worker", case["id"], "handle", note="done")
    stale = api.act("supervisor", case["id"], "reject", note="no", version=case["version"])
    assert stale.status_code == 409 and "reload" in stale.json()["detail"]


def test_absent_worker_cases_go_to_the_backup(api):
    assert api.client.put("/accounts/worker/absence", json={"absent": True},
                          headers=api.auth("sup002")).status_code == 404  # another community's supervisor
    assert api.client.put("/accounts/worker/absence", json={"absent": True},
                          headers=api.auth("sup001")).status_code == 200
    case = api.report("gw001002", FIRST_GRID).json()["case"]
    assert case["assignee"] == "gw001002"  # the first grid's backup
    events = api.service.store.case_events(case["id"])
    assert "absent" in events[-1]["note"]


def test_escalation_goes_up_two_levels_then_stops(api):
    case = api.report("worker", FIRST_GRID, category="event:0502").json()["case"]
    hours = api.service.taxonomy.get("event:0502").deadline_hours
    real = api.service.clock
    try:
        api.service.clock = lambda: real() + timedelta(hours=hours + 1)
        assert api.post("/escalations", "supervisor").json()["escalated"] == [case["id"]]
        first = api.service.store.get_case(case["id"])
        assert (first["assignee"], first["escalation_level"]) == ("gw001002", 1)
        assert api.post("/escalations", "supervisor").json()["escalated"] == []  # nothing new yet
        api.service.clock = lambda: real() + timedelta(hours=2 * hours + 2)
        api.post("/escalations", "supervisor")
        second = api.service.store.get_case(case["id"])
        assert (second["assignee"], second["escalation_level"]) == ("supervisor", 2)
        api.service.clock = lambda: real() + timedelta(hours=10 * hours)
        assert api.service.escalate() == []  # level 2 is the top (and the tokens have expired by now)
    finally:
        api.service.clock = real
    actions = [e["action"] for e in api.service.store.case_events(case["id"])]
    assert actions[-2:] == ["redispatch", "redispatch"]


def test_audit_log_cannot_be_rewritten(api):
    from storage.errors import StoreError

    cid = api.report("worker", FIRST_GRID).json()["case"]["id"]
    store = api.service.store
    for statement in ('UPDATE "case_events" SET "note" = \'forged\'', 'DELETE FROM "case_events"'):
        with pytest.raises(StoreError, match="append-only"):
            with store._tx("tamper") as tx:
                tx.run(statement)
    assert len(store.case_events(cid)) == 3
    events = store.case_events(cid)
    events[1]["note"] = "forged"
    assert verify_chain(events) == [2]
    # A forger who also recomputes the forged event's hash breaks the next link instead.
    events[1]["hash"] = event_hash(events[1]["prev_hash"], events[1])
    assert verify_chain(events) == [3]


# ---------------------------------------------------------------------------------------- indicators


def test_indicators_show_closure_and_times(api):
    real = api.service.clock
    start = real()
    try:
        api.service.clock = lambda: start
        cid = api.report("worker", FIRST_GRID).json()["case"]["id"]
        api.report("gw002001", OTHER_COMMUNITY_GRID)
        photo = api.post("/photos", "worker", files={"photo": ("v.jpg", jpeg(9), "image/jpeg")}).json()["sha256"]
        api.service.clock = lambda: start + timedelta(hours=1)
        api.act("worker", cid, "handle", note="done")
        api.service.clock = lambda: start + timedelta(hours=3)
        api.act("worker", cid, "verify", photos=[photo])
        api.act("supervisor", cid, "close")
    finally:
        api.service.clock = real
    window = {"start": (start - timedelta(hours=1)).isoformat(), "end": (start + timedelta(days=1)).isoformat()}
    groups = {g["key"]: g for g in api.get("/indicators", "supervisor", params={"by": "grid", **window}).json()["groups"]}
    first = groups[FIRST_GRID]
    assert (first["cases"], first["closed"], first["closure_rate"], first["on_time_rate"]) == (1, 1, 1.0, 1.0)
    assert first["median_hours_to_dispatch"] == pytest.approx(0.0, abs=0.01)
    assert first["median_hours_to_verify"] == pytest.approx(3.0, abs=0.01)
    assert groups[OTHER_COMMUNITY_GRID]["closed"] == 0
    own = api.get("/indicators", "worker", params={"by": "grid", **window}).json()["groups"]
    assert {g["key"] for g in own} == {FIRST_GRID}
    assert api.get("/indicators", "supervisor", params={"by": "nonsense"}).status_code == 422


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "9999-12-31T23:00:00-23:59",
                                  "1969-12-31T23:59:59Z", "2200-01-01T00:00:00+00:00"])
def test_times_out_of_any_record_are_refused_with_the_reason(api, when):
    # The fuzzer's find: a report window ending in year 1 overflowed "90 days before" into a 500.
    for path, params, status in (("/heatmaps/density", {"end": when}, 422), ("/heatmaps/grids", {"start": when}, 422),
                                 ("/indicators", {"end": when}, 422),
                                 ("/ogc/collections/cases/items", {"datetime": f"../{when}"}, 400)):
        response = api.get(path, "supervisor", params=params)
        assert response.status_code == status, (path, response.text)
        assert "1970 to 2199" in response.text
    response = api.report("worker", FIRST_GRID, observed_at=when)
    assert response.status_code == 422 and "1970 to 2199" in response.text
    assert api.get("/cases", "worker").json()["total"] == 0  # nothing half-written


# ---------------------------------------------------------------------------------------------- Open311


def test_open311_file_follow_and_close(api):
    services = api.client.get("/open311/v2/services.json").json()
    assert {"event:0304", "event:0502"} <= {s["service_code"] for s in services}
    key = api.auth("supervisor")["Authorization"].split()[1]
    lon, lat = api.point(FIRST_GRID)
    form = {"api_key": key, "service_code": "event:0502", "lat": lat, "long": lon, "description": "占道摆摊",
            "external_id": "12345-0001"}
    filed = api.client.post("/open311/v2/requests.json", data=form)
    assert filed.status_code == 201, filed.text
    request_id = filed.json()[0]["service_request_id"]
    again = api.client.post("/open311/v2/requests.json", data=form).json()[0]
    assert again["service_request_id"] == request_id and "already" in again["service_notice"]
    followed = api.client.get(f"/open311/v2/requests/{request_id}.json", params={"api_key": key}).json()[0]
    assert followed["status"] == "open" and "dispatched" in followed["status_notes"]
    assert followed["lat"] == pytest.approx(lat) and followed["service_code"] == "event:0502"
    case = api.service.store.get_case(int(request_id))
    assert (case["source"], case["assignee"]) == ("hotline", "worker")
    worker_key = api.auth("worker")["Authorization"].split()[1]
    assert api.client.post("/open311/v2/requests.json", data={**form, "api_key": worker_key}).status_code == 403
    assert api.client.post("/open311/v2/requests.json", data={**form, "lat": "north"}).status_code == 422
    assert api.client.get("/open311/v2/requests.json", params={"api_key": "x" * 20}).status_code == 401
    listed = api.client.get("/open311/v2/requests.json", params={"api_key": key, "status": "open"}).json()
    assert request_id in {r["service_request_id"] for r in listed}


# ----------------------------------------------------------------------------------------------- uploads


def _manifest(files: dict[str, bytes], batch_id: str | None = None) -> dict:
    body = {"files": [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()]}
    if batch_id:
        body["batch_id"] = batch_id
    return body


def _chunk(api, batch, name, offset, data, checksum=None):
    headers = {**api.auth("pipeline"), "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
    if checksum:
        headers["Upload-Checksum"] = checksum
    return api.client.patch(f"/uploads/{batch}/files/{name}", content=data, headers=headers)


def test_chunked_upload_resumes_checks_and_is_idempotent(api):
    data = bytes(np.random.default_rng(3).integers(0, 255, 300_000, dtype=np.uint8))
    opened = api.post("/uploads", "pipeline", json=_manifest({"survey.tif": data}, "batch-0001"))
    assert opened.status_code == 201, opened.text
    batch = opened.json()["batch_id"]
    assert _chunk(api, batch, "survey.tif", 0, data[:100_000]).json()["received"] == 100_000
    wrong_offset = _chunk(api, batch, "survey.tif", 50_000, data[50_000:150_000])
    assert wrong_offset.status_code == 409 and "resume from 100000" in wrong_offset.json()["detail"]
    bad_hash = _chunk(api, batch, "survey.tif", 100_000, data[100_000:200_000], "sha256 " + "0" * 64)
    assert bad_hash.status_code == 422
    assert api.get(f"/uploads/{batch}", "pipeline").json()["files"][0]["received"] == 100_000
    too_long = _chunk(api, batch, "survey.tif", 100_000, data[100_000:] + b"extra")
    assert too_long.status_code == 413
    assert api.post(f"/uploads/{batch}/complete", "pipeline").status_code == 409
    good = hashlib.sha256(data[100_000:]).hexdigest()
    done = _chunk(api, batch, "survey.tif", 100_000, data[100_000:], f"sha256 {good}")
    assert done.json()["complete"] is True
    job = api.post(f"/uploads/{batch}/complete", "pipeline").json()
    assert job["state"] == "queued"
    assert api.post(f"/uploads/{batch}/complete", "pipeline").json()["id"] == job["id"]
    assert api.post("/uploads", "pipeline", json=_manifest({"survey.tif": data}, "batch-0001")).status_code == 201
    # The same content in a new batch is already there: nothing to send.
    second = api.post("/uploads", "pipeline", json=_manifest({"again.tif": data}, "batch-0002")).json()
    assert second["files"][0]["complete"] is True
    assert api.get(f"/jobs/{job['id']}", "pipeline").json()["state"] == "queued"
    assert api.get(f"/jobs/{job['id']}", "supervisor").status_code == 200
    assert api.get(f"/uploads/{batch}", "admin").status_code == 200


def test_whole_file_hash_mismatch_discards_it(api):
    data = b"A" * 1000
    manifest = {"files": [{"name": "x.tif", "size": 1000, "sha256": "1" * 64}], "batch_id": "batch-0003"}
    api.post("/uploads", "pipeline", json=manifest)
    reply = _chunk(api, "batch-0003", "x.tif", 0, data)
    assert reply.status_code == 422 and "does not match" in reply.json()["detail"]
    assert api.get("/uploads/batch-0003", "pipeline").json()["files"][0]["received"] == 0


@pytest.mark.parametrize("name", ["../../etc/passwd.tif", "a/b.tif", "..tif", ".hidden.tif", "x.exe", "x" * 200 + ".tif"])
def test_hostile_file_names_are_refused(api, name):
    reply = api.post("/uploads", "pipeline", json={"files": [{"name": name, "size": 10, "sha256": "0" * 64}]})
    assert reply.status_code in (413, 422) and reply.json()["detail"]
    assert api.service.store.list_jobs() == []
    assert not any((api.service.data_dir / "uploads").iterdir())


def test_upload_batch_belongs_to_its_owner(api):
    api.post("/uploads", "pipeline", json=_manifest({"a.tif": b"abc"}, "batch-0004"))
    assert api.get("/uploads/batch-0004", "pipeline").status_code == 200
    assert api.get("/uploads/batch-0005", "pipeline").status_code == 404
    assert api.get("/uploads/..%2F..%2Fetc", "pipeline").status_code == 404
    other = api.post("/uploads", "pipeline", json=_manifest({"b.tif": b"abcd"}, "batch-0004"))
    assert other.status_code == 409


def test_openapi_is_served(api):
    spec = api.client.get("/openapi.json").json()
    assert {"/reports", "/cases/{case_id}/actions", "/uploads/{batch_id}/files/{name}",
            "/open311/v2/requests.json"} <= set(spec["paths"])


def test_simultaneous_reports_of_one_thing_open_one_case(api):
    """Reports of the same category filed at once from a few metres apart join one case, whatever the
    interleaving (on PostGIS the place locks serialise them; SQLite's writers are serial anyway)."""
    from concurrent.futures import ThreadPoolExecutor

    def send(i: int):
        return api.report("worker", FIRST_GRID, category="event:0103", dx_m=i * 3.0).json()

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(send, range(8)))
    assert sorted(r["outcome"] for r in replies) == ["attached"] * 7 + ["opened"]
    assert len({r["case"]["id"] for r in replies}) == 1
