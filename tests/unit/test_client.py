"""`Client.wait` following events, against a stand-in of GET /v1/jobs/{id} and /events served by a real
uvicorn: the events format the events endpoint follows (notes: EVENTS_FORMAT), resuming after the last
event id when a stream closes early, and polling where the service has no events.

The real service is tested in tests/integration/test_client.py; this pins the event side of the contract.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from service.api.schemas import JobPublic
from service.client import Client, WaitTimeout
from service.core.finalization import Finalization
from service.core.states import JobStatus
from tests.unit.live_server import serving

JOB_ID = "6f1c2a4e-0000-4000-8000-000000000001"
NOW = datetime(2026, 12, 4, tzinfo=UTC).isoformat()


def job_body(status: str, completed: int, best: float | None) -> dict[str, Any]:
    best_trial = (
        None
        if best is None
        else {
            "id": "01",
            "trial_id": "01",
            "hyperparameters": {},
            "objective_value": best,
            "metrics": {"val_loss": best},
        }
    )
    return {
        "id": JOB_ID,
        "name": None,
        "status": status,
        "task": "regression",
        "algorithm": "random",
        "objective": {"name": "val_loss", "direction": "min"},
        "progress": {
            "trials_total": 2,
            "completed": completed,
            "running": 0,
            "queued": 0,
            "failed": 0,
            "cancelled": 0,
        },
        "best_trial": best_trial,
        "error": None,
        "created_at": NOW,
        "started_at": None,
        "finished_at": None,
        "spec": {},
    }


# (event type, data, the job as GET shows it once the event is sent)
SCRIPT: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("job.status", {"status": "running", "error": None}, job_body("running", 0, None)),
    ("trial.started", {"trial_id": "01"}, job_body("running", 0, None)),
    ("trial.epoch", {"trial_id": "01", "epoch": 1, "metrics": {"loss": 0.5}}, job_body("running", 0, None)),
    (
        "trial.finished",
        {"trial_id": "01", "status": "completed", "objective_value": 0.25},
        job_body("running", 1, 0.25),
    ),
    ("job.best", {"trial_id": "01", "objective_value": 0.25}, job_body("running", 1, 0.25)),
    ("job.status", {"status": "succeeded", "error": None}, job_body("succeeded", 2, 0.25)),
]


class StandIn:
    """The job's state and what the client asked for."""

    def __init__(self, events: bool = True, close_after: int | None = None, lag_gets: int = 0) -> None:
        """`close_after`: the first stream ends after this many events; `lag_gets`: GETs that still show the
        job running after its last event (the job record lagging behind its event)."""
        self.job = job_body("queued", 0, None)
        self.sent = 0
        self.last_event_ids: list[str | None] = []
        self.gets = 0
        self.close_after = close_after
        self.lag_gets = lag_gets
        self.app = FastAPI()
        self.app.get("/v1/jobs/{job_id}")(self.get_job)
        if events:
            self.app.get("/v1/jobs/{job_id}/events")(self.events)

    def get_job(self, job_id: str) -> JSONResponse:
        self.gets += 1
        if self.sent == len(SCRIPT) and self.lag_gets > 0:
            self.lag_gets -= 1
            return JSONResponse(SCRIPT[-2][2])
        return JSONResponse(self.job)

    def events(self, job_id: str, request: Request) -> StreamingResponse:
        last = request.headers.get("last-event-id")
        self.last_event_ids.append(last)
        start = 0 if last is None else int(last.split("-")[0]) + 1
        limit = self.close_after if len(self.last_event_ids) == 1 and self.close_after else len(SCRIPT)

        def stream() -> Iterator[bytes]:
            yield b": keep-alive\n\n"
            for index in range(start, min(limit, len(SCRIPT))):
                kind, data, job = SCRIPT[index]
                time.sleep(0.05)
                self.job, self.sent = job, max(self.sent, index + 1)
                payload = json.dumps({"job_id": JOB_ID, "time": NOW, **data})
                yield f"id: {index}-0\nevent: {kind}\ndata: {payload}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream")


def wait_on(stand_in: StandIn, **options: Any) -> tuple[JobPublic, list[JobPublic]]:
    seen: list[JobPublic] = []
    with serving(stand_in.app) as port, Client(f"http://127.0.0.1:{port}") as client:  # type: ignore[arg-type]
        job = client.wait(JOB_ID, on_update=seen.append, **options)
    return job, seen


def test_wait_follows_events_to_the_end_without_polling() -> None:
    stand_in = StandIn()
    # Polling every 60 s would overrun the timeout: the end must come from the events.
    job, seen = wait_on(stand_in, timeout=20, poll_interval=60)
    assert job.status is JobStatus.SUCCEEDED and job.progress.completed == 2
    assert [(j.status.value, j.progress.completed) for j in seen] == [
        ("queued", 0),
        ("running", 0),
        ("running", 1),
        ("succeeded", 2),
    ]
    assert stand_in.last_event_ids == [None]
    # One GET first, then one for each event that changes the job (none for trial.epoch).
    assert stand_in.gets == 1 + sum(1 for kind, _, _ in SCRIPT if kind != "trial.epoch")


