"""Nothing lost when a worker dies: its trial runs again elsewhere and counts once."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import ROOT, Deployment, service_env_for, wait_for, wait_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fragile(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment of its own (Redis database 1, so its queues are apart) with short leases."""
    env = service_env_for(
        redis_url.rsplit("/", 1)[0] + "/1",
        tmp_path_factory.mktemp("recovery-artifacts"),
        KTUNE_LEASE_SECONDS="10",
        KTUNE_STALE_QUEUED_SECONDS="8",
    )
    deployment = Deployment(env, tmp_path_factory.mktemp("recovery-logs"))
    for name in ("r1@ktune-test", "r2@ktune-test"):
        deployment.start_worker(name)
    deployment.start_api()
    deployment.wait_ready(workers=2)
    yield deployment
    deployment.stop()


def test_a_killed_workers_trial_runs_again_on_another_worker(fragile: Deployment) -> None:
    api = fragile.client
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["training"]["epochs"] = 10_000
    body["tuner"].update(algorithm="random", max_trials=2, max_parallel_trials=1)
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = response.json()

    def training_trial() -> dict[str, Any] | None:
        trials = api.get(f"/v1/jobs/{job['id']}/trials").json()["items"]
        running = [
            t
            for t in trials
            if t["status"] == "running"
            and t["executions"]
            and len(t["executions"][0]["history"].get("loss", [])) > 0
        ]
        return running[0] if running else None

    trial = wait_for(training_trial, 120, "a trial to train")
    pool_pid = int(trial["worker"].rsplit(":", 1)[1])
    [victim] = [name for name, process in fragile.workers.items() if os.getpgid(pool_pid) == process.pid]
    fragile.kill_worker(victim)

    done = wait_job(api, job["id"], {"succeeded"}, timeout=180)
    trials = api.get(f"/v1/jobs/{job['id']}/trials").json()["items"]
    assert done["progress"]["completed"] == 2 and len(trials) == 2, "every trial counted exactly once"
    rerun = next(t for t in trials if t["id"] == trial["id"])
    assert rerun["status"] == "completed"
    assert rerun["worker"] != trial["worker"], "the killed trial ran again on the other worker"
    assert len(rerun["executions"]) == 1
    assert len(rerun["executions"][0]["history"]["loss"]) == 10_000, "it ran in full, once"
