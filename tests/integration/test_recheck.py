"""POST /v1/jobs/{id}/recheck end to end: real API, Redis, Celery workers and TensorFlow on a tiny XOR job."""

from __future__ import annotations

import math
import statistics
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from service.core.artifacts import ArtifactStore
from service.core.records import utcnow
from service.core.settings import Settings
from service.core.store import JobStore
from tests.integration.conftest import Deployment, ended_run, long_job, tiny_xor, wait_job
from tests.integration.test_finalization import XOR_LABELS

pytestmark = pytest.mark.integration


def rechecked(api: httpx.Client, job_id: str) -> dict[str, Any]:
    return ended_run(api, job_id, "recheck")


@pytest.fixture(scope="module")
def xor_job(api: httpx.Client, workers: list[str]) -> str:
    """A succeeded search of three trials ranked by val_loss: a continuous objective, which seeds move."""
    body = tiny_xor(XOR_LABELS, epochs=20)
    body["model"]["units"] = {"min": 4, "max": 32, "step": 4}
    body["objective"] = {"name": "val_loss", "direction": "min"}
    body["tuner"]["max_trials"] = 3
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    wait_job(api, job_id, {"succeeded"})
    return job_id


def test_the_top_trials_are_retrained_with_other_seeds_and_summarized(
    api: httpx.Client, xor_job: str
) -> None:
    assert api.get(f"/v1/jobs/{xor_job}").json()["recheck"] is None
    response = api.post(f"/v1/jobs/{xor_job}/recheck", json={"top_k": 2, "seeds": 2})
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/jobs/{xor_job}"
    accepted = response.json()
    assert (accepted["status"], accepted["top_k"], accepted["seeds"]) == ("queued", 2, 2)
    again = api.post(f"/v1/jobs/{xor_job}/recheck")
    assert again.status_code == 409, again.text  # while the first is queued or running
    assert again.json()["error"]["code"] == "recheck_running"

    run = rechecked(api, xor_job)
    assert run["status"] == "succeeded", run
    assert run["run_id"] == accepted["run_id"] and run["error"] is None
    job = api.get(f"/v1/jobs/{xor_job}").json()
    trials = {t["id"]: t for t in api.get(f"/v1/jobs/{xor_job}/trials").json()["items"]}
    result = run["result"]
    assert (result["objective"], result["direction"]) == ("val_loss", "min")
    assert result["winner"] == job["best_trial"]["id"]
    assert len(result["trials"]) == 2
    assert result["trials"][0]["trial_id"] == result["winner"]
    runner_up = trials[result["trials"][1]["trial_id"]]
    assert runner_up["status"] == "completed"
    # The runner-up is the best of the other completed trials, by the job's objective.
    others = [t for t in trials.values() if t["status"] == "completed" and t["id"] != result["winner"]]
    assert runner_up["objective_value"] == min(t["objective_value"] for t in others)

    seeds: list[int] = []
    for summary in result["trials"]:
        trial = trials[summary["trial_id"]]
        assert summary["search_objective"] == trial["objective_value"]
        assert summary["hyperparameters"] == trial["hyperparameters"]
        assert summary["constants"] == trial["constants"]
        assert summary["epochs"] == 20
        values = summary["values"]
        assert len(values) == len(summary["seeds"]) == 2
        assert all(v is not None and math.isfinite(v) and v >= 0 for v in values), values
        # Each seed trains another model: a continuous validation loss differs between them.
        assert values[0] != values[1], summary
        assert summary["mean"] == pytest.approx(statistics.fmean(values))
        assert summary["std"] == pytest.approx(statistics.stdev(values))
        assert (summary["min"], summary["max"]) == (min(values), max(values))
        seeds += summary["seeds"]
    assert len(set(seeds)) == len(seeds), "every retraining has a seed of its own"
    means = {t["trial_id"]: t["mean"] for t in result["trials"]}
    assert result["best_by_mean"] == min(means, key=lambda k: means[k])
    assert result["winner_holds"] == (result["best_by_mean"] == result["winner"])


