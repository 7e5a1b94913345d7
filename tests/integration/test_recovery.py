"""Nothing lost when a worker dies: its trial continues elsewhere and counts once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.conftest import Deployment, long_job, service_env_for, wait_for, wait_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fragile(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment of its own (Redis database 1, its queues apart): short leases, frequent checkpoints."""
    env = service_env_for(
        redis_url.rsplit("/", 1)[0] + "/1",
        tmp_path_factory.mktemp("recovery-artifacts"),
        KTUNE_LEASE_SECONDS="10",
        KTUNE_STALE_QUEUED_SECONDS="8",
        KTUNE_CHECKPOINT_SECONDS="1",
        KTUNE_TRIAL_MAX_WORKER_LOSSES="2",
    )
    with Deployment.running(
        env, tmp_path_factory.mktemp("recovery-logs"), ["r1@ktune-test", "r2@ktune-test"]
    ) as d:
        yield d


def job_dir(deployment: Deployment, job_id: str) -> Path:
    return Path(deployment.env["KTUNE_ARTIFACT_DIR"]) / "jobs" / job_id


def epoch_checkpoint(deployment: Deployment, job_id: str, trial_id: str) -> Path:
    return job_dir(deployment, job_id) / "checkpoints" / f"{trial_id}.resume.npz"


def node_of(deployment: Deployment, trial: dict[str, Any]) -> str:
    """The worker node whose pool process trains the trial."""
    pool_pid = int(trial["worker"].rsplit(":", 1)[1])
    [node] = [name for name, process in deployment.workers.items() if os.getpgid(pool_pid) == process.pid]
    return node


def training_trial(api: Any, job_id: str) -> dict[str, Any] | None:
    trials = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    running = [
        t
        for t in trials
        if t["status"] == "running" and t["executions"] and t["executions"][0]["history"].get("loss")
    ]
    return running[0] if running else None


def test_a_duplicate_delivery_of_a_running_trial_does_nothing(fragile: Deployment) -> None:
    from service.core.queue import RUN_TRIAL, make_celery
    from service.core.settings import Settings

    api = fragile.client
    job_id = long_job(api, max_trials=1)
    trial = wait_for(lambda: training_trial(api, job_id), 120, "a trial to train")
    # What Redis does when a late-acknowledged message outlives its visibility timeout: deliver it again.
    make_celery(Settings(redis_url=fragile.env["KTUNE_REDIS_URL"])).send_task(
        RUN_TRIAL, args=[job_id, trial["id"]], queue="cpu"
    )
    done = wait_job(api, job_id, {"succeeded"}, timeout=120)
    [finished] = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    assert done["progress"]["completed"] == 1
    assert finished["worker"] == trial["worker"] and len(finished["executions"]) == 1
    assert len(finished["executions"][0]["history"]["loss"]) == 10_000, "trained once, not restarted"


def test_sigterm_hands_the_running_trial_back_and_the_worker_exits_promptly(fragile: Deployment) -> None:
    api = fragile.client
    job_id = long_job(api, max_trials=1, batch_size=1)  # four steps an epoch: about 15 s of training
    trial = wait_for(lambda: training_trial(api, job_id), 120, "a trial to train")
    victim = node_of(fragile, trial)
    trained_before = len(
        api.get(f"/v1/jobs/{job_id}/trials").json()["items"][0]["executions"][0]["history"]["loss"]
    )

    started = time.monotonic()
    fragile.terminate_worker(victim)
    assert time.monotonic() - started < 10, "the worker did not wait for its trial to finish"

    wait_job(api, job_id, {"succeeded"}, timeout=120)
    [finished] = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    assert finished["worker"] != trial["worker"], "the other worker took the trial over"
    [execution] = finished["executions"]
    [resumed_at] = execution["resumed_at_epochs"]
    assert resumed_at >= trained_before, "it continued from the epoch where the stopped worker handed it back"
    assert len(execution["history"]["loss"]) == 10_000, "every epoch once: the history continues, no gap"
    assert not epoch_checkpoint(fragile, job_id, finished["id"]).exists(), (
        "a finished trial's checkpoint goes"
    )

    fragile.start_worker(victim)  # the same name again: its shutdown mark must be gone
    fragile.wait_ready(workers=2)


def starting_trial(api: Any, job_id: str) -> dict[str, Any] | None:
    """A trial its worker has taken but not yet trained an epoch of (building, tracing)."""
    trials = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    starting = [
        t for t in trials if t["status"] == "running" and not any(e["history"] for e in t["executions"])
    ]
    return starting[0] if starting else None


def checkpointed_trial(deployment: Deployment, job_id: str) -> dict[str, Any] | None:
    """A training trial that has written an epoch checkpoint."""
    trial = training_trial(deployment.client, job_id)
    return trial if trial and epoch_checkpoint(deployment, job_id, trial["id"]).exists() else None


@pytest.mark.parametrize("moment", ["while it builds", "mid-training"])
def test_a_killed_workers_trial_runs_again_on_another_worker(fragile: Deployment, moment: str) -> None:
    api = fragile.client
    job_id = long_job(api, max_trials=2)
    if moment == "while it builds":
        trial = wait_for(lambda: starting_trial(api, job_id), 120, "a trial building", interval=0.05)
    else:
        trial = wait_for(lambda: checkpointed_trial(fragile, job_id), 120, "a trial with a checkpoint")
    victim = node_of(fragile, trial)
    fragile.kill_worker(victim)

    done = wait_job(api, job_id, {"succeeded"}, timeout=180)
    trials = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    assert done["progress"]["completed"] == 2 and len(trials) == 2, "every trial counted exactly once"
    rerun = next(t for t in trials if t["id"] == trial["id"])
    assert rerun["status"] == "completed"
    assert rerun["worker"] != trial["worker"], "the killed trial ran again on the other worker"
    [execution] = rerun["executions"]
    assert len(execution["history"]["loss"]) == 10_000, "every epoch once: no gap, no repeat"
    if moment == "while it builds":
        assert execution["resumed_at_epochs"] == [], "no checkpoint yet: it started over"
    else:
        [resumed_at] = execution["resumed_at_epochs"]
        assert 0 < resumed_at < 10_000, "it continued from its last epoch checkpoint"

    fragile.start_worker(victim)
    fragile.wait_ready(workers=2)


