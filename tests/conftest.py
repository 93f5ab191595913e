"""Shared fixtures.

``shared_data``: the real data folder, ``../shared/data`` from the project root or ``$GRIDMAP_SHARED_DATA``;
tests needing it skip without it — or fail when ``GRIDMAP_REQUIRE_SHARED_DATA=1`` (CI).

Database fixtures: ``store`` (and ``store_url``, ``backend``) run a test once per backend — SQLite on a
temp file per test, PostGIS on one database per session (``gridmap_test_<random>``, created through
``$GRIDMAP_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``, emptied before
each test, dropped at the end). ``fresh_store_url`` is a database never opened before (a new PostGIS
database per test). Without a reachable PostgreSQL with PostGIS the PostGIS cases skip — or fail when
``GRIDMAP_REQUIRE_POSTGIS=1`` (CI).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA_ENV = "GRIDMAP_SHARED_DATA"
REQUIRE_SHARED_DATA_ENV = "GRIDMAP_REQUIRE_SHARED_DATA"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (``../shared/data``, or ``$GRIDMAP_SHARED_DATA``)."""
    path = Path(os.environ.get(SHARED_DATA_ENV) or PROJECT_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        reason = f"shared data folder {path} not found (set {SHARED_DATA_ENV})"
        if os.environ.get(REQUIRE_SHARED_DATA_ENV) == "1":
            pytest.fail(f"shared data required ({REQUIRE_SHARED_DATA_ENV}=1): {reason}", pytrace=False)
        pytest.skip(reason)
    return path


POSTGRES_ADMIN_ENV = "GRIDMAP_TEST_POSTGRES_URL"
POSTGRES_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
REQUIRE_POSTGIS_ENV = "GRIDMAP_REQUIRE_POSTGIS"


def postgis_unavailable(reason: str) -> None:
    """Skip the test, or fail it when PostGIS is required (CI)."""
    if os.environ.get(REQUIRE_POSTGIS_ENV) == "1":
        pytest.fail(f"PostGIS required ({REQUIRE_POSTGIS_ENV}=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"PostGIS unavailable: {reason}")


class PostgresAdmin:
    """Creates and drops throw-away databases through an admin URL (a superuser, normally ``postgres``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"gridmap_test_{secrets.token_hex(4)}"
        self._count = 0

    def connect(self, database: str | None = None):
        import psycopg2

        conn = psycopg2.connect(self.database_url(database) if database else self.url, connect_timeout=5)
        conn.autocommit = True
        return conn

    def database_url(self, database: str, user: str | None = None) -> str:
        parts = urlsplit(self.url)
        netloc = parts.netloc
        if user is not None:
            netloc = f"{user}@{netloc.rpartition('@')[2]}"
        return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))

    def new_name(self) -> str:
        self._count += 1
        return f"{self.prefix}_{self._count}"

    def create_database(self, name: str, *, postgis: bool = True) -> str:
        from psycopg2 import sql

        conn = self.connect()  # autocommit: CREATE DATABASE cannot run in a transaction
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
                )
        finally:
            conn.close()
        if postgis:
            conn = self.connect(name)
            try:
                with conn.cursor() as cur:
                    cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            finally:
                conn.close()
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        from psycopg2 import sql

        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            conn.close()


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[PostgresAdmin]:
    """An admin able to create PostGIS databases; skips (or fails in CI) when there is none."""
    try:
        import psycopg2
    except ImportError as error:  # pragma: no cover - psycopg2-binary is a dependency
        postgis_unavailable(f"psycopg2 not importable: {error}")
    admin = PostgresAdmin(os.environ.get(POSTGRES_ADMIN_ENV) or POSTGRES_ADMIN_DEFAULT)
    try:
        conn = admin.connect()
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")
            has_postgis = cur.fetchone() is not None
        conn.close()
    except psycopg2.Error as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        postgis_unavailable(f"cannot connect to {admin.url}: {reason}")
    if not has_postgis:
        postgis_unavailable(f"PostgreSQL at {admin.url} has no PostGIS extension available")
    yield admin


@pytest.fixture(scope="session")
def postgis_session_url(postgres_admin: PostgresAdmin) -> Iterator[str]:
    """One PostGIS database (with the gridmap schema) for the whole session; dropped at the end."""
    from storage import open_store

    name = postgres_admin.new_name()
    url = postgres_admin.create_database(name)
    try:
        open_store(url).close()  # apply the migrations once
        yield url
    finally:
        postgres_admin.drop_database(name)


@pytest.fixture
def postgis_url(postgis_session_url: str) -> str:
    """URL of the session's PostGIS database, its units emptied for this test."""
    import psycopg2

    conn = psycopg2.connect(postgis_session_url, connect_timeout=5)
    try:
        with conn, conn.cursor() as cur:
            cur.execute('TRUNCATE "units"')
    finally:
        conn.close()
    return postgis_session_url


@pytest.fixture(params=["sqlite", pytest.param("postgis", marks=pytest.mark.postgis)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(backend: str, tmp_path, request: pytest.FixtureRequest) -> str:
    """URL of an empty store of ``backend`` (schema applied for PostGIS, nothing yet for SQLite)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'gridmap.db'}"  # tmp_path is absolute: sqlite:////tmp/...
    return request.getfixturevalue("postgis_url")


@pytest.fixture
def store(store_url: str):
    """An open, empty store of each backend; closed after the test."""
    from storage import open_store

    with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def fresh_store_url(backend: str, tmp_path, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a database no store has opened yet: no gridmap schema, and for PostGIS not even the postgis
    extension (the store creates it, as the admin URL's role may)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    admin: PostgresAdmin = request.getfixturevalue("postgres_admin")
    name = admin.new_name()
    url = admin.create_database(name, postgis=False)
    try:
        yield url
    finally:
        admin.drop_database(name)


# ------------------------------------------------------------------------------------ the service's tests




def _seed_demo(url: str, data_dir) -> None:
    """Import the committed demo street and create the demo accounts (no demo cases: tests make their own)."""
    from api.demo import seed_accounts
    from api.service import Service
    from api.settings import Settings
    from gridmap.io import read_units
    from storage import open_store

    boundaries = Path(__file__).resolve().parent.parent / "data" / "boundaries"
    files = (("street", "demo-street"), ("community", "demo-communities"), ("grid", "demo-grids"),
             ("courtyard", "demo-courtyards"), ("building", "demo-buildings"))
    with open_store(url) as opened:
        for level, name in files:
            opened.put_units(read_units(boundaries / f"{name}.geojson", level).units)
        seed_accounts(Service(opened, Settings(database_url=url, data_dir=str(data_dir))))


@pytest.fixture(scope="session")
def demo_sqlite_template(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("demo-template")
    path = directory / "demo.db"
    _seed_demo(f"sqlite:///{path}", directory / "data")
    return path


@pytest.fixture(scope="session")
def demo_postgis_template(postgres_admin: PostgresAdmin, tmp_path_factory) -> Iterator[str]:
    name = postgres_admin.new_name() + "_demo"
    url = postgres_admin.create_database(name)
    try:
        _seed_demo(url, tmp_path_factory.mktemp("demo-template-pg"))
        yield name
    finally:
        postgres_admin.drop_database(name)


@pytest.fixture
def demo_url(backend: str, tmp_path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A store of ``backend`` holding the demo street and its accounts, private to this test."""
    if backend == "sqlite":
        import shutil

        target = tmp_path / "demo.db"
        shutil.copyfile(request.getfixturevalue("demo_sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    admin: PostgresAdmin = request.getfixturevalue("postgres_admin")
    name = copy_demo_database(admin, request.getfixturevalue("demo_postgis_template"))
    try:
        yield admin.database_url(name)
    finally:
        admin.drop_database(name)


def copy_demo_database(admin: PostgresAdmin, template: str) -> str:
    """A new database copied from the demo template (CREATE DATABASE ... TEMPLATE: fast); its name."""
    from psycopg2 import sql

    name = admin.new_name()
    conn = admin.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    finally:
        conn.close()
    return name


@pytest.fixture
def demo_client(demo_url, tmp_path):
    """A TestClient of the service over a private demo store (jobs are not run in-process)."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    settings = Settings(database_url=demo_url, data_dir=str(tmp_path / "data"), inprocess_worker=False)
    with TestClient(create_app(settings)) as client:
        yield client


def auth_headers(client, username: str) -> dict:
    """Log in as a demo account; the Authorization header for its token."""
    from api.demo import DEMO_PASSWORD

    reply = client.post("/auth/token", json={"username": username, "password": DEMO_PASSWORD})
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(argv: list[str], env: dict, *, timeout: float = 60.0) -> Iterator[str]:
    """Run a server command (``argv`` takes ``--port N``) in its own process group until it answers
    ``/health``; yields its base URL and stops it afterwards."""
    import httpx

    port = free_port()
    server = subprocess.Popen([*argv, "--port", str(port)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None, f"{' '.join(argv)} did not come up"
                time.sleep(0.3)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def uvicorn_argv() -> list[str]:
    return [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--log-level", "warning"]


def require_gdal() -> None:
    """Skip without GDAL's command-line tools; fail in CI, whose scripts/test installs them beside PostGIS."""
    import shutil

    if shutil.which("ogrinfo") is None:
        if os.environ.get(REQUIRE_POSTGIS_ENV) == "1":
            pytest.fail("ogrinfo (gdal-bin) is required in CI", pytrace=False)
        pytest.skip("gdal-bin not installed")
