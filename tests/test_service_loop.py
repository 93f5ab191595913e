"""The whole loop in one test, and a worker killed in the middle of a job.

A pipeline account uploads two synthetic drone surveys of the demo street in chunks; the job worker runs
them through the inspection pipeline on a real two-process Dask cluster; the candidates become cases
dispatched to the grids' workers; a worker verifies one with a photo, a supervisor closes it and the
indicators show the times.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import geopandas as gpd
import pytest
from conftest import auth_headers
from fastapi.testclient import TestClient

from api.app import create_app
from api.service import Service
from api.settings import Settings
from api.worker import JobRunner
from gridmap.demo import generate_demo_street
from inspection.synthetic import survey_pair
from storage import open_store

CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def surveys(tmp_path_factory):
    units = generate_demo_street()
    before, after, truth = survey_pair(tmp_path_factory.mktemp("surveys"), seed=0, size_m=200, resolution=0.2,
                                       units=units)
    return before, after, truth


def upload(client: TestClient, headers: dict, path: Path, batch_id: str) -> dict:
    """Upload one survey file in chunks, as a drone contractor's client would; returns the queued job."""
    data = path.read_bytes()
    manifest = {"batch_id": batch_id, "files": [{"name": path.name, "size": len(data),
                                                 "sha256": hashlib.sha256(data).hexdigest()}]}
    assert client.post("/uploads", json=manifest, headers=headers).status_code == 201
    for offset in range(0, len(data), CHUNK):
        piece = data[offset:offset + CHUNK]
        reply = client.patch(f"/uploads/{batch_id}/files/{path.name}", content=piece,
                             headers={**headers, "Upload-Offset": str(offset),
                                      "Upload-Checksum": f"sha256 {hashlib.sha256(piece).hexdigest()}"})
        assert reply.status_code == 200, reply.text
    job = client.post(f"/uploads/{batch_id}/complete", headers=headers)
    assert job.status_code == 200, job.text
    return job.json()


def _case_set(store) -> set[tuple]:
    return {(c["source_ref"], c["grid"], c["assignee"], c["state"]) for c in store.list_cases(source="pipeline")}


def test_the_whole_loop(demo_url, tmp_path, surveys):
    before, after, truth = surveys
    settings = Settings(database_url=demo_url, data_dir=str(tmp_path / "data"), inprocess_worker=False)
    with TestClient(create_app(settings)) as client:
        service: Service = client.app.state.service
        pipeline = auth_headers(client, "pipeline")
        upload(client, pipeline, before, "survey-2025-04")
        second = upload(client, pipeline, after, "survey-2025-10")
        runner = JobRunner(service, n_workers=2)
        finished = [runner.run_once(), runner.run_once()]
        assert runner.run_once() is None
        assert [job["state"] for job in finished] == ["done", "done"], finished
        assert client.get(f"/jobs/{second['id']}", headers=pipeline).json()["progress"]["stage"] == "locate"
        assert finished[0]["result"]["pairs"] == []  # the first survey has nothing to compare with
        case_ids = finished[1]["result"]["cases"]
        assert case_ids

        cases = service.store.list_cases(ids=case_ids)
        points = gpd.GeoSeries.from_xy([c["lon"] for c in cases], [c["lat"] for c in cases], crs="EPSG:4326")
        metric_truth = truth.to_crs("EPSG:4549")
        metric_points = points.to_crs("EPSG:4549")
        for change in metric_truth.itertuples():
            hit = metric_points.within(change.geometry.buffer(2.0))
            assert hit.any(), f"no case for the {change.kind} of {change.area_m2:.0f} m²"
        on_a_change = metric_points.apply(lambda p: metric_truth.buffer(2.0).contains(p).any())
        assert on_a_change.all(), "a case lies on no new structure (an unchanged building was reported)"
        for case in cases:
            worker, _ = service.store.assignment(case["grid"])
            assert (case["state"], case["assignee"], case["category"]) == ("dispatched", worker, "event:0304")
            assert case["attributes"]["area_m2"] > 4

        # A worker verifies one on site; the supervisor closes it.
        case = cases[0]
        worker = auth_headers(client, case["assignee"])
        act = lambda h, action, **b: client.post(f"/cases/{case['id']}/actions", json={"action": action, **b},
                                                 headers=h)
        assert act(worker, "handle", note="责令停工并拆除").status_code == 200
        import cv2
        import numpy as np

        ok, jpg = cv2.imencode(".jpg", np.full((120, 160, 3), 128, np.uint8))
        photo = client.post("/photos", files={"photo": ("site.jpg", jpg.tobytes(), "image/jpeg")},
                            headers=worker).json()["sha256"]
        assert act(worker, "verify", photos=[photo]).json()["state"] == "verified"
        supervisor = auth_headers(client, "supervisor")
        assert act(supervisor, "close").json()["state"] == "closed"
        start = (service.clock() - timedelta(hours=1)).isoformat()
        groups = client.get("/indicators", params={"by": "grid", "start": start}, headers=supervisor).json()["groups"]
        row = next(g for g in groups if g["key"] == case["grid"])
        assert row["closed"] == 1 and row["by_source"]["pipeline"] >= 1
        assert row["median_hours_to_dispatch"] is not None and row["median_hours_to_verify"] is not None

        # Sending the same survey again creates nothing.
        before_cases = service.store.count_cases()
        again = upload(client, pipeline, after, "survey-2025-10")
        assert again["id"] == second["id"] and runner.run_once() is None
        assert service.store.count_cases() == before_cases


