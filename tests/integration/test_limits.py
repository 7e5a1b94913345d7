"""Trials that fail, run too long, or a job that runs out of time: recorded, bounded, never lost."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ROOT, wait_job

pytestmark = pytest.mark.integration


def xor_regression(**tuner: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-seed.json").read_text())
    body["model"].update(hidden_layers=1, units=16)
    body["training"]["epochs"] = 30
    body["tuner"] = {"algorithm": "grid", "max_parallel_trials": 1, **tuner}
    return body


def diverging(max_failed_trials: int | None) -> dict[str, Any]:
    """Grid over two learning rates: 1e30 sends SGD's weights to infinity, 0.01 trains."""
    body = xor_regression(max_trials=2)
    body["optimizer"] = {"name": "sgd", "learning_rate": {"values": [1e30, 0.01]}}
    if max_failed_trials is not None:
        body["limits"] = {"max_failed_trials": max_failed_trials}
    return body


def post(api: httpx.Client, body: dict[str, Any]) -> str:
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_diverging_trials_fail_with_the_reason_and_the_search_goes_on(api: httpx.Client) -> None:
    job_id = post(api, diverging(max_failed_trials=None))
    done = wait_job(api, job_id, {"succeeded"}, timeout=180)
    trials = {
        t["hyperparameters"]["learning_rate"]: t for t in api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    }
    diverged = trials[1e30]
    assert diverged["status"] == "failed"
    assert diverged["error"]["code"] == "objective_nan" and "NaN or infinite" in diverged["error"]["message"]
    assert None in diverged["executions"][0]["history"]["val_loss"], "non-finite epochs are recorded as null"
    assert trials[0.01]["status"] == "completed"
    assert done["progress"]["failed"] == 1 and done["progress"]["completed"] == 1
    assert done["best_trial"]["id"] == trials[0.01]["id"]


def test_max_failed_trials_zero_fails_the_job_with_a_clear_error(api: httpx.Client) -> None:
    job_id = post(api, diverging(max_failed_trials=0))
    done = wait_job(api, job_id, {"failed"}, timeout=180)
    assert done["error"]["code"] == "too_many_failed_trials"
    assert "limits.max_failed_trials (0)" in done["error"]["message"]


def test_a_trial_over_its_time_limit_is_stopped_and_recorded_as_timed_out(api: httpx.Client) -> None:
    body = xor_regression(max_trials=1)
    body["training"]["epochs"] = 10_000  # the service's limit; about 4 s of training here
    body["limits"] = {"trial_timeout_seconds": 2}
    job_id = post(api, body)
    done = wait_job(api, job_id, {"failed"}, timeout=120)
    [trial] = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    assert trial["status"] == "failed" and trial["error"]["code"] == "trial_timeout"
    assert trial["duration_seconds"] < 30
    assert len(trial["executions"][0]["history"]["loss"]) < 10_000
    assert done["error"]["code"] == "no_trial_completed"


def test_a_job_out_of_runtime_ends_with_what_it_found(api: httpx.Client) -> None:
    body = xor_regression(max_trials=200)
    body["model"]["units"] = {"min": 4, "max": 64, "step": 4}
    body["optimizer"]["learning_rate"] = {"min": 0.001, "max": 0.1, "sampling": "log"}
    body["tuner"]["algorithm"] = "random"
    body["limits"] = {"max_runtime_seconds": 10}
    job_id = post(api, body)
    done = wait_job(api, job_id, {"succeeded"}, timeout=120)
    assert 1 <= done["progress"]["completed"] < 200
    assert done["progress"]["running"] == done["progress"]["queued"] == 0
    runtime = datetime.fromisoformat(done["finished_at"]) - datetime.fromisoformat(done["started_at"])
    assert runtime.total_seconds() < 40
    assert done["best_trial"] is not None
