"""Bounded schemathesis fuzz of the OpenAPI schema: no input may produce a 5xx.

Runs in-process (ASGI) against the real routes, services, queue and engine on a tiny checkpoint; settings
that cap steps, sizes and images (CHEAP_LIMITS) keep every job the fuzzer gets accepted small. Every call carries valid credentials (the
server has --api-auth), so the fuzzed input reaches the handlers instead of stopping at 401.
"""

from __future__ import annotations

import base64
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.api_server import CHEAP_LIMITS, in_process_app, write_settings, write_tiny_checkpoints  # noqa: E402

USER, PASSWORD = "fuzzer", "fuzz-pass"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
TIME_BUDGET_S = 240  # a safety net on a loaded machine; normally the example counts bound the run


def _app(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fuzz-data")
    write_tiny_checkpoints(data_dir)
    write_settings(data_dir, CHEAP_LIMITS)
    # the in-process client names the server "testserver" in Host
    return in_process_app(data_dir, ["--api-auth", f"{USER}:{PASSWORD}", "--allowed-hosts", "testserver"])


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, services = _app(tmp_path_factory)
    yield app
    services.jobs.shutdown()


def test_no_server_errors(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    calls: list[int] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    started = time.monotonic()

    for operation in operations:
        if time.monotonic() - started > TIME_BUDGET_S:
            break

        @settings(
            max_examples=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(headers=AUTH)
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
                )

        check()
    assert len(calls) > 100 and any(code == 422 for code in calls) and any(code == 200 for code in calls)
    assert calls.count(401) == 0, "a call without valid credentials: the fuzzing stopped at the auth check"
    assert not failures, "\n".join(failures[:10])
