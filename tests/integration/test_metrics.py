"""GET /metrics through real processes: a tiny job moves the trial counters the workers keep in Redis, and
the API reports them with jobs by status, queue depths and its own request latencies, in a text that
prometheus_client's parser reads."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.integration.conftest import ROOT, wait_job

pytestmark = pytest.mark.integration

TRIALS = 2


def scrape(api: httpx.Client) -> dict[str, list[Sample]]:
    """The samples of GET /metrics by metric family name."""
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(samples: dict[str, list[Sample]], family: str, name: str, **labels: str) -> float:
    """The one sample of `family` named `name` with exactly these labels (besides `le` where given)."""
    found = [s.value for s in samples[family] if s.name == name and s.labels == labels]
    assert len(found) == 1, (family, name, labels, samples[family])
    return found[0]


def test_a_tiny_job_moves_the_counters(api: httpx.Client, workers: list[str]) -> None:
    before = scrape(api)
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["training"]["epochs"] = 3
    body["tuner"].update(algorithm="random", max_trials=TRIALS, max_parallel_trials=1)
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    wait_job(api, response.json()["id"], {"succeeded"})
    after = scrape(api)

    def moved(family: str, name: str, **labels: str) -> float:
        # A series appears with its first observation: absent before, it was 0.
        earlier = [s.value for s in before.get(family, []) if s.name == name and s.labels == labels]
        return value(after, family, name, **labels) - sum(earlier)

    # Other tests share this deployment and may run trials meanwhile: at least this job's.
    assert moved("ktune_trials_started", "ktune_trials_started_total") >= TRIALS
    assert moved("ktune_trials_finished", "ktune_trials_finished_total", status="completed") >= TRIALS
    durations = "ktune_trial_duration_seconds"
    assert moved(durations, f"{durations}_count") >= TRIALS
    assert moved(durations, f"{durations}_sum") > 0
    assert value(after, durations, f"{durations}_bucket", le="+Inf") == value(
        after, durations, f"{durations}_count"
    )
    assert value(after, "ktune_jobs", "ktune_jobs", status="succeeded") >= 1
    for status in ("queued", "running", "failed", "cancelled"):
        assert value(after, "ktune_jobs", "ktune_jobs", status=status) >= 0
    for queue in ("cpu", "gpu"):
        assert value(after, "ktune_queue_depth", "ktune_queue_depth", queue=queue) >= 0
    latency = "ktune_http_request_duration_seconds"
    posted = dict(method="POST", route="/v1/jobs", status="2xx")
    assert moved(latency, f"{latency}_count", **posted) >= 1
    polled = dict(method="GET", route="/v1/jobs/{job_id}", status="2xx")
    assert value(after, latency, f"{latency}_count", **polled) >= 1


def test_metrics_need_no_api_key(api: httpx.Client) -> None:
    anonymous = httpx.get(f"{api.base_url}/metrics", timeout=30)
    assert anonymous.status_code == 200
    assert "ktune_jobs" in anonymous.text
