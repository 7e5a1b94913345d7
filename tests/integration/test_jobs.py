"""End to end through real processes: API -> Redis -> Celery workers -> keras-tuner -> results."""

from __future__ import annotations

import copy
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.core.store import JobStore
from tests.integration.conftest import ROOT, TEST_TENANT, Deployment, wait_for, wait_job

pytestmark = pytest.mark.integration


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((ROOT / "examples" / f"{name}.json").read_text())
    return body


def post_job(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    return job


def test_xor_classifier_end_to_end(api: httpx.Client, workers: list[str], tmp_path: Path) -> None:
    body = example("xor-classifier")
    body["tuner"]["max_trials"] = 4  # fewer trials than the example, same search otherwise
    job = post_job(api, body)

    done = wait_job(api, job["id"], {"succeeded"})
    assert done["progress"]["trials_total"] == 4
    assert done["progress"]["completed"] + done["progress"]["failed"] == 4
    assert done["progress"]["completed"] >= 1
    assert done["started_at"] and done["finished_at"]

    trials = api.get(f"/v1/jobs/{job['id']}/trials").json()["items"]
    assert len(trials) == 4
    for trial in trials:
        hps = trial["hyperparameters"]
        layers = hps["hidden_layers"]
        assert 1 <= layers <= 3
        assert {f"units_{i}" for i in range(layers)} <= hps.keys()
        assert not {f"units_{i}" for i in range(layers, 3)} & hps.keys(), (
            "units of absent layers are inactive"
        )
        assert hps["activation"] in ("relu", "tanh") and hps["optimizer"] in ("adam", "rmsprop")
        assert trial["status"] == "completed"
        history = trial["executions"][0]["history"]
        assert len(history["val_accuracy"]) == 200 and set(history) >= {"loss", "accuracy", "val_loss"}
        assert trial["objective_value"] == max(history["val_accuracy"])
        assert trial["duration_seconds"] > 0 and trial["worker"]
    assert len({t["worker"] for t in trials}) >= 2, "max_parallel_trials=2 spreads trials over both workers"
    brief = api.get(f"/v1/jobs/{job['id']}/trials", params={"history": "false"}).json()["items"]
    assert ["history" in t["executions"][0] for t in brief] == [False] * 4, "history=false leaves it out"
    assert [t["executions"][0]["best_epoch"] for t in brief] == [
        t["executions"][0]["best_epoch"] for t in trials
    ]

    best = done["best_trial"]
    best_value = max(t["objective_value"] for t in trials)
    assert best["objective_value"] == best_value
    by_id = {t["id"]: t for t in trials}
    assert by_id[best["id"]]["objective_value"] == best_value, "best_trial.id names a trial of the list"
    assert best["constants"] == {"batch_size": 4} and "batch_size" not in best["hyperparameters"]
    assert api.get(f"/v1/jobs/{job['id']}/artifacts/best-hyperparameters").json() == {
        **best["hyperparameters"],
        "batch_size": 4,
    }, "the best hyperparameters with the job's constants: its whole configuration"

    response = api.get(f"/v1/jobs/{job['id']}/artifacts/best-model")
    assert response.status_code == 200
    path = tmp_path / "best.keras"
    path.write_bytes(response.content)
    import keras

    model = keras.models.load_model(path)
    x = np.array(body["data"]["validation"]["x"], dtype="float32")
    y = np.array(body["data"]["validation"]["y"])
    predicted = (model.predict(x, verbose=0).ravel() > 0.5).astype(int)
    assert predicted.tolist() == y.tolist(), "the best model classifies XOR"
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy == pytest.approx(best["objective_value"]), "the model reproduces its recorded score"


def test_trials_tied_at_full_accuracy_are_told_apart_by_val_loss(api: httpx.Client) -> None:
    body = example("xor-classifier")
    # A space where most trials classify XOR perfectly: val_accuracy 1.0 ties them.
    body["model"].update(hidden_layers={"min": 1, "max": 2}, units={"values": [16, 32]}, activation="tanh")
    body["model"]["dropout"] = 0.0
    body["optimizer"] = {"name": "adam", "learning_rate": {"values": [0.05, 0.03]}}
    body["training"]["epochs"] = 120
    body["tuner"] = {"algorithm": "random", "max_trials": 4, "max_parallel_trials": 2, "seed": 11}
    job = post_job(api, body)
    done = wait_job(api, job["id"], {"succeeded"})

    trials = [
        t for t in api.get(f"/v1/jobs/{job['id']}/trials").json()["items"] if t["status"] == "completed"
    ]
    top = max(t["objective_value"] for t in trials)
    tied = [t for t in trials if t["objective_value"] == top]
    assert top == 1.0 and len(tied) >= 2, "the test needs trials tied on the objective"
    best = done["best_trial"]
    assert best["id"] in {t["id"] for t in tied}
    assert best["metrics"]["val_loss"] == min(t["metrics"]["val_loss"] for t in tied)
    assert best["chosen_by"] == "tie_breaker:val_loss"
    constants = {"activation": "tanh", "dropout": 0.0, "optimizer": "adam", "batch_size": 4}
    assert best["constants"] == constants
    for trial in trials:
        assert trial["constants"] == constants and not constants.keys() & trial["hyperparameters"].keys()


def test_cancel_running_job_stops_its_trial(api: httpx.Client) -> None:
    body = example("xor-classifier")
    body["training"]["epochs"] = 10_000
    body["tuner"].update(max_trials=2, max_parallel_trials=1)
    job = post_job(api, body)

    def running_trial() -> dict[str, Any] | None:
        trials = api.get(f"/v1/jobs/{job['id']}/trials").json()["items"]
        started = [
            t
            for t in trials
            if t["status"] == "running" and t["executions"] and t["executions"][0]["history"].get("loss")
        ]
        return started[0] if started else None

    wait_for(running_trial, 120, "a trial to train")
    assert api.get(f"/v1/jobs/{job['id']}/artifacts/best-model").status_code == 409

    response = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    cancelled_at = time.monotonic()

    def trial_stopped() -> dict[str, Any] | None:
        trials = api.get(f"/v1/jobs/{job['id']}/trials").json()["items"]
        return trials[0] if all(t["status"] == "cancelled" for t in trials) else None

    trial = wait_for(trial_stopped, 30, "the running trial to stop")
    assert time.monotonic() - cancelled_at < 30
    assert len(trial["executions"][0]["history"]["loss"]) < 10_000, "stopped before its last epoch"

    time.sleep(2)
    final = api.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "cancelled" and final["finished_at"], "terminal states never change"
    assert final["progress"]["completed"] == 0
    assert api.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"


def test_two_jobs_run_at_once_on_two_workers(
    api: httpx.Client, workers: list[str], deployment: Deployment
) -> None:
    # Earlier tests' cancelled trials may still be stopping on a worker: start when both hold no task.
    store = JobStore.from_url(
        deployment.env["KTUNE_REDIS_URL"], deployment.env.get("KTUNE_KEY_PREFIX", "ktune")
    )

    def idle() -> bool:
        beats = store.worker_heartbeats()
        return all(node in beats and beats[node].busy == 0 for node in workers)

    wait_for(idle, 300, "both workers idle")
    bodies = []
    for seed in (1, 2):
        body = example("xor-classifier")
        body["training"]["epochs"] = 300
        body["tuner"].update(algorithm="random", max_trials=2, max_parallel_trials=1, seed=seed)
        bodies.append(body)
    jobs = [post_job(api, body) for body in bodies]
    done = [wait_job(api, job["id"], {"succeeded"}) for job in jobs]

    intervals = []
    used_workers = set()
    for job in done:
        trials = api.get(f"/v1/jobs/{job['id']}/trials").json()["items"]
        assert [t["status"] for t in trials] == ["completed", "completed"]
        used_workers |= {t["worker"] for t in trials}
        intervals.append(
            (
                min(datetime.fromisoformat(t["started_at"]) for t in trials),
                max(datetime.fromisoformat(t["finished_at"]) for t in trials),
            )
        )
    # A trial's worker is its pool process (host:pid). Pool processes are replaced once above
    # KTUNE_WORKER_MAX_MEMORY_PER_CHILD_MB after a task, so a worker may serve its two trials from two
    # processes (CI once saw three pids): two at least, and the jobs' trials ran at the same time.
    assert len(used_workers) >= 2
    (start_a, end_a), (start_b, end_b) = intervals
    assert start_a < end_b and start_b < end_a, "the two jobs ran at the same time"

    # A succeeded job cannot be cancelled.
    response = api.post(f"/v1/jobs/{done[0]['id']}/cancel")
    assert response.status_code == 409 and response.json()["error"]["code"] == "job_finished"


def test_invalid_job_is_rejected_and_nothing_is_queued(api: httpx.Client) -> None:
    before = api.get("/v1/jobs", params={"limit": 100}).json()["items"]
    body = copy.deepcopy(example("xor-seed"))
    body["objective"]["name"] = "val_accuracy"  # the seed tutorial's own bug: accuracy is not compiled
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    assert fields[0]["field"] == "objective.name"
    assert "val_mean_absolute_error" in fields[0]["message"]
    after = api.get("/v1/jobs", params={"limit": 100}).json()["items"]
    assert [j["id"] for j in after] == [j["id"] for j in before]


def test_list_jobs_newest_first_with_cursor_and_status(api: httpx.Client) -> None:
    body = example("xor-classifier")
    body["tuner"].update(max_trials=1)
    ids = [post_job(api, body)["id"] for _ in range(3)]
    for job_id in ids:
        api.post(f"/v1/jobs/{job_id}/cancel")

    first = api.get("/v1/jobs", params={"limit": 2, "status": "cancelled"}).json()
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    assert first["next_cursor"]
    second = api.get(
        "/v1/jobs", params={"limit": 2, "status": "cancelled", "cursor": first["next_cursor"]}
    ).json()
    assert second["items"][0]["id"] == ids[0]
    assert all(j["status"] == "cancelled" for j in first["items"] + second["items"])
    assert api.get("/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert api.get("/v1/jobs/no-such-job").status_code == 404


def test_a_job_whose_start_message_was_lost_is_started_by_the_sweeper(
    api: httpx.Client, redis_url: str
) -> None:
    from datetime import timedelta

    from service.core.job_data import stored_inline
    from service.core.records import JobRecord, utcnow
    from service.core.spec import JobCreate
    from service.core.states import JobStatus
    from service.core.store import JobStore

    body = example("xor-classifier")
    body["tuner"].update(max_trials=1)
    body["training"]["epochs"] = 20
    spec = JobCreate.model_validate(body).resolved()
    long_ago = utcnow() - timedelta(minutes=5)
    record = JobRecord(
        id="00000000-0000-4000-8000-000000000001",
        tenant=TEST_TENANT,  # the tenant of the `api` client's key
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json", exclude={"data"}),
        created_at=long_ago,
        enqueued_at=long_ago,
        start_sends=1,
    )
    stored = stored_inline(spec)[1]
    JobStore.from_url(redis_url).create_job(record, stored)  # stored, never sent

    done = wait_job(api, record.id, {"succeeded"}, timeout=120)
    assert done["progress"]["completed"] == 1


@pytest.mark.parametrize("algorithm", ["grid", "hyperband"])
def test_grid_and_hyperband_searches_run_to_the_end(api: httpx.Client, algorithm: str) -> None:
    body = example("xor-classifier")
    body["model"].update(
        hidden_layers={"min": 1, "max": 2}, units={"values": [8, 16]}, dropout=0.0, activation="tanh"
    )
    body["optimizer"] = {"name": "adam", "learning_rate": 0.05}
    body["training"]["epochs"] = 8
    body["tuner"] = {
        "algorithm": algorithm,
        "max_trials": 7 if algorithm == "hyperband" else 6,
        "max_parallel_trials": 2,
        "seed": 3,
        "max_epochs": 4,
        "factor": 2,
    }
    job = post_job(api, body)
    done = wait_job(api, job["id"], {"succeeded"}, timeout=180)
    trials = api.get(f"/v1/jobs/{job['id']}/trials").json()["items"]
    assert all(t["status"] == "completed" for t in trials) and done["progress"]["completed"] == len(trials)
    if algorithm == "grid":
        combos = {
            (
                t["hyperparameters"]["hidden_layers"],
                t["hyperparameters"]["units_0"],
                t["hyperparameters"].get("units_1"),
            )
            for t in trials
        }
        assert len(combos) == len(trials) == 6, "the grid is 2 x 2 + 2 x 2 x 2 = 12 long; 6 distinct ones ran"
    else:
        continued = [t for t in trials if "tuner/trial_id" in t["hyperparameters"]]
        assert continued, "hyperband continued some trials from their predecessors' checkpoints"
        for trial in continued:
            epochs = trial["executions"][0]["history"]["loss"]
            hps = trial["hyperparameters"]
            assert len(epochs) == hps["tuner/epochs"] - hps["tuner/initial_epoch"]
    assert "tuner/epochs" not in done["best_trial"]["hyperparameters"]


def test_a_job_whose_objective_is_reached_succeeds_early_and_names_the_criterion(api: httpx.Client) -> None:
    body = example("xor-classifier")
    body["training"]["epochs"] = 20
    # The binary cross-entropy of 4 rows is about 0.7 before any training: a val_loss of 10 is surely reached.
    body["objective"] = {"name": "val_loss", "direction": "min"}
    body["tuner"].update(
        algorithm="random", max_trials=6, max_parallel_trials=2, stop_when={"objective_reaches": 10}
    )
    job = post_job(api, body)
    assert job["stopped_by"] is None and job["spec"]["tuner"]["stop_when"] == {
        "objective_reaches": 10.0,
        "no_improvement_trials": None,
    }

    done = wait_job(api, job["id"], {"succeeded"})
    trials = api.get(f"/v1/jobs/{job['id']}/trials", params={"history": "false"}).json()["items"]
    # Both trials of the first step were handed out before either ended; the one still running finished.
    assert [t["status"] for t in trials] == ["completed", "completed"]
    assert done["progress"]["completed"] == 2 < done["progress"]["trials_total"] == 6
    stopped = done["stopped_by"]
    assert stopped["criterion"] == "objective_reaches" and stopped["value"] == 10
    assert stopped["trial"] in {t["id"] for t in trials}
    assert "objective_reaches 10" in stopped["message"]


def test_enqueued_configurations_are_the_first_trials(api: httpx.Client) -> None:
    body = example("xor-classifier")  # a Bayesian search
    body["training"]["epochs"] = 20
    entries = [
        {"hidden_layers": 2, "units_0": 24, "units_1": 8, "activation": "tanh", "dropout": 0.1},
        {"hidden_layers": 1, "optimizer": "rmsprop", "learning_rate": 0.01},
    ]
    body["tuner"].update(max_trials=3, max_parallel_trials=1, enqueue=entries)
    job = post_job(api, body)
    done = wait_job(api, job["id"], {"succeeded"})
    assert done["progress"]["completed"] + done["progress"]["failed"] == 3, "they count toward max_trials"
    trials = sorted(api.get(f"/v1/jobs/{job['id']}/trials").json()["items"], key=lambda t: t["id"])
    first, second, third = (t["hyperparameters"] for t in trials)
    assert first.items() >= entries[0].items() and second.items() >= entries[1].items()
    assert "units_1" not in second and 8 <= second["units_0"] <= 128, "left out: drawn by the search"
    assert not third.items() >= entries[0].items() and not third.items() >= entries[1].items()
    assert done["stopped_by"] is None