def test_a_stream_closed_early_is_resumed_after_the_last_event_id() -> None:
    stand_in = StandIn(close_after=3)
    job, _ = wait_on(stand_in, timeout=20, poll_interval=60)
    assert job.status is JobStatus.SUCCEEDED
    assert stand_in.last_event_ids == [None, "2-0"]


def test_an_end_the_job_does_not_show_yet_is_polled_for() -> None:
    stand_in = StandIn(lag_gets=2)
    job, _ = wait_on(stand_in, timeout=20, poll_interval=0.05)
    assert job.status is JobStatus.SUCCEEDED


def test_without_an_events_route_wait_polls() -> None:
    stand_in = StandIn(events=False)

    def advance(job_id: str) -> JSONResponse:
        stand_in.gets += 1
        return JSONResponse(SCRIPT[min(stand_in.gets, len(SCRIPT)) - 1][2])

    stand_in.app.router.routes.clear()
    stand_in.app.get("/v1/jobs/{job_id}")(advance)
    job, seen = wait_on(stand_in, timeout=20, poll_interval=0.05)
    assert job.status is JobStatus.SUCCEEDED
    assert stand_in.gets == len(SCRIPT)
    assert seen[-1] == job


def test_wait_times_out_on_a_stream_of_keep_alives() -> None:
    """Keep-alives reset each read's timeout, so the deadline is checked on every line."""
    stand_in = StandIn()

    def quiet(job_id: str) -> StreamingResponse:
        def keep_alives() -> Iterator[bytes]:
            for _ in range(50):
                time.sleep(0.1)
                yield b": keep-alive\n\n"

        return StreamingResponse(keep_alives(), media_type="text/event-stream")

    stand_in.app.router.routes.clear()
    stand_in.app.get("/v1/jobs/{job_id}")(stand_in.get_job)
    stand_in.app.get("/v1/jobs/{job_id}/events")(quiet)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as raised:
        wait_on(stand_in, timeout=1, poll_interval=60)
    assert time.monotonic() - started < 3
    assert raised.value.job.status is JobStatus.QUEUED


# --- finalize, recheck and following their run (httpx's mock transport: no timing involved) -------------


def a_run(run_id: str, status: str, **fields: Any) -> dict[str, Any]:
    """A finalization's or recheck's JSON (the recheck's own fields included: a finalization ignores them)."""
    times = {"requested_at": NOW, "deadline_at": NOW}
    return {"run_id": run_id, "status": status, **times, "top_k": 2, "seeds": 4, **fields}


class RunStandIn:
    """POST finalize/recheck answer run "r1" queued; each GET of the job shows the next of `shown` (the
    job's `field`), then the last one again. Records the requests."""

    def __init__(self, field: str, shown: list[dict[str, Any] | None]) -> None:
        self.field, self.shown = field, shown
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST":
            return httpx.Response(202, json=a_run("r1", "queued"))
        gets = sum(1 for r in self.requests if r.method == "GET")
        return httpx.Response(
            200,
            json={**job_body("succeeded", 2, 0.25), self.field: self.shown[min(gets, len(self.shown)) - 1]},
        )

    def client(self) -> Client:
        return Client("http://ktune.test", transport=httpx.MockTransport(self))


def test_finalize_posts_only_what_is_given_and_wait_run_polls_until_the_run_ended() -> None:
    shown = [
        a_run("r1", "queued"),
        a_run("r1", "running"),
        a_run("r1", "succeeded", test_metrics={"loss": 0.5}),
    ]
    stand_in = RunStandIn("finalization", shown)
    with stand_in.client() as client:
        run = client.finalize(JOB_ID, test_dataset="iris")
        assert isinstance(run, Finalization) and run.run_id == "r1"
        job = client.wait_run(JOB_ID, run, timeout=10, poll_interval=0.01)
    assert job.finalization is not None and job.finalization.test_metrics == {"loss": 0.5}
    post = stand_in.requests[0]
    assert post.url.path == f"/v1/jobs/{JOB_ID}/finalize" and json.loads(post.content) == {
        "test_dataset": "iris"
    }
    assert [r.method for r in stand_in.requests] == ["POST", "GET", "GET", "GET"]


def test_wait_run_follows_the_recheck_and_ends_when_another_run_replaced_it() -> None:
    stand_in = RunStandIn("recheck", [a_run("r1", "running"), a_run("r2", "queued")])
    with stand_in.client() as client:
        run = client.recheck(JOB_ID, top_k=2, seeds=4)
        job = client.wait_run(JOB_ID, run, timeout=10, poll_interval=0.01)
    assert job.recheck is not None and job.recheck.run_id == "r2"
    assert json.loads(stand_in.requests[0].content) == {"top_k": 2, "seeds": 4}
    assert stand_in.requests[0].url.path == f"/v1/jobs/{JOB_ID}/recheck"


def test_wait_run_times_out_naming_the_run() -> None:
    stand_in = RunStandIn("finalization", [a_run("r1", "running")])
    with stand_in.client() as client, pytest.raises(WaitTimeout) as raised:
        client.wait_run(JOB_ID, client.finalize(JOB_ID), timeout=0.05, poll_interval=0.01)
    assert str(raised.value) == f"the finalization of job {JOB_ID} is still running after 0.05 s"
    assert json.loads(stand_in.requests[0].content) == {}
