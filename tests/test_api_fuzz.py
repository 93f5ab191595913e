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
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            response = case.call(headers={**(case.headers or {}), **headers})
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

        fuzz()
    assert operations >= 20
    assert failures == []
    # The fuzz reached the handlers (2xx) and their refusals (4xx), not only the request validation.
    assert sum(n for code, n in statuses.items() if code < 300) > operations
    assert statuses[422] > 0
