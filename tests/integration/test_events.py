"""GET /v1/jobs/{id}/events against the real service: a job's events in order, resumable, per tenant."""

from __future__ import annotations

import json
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.integration.conftest import ROOT, Deployment, service_env_for, wait_for, wait_job

pytestmark = pytest.mark.integration

TERMINAL = {"succeeded", "failed", "cancelled"}


def tiny_body() -> dict[str, Any]:
    """The README's classifier, 2 random trials of a few epochs, one after the other."""
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["training"].update(epochs=5)
    body["tuner"].update(algorithm="random", max_trials=2, max_parallel_trials=1)
    return body


def read_events(client: httpx.Client, job_id: str, last_event_id: str | None = None) -> list[dict[str, Any]]:
    """Every event the server sends until it closes the stream, as {id, event, data}."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    timeout = httpx.Timeout(30, read=60)  # keep-alives come every 15 s
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            name, _, value = line.partition(": ")
            current[name] = json.loads(value) if name == "data" else value
    return events


def positions(events: list[dict[str, Any]], kind: str, trial_id: str) -> list[int]:
    return [i for i, e in enumerate(events) if e["event"] == kind and e["data"].get("trial_id") == trial_id]


@pytest.fixture(scope="module")
def finished(api: httpx.Client, workers: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """A tiny job's events from its start, read while it runs, until the server closed the stream."""
    response = api.post("/v1/jobs", json=tiny_body())
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id, read_events(api, job_id)


