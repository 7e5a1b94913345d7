"""GET /metrics without a job store answers the documented 503; request latencies are labelled by route
template, so a path's ids never make new series. (The store's numbers: tests/integration/test_metrics.py.)"""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.metrics import UNMATCHED, registry_for
from service.api.schemas import ErrorBody
from service.core.settings import Settings
from service.core.store import JobStore

LATENCY = "ktune_http_request_duration_seconds"


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth="off"))


def test_an_unreachable_store_is_a_503_error_body(app: FastAPI) -> None:
    response = TestClient(app).get("/metrics")
    assert response.status_code == 503
    assert ErrorBody.model_validate(response.json()).error.code == "unavailable"


def test_requests_are_timed_by_route_template_and_status_class(app: FastAPI) -> None:
    client = TestClient(app)
    for _ in range(2):
        client.get(f"/v1/jobs/{uuid.uuid4()}/trials", params={"history": "maybe"})  # 422 before any lookup
    client.get("/no/such/path")
    client.get("/docs-assets/swagger-ui.css")
    # Read from the histogram itself: all of /metrics would need Redis for the store's numbers.
    samples = [
        sample
        for metric in app.state.request_latency.collect()
        for sample in metric.samples
        if sample.name == f"{LATENCY}_count"
    ]
    counts = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value for s in samples}
    assert counts[("GET", "/v1/jobs/{job_id}/trials", "4xx")] == 2
    assert counts[("GET", UNMATCHED, "4xx")] == 1
    assert counts[("GET", "/docs-assets", "2xx")] == 1


def test_each_app_has_its_own_registry() -> None:
    store = JobStore.from_url("redis://127.0.0.1:1/0")
    first, _ = registry_for(store)
    second, _ = registry_for(store)  # would raise "Duplicated timeseries" in one shared registry
    assert first is not second
