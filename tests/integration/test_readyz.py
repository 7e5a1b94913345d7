"""/readyz counts only workers that consume: one that answers but leaves messages waiting makes it 503."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from service.core.heartbeats import WorkerHeartbeat
from service.core.queue import make_celery
from service.core.settings import Settings
from service.core.store import JobStore
from tests.integration.conftest import ROOT, Deployment, long_job, service_env_for, wait_for, wait_job

pytestmark = pytest.mark.integration

WORKER = "s1@ktune-test"
STALLED_SECONDS = 3


@pytest.fixture(scope="module")
def watched(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment of its own (Redis database 3): one worker, one pool process, a heartbeat a second."""
    env = service_env_for(
        redis_url.rsplit("/", 1)[0] + "/3",
        tmp_path_factory.mktemp("readyz-artifacts"),
        KTUNE_WORKER_HEARTBEAT_SECONDS="1",
        KTUNE_STALLED_SECONDS=str(STALLED_SECONDS),
    )
    with Deployment.running(env, tmp_path_factory.mktemp("readyz-logs"), [WORKER]) as d:
        yield d


@pytest.fixture(scope="module")
def store(watched: Deployment) -> JobStore:
    return JobStore.from_url(watched.env["KTUNE_REDIS_URL"])


@pytest.fixture(scope="module")
def control(watched: Deployment) -> Iterator[Any]:
    """Celery's remote control of the deployment's workers."""
    app = make_celery(Settings(redis_url=watched.env["KTUNE_REDIS_URL"]))
    yield app.control
    app.close()


def heartbeat(store: JobStore) -> WorkerHeartbeat:
    return store.worker_heartbeats()[WORKER]


def test_a_worker_busy_on_every_process_is_consuming(watched: Deployment, store: JobStore) -> None:
    api = watched.client
    job_id = long_job(api, max_trials=3, batch_size=1, max_parallel_trials=3)  # about 15 s a trial

    def all_busy_and_some_waiting() -> WorkerHeartbeat | None:
        beat = heartbeat(store)
        return beat if beat.busy == beat.concurrency and beat.waiting["cpu"] else None

    first = wait_for(all_busy_and_some_waiting, 120, "a trial on the only pool process while others wait")
    assert first.concurrency == 1

    beats: list[WorkerHeartbeat] = []
    watch_until = time.monotonic() + 2 * STALLED_SECONDS + 2
    while time.monotonic() < watch_until:
        response = api.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["checks"]["queues"] == {"cpu": [WORKER]}
        assert response.json()["checks"]["not_consuming"] == {}
        beats.append(heartbeat(store))
        time.sleep(0.5)
    assert all(beat.waiting["cpu"] >= 1 for beat in beats), "trials waited all along"

    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    wait_job(api, job_id, {"cancelled"}, timeout=60)


def test_a_worker_that_stopped_consuming_is_not_ready_until_it_consumes_again(
    watched: Deployment, store: JobStore, control: Any
) -> None:
    api = watched.client
    wait_for(
        lambda: (beat := heartbeat(store)).busy == 0 and not any(beat.waiting.values()),
        60,
        "the worker idle with nothing waiting",
    )
    # What the known Celery failure looks like: the worker lives and answers remote control, fetches nothing.
    assert control.cancel_consumer("cpu", destination=[WORKER], reply=True)
    job_id = long_job(api, max_trials=1, epochs=20)

    def reported() -> Any:
        response = api.get("/readyz")
        return response if WORKER in response.json()["checks"]["not_consuming"] else None

    response = wait_for(reported, 30, "/readyz to report the worker as not consuming")
    assert response.status_code == 503 and response.json()["status"] == "not ready"
    checks = response.json()["checks"]
    assert WORKER not in checks["queues"].get("cpu", [])
    reason = re.fullmatch(
        r"queue cpu has had (\d+) messages? waiting for (\d+) s while 1 of 1 pool process is idle",
        checks["not_consuming"][WORKER],
    )
    assert reason is not None, checks["not_consuming"][WORKER]
    assert int(reason[1]) >= 1 and int(reason[2]) >= STALLED_SECONDS
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    log = (watched.logs / f"{WORKER.split('@')[0]}.log").read_text()
    assert f"worker {WORKER} is not consuming its queues: queue cpu has had" in log
    unhealthy = health_check(watched)
    assert unhealthy.returncode == 1 and "is not consuming: queue cpu" in unhealthy.stdout

    assert control.add_consumer("cpu", destination=[WORKER], reply=True)
    watched.wait_ready(workers=1)
    assert api.get("/readyz").json()["checks"]["not_consuming"] == {}
    wait_job(api, job_id, {"succeeded"}, timeout=120)
    assert health_check(watched).returncode == 0, "the container's health check passes again"
    assert health_check(watched, "nobody@nowhere").returncode == 1, "a node with no heartbeat is unhealthy"


def health_check(deployment: Deployment, node: str = WORKER) -> subprocess.CompletedProcess[str]:
    """The worker containers' health check (docker-compose.yml), run against this deployment."""
    return subprocess.run(
        [sys.executable, "-m", "worker.health", node],
        env=deployment.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
