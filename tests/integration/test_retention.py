"""Deleting jobs, retention and scratch files, through real processes: DELETE /v1/jobs/{id} and the API's
cleanup leave no Redis key with the job's id and no file under its artifact directory."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.api.cleanup import DATASET_ORPHAN_GRACE, tidy_dataset_dirs
from service.core import lifecycle
from service.core.artifacts import ArtifactStore
from service.core.dataset_store import DatasetRecord, DatasetStore
from service.core.datasets import DatasetInfo
from service.core.records import LEGACY_TENANT, JobRecord, TrialRecord, utcnow
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobDeletion, JobStore
from tests.integration.conftest import ROOT, Deployment, long_job, service_env_for, wait_for, wait_job

pytestmark = pytest.mark.integration

LEASE_SECONDS = 6  # the cleanup keeps an ended job's scratch for two leases: 12 s
RETENTION_DAYS = 0.0005  # 43.2 s: long enough to look at a finished job first, short enough to wait for


@pytest.fixture(scope="module")
def retaining(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment of its own (Redis database 5) whose finished jobs expire after seconds."""
    env = service_env_for(
        redis_url.rsplit("/", 1)[0] + "/5",
        tmp_path_factory.mktemp("retention-artifacts"),
        KTUNE_JOB_RETENTION_DAYS=str(RETENTION_DAYS),
        KTUNE_LEASE_SECONDS=str(LEASE_SECONDS),
        KTUNE_STALE_QUEUED_SECONDS="8",  # the sweeper and the cleanup run every 2 s
        KTUNE_CHECKPOINT_SECONDS="1",
    )
    with Deployment.running(env, tmp_path_factory.mktemp("retention-logs"), ["k1@ktune-test"]) as d:
        yield d


def keys_naming(deployment: Deployment, job_id: str) -> list[str]:
    """Every key of the deployment's Redis database whose name contains the job id (the whole keyspace)."""
    client = redis.Redis.from_url(deployment.env["KTUNE_REDIS_URL"], decode_responses=True)
    try:
        return sorted(key for key in client.scan_iter(count=1000) if job_id in key)
    finally:
        client.close()


def job_files(deployment: Deployment, job_id: str) -> list[str]:
    job_dir = Path(deployment.env["KTUNE_ARTIFACT_DIR"]) / "jobs" / job_id
    return sorted(p.relative_to(job_dir).as_posix() for p in job_dir.rglob("*") if p.is_file())


def assert_gone(deployment: Deployment, job_id: str) -> None:
    assert keys_naming(deployment, job_id) == []
    assert not (Path(deployment.env["KTUNE_ARTIFACT_DIR"]) / "jobs" / job_id).exists()
    assert deployment.client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert deployment.client.get(f"/v1/jobs/{job_id}/trials").status_code == 404
    listed = deployment.client.get("/v1/jobs", params={"limit": 100}).json()["items"]
    assert job_id not in {job["id"] for job in listed}


def delete(api: httpx.Client, job_id: str) -> httpx.Response:
    """DELETE the job, waiting out the seconds in which a worker still releases a trial it just recorded."""

    def attempt() -> httpx.Response | None:
        response = api.delete(f"/v1/jobs/{job_id}")
        if response.status_code == 409 and response.json()["error"]["code"] == "trials_stopping":
            return None
        return response

    response: httpx.Response = wait_for(attempt, 30, f"job {job_id} to be deletable", interval=0.3)
    return response


def small_job(api: httpx.Client, algorithm: str = "random", max_trials: int = 2) -> str:
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["model"].update(hidden_layers=1, units={"values": [8, 16]}, dropout=0.0, activation="tanh")
    body["optimizer"] = {"name": "adam", "learning_rate": 0.05}
    body["training"]["epochs"] = 8
    body["tuner"] = {
        "algorithm": algorithm,
        "max_trials": max_trials,
        "max_parallel_trials": 2,
        "seed": 3,
        **({"max_epochs": 4, "factor": 2} if algorithm == "hyperband" else {}),
    }
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_delete_removes_every_key_and_file_of_a_finished_job(retaining: Deployment) -> None:
    api = retaining.client
    job_id = small_job(api)
    other = small_job(api)
    wait_job(api, job_id, {"succeeded"}, timeout=180)
    wait_job(api, other, {"succeeded"}, timeout=180)
    keys = keys_naming(retaining, job_id)
    assert f"ktune:job:{job_id}" in keys and f"ktune:job:{job_id}:trials" in keys, keys
    assert "best-model.keras" in job_files(retaining, job_id)

    response = delete(api, job_id)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_gone(retaining, job_id)
    assert api.delete(f"/v1/jobs/{job_id}").json()["error"]["code"] == "job_not_found"

    # The other job, submitted beside it, is untouched.
    assert api.get(f"/v1/jobs/{other}").json()["status"] == "succeeded"
    assert api.get(f"/v1/jobs/{other}/artifacts/best-model").status_code == 200
    assert len(api.get(f"/v1/jobs/{other}/trials").json()["items"]) == 2


