"""tuner.warm_start through real processes: the API resolves earlier jobs' trials (or refuses them), real
Celery workers seed the search with them and train max_trials trials of the job's own."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ROOT, Deployment, long_job, wait_job

pytestmark = pytest.mark.integration


def xor(max_trials: int, algorithm: str = "bayesian", **tuner: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["training"]["epochs"] = 20
    body["tuner"].update(algorithm=algorithm, max_trials=max_trials, max_parallel_trials=1, **tuner)
    return body


@pytest.fixture(scope="module")
def finished(api: httpx.Client) -> dict[str, Any]:
    """A finished xor search of 3 trials, to warm-start from."""
    response = api.post("/v1/jobs", json=xor(3))
    assert response.status_code == 202, response.text
    return wait_job(api, response.json()["id"], {"succeeded"})


@pytest.mark.parametrize("algorithm", ["bayesian", "tpe"])
def test_a_warm_started_job_trains_max_trials_of_its_own(
    api: httpx.Client, finished: dict[str, Any], algorithm: str
) -> None:
    source = finished["id"]
    source_trials = api.get(f"/v1/jobs/{source}/trials").json()["items"]
    completed = {t["id"] for t in source_trials if t["status"] == "completed"}
    response = api.post("/v1/jobs", json=xor(2, algorithm, warm_start={"jobs": [source]}))
    assert response.status_code == 202, response.text
    seeds = response.json()["spec"]["tuner"]["warm_start"]["trials"]
    assert {seed["trial_id"] for seed in seeds} == completed and {seed["job_id"] for seed in seeds} == {
        source
    }
    done = wait_job(api, response.json()["id"], {"succeeded"})
    assert done["progress"]["completed"] + done["progress"]["failed"] == 2, "the seeded trials take no budget"
    trials = api.get(f"/v1/jobs/{done['id']}/trials").json()["items"]
    assert len(trials) == 2 and not any(t["id"].startswith("warm-") for t in trials)
    assert done["best_trial"]["id"] in {t["id"] for t in trials}, "the best is one of the job's own"


def problem(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    (field,) = response.json()["error"]["fields"]
    return field["field"], field["message"]


def both_refuse(api: httpx.Client, body: dict[str, Any]) -> tuple[str, str]:
    """The 422 POST /v1/jobs answers `body` with, checked to be the dry run's too."""
    submitted = api.post("/v1/jobs", json=body)
    validated = api.post("/v1/jobs/validate", json=body)
    assert submitted.status_code == validated.status_code == 422, (submitted.text, validated.text)
    assert submitted.json() == validated.json()
    return problem(submitted)


def test_a_missing_or_another_tenants_job_is_refused_alike(
    api: httpx.Client, deployment: Deployment, finished: dict[str, Any]
) -> None:
    field, message = both_refuse(api, xor(2, warm_start={"jobs": [finished["id"], "no-such-job"]}))
    assert field == "tuner.warm_start.jobs[1]" and "no job with id 'no-such-job'" in message
    other = deployment.client_for("another-tenant")
    field, message = both_refuse(other, xor(2, warm_start={"jobs": [finished["id"]]}))
    assert (field, message) == (
        "tuner.warm_start.jobs[0]",
        f"no job with id '{finished['id']}': give a finished job's id",
    )


def test_an_unfinished_job_is_refused(api: httpx.Client) -> None:
    running = long_job(api, max_trials=1)
    try:
        # Running, not queued: both requests must see it in the same status to answer alike.
        wait_job(api, running, {"running"}, timeout=120)
        field, message = both_refuse(api, xor(2, warm_start={"jobs": [running]}))
        assert field == "tuner.warm_start.jobs[0]" and "finished jobs only" in message
    finally:
        api.post(f"/v1/jobs/{running}/cancel")


def test_another_objective_is_refused_naming_both(api: httpx.Client, finished: dict[str, Any]) -> None:
    body = xor(2, warm_start={"jobs": [finished["id"]]})
    body["objective"] = {"name": "val_loss"}
    field, message = both_refuse(api, body)
    assert field == "tuner.warm_start.jobs[0]"
    assert "val_accuracy (max)" in message and "val_loss (min)" in message and "same objective" in message


def test_a_job_none_of_whose_trials_fits_names_the_hyperparameter(
    api: httpx.Client, finished: dict[str, Any]
) -> None:
    body = xor(2, warm_start={"jobs": [finished["id"]]})
    body["model"]["units"] = {"min": 200, "max": 256, "step": 8}
    field, message = both_refuse(api, body)
    assert field == "tuner.warm_start.jobs[0]" and "none of the" in message
    assert "units_0" in message and "outside model.units's range" in message


def test_trials_in_the_request_and_hyperband_are_refused(api: httpx.Client, finished: dict[str, Any]) -> None:
    body = xor(2, warm_start={"jobs": [finished["id"]], "trials": []})
    assert problem(api.post("/v1/jobs", json=body))[0] == "tuner.warm_start.trials"
    field, message = both_refuse(api, xor(2, "hyperband", warm_start={"jobs": [finished["id"]]}))
    assert field == "tuner.warm_start" and "hyperband" in message
