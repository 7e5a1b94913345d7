"""The sweeper ends what would otherwise wait forever: stalled searches and jobs no worker can take."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api import sweeper
from service.core import queue
from service.core.job_data import stored_inline
from service.core.records import JobRecord, utcnow
from service.core.settings import Settings
from service.core.spec import JobCreate
from service.core.states import JobStatus
from service.core.store import JobStore
from tests.integration.conftest import ROOT, TEST_TENANT, Deployment, service_env_for, wait_for, wait_job

pytestmark = pytest.mark.integration


def _body(**tuner: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["training"]["epochs"] = 20
    body["tuner"].update(algorithm="random", max_trials=2, **tuner)
    return body


def _stalled_job(service_env: dict[str, str], **fields: Any) -> str:
    """A job left `running` an hour ago with no trial: its start step died before storing anything."""
    store = JobStore.from_url(service_env["KTUNE_REDIS_URL"])
    spec = JobCreate.model_validate(_body()).resolved()
    an_hour_ago = utcnow() - timedelta(hours=1)
    record = JobRecord(
        id=str(uuid.uuid4()),
        tenant=TEST_TENANT,  # the tenant of the `api` client's key
        status=JobStatus.RUNNING,
        spec=spec.model_dump(mode="json", exclude={"data"}),
        created_at=an_hour_ago,
    )
    store.create_job(record, stored_inline(spec)[1])
    store.set_job_fields(record.id, started_at=an_hour_ago, **fields)
    return record.id


def test_a_running_job_with_no_trial_and_no_step_is_nudged_and_finishes(
    api: httpx.Client, service_env: dict[str, str]
) -> None:
    job_id = _stalled_job(service_env)
    job = wait_job(api, job_id, {"succeeded"}, timeout=180)
    assert job["progress"]["completed"] == 2


def test_a_job_still_stalled_after_its_restarts_fails_with_search_stalled(
    api: httpx.Client, service_env: dict[str, str]
) -> None:
    job_id = _stalled_job(service_env, nudges=3)
    job = wait_job(api, job_id, {"failed"}, timeout=60)
    assert job["error"]["code"] == "search_stalled"
    assert job["progress"]["completed"] == 0


@pytest.fixture
def api_without_workers(redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    env = service_env_for(
        redis_url,
        tmp_path / "artifacts",
        KTUNE_KEY_PREFIX=f"noworker-{uuid.uuid4().hex[:6]}",
        KTUNE_STALE_QUEUED_SECONDS="4",  # the sweeper runs every second
        KTUNE_NO_WORKER_SECONDS="6",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    with Deployment.api_only(env, logs) as deployment:
        yield deployment


def test_a_job_no_worker_takes_says_why_while_it_waits_then_fails_with_no_worker(
    api_without_workers: Deployment,
) -> None:
    client = api_without_workers.client
    response = client.post("/v1/jobs", json={**_body(), "resources": {"accelerator": "gpu"}})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    def waiting() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["waiting"] else None

    job = wait_for(waiting, 10, "the job to say why it waits")
    assert job["status"] == "queued" and job["waiting"]["code"] == "no_worker"
    assert "queue 'gpu'" in job["waiting"]["message"]
    unserved = client.get("/readyz").json()["checks"]["unserved"]
    assert "no worker consumes this queue" in unserved["gpu"]
    job = wait_job(client, job_id, {"failed"}, timeout=30)
    assert job["error"]["code"] == "no_worker"
    assert "python -m worker -Q gpu" in job["error"]["message"]


def test_replicas_sweeping_one_stale_job_at_once_send_its_start_once(
    scratch_store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(queue, "send_start_job", lambda job_id, *_: sent.append(job_id))
    spec = JobCreate.model_validate(_body()).resolved()
    long_ago = utcnow() - timedelta(hours=1)
    record = JobRecord(
        id=str(uuid.uuid4()),
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json", exclude={"data"}),
        created_at=long_ago,
    )
    scratch_store.create_job(record, stored_inline(spec)[1])
    scratch_store.set_job_fields(record.id, enqueued_at=long_ago, start_sends=1)
    settings = Settings(redis_url="redis://unused", stale_queued_seconds=30)

    # Each replica has read the job as stale before either sends: the claim lets one through.
    replicas = [JobStore(scratch_store.redis, scratch_store.prefix) for _ in range(4)]
    stale = [list(sweeper.jobs_in(store, JobStatus.QUEUED)) for store in replicas]
    assert all(len(seen) == 1 for seen in stale)
    monkeypatch.setattr(sweeper, "jobs_in", lambda store, status: iter(stale[replicas.index(store)]))
    resent = [sweeper.requeue_stale_jobs(store, settings) for store in replicas]
    assert sorted(map(len, resent)) == [0, 0, 0, 1] and sent == [record.id]
    stored = scratch_store.get_job(record.id)
    assert stored is not None and stored.start_sends == 2 and stored.enqueued_at is not None
    assert stored.enqueued_at > long_ago