def test_a_running_job_is_not_deleted_until_cancelled(retaining: Deployment) -> None:
    api = retaining.client
    job_id = long_job(api, max_trials=2)
    wait_job(api, job_id, {"running"}, timeout=120)
    wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json()["progress"]["running"] == 1, 120, "a running trial")
    wait_for(lambda: any(f.endswith(".resume.npz") for f in job_files(retaining, job_id)), 60, "a checkpoint")

    refused = api.delete(f"/v1/jobs/{job_id}")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "job_not_finished"
    assert "cancel" in refused.json()["error"]["message"]
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "running", "a refused DELETE changes nothing"

    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    response = delete(api, job_id)
    assert response.status_code == 204, response.text
    assert_gone(retaining, job_id)
    # The trial stopped before the job could be deleted: nothing of it comes back afterwards.
    time.sleep(LEASE_SECONDS)
    assert_gone(retaining, job_id)


def test_late_writes_after_a_delete_are_cleaned_up(retaining: Deployment) -> None:
    """What a worker still busy with a deleted job might write (a trial record, a checkpoint) goes too."""
    api = retaining.client
    job_id = small_job(api, max_trials=1)
    wait_job(api, job_id, {"succeeded"}, timeout=180)
    assert delete(api, job_id).status_code == 204
    client = redis.Redis.from_url(retaining.env["KTUNE_REDIS_URL"], decode_responses=True)
    client.hset(f"ktune:job:{job_id}:trials", "late", "{}")
    client.set(f"ktune:job:{job_id}:history:late", "[]")  # a key the store's layout does not list
    client.close()
    late = Path(retaining.env["KTUNE_ARTIFACT_DIR"]) / "jobs" / job_id / "checkpoints" / "late.resume.npz"
    late.parent.mkdir(parents=True)
    late.write_bytes(b"late")
    assert api.get(f"/v1/jobs/{job_id}").status_code == 404, "a stray key does not bring the job back"

    wait_for(lambda: not keys_naming(retaining, job_id), 30, "the late keys to go")
    wait_for(lambda: not late.parent.parent.exists(), 4 * LEASE_SECONDS, "the late files to go")
    assert_gone(retaining, job_id)


def test_scratch_goes_when_the_job_ends_and_the_job_when_it_expires(retaining: Deployment) -> None:
    api = retaining.client
    job_id = small_job(api, "hyperband", max_trials=7)
    done = wait_job(api, job_id, {"succeeded"}, timeout=240)
    assert done["best_trial"] is not None

    # Hyperband's weights are kept for continued trials while the job runs; they go after it ended.
    def scratch() -> list[str]:
        return [f for f in job_files(retaining, job_id) if f.startswith(("checkpoints/", "candidates/"))]

    assert any(f.endswith(".weights.h5") for f in scratch()), job_files(retaining, job_id)
    wait_for(lambda: not scratch(), 4 * LEASE_SECONDS, "the scratch files to go")
    assert job_files(retaining, job_id) == ["best-model.keras"], "the best model stays until the job goes"
    assert api.get(f"/v1/jobs/{job_id}/artifacts/best-model").status_code == 200
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"

    retention = RETENTION_DAYS * 86_400
    wait_for(lambda: api.get(f"/v1/jobs/{job_id}").status_code == 404, retention + 30, "the job to expire")
    assert_gone(retaining, job_id)


@pytest.fixture
def private_store(redis_url: str) -> Iterator[JobStore]:
    """A job store on the session's Redis under a prefix of its own, for store-level checks."""
    store = JobStore.from_url(redis_url, prefix=f"retention-{uuid.uuid4().hex[:8]}")
    yield store
    keys = list(store.redis.scan_iter(match=f"{store.prefix}:*"))
    if keys:
        store.redis.delete(*keys)


