"""Optuna's samplers (`tuner.algorithm` "tpe", "cmaes") end to end: the API, Redis, two Celery workers that
each take any step of the search, real TensorFlow on XOR."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from service.core import lifecycle
from service.core.records import utcnow
from service.core.spec import JobSpec
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobStore
from tests.integration.conftest import ROOT, running_job, wait_job
from worker import optuna_search, search, search_state
from worker.context import WorkerContext
from worker.oracles import KtStatus

pytestmark = pytest.mark.integration


def xor_body(algorithm: str, max_trials: int, max_parallel_trials: int) -> dict[str, Any]:
    """The README's classifier example, short: 1-2 layers (units_1 conditional), numeric for cmaes."""
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["model"].update(hidden_layers={"min": 1, "max": 2}, units={"min": 4, "max": 16, "step": 4})
    if algorithm == "cmaes":
        body["model"]["activation"] = "tanh"
        body["optimizer"]["name"] = "adam"
    body["training"]["epochs"] = 5
    body["tuner"] = {
        "algorithm": algorithm,
        "max_trials": max_trials,
        "max_parallel_trials": max_parallel_trials,
        "seed": 11,
    }
    return body


@pytest.mark.parametrize(("algorithm", "parallel"), [("tpe", 1), ("tpe", 3), ("cmaes", 2)])
def test_an_optuna_search_runs_its_trials_and_keeps_its_best(
    api: httpx.Client, redis_url: str, algorithm: str, parallel: int
) -> None:
    body = xor_body(algorithm, max_trials=6, max_parallel_trials=parallel)
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    done = wait_job(api, job_id, {"succeeded"}, timeout=240)
    trials = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    assert len(trials) == 6 and all(t["status"] == "completed" for t in trials)
    assert done["progress"]["completed"] == 6
    assert done["algorithm"] == algorithm
    best = done["best_trial"]
    scores = [t["objective_value"] for t in trials]
    assert best["objective_value"] == max(scores)  # val_accuracy
    for trial in trials:
        values = trial["hyperparameters"]
        layers = values["hidden_layers"]
        assert layers in (1, 2) and values["units_0"] in (4, 8, 12, 16)
        assert ("units_1" in values) == (layers == 2), "units of a layer only when it exists"
        assert 0.0001 <= values["learning_rate"] <= 0.05

    # The stored search, replayed as a worker without it in memory would, has every trial told once.
    store = JobStore.from_url(redis_url)
    record = store.get_job(job_id)
    assert record is not None
    spec = JobSpec.model_validate(record.spec)
    oracle = optuna_search.replay(spec, store.search_log(job_id)[1])
    assert [t.status for t in oracle.trials.values()] == [KtStatus.COMPLETED] * 6
    assert not oracle.ongoing_trials
    assert {t.trial_id for t in oracle.trials.values()} == {t["id"] for t in trials}
    told = oracle.study.trials
    assert [t.value for t in told] == [oracle.trials[t.trial_id].score for t in oracle.trials.values()]


def _searched(ctx: WorkerContext, sent: list[str], job_id: str, keep: bool) -> list[dict[str, Any]]:
    """The job's search run to its end by steps in this process, each trial completing in the order it was
    handed out with a made-up val_accuracy; without `keep`, each step is a worker that never held the
    study (it replays the log from Redis). Returns the trials' values in order."""
    store, first = ctx.store, len(sent)
    search.advance(ctx, job_id)
    done = first
    while done < len(sent):
        record = store.get_trial(job_id, sent[done])
        assert record is not None
        running = record.model_copy(update={"status": TrialStatus.RUNNING, "started_at": utcnow()})
        assert lifecycle.start_trial(store, job_id, running)
        value = 1 - abs(record.hyperparameters["units_0"] - 64) / 128
        metrics = {"loss": 0.1, "accuracy": value, "val_loss": 0.1, "val_accuracy": value}
        if not keep:
            search_state.forget(store, job_id)
        search.finish_trial(
            ctx, job_id, running, search.TrialOutcome(TrialStatus.COMPLETED, metrics, value, 1)
        )
        done += 1
    values = []
    for trial_id in sent[first:]:
        record = store.get_trial(job_id, trial_id)
        assert record is not None and record.status is TrialStatus.COMPLETED
        values.append(record.hyperparameters)
    return values


def test_a_tpe_search_hands_out_the_same_trials_whether_workers_keep_its_study_or_replay_it(
    worker_ctx: WorkerContext, sent_trials: list[str]
) -> None:
    kept_job = running_job(worker_ctx, "tpe", max_trials=8)
    kept = _searched(worker_ctx, sent_trials, kept_job, keep=True)
    replayed_job = running_job(worker_ctx, "tpe", max_trials=8)
    replayed = _searched(worker_ctx, sent_trials, replayed_job, keep=False)
    assert len(kept) == 8 and kept == replayed
    for job_id in (kept_job, replayed_job):
        assert worker_ctx.store.get_status(job_id) is JobStatus.SUCCEEDED
