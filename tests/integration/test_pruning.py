"""`tuner.pruning` end to end (API -> Redis -> Celery workers -> TensorFlow): a trial that cannot win is
stopped while it trains and recorded as completed with `stopped_early`; and a trial run again after its
worker failed keeps its curve once."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest
import redis

from service.core.states import TrialStatus
from service.core.store import JobStore
from tests.integration.conftest import Deployment, running_job_of, wait_job
from worker import runner, search
from worker.context import WorkerContext

pytestmark = pytest.mark.integration

EPOCHS = 8


def regression_job(pruning: dict[str, Any], max_trials: int = 6, seed: int = 7) -> dict[str, Any]:
    """A small regression whose learning rate is either useful (0.05) or far too small to learn in 8 epochs
    (1e-6): trials of the second kind cannot win, and the rules see it from their first epochs."""
    rng = random.Random(0)
    x = [[rng.uniform(-1, 1), rng.uniform(-1, 1)] for _ in range(40)]
    y = [3 * a - 2 * b + 1 for a, b in x]
    return {
        "task": "regression",
        "data": {"train": {"x": x, "y": y}},
        "model": {"hidden_layers": 1, "units": {"min": 4, "max": 32, "step": 4}},
        "optimizer": {"learning_rate": {"values": [0.05, 1e-6]}},
        "training": {"epochs": EPOCHS, "batch_size": 8},
        "tuner": {
            "algorithm": "random",
            "max_trials": max_trials,
            "max_parallel_trials": 1,
            "seed": seed,
            "pruning": pruning,
        },
    }


@pytest.mark.parametrize(
    "pruning",
    [
        {"rule": "median", "min_trials": 1},
        {"rule": "asha", "min_epochs": 1, "reduction_factor": 2},
    ],
    ids=["median", "asha"],
)
def test_a_trial_that_cannot_win_is_stopped_and_counts_as_completed(
    api: httpx.Client, deployment: Deployment, workers: list[str], pruning: dict[str, Any]
) -> None:
    response = api.post("/v1/jobs", json=regression_job(pruning))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    done = wait_job(api, job_id, {"succeeded"}, timeout=300)
    trials = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    assert done["progress"]["completed"] == len(trials) == 6, "a pruned trial counts as completed"
    pruned = [t for t in trials if t["stopped_early"] is not None]
    assert pruned, f"no trial was pruned: {[t['executions'][0]['history']['val_loss'] for t in trials]}"
    for trial in pruned:
        stop = trial["stopped_early"]
        history = trial["executions"][0]["history"]["val_loss"]
        assert trial["status"] == "completed"
        assert stop["rule"] == pruning["rule"] and "val_loss" in stop["reason"]
        assert stop["epoch"] == len(history), "it trained up to the epoch it was stopped at"
        assert trial["objective_value"] == pytest.approx(min(v for v in history if v is not None)), (
            "its best value so far"
        )
    assert any(len(t["executions"][0]["history"]["val_loss"]) < EPOCHS for t in pruned), (
        "a pruned trial trained fewer epochs than asked"
    )
    full = [t for t in trials if t["stopped_early"] is None]
    assert full and all(len(t["executions"][0]["history"]["val_loss"]) == EPOCHS for t in full)
    best = min(trials, key=lambda t: t["objective_value"])
    assert done["best_trial"]["objective_value"] == pytest.approx(best["objective_value"])
    store = JobStore.from_url(deployment.env["KTUNE_REDIS_URL"])
    finished = [json.loads(f["data"]) for _, f in store.redis.xrange(store.keys.job_events(job_id))]
    told = {e["trial_id"]: e["stopped_early"] for e in finished if "stopped_early" in e}
    assert told == {t["id"]: t["stopped_early"] for t in trials}, "trial.finished events say it too"


def test_a_trial_run_again_after_its_worker_failed_keeps_its_curve_once(
    worker_ctx: WorkerContext, sent_trials: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = worker_ctx.store
    job_id = running_job_of(worker_ctx, regression_job({"rule": "median", "min_trials": 1}, max_trials=2))
    search.advance(worker_ctx, job_id)
    [trial_id] = sent_trials
    finish = runner._finish

    def lost_redis(*args: Any, **kwargs: Any) -> None:
        raise redis.ConnectionError("Redis went away after the curve was kept")

    # The first run keeps the trial's curve, then fails to record its result: the task is tried again.
    monkeypatch.setattr(runner, "_finish", lost_redis)
    with pytest.raises(redis.ConnectionError):
        runner.run_trial(worker_ctx, job_id, trial_id)
    trial = store.get_trial(job_id, trial_id)
    assert trial is not None and trial.status is TrialStatus.RUNNING
    first = [store.completed_at_epoch(job_id, epoch) for epoch in range(1, EPOCHS + 1)]
    assert [count for count, _ in first] == [1] * EPOCHS and all(len(v) == 1 for _, v in first)

    monkeypatch.setattr(runner, "_finish", finish)
    runner.run_trial(worker_ctx, job_id, trial_id)
    trial = store.get_trial(job_id, trial_id)
    assert trial is not None and trial.status is TrialStatus.COMPLETED and trial.stopped_early is None
    again = [store.completed_at_epoch(job_id, epoch) for epoch in range(1, EPOCHS + 1)]
    assert again == first, "the trial trained again, and its curve is kept once"
