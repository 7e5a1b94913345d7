"""Two API replicas on one Redis serve the same jobs: what is posted through one is read, listed and
cancelled through the other, with the same key."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import Deployment, free_port, long_job, wait_for, wait_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def second_api(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Another `python -m service` on its own port, configured as the session's deployment (its client has a
    key of the same tenant)."""
    env = {**deployment.env, "KTUNE_PORT": str(free_port())}
    with Deployment.api_only(env, tmp_path_factory.mktemp("second-api")) as replica:
        yield replica.client


def test_a_job_posted_through_one_replica_is_served_by_the_other(
    api: httpx.Client, second_api: httpx.Client
) -> None:
    assert api.base_url != second_api.base_url
    job_id = long_job(api, max_trials=1, epochs=20)
    done = wait_job(second_api, job_id, {"succeeded"}, timeout=180)
    assert done == api.get(f"/v1/jobs/{job_id}").json()
    assert second_api.get(f"/v1/jobs/{job_id}/trials").json() == api.get(f"/v1/jobs/{job_id}/trials").json()
    assert second_api.get(f"/v1/jobs/{job_id}/artifacts/best-model").content == (
        api.get(f"/v1/jobs/{job_id}/artifacts/best-model").content
    )
    pages = [client.get("/v1/jobs", params={"limit": 5}).json() for client in (api, second_api)]
    assert pages[0] == pages[1] and job_id in {job["id"] for job in pages[0]["items"]}


def store_metrics(client: httpx.Client) -> list[str]:
    """The lines of GET /metrics that come from the job store (not the replica's own request latencies)."""
    lines = client.get("/metrics").text.splitlines()
    return [line for line in lines if line.startswith(("ktune_jobs", "ktune_trial", "ktune_queue"))]


def test_both_replicas_report_the_stores_metrics_alike(api: httpx.Client, second_api: httpx.Client) -> None:
    assert any(line.startswith("ktune_trials_started_total ") for line in store_metrics(api))
    # Equal once no trial of another test changes status between the two reads.
    wait_for(lambda: store_metrics(api) == store_metrics(second_api), 60, "the replicas to agree")


def test_a_job_cancelled_through_one_replica_is_cancelled_in_the_other(
    api: httpx.Client, second_api: httpx.Client
) -> None:
    job_id = long_job(second_api, max_trials=20)
    wait_job(api, job_id, {"running"}, timeout=120)
    assert api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert second_api.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert second_api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200, "already cancelled: a no-op"
