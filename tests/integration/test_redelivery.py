"""Redis redelivers a late-acknowledged trial that outlives its visibility timeout: it still trains once."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Deployment, long_job, service_env_for, wait_for, wait_job

pytestmark = pytest.mark.integration

# Messages unacknowledged for 2 s go back to the queue, checked every second (kombu's defaults: an hour's
# timeout here, checked about every 100 s); a trial takes several seconds, so its message comes back.
TRANSPORT = {"visibility_timeout": 2, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}


@pytest.fixture(scope="module")
def impatient(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two workers on Redis database 4 with a visibility timeout far below a trial's length."""
    env = service_env_for(
        redis_url.rsplit("/", 1)[0] + "/4",
        tmp_path_factory.mktemp("redelivery-artifacts"),
        KTUNE_BROKER_TRANSPORT_OPTIONS=json.dumps(TRANSPORT),
    )
    with Deployment.running(
        env, tmp_path_factory.mktemp("redelivery-logs"), ["v1@ktune-test", "v2@ktune-test"]
    ) as d:
        yield d


def test_a_trial_longer_than_the_visibility_timeout_runs_once(impatient: Deployment) -> None:
    api = impatient.client
    job_id = long_job(api, max_trials=2, max_parallel_trials=1)

    done = wait_job(api, job_id, {"succeeded"}, timeout=240)
    trials = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    assert done["progress"]["completed"] == 2 and len(trials) == 2
    for trial in trials:
        [execution] = trial["executions"]
        assert len(execution["history"]["loss"]) == 10_000, "trained once: one run of every epoch"
        assert execution["resumed_at_epochs"] == [], "never taken over by the redelivered copy"
    held = wait_for(
        lambda: [line for line in _worker_lines(impatient) if job_id in line and "is held by" in line],
        10,
        "a redelivered copy to find its trial held",
    )
    assert held, "the broker did redeliver a running trial (else this test proves nothing)"


def _worker_lines(deployment: Deployment) -> list[str]:
    lines: list[str] = []
    for path in deployment.logs.glob("v*.log"):
        lines.extend(path.read_text(errors="replace").splitlines())
    return lines
