"""The service's commands (serve, token, worker) and the embedded store's in-process job runner."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import httpx
import pytest
from conftest import free_port, served
from fastapi.testclient import TestClient

from api.app import create_app
from api.demo import DEMO_PASSWORD
from api.settings import Settings


@pytest.fixture
def sqlite_demo(demo_sqlite_template, tmp_path):
    import shutil

    target = tmp_path / "demo.db"
    shutil.copyfile(demo_sqlite_template, target)
    return {**os.environ, "GRIDMAP_DATABASE_URL": f"sqlite:///{target}", "GRIDMAP_DATA_DIR": str(tmp_path / "data")}


def test_token_command_prints_a_working_token(sqlite_demo, tmp_path):
    done = subprocess.run([sys.executable, "-m", "api.cli", "token", "supervisor"], env=sqlite_demo,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    unknown = subprocess.run([sys.executable, "-m", "api.cli", "token", "nobody"], env=sqlite_demo,
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "no account 'nobody'" in unknown.stderr
    settings = Settings(database_url=sqlite_demo["GRIDMAP_DATABASE_URL"], data_dir=str(tmp_path / "d"),
                        inprocess_worker=False)
    with TestClient(create_app(settings)) as client:
        me = client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["role"] == "supervisor"


def test_serve_command_serves(sqlite_demo):
    with served([sys.executable, "-m", "api.cli", "serve"], sqlite_demo) as base:
        assert httpx.get(f"{base}/health").json() == {"status": "ok", "backend": "sqlite"}
        login = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": DEMO_PASSWORD})
        assert login.status_code == 200
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "gridmap"


def test_serve_refuses_an_unreachable_store(tmp_path):
    env = {**os.environ, "GRIDMAP_DATABASE_URL": f"sqlite:///{tmp_path / 'missing' / 'x.db'}"}
    done = subprocess.run([sys.executable, "-m", "api.cli", "serve", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "does not exist" in done.stderr


def test_embedded_store_runs_upload_jobs_in_process(demo_sqlite_template, tmp_path, shared_data):
    """On SQLite the service needs no separate worker: a completed batch's job runs by itself. Its photos are
    quality-checked; bad frames are rejected with a reason, and the batch still completes."""
    import shutil

    target = tmp_path / "demo.db"
    shutil.copyfile(demo_sqlite_template, target)
    toledo = next((shared_data / "drone" / "odm-toledo-2015").glob("*.JPG")).read_bytes()
    files = {"DJI_0001.jpg": toledo, "DJI_0002.jpg": b"not a photo at all" * 100}
    settings = Settings(database_url=f"sqlite:///{target}", data_dir=str(tmp_path / "data"))
    with TestClient(create_app(settings)) as client:
        token = client.post("/auth/token", json={"username": "pipeline", "password": DEMO_PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        manifest = {"batch_id": "photos-0001", "files": [
            {"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()]}
        assert client.post("/uploads", json=manifest, headers=headers).status_code == 201
        for name, data in files.items():
            reply = client.patch(f"/uploads/photos-0001/files/{name}", content=data,
                                 headers={**headers, "Upload-Offset": "0"})
            assert reply.json()["complete"], reply.text
        job = client.post("/uploads/photos-0001/complete", headers=headers).json()
        deadline = time.monotonic() + 120
        while (state := client.get(f"/jobs/{job['id']}", headers=headers).json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
    assert state["state"] == "done", state
    photos = state["result"]["photos"]
    assert (photos["checked"], photos["accepted"]) == (2, 0)
    reasons = {r["file"]: r["reason"] for r in photos["rejected"]}
    assert "not an image" in reasons["DJI_0002.jpg"]
    assert "outside" in reasons["DJI_0001.jpg"]  # a Toledo frame is far from the demo street
