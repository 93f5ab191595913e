"""Schemathesis fuzzes every operation of the OpenAPI schema: whatever it sends, the answer is never a 5xx."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from api.app import create_app
from api.settings import Settings

EXAMPLES = int(os.environ.get("GRIDMAP_FUZZ_EXAMPLES", "25"))


@pytest.fixture
def fuzzed_app(demo_url, tmp_path):
    app = create_app(Settings(database_url=demo_url, data_dir=str(tmp_path / "data"), inprocess_worker=False))
    with TestClient(app) as client:
        token = client.app.state.service.issue_token("admin")["access_token"]
        app.state.fuzz_headers = {"Authorization": f"Bearer {token}"}
        yield app


def test_no_server_errors(fuzzed_app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    headers = fuzzed_app.state.fuzz_headers
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    reached: set[str] = set()  # operations where some request got past validation into the handler
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/auth/logout":
            continue  # it would end the fuzzer's own session; tests/test_api.py covers it
        operations += 1

        @given(operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            # Our token replaces any Authorization header the generator made up (in any letter case).
            generated = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            response = case.call(headers={**generated, **headers})
            statuses[response.status_code] += 1
            if response.status_code != 422:
                reached.add(f"{case.method} {case.path}")
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

        fuzz()
    assert operations >= 20
    assert failures == []
    # The fuzz reached the handlers, not only the request validation, on most operations; and it tried
    # invalid input too.
    assert len(reached) >= 0.7 * operations, sorted(reached)
    assert statuses[422] > 0 and sum(n for code, n in statuses.items() if code < 300) > 0, statuses