def _stored_job(store: JobStore, trials: int = 1) -> str:
    record = JobRecord(id=str(uuid.uuid4()), status=JobStatus.QUEUED, spec={}, created_at=utcnow())
    store.create_job(record, b"npz bytes")
    for i in range(trials):
        trial = TrialRecord(id=f"t{i}", status=TrialStatus.QUEUED, hyperparameters={})
        assert lifecycle.queue_trial(store, record.id, trial)
    return record.id


def test_store_deletes_only_finished_jobs_no_worker_holds(private_store: JobStore) -> None:
    store = private_store
    assert store.delete_job(str(uuid.uuid4())) is JobDeletion.NOT_FOUND
    job_id = _stored_job(store)
    assert store.delete_job(job_id) is JobDeletion.NOT_FINISHED
    store.transition(job_id, [JobStatus.QUEUED], JobStatus.RUNNING)
    assert store.delete_job(job_id) is JobDeletion.NOT_FINISHED
    assert store.acquire_lease(job_id, "t0", "worker-a", 30)
    store.transition(job_id, [JobStatus.RUNNING], JobStatus.CANCELLED, finished_at=utcnow())
    assert store.delete_job(job_id) is JobDeletion.TRIALS_HELD
    assert store.get_job(job_id) is not None, "a refused delete keeps everything"
    store.release_lease(job_id, "t0", "worker-a")
    store.count_trial_loss(job_id, "t0")
    store.claim_requeue(job_id, "t0", 30)
    assert store.delete_job(job_id) is JobDeletion.DELETED
    assert not [key for key in store.redis.scan_iter(count=1000) if job_id in key]
    assert store.list_jobs(LEGACY_TENANT, None, 10, None) == ([], None)
    assert store.list_jobs(LEGACY_TENANT, JobStatus.CANCELLED, 10, None) == ([], None)
    assert store.delete_job(job_id) is JobDeletion.NOT_FOUND


def test_leftover_keys_of_deleted_jobs_go_and_live_jobs_stay(private_store: JobStore) -> None:
    store = private_store
    live = _stored_job(store)
    gone = str(uuid.uuid4())
    store.redis.set(f"{store.prefix}:job:{gone}:history:t0", "[]")
    store.redis.hset(f"{store.prefix}:job:{gone}:trials", "t0", "{}")
    assert store.delete_leftover_keys(10_000, min_idle_seconds=60) == [], "a key written just now stays"
    deleted = store.delete_leftover_keys(10_000, min_idle_seconds=0)
    assert deleted == [f"{store.prefix}:job:{gone}:history:t0", f"{store.prefix}:job:{gone}:trials"]
    assert store.get_job(live) is not None and store.get_trial(live, "t0") is not None


def test_one_cleanup_claim_at_a_time(private_store: JobStore) -> None:
    store = private_store
    assert store.claim_cleanup("replica-a", 30)
    assert not store.claim_cleanup("replica-b", 30), "another replica's round is running"
    store.extend_cleanup_claim("replica-b", 0)  # only the owner shortens it
    assert not store.claim_cleanup("replica-b", 30)
    store.extend_cleanup_claim("replica-a", 0)
    time.sleep(0.05)
    assert store.claim_cleanup("replica-b", 30), "the claim lapses once its owner lets it"


def test_data_set_directories_without_a_record_go_after_the_grace(
    private_store: JobStore, tmp_path: Path
) -> None:
    artifacts, datasets = ArtifactStore(tmp_path), DatasetStore(private_store)
    kept = DatasetRecord(
        id=str(uuid.uuid4()),
        name="kept.csv",
        created_at=utcnow(),
        info=DatasetInfo(format="csv", rows=1, columns=[], size=1, sha256="0" * 64),
    )
    datasets.create(kept, 4)
    uploading, abandoned = str(uuid.uuid4()), str(uuid.uuid4())
    for dataset_id in (kept.id, uploading, abandoned):
        artifacts.upload_path(dataset_id).write_bytes(b"a,b\n")
    old = time.time() - DATASET_ORPHAN_GRACE.total_seconds() - 60
    for path in (artifacts.dataset_dir(kept.id), artifacts.dataset_dir(abandoned)):
        for item in (path / "upload.part", path):
            os.utime(item, (old, old))
    assert tidy_dataset_dirs(datasets, artifacts, utcnow()) == [abandoned]
    assert set(artifacts.dataset_ids()) == {kept.id, uploading}
    later = utcnow() + DATASET_ORPHAN_GRACE + timedelta(minutes=1)
    assert tidy_dataset_dirs(datasets, artifacts, later) == [uploading]
