"""GET /metrics without a job store answers the documented 503; request latencies are labelled by route
template, so a path's ids never make new series. (The store's numbers: tests/integration/test_metrics.py.)"""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.metrics import LATENCY_BUCKETS, UNMATCHED, LatencyHistogram
from service.api.metrics_export import LatencyCollector, registry_for
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
        for metric in LatencyCollector(app.state.request_latency).collect()
        for sample in metric.samples
        if sample.name == f"{LATENCY}_count"
    ]
    counts = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value for s in samples}
    assert counts[("GET", "/v1/jobs/{job_id}/trials", "4xx")] == 2
    assert counts[("GET", UNMATCHED, "4xx")] == 1
    assert counts[("GET", "/docs-assets", "2xx")] == 1


def test_each_app_has_its_own_registry() -> None:
    store = JobStore.from_url("redis://127.0.0.1:1/0")
    first = registry_for(store, LatencyHistogram())
    second = registry_for(store, LatencyHistogram())  # would raise "Duplicated timeseries" in one registry
    assert first is not second


def test_latencies_fall_in_prometheus_buckets_up_to_and_including_each_bound() -> None:
    """The histogram kept without prometheus_client reads as prometheus_client's own Histogram would."""
    histogram = LatencyHistogram()
    labels = ("GET", "/healthz", "2xx")
    for seconds in (0.001, 0.005, 0.0051, 31.0):
        histogram.observe(labels, seconds)
    [family] = LatencyCollector(histogram).collect()
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[(f"{LATENCY}_bucket", "0.005")] == 2  # 0.005 itself is in the 0.005 bucket
    assert samples[(f"{LATENCY}_bucket", "0.01")] == 3
    assert samples[(f"{LATENCY}_bucket", repr(LATENCY_BUCKETS[-1]))] == 3
    assert samples[(f"{LATENCY}_bucket", "+Inf")] == samples[(f"{LATENCY}_count", None)] == 4
    assert samples[(f"{LATENCY}_sum", None)] == pytest.approx(0.001 + 0.005 + 0.0051 + 31.0)