def test_a_retraining_with_a_trials_own_seed_is_that_trial_again(
    api: httpx.Client, xor_job: str, service_env: dict[str, str]
) -> None:
    """What a recheck trains is what the search trained: only the seed differs. (In this process, on the
    deployment's Redis and files, as a worker would.)"""
    from worker.context import WorkerContext, load_spec
    from worker.data import job_data
    from worker.executions import execution_seed
    from worker.job_runs import RunFailed
    from worker.recheck import retrain

    env = service_env
    settings = Settings(
        redis_url=env["KTUNE_REDIS_URL"],
        artifact_dir=env["KTUNE_ARTIFACT_DIR"],
        key_prefix=env.get("KTUNE_KEY_PREFIX", "ktune"),
    )
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    ctx = WorkerContext(settings, store, ArtifactStore(settings.artifact_dir))
    spec = load_spec(store, xor_job)
    data = job_data(store, ctx.artifacts, xor_job, spec.task)
    deadline = utcnow() + timedelta(minutes=5)
    for trial in store.get_trials(xor_job, history=False):
        own = execution_seed(spec, trial.id, 0)
        (value,) = retrain(ctx, xor_job, spec, data, trial, [own], deadline)
        assert value == pytest.approx(trial.objective_value, rel=1e-4), trial.id
    # Past the recheck's deadline, a retraining stops after its epoch and the recheck fails with a code.
    with pytest.raises(RunFailed) as raised:
        retrain(ctx, xor_job, spec, data, trial, [own], utcnow())
    assert raised.value.code == "timed_out"


def test_a_finished_recheck_is_replaced_by_a_new_one_with_the_same_seeds(
    api: httpx.Client, xor_job: str
) -> None:
    first = rechecked(api, xor_job)  # the test before's, or one started here
    if first["status"] != "succeeded":
        response = api.post(f"/v1/jobs/{xor_job}/recheck", json={"top_k": 2, "seeds": 2})
        assert response.status_code == 202, response.text
        first = rechecked(api, xor_job)
    response = api.post(f"/v1/jobs/{xor_job}/recheck", json={"top_k": 1, "seeds": 2})
    assert response.status_code == 202, response.text
    second = rechecked(api, xor_job)
    assert second["run_id"] == response.json()["run_id"] != first["run_id"]
    assert second["status"] == "succeeded", second
    (winner,) = second["result"]["trials"]
    assert winner["trial_id"] == first["result"]["trials"][0]["trial_id"]
    # Seeds derive from tuner.seed: the same trainings again.
    assert winner["seeds"] == first["result"]["trials"][0]["seeds"]
    assert winner["values"] == pytest.approx(first["result"]["trials"][0]["values"], rel=1e-4)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": 11}, "top_k"),
        ({"top_k": "3"}, "top_k"),
        ({"seeds": 1}, "seeds"),
        ({"seeds": 11}, "seeds"),
        ({"seeds": 2.5}, "seeds"),
        ({"top_k": 2, "seed": 3}, "seed"),
    ],
)
def test_a_malformed_body_is_a_422_naming_the_field(
    api: httpx.Client, xor_job: str, body: dict[str, Any], field: str
) -> None:
    response = api.post(f"/v1/jobs/{xor_job}/recheck", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == field


def test_an_unknown_or_another_tenants_job_is_not_found(
    api: httpx.Client, deployment: Deployment, xor_job: str
) -> None:
    missing = api.post(f"/v1/jobs/{uuid.uuid4()}/recheck")
    assert missing.status_code == 404, missing.text
    stranger = deployment.client_for(f"stranger-{uuid.uuid4().hex[:6]}")
    response = stranger.post(f"/v1/jobs/{xor_job}/recheck", json={"top_k": 1, "seeds": 2})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == missing.json()["error"]["code"]


def test_a_running_job_can_be_neither_finalized_nor_rechecked(api: httpx.Client, workers: list[str]) -> None:
    job_id = long_job(api, max_trials=1)
    for run in ("finalize", "recheck"):
        response = api.post(f"/v1/jobs/{job_id}/{run}")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "job_not_finished"
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["finalization"] is None and job["recheck"] is None