@pytest.mark.postgis
def test_a_killed_worker_finishes_the_job_without_duplicates(postgres_admin, request, tmp_path, surveys):
    before, after, _ = surveys
    runs = {}
    for mode in ("uninterrupted", "killed"):
        url = _another_demo_db(request)
        data_dir = tmp_path / mode
        settings = Settings(database_url=url, data_dir=str(data_dir), inprocess_worker=False)
        with TestClient(create_app(settings)) as client:
            pipeline = auth_headers(client, "pipeline")
            upload(client, pipeline, before, "survey-a")
            job = upload(client, pipeline, after, "survey-b")
        env = {**os.environ, "GRIDMAP_DATABASE_URL": url, "GRIDMAP_DATA_DIR": str(data_dir),
               "GRIDMAP_JOB_LEASE_SECONDS": "4"}
        gridmap = [sys.executable, "-m", "api.cli"]
        if mode == "killed":
            worker = subprocess.Popen([*gridmap, "worker"], env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open_store(url) as store:
                deadline = time.monotonic() + 240
                while time.monotonic() < deadline:
                    progress = store.get_job(job["id"])["progress"]
                    if progress.get("stage") in ("detect", "vectorise"):
                        break
                    time.sleep(0.2)
                else:
                    pytest.fail("the worker never reached the detect stage")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            with open_store(url) as store:
                assert store.get_job(job["id"])["state"] == "running"  # orphaned, lease still held
            time.sleep(4.5)  # let the dead worker's lease run out
        done = subprocess.run([*gridmap, "worker", "--once"], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        with open_store(url) as store:
            final = store.get_job(job["id"])
            assert final["state"] == "done", final
            runs[mode] = (_case_set(store), final["attempts"], store.count_cases())
    assert runs["killed"][0] == runs["uninterrupted"][0]
    assert runs["killed"][2] == runs["uninterrupted"][2]
    assert runs["killed"][1] == 2 and runs["uninterrupted"][1] == 1
    assert runs["uninterrupted"][0]


def _another_demo_db(request) -> str:
    """A private PostGIS copy of the demo store, dropped after the test."""
    from conftest import copy_demo_database

    admin = request.getfixturevalue("postgres_admin")
    name = copy_demo_database(admin, request.getfixturevalue("demo_postgis_template"))
    request.addfinalizer(lambda: admin.drop_database(name))
    return admin.database_url(name)