def test_a_job_streams_from_queued_to_its_terminal_status(
    api: httpx.Client, finished: tuple[str, list[dict[str, Any]]]
) -> None:
    job_id, events = finished
    statuses = [e["data"]["status"] for e in events if e["event"] == "job.status"]
    assert statuses == ["queued", "running", "succeeded"], statuses
    assert events[-1]["event"] == "job.status"  # the stream closes after the terminal status
    assert all(e["data"]["job_id"] == job_id and e["data"]["time"] for e in events)
    ids = [tuple(int(part) for part in e["id"].split("-")) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert wait_job(api, job_id, TERMINAL)["status"] == "succeeded"


def test_each_trial_starts_then_finishes_and_a_best_is_told(
    api: httpx.Client, finished: tuple[str, list[dict[str, Any]]]
) -> None:
    job_id, events = finished
    trials = {t["id"]: t for t in api.get(f"/v1/jobs/{job_id}/trials").json()["items"]}
    assert len(trials) == 2
    for trial_id, trial in trials.items():
        [started] = positions(events, "trial.started", trial_id)
        [ended] = positions(events, "trial.finished", trial_id)
        epochs = positions(events, "trial.epoch", trial_id)
        assert epochs and started < min(epochs) and max(epochs) < ended
        assert events[ended]["data"]["status"] == trial["status"] == "completed"
        assert events[ended]["data"]["objective_value"] == trial["objective_value"]
        last = events[max(epochs)]["data"]
        assert last["epoch"] == 5 and "val_accuracy" in last["metrics"]
    bests = [e["data"] for e in events if e["event"] == "job.best"]
    best = api.get(f"/v1/jobs/{job_id}").json()["best_trial"]
    assert bests and bests[-1]["trial_id"] == best["trial_id"]
    assert bests[-1]["objective_value"] == best["objective_value"]


def test_last_event_id_resumes_after_that_event(
    api: httpx.Client, finished: tuple[str, list[dict[str, Any]]]
) -> None:
    job_id, events = finished
    middle = len(events) // 2
    assert read_events(api, job_id, events[middle]["id"]) == events[middle + 1 :]
    assert read_events(api, job_id) == events  # a finished job's stream replays and closes at once
    assert read_events(api, job_id, events[-1]["id"]) == []  # nothing after the terminal event


def test_a_bad_last_event_id_is_a_422_naming_the_header(
    api: httpx.Client, finished: tuple[str, list[dict[str, Any]]]
) -> None:
    response = api.get(f"/v1/jobs/{finished[0]}/events", headers={"Last-Event-ID": "$"})
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "Last-Event-ID"


def test_another_tenants_job_is_not_found(
    deployment: Deployment, finished: tuple[str, list[dict[str, Any]]]
) -> None:
    stranger = deployment.client_for(f"stranger-{uuid.uuid4().hex[:6]}")
    answer = stranger.get(f"/v1/jobs/{finished[0]}/events")
    missing = stranger.get(f"/v1/jobs/{uuid.uuid4()}/events")
    assert answer.status_code == missing.status_code == 404
    assert answer.json()["error"]["code"] == missing.json()["error"]["code"] == "job_not_found"
    assert (
        deployment.client.get(f"/v1/jobs/{finished[0]}/events", headers={"Authorization": ""}).status_code
        == 401
    )


def test_deleting_the_job_deletes_its_events(
    deployment: Deployment, api: httpx.Client, finished: tuple[str, list[dict[str, Any]]]
) -> None:
    job_id = finished[0]
    client = redis.Redis.from_url(deployment.env["KTUNE_REDIS_URL"], decode_responses=True)
    key = f"ktune:job:{job_id}:events"
    assert client.exists(key)
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert not client.exists(key)
    assert api.get(f"/v1/jobs/{job_id}/events").status_code == 404


# --- an API alone (Redis database 12, a key prefix of its own): a queued job whose stream stays idle ------


@pytest.fixture
def lone_api(redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """An API without workers, keep-alives every 2 s; its jobs stay queued (no worker on its prefix)."""
    env = service_env_for(
        redis_url.rsplit("/", 1)[0] + "/12",
        tmp_path / "artifacts",
        KTUNE_KEY_PREFIX=f"events-{uuid.uuid4().hex[:6]}",
        KTUNE_EVENTS_KEEPALIVE_SECONDS="2",
    )
    with Deployment.api_only(env, tmp_path) as deployment:
        yield deployment


def blocked_reads(deployment: Deployment) -> int:
    """Connections of the deployment's Redis database blocked in XREAD: the streams being followed."""
    client = redis.Redis.from_url(deployment.env["KTUNE_REDIS_URL"], decode_responses=True)
    return sum(1 for c in client.client_list() if c.get("cmd") == "xread" and str(c.get("db")) == "12")


def open_stream(deployment: Deployment) -> tuple[str, Any, Iterator[str]]:
    job_id: str = deployment.client.post("/v1/jobs", json=tiny_body()).json()["id"]
    stream = deployment.client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(30, read=10))
    response = stream.__enter__()
    lines = response.iter_lines()
    assert next(lines).startswith("id: ")  # the job's queued event
    return job_id, stream, lines


def test_an_idle_stream_sends_keep_alives_and_a_client_leaving_ends_its_reader(lone_api: Deployment) -> None:
    _, stream, lines = open_stream(lone_api)
    seen = [next(lines) for _ in range(6)]  # the rest of the queued event, then idle
    assert "event: job.status" in seen and ": keep-alive" in seen
    assert wait_for(lambda: blocked_reads(lone_api) == 1, 10, "the reader's blocked XREAD")
    stream.__exit__(None, None, None)
    wait_for(lambda: blocked_reads(lone_api) == 0, 10, "the reader to stop after the client left")


def test_the_api_shutting_down_ends_open_streams(lone_api: Deployment) -> None:
    """uvicorn waits for open responses before it stops: a followed job must not hold the API up."""
    _, stream, lines = open_stream(lone_api)
    ended = threading.Event()

    def drain() -> None:
        for _ in lines:
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    assert lone_api.api_process is not None
    lone_api.api_process.send_signal(signal.SIGTERM)
    assert ended.wait(10), "the event stream stayed open after SIGTERM"
    lone_api.api_process.wait(15)
    stream.__exit__(None, None, None)
