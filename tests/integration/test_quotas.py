"""Each tenant quota through the real API, just under and just over, with the tenant's overrides set by
`python -m service keys quota` against the deployment's Redis (they apply at once, no restart).

Over a quota: 429 `quota_exceeded` naming the quota and its numbers, Retry-After where waiting helps, and
nothing stored or queued. A tenant's quotas bound only that tenant.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ROOT, Deployment, long_job, wait_for, wait_job
from tests.integration.test_datasets import submit, tiny_job

pytestmark = pytest.mark.integration

CSV = b"a,b,label\n" + b"".join(f"{i % 5},{i % 4},{'pq'[i % 2]}\n".encode() for i in range(40))


def set_quotas(deployment: Deployment, tenant: str, **quotas: int) -> str:
    """Run `python -m service keys quota TENANT --name N ...`, as an operator would; its stdout."""
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in quotas.items()]
    done = subprocess.run(
        [sys.executable, "-m", "service", "keys", "quota", tenant, *flags],
        cwd=ROOT,
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def tenant(deployment: Deployment, **quotas: int) -> httpx.Client:
    """A client of a new tenant with these quota overrides."""
    name = f"quota-{uuid.uuid4().hex[:8]}"
    if quotas:
        set_quotas(deployment, name, **quotas)
    return deployment.client_for(name)


def over(response: httpx.Response, quota: str, used: int, limit: int) -> dict[str, Any]:
    """Assert `response` is the 429 of `quota` with these numbers; its error body."""
    assert response.status_code == 429, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["fields"] == [{"field": f"quota.{quota}", "message": f"{used} in use of {limit}"}]
    assert quota in error["message"] and str(limit) in error["message"]
    return error


def job_ids(client: httpx.Client) -> set[str]:
    return {job["id"] for job in client.get("/v1/jobs", params={"limit": 100}).json()["items"]}


def small_job(max_trials: int) -> dict[str, Any]:
    return tiny_job({"dataset": "iris"}, max_trials=max_trials)


def test_the_keys_command_prints_a_tenants_quotas_with_its_overrides(deployment: Deployment) -> None:
    name = f"quota-{uuid.uuid4().hex[:8]}"
    printed = set_quotas(deployment, name, queued_jobs=7)
    assert f"quotas of tenant {name}" in printed
    [queued] = [line for line in printed.splitlines() if "queued_jobs" in line]
    assert "7" in queued
    [running] = [line for line in printed.splitlines() if "running_jobs" in line]
    assert "KTUNE_QUOTA_RUNNING_JOBS" in running, "a quota not overridden is the setting's"


def test_queued_jobs_quota(deployment: Deployment) -> None:
    # running_jobs 0: the tenant's jobs stay queued, so its queued count is what the test makes it.
    client = tenant(deployment, queued_jobs=2, running_jobs=0)
    first = submit(client, small_job(1))["id"]
    submit(client, small_job(1))  # just under: the second of two
    response = client.post("/v1/jobs", json=small_job(1))
    error = over(response, "queued_jobs", 2, 2)
    assert response.headers["retry-after"] == "30"
    assert "cancel one" in error["message"]
    assert len(job_ids(client)) == 2, "the refused job was not stored"

    assert client.post(f"/v1/jobs/{first}/cancel").json()["status"] == "cancelled"
    assert submit(client, small_job(1))["status"] == "queued", "a cancelled job frees its place"

    # Another tenant is not bound by this tenant's quota.
    other = tenant(deployment, running_jobs=0)
    for _ in range(3):
        submit(other, small_job(1))
    for client_ in (client, other):
        for job_id in job_ids(client_):
            client_.post(f"/v1/jobs/{job_id}/cancel")


def test_trials_per_day_quota_reserves_a_jobs_trials_and_refunds_those_never_started(
    deployment: Deployment,
) -> None:
    client = tenant(deployment, trials_per_day=5, running_jobs=0)
    first = submit(client, small_job(3))["id"]
    response = client.post("/v1/jobs", json=small_job(3))
    error = over(response, "trials_per_day", 3, 5)
    assert 0 < int(response.headers["retry-after"]) <= 86_400, "waits for the next UTC day"
    assert "tomorrow or with fewer trials" in error["message"]
    second = submit(client, small_job(2))["id"]  # just under: 5 of 5
    assert over(client.post("/v1/jobs", json=small_job(1)), "trials_per_day", 5, 5)
    assert job_ids(client) == {first, second}

    # A cancelled job that started none of its trials gives them all back.
    assert client.post(f"/v1/jobs/{first}/cancel").json()["status"] == "cancelled"
    third = submit(client, small_job(3))["id"]

    # A single job larger than a whole day: waiting would not help, so no Retry-After.
    response = client.post("/v1/jobs", json=small_job(6))
    error = over(response, "trials_per_day", 6, 5)
    assert "retry-after" not in response.headers
    assert "tuner.max_trials is 6" in error["message"]
    for job_id in (second, third):
        client.post(f"/v1/jobs/{job_id}/cancel")


def uploads(client: httpx.Client) -> list[str]:
    items = client.get("/v1/datasets", params={"limit": 100}).json()["items"]
    return [dataset["id"] for dataset in items if not dataset["builtin"]]


def test_artifact_bytes_quota_counts_data_sets_until_deleted(deployment: Deployment) -> None:
    name = f"quota-{uuid.uuid4().hex[:8]}"
    set_quotas(deployment, name, artifact_bytes=1)
    client = deployment.client_for(name)
    first = client.post("/v1/datasets", files={"file": ("one.csv", CSV)})
    assert first.status_code == 201, "just under: nothing stored yet"

    response = client.post("/v1/datasets", files={"file": ("two.csv", CSV)})
    assert response.status_code == 429, response.text
    stored = int(response.json()["error"]["fields"][0]["message"].split()[0])
    assert stored > 0
    over(response, "artifact_bytes", stored, 1)
    assert "retry-after" not in response.headers, "only deleting helps"
    over(client.post("/v1/jobs", json=small_job(1)), "artifact_bytes", stored, 1)
    assert uploads(client) == [first.json()["id"]] and not job_ids(client), "nothing more was stored"

    set_quotas(deployment, name, artifact_bytes=stored + 1)  # just under again
    assert client.post("/v1/datasets", files={"file": ("two.csv", CSV)}).status_code == 201
    response = client.post("/v1/datasets", files={"file": ("three.csv", CSV)})
    over(response, "artifact_bytes", 2 * stored, stored + 1)

    for dataset_id in uploads(client):
        assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert client.post("/v1/datasets", files={"file": ("again.csv", CSV)}).status_code == 201, "freed"


def test_running_jobs_quota_holds_a_tenants_next_job_until_one_ends(deployment: Deployment) -> None:
    client = tenant(deployment, running_jobs=1)
    first = long_job(client, max_trials=50)
    wait_job(client, first, {"running"}, timeout=120)
    second = long_job(client, max_trials=50)

    def held() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/jobs/{second}").json()
        return job if job["waiting"] is not None else None

    job = wait_for(held, 60, "the second job to wait for its tenant's running_jobs quota")
    assert job["status"] == "queued" and job["waiting"]["code"] == "quota_running_jobs"
    assert "running_jobs" in job["waiting"]["message"]

    # Another tenant's job starts on the other worker meanwhile.
    other = deployment.client_for(f"quota-{uuid.uuid4().hex[:8]}")
    theirs = long_job(other, max_trials=50)
    wait_job(other, theirs, {"running"}, timeout=120)
    assert client.get(f"/v1/jobs/{second}").json()["status"] == "queued"

    # The first job's end starts the second at once (not the sweeper's next round).
    assert client.post(f"/v1/jobs/{first}/cancel").json()["status"] == "cancelled"
    started = wait_job(client, second, {"running"}, timeout=60)
    assert started["waiting"] is None
    for client_, job_id in ((client, second), (other, theirs)):
        client_.post(f"/v1/jobs/{job_id}/cancel")
        wait_job(client_, job_id, {"cancelled"}, timeout=120)