def test_a_trial_that_keeps_killing_its_worker_fails_and_the_search_goes_on(fragile: Deployment) -> None:
    api = fragile.client
    job_id = long_job(api, max_trials=2)
    first = wait_for(lambda: training_trial(api, job_id), 120, "a trial to train")
    killed: set[str] = set()
    for _ in range(2):  # KTUNE_TRIAL_MAX_WORKER_LOSSES

        def in_a_new_process() -> dict[str, Any] | None:
            trial = training_trial(api, job_id)
            return trial if trial and trial["id"] == first["id"] and trial["worker"] not in killed else None

        trial = wait_for(in_a_new_process, 120, "the trial running in a live process")
        # What the kernel's out-of-memory killer does: the pool process dies, its worker node lives on.
        os.kill(int(trial["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        killed.add(trial["worker"])

    done = wait_job(api, job_id, {"succeeded"}, timeout=180)
    trials = {t["id"]: t for t in api.get(f"/v1/jobs/{job_id}/trials").json()["items"]}
    lost = trials.pop(first["id"])
    assert lost["status"] == "failed" and lost["error"]["code"] == "worker_lost", lost["error"]
    assert "lost 2 times" in lost["error"]["message"]
    [other] = trials.values()
    assert other["status"] == "completed", "the search went on"
    assert done["progress"]["failed"] == 1 and done["progress"]["completed"] == 1


# tpe: Optuna's study, which the new worker has never held, replayed from the log in Redis.
@pytest.mark.parametrize("algorithm", ["random", "tpe"])
def test_a_job_whose_every_worker_died_finishes_when_one_comes_back(
    fragile: Deployment, algorithm: str
) -> None:
    api = fragile.client
    job_id = long_job(api, max_trials=3, algorithm=algorithm)

    def second_trial_training() -> dict[str, Any] | None:
        trials = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
        done = [t for t in trials if t["status"] == "completed"]
        return done[0] if done and training_trial(api, job_id) else None

    first = wait_for(second_trial_training, 120, "one trial done and the next training")
    for name in list(fragile.workers):
        fragile.kill_worker(name)
    fragile.start_worker(f"r3-{algorithm}@ktune-test")
    fragile.wait_ready(workers=1)

    done = wait_job(api, job_id, {"succeeded"}, timeout=180)
    trials = {t["id"]: t for t in api.get(f"/v1/jobs/{job_id}/trials").json()["items"]}
    assert done["progress"]["completed"] == 3 and len(trials) == 3
    assert trials[first["id"]]["finished_at"] == first["finished_at"], "a finished trial is not run again"
    assert trials[first["id"]]["worker"] == first["worker"]


def test_a_queued_trial_whose_message_was_lost_still_runs(fragile: Deployment) -> None:
    api = fragile.client
    job_id = long_job(api, max_trials=3, max_parallel_trials=3)  # more trials at once than workers

    def some_waiting() -> bool:
        trials = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
        return len(trials) == 3 and "queued" in [t["status"] for t in trials]

    wait_for(some_waiting, 120, "trials waiting for a worker")
    redis.Redis.from_url(fragile.env["KTUNE_REDIS_URL"]).delete("cpu")  # the cpu queue's waiting messages

    done = wait_job(api, job_id, {"succeeded"}, timeout=180)
    assert done["progress"]["completed"] == 3


def test_a_worker_killed_while_saving_the_best_model_leaves_no_broken_model(fragile: Deployment) -> None:
    api = fragile.client
    job_id = long_job(api, max_trials=1)
    trial = wait_for(lambda: training_trial(api, job_id), 120, "a trial to train")
    # A named pipe where the trial saves its model: opening it for writing blocks until someone reads, so
    # the worker is held exactly in the middle of saving the model.
    candidate = job_dir(fragile, job_id) / "candidates" / f"{trial['id']}.keras"
    candidate.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(candidate)

    def saving() -> bool:
        [current] = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
        return len(current["executions"][0]["history"]["loss"]) == 10_000 and current["status"] == "running"

    wait_for(saving, 120, "the trial to finish training and save its model")
    time.sleep(1)  # well inside open() by now
    victim = node_of(fragile, trial)
    fragile.kill_worker(victim)
    candidate.unlink()
    fragile.start_worker(victim)  # earlier tests may have left only this one worker

    done = wait_job(api, job_id, {"succeeded"}, timeout=180)
    [finished] = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    assert done["progress"]["completed"] == 1 and finished["worker"] != trial["worker"]
    response = api.get(f"/v1/jobs/{job_id}/artifacts/best-model")
    assert response.status_code == 200
    path = job_dir(fragile, job_id) / "downloaded.keras"
    path.write_bytes(response.content)
    import keras
    import numpy as np

    model = keras.models.load_model(path)  # a whole model, not the half written when the worker died
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype="float32")
    _, accuracy = model.evaluate(x, np.array([0, 1, 1, 0]), verbose=0)
    assert accuracy == pytest.approx(done["best_trial"]["objective_value"]), "it is the best trial's model"
