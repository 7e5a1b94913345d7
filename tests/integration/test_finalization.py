"""POST /v1/jobs/{id}/finalize end to end: real API, Redis, Celery workers and TensorFlow on tiny XOR jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.core.artifacts import ArtifactStore
from service.core.finalization import Finalization
from service.core.job_runs import RunStatus
from service.core.records import utcnow
from service.core.settings import Settings
from service.core.store import JobStore
from service.core.store_runs import Finalizations
from tests.integration.conftest import ended_run, tiny_xor, wait_job
from worker.context import WorkerContext

pytestmark = pytest.mark.integration

XOR_ROWS = [[0, 0], [0, 1], [1, 0], [1, 1]]
XOR_LABELS = ["no", "yes", "yes", "no"]


def finalized(api: httpx.Client, job_id: str) -> dict[str, Any]:
    return ended_run(api, job_id, "finalization")


@pytest.fixture(scope="module")
def xor_job(api: httpx.Client, workers: list[str]) -> str:
    response = api.post("/v1/jobs", json=tiny_xor(XOR_LABELS, epochs=20))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    wait_job(api, job_id, {"succeeded"})
    return job_id


def test_a_finalized_model_is_evaluated_on_the_test_set_as_reported(
    api: httpx.Client, xor_job: str, tmp_path: Path
) -> None:
    import keras

    assert api.get(f"/v1/jobs/{xor_job}/artifacts/final-model").json()["error"]["code"] == "no_final_model"
    response = api.post(f"/v1/jobs/{xor_job}/finalize", json={"test": {"x": XOR_ROWS, "y": XOR_LABELS}})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    result = finalized(api, xor_job)
    assert result["status"] == "succeeded", result
    job = api.get(f"/v1/jobs/{xor_job}").json()
    assert result["epochs"] == job["best_trial"]["best_epoch"] + 1
    assert result["test_rows"] == 4
    assert set(result["test_metrics"]) >= {"loss", "accuracy"}

    download = api.get(f"/v1/jobs/{xor_job}/artifacts/final-model")
    assert download.status_code == 200, download.text
    path = tmp_path / "final.keras"
    path.write_bytes(download.content)
    model = keras.models.load_model(path)
    y = np.array([[0.0], [1.0], [1.0], [0.0]], dtype=np.float32)  # classes ["no", "yes"]: 1 is "yes"
    evaluated = model.evaluate(np.array(XOR_ROWS, dtype=np.float32), y, verbose=0, return_dict=True)
    for name, value in result["test_metrics"].items():
        assert evaluated[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name

    card = api.get(f"/v1/jobs/{xor_job}/artifacts/final-model-card")
    assert card.status_code == 200, card.text
    body = card.json()
    assert body["data"]["checksum"] == job["data"]["split"]["checksum"]
    assert body["data"]["split"] == job["data"]["split"]
    assert body["data"]["rows_trained"] == 8  # training + validation rows
    assert body["hyperparameters"] == job["best_trial"]["hyperparameters"]
    assert body["constants"] == job["best_trial"]["constants"]
    assert body["metrics"]["test"] == result["test_metrics"]
    assert body["metrics"]["train"] == result["train_metrics"]
    assert set(body["libraries"]) == {"tensorflow", "keras", "keras-tuner"}
    assert all(body["libraries"].values())
    assert body["seed"] == 3
    assert body["epochs"] == result["epochs"]
    assert body["wall_seconds"] > 0


def test_a_finished_finalization_is_replaced_by_a_new_one(api: httpx.Client, xor_job: str) -> None:
    first = api.post(f"/v1/jobs/{xor_job}/finalize", json={})
    assert first.status_code == 202, first.text
    second = api.post(f"/v1/jobs/{xor_job}/finalize")
    assert second.status_code == 409, second.text  # while the first is queued or running
    assert second.json()["error"]["code"] == "finalization_running"
    result = finalized(api, xor_job)
    assert result["run_id"] == first.json()["run_id"]
    assert result["status"] == "succeeded", result
    assert result["test_metrics"] is None and result["test_rows"] == 0
    again = api.post(f"/v1/jobs/{xor_job}/finalize")
    assert again.status_code == 202, again.text
    assert finalized(api, xor_job)["run_id"] == again.json()["run_id"]


def test_test_rows_must_fit_the_job(api: httpx.Client, xor_job: str) -> None:
    response = api.post(f"/v1/jobs/{xor_job}/finalize", json={"test": {"x": [[0, 0, 1]], "y": ["no"]}})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == "test.x[0]"
    response = api.post(f"/v1/jobs/{xor_job}/finalize", json={"test": {"x": [[0, 0]], "y": ["maybe"]}})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == "test.y"
    # A test data set needs a job trained on a data set, and one that exists.
    for ref in ("iris", "no-such-data-set"):
        response = api.post(f"/v1/jobs/{xor_job}/finalize", json={"test_dataset": ref})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["fields"][0]["field"] == "test_dataset"
    both = {"test": {"x": XOR_ROWS, "y": XOR_LABELS}, "test_dataset": "iris"}
    response = api.post(f"/v1/jobs/{xor_job}/finalize", json=both)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == "test_dataset"


def test_a_data_set_job_is_evaluated_on_a_test_data_set(api: httpx.Client, tmp_path: Path) -> None:
    import keras

    from service.core import datasets
    from service.core.labels import column_indices

    body = {
        "task": "multiclass_classification",
        "data": {"dataset": "iris"},
        "model": {"hidden_layers": 1, "units": {"values": [8]}},
        "optimizer": {"learning_rate": 0.05},
        "training": {"epochs": 5, "batch_size": 16},
        "tuner": {"algorithm": "random", "max_trials": 1, "seed": 5},
    }
    created = api.post("/v1/jobs", json=body)
    assert created.status_code == 202, created.text
    job = wait_job(api, created.json()["id"], {"succeeded"})
    response = api.post(f"/v1/jobs/{job['id']}/finalize", json={"test_dataset": "iris"})
    assert response.status_code == 202, response.text
    result = finalized(api, job["id"])
    assert result["status"] == "succeeded", result
    table = datasets.builtin_table("iris")
    assert result["test_rows"] == table.num_rows

    names = [f["name"] for f in job["data"]["features"]]
    columns = datasets.column_arrays(table, names)
    x = np.stack([columns[n] for n in names], axis=1).astype(np.float32)
    y = column_indices(table.column("target"), job["data"]["classes"])
    download = api.get(f"/v1/jobs/{job['id']}/artifacts/final-model")
    path = tmp_path / "iris.keras"
    path.write_bytes(download.content)
    evaluated = keras.models.load_model(path).evaluate(x, y, verbose=0, return_dict=True)
    for name, value in result["test_metrics"].items():
        assert evaluated[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    card = api.get(f"/v1/jobs/{job['id']}/artifacts/final-model-card").json()
    assert card["data"]["test_dataset"] == "iris"


def test_a_finalization_past_its_deadline_stops_after_an_epoch_as_timed_out(
    api: httpx.Client, xor_job: str, service_env: dict[str, str]
) -> None:
    """Its own deadline stops it (KTUNE_FINALIZE_TIMEOUT_SECONDS), not the trials' time limit. (In this
    process, on the deployment's Redis and files, as a worker would, with a deadline already passed.)"""
    from worker.finalization import finalize

    finalized(api, xor_job)  # no finalization of the tests before is still running
    env = service_env
    settings = Settings(
        redis_url=env["KTUNE_REDIS_URL"],
        artifact_dir=env["KTUNE_ARTIFACT_DIR"],
        key_prefix=env.get("KTUNE_KEY_PREFIX", "ktune"),
        finalize_timeout_seconds=1e-6,
    )
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    ctx = WorkerContext(settings, store, ArtifactStore(settings.artifact_dir))
    now = utcnow()
    run = Finalization(run_id="deadline", status=RunStatus.QUEUED, requested_at=now, deadline_at=now)
    assert Finalizations(store).begin(xor_job, run, now) is None

    finalize(ctx, xor_job, run.run_id, None)

    ended = api.get(f"/v1/jobs/{xor_job}").json()["finalization"]
    assert ended["run_id"] == "deadline" and ended["status"] == "failed", ended
    assert ended["error"]["code"] == "timed_out"
    assert ended["error"]["message"].startswith("the finalization did not end by its deadline")
    assert "stopped after epoch 1 of" in ended["error"]["message"]


def test_deleting_a_finalized_job_deletes_its_final_model(
    api: httpx.Client, xor_job: str, service_env: dict[str, str]
) -> None:
    finalized(api, xor_job)
    files = Path(service_env["KTUNE_ARTIFACT_DIR"]) / "jobs" / xor_job
    assert (files / "final-model.keras").exists() and (files / "final-model-card.json").exists()
    assert api.delete(f"/v1/jobs/{xor_job}").status_code == 204
    assert not files.exists()
    assert api.get(f"/v1/jobs/{xor_job}/artifacts/final-model").status_code == 404
