"""POST /v1/jobs/{id}/predict end to end: real API, Redis, Celery workers and TensorFlow on tiny jobs.

The API process never loads TensorFlow: a worker predicts and hands the answer back through Redis.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.core.job_data import stored_inline
from service.core.records import BestTrial, JobRecord, utcnow
from service.core.replies import Replies
from service.core.spec import JobCreate
from service.core.states import JobStatus
from service.core.store import JobStore
from tests.integration.conftest import (
    TEST_TENANT,
    Deployment,
    long_job,
    service_env_for,
    tiny_xor,
    wait_job,
)

pytestmark = pytest.mark.integration

XOR_ROWS = [[0, 0], [0, 1], [1, 0], [1, 1]]


def finished(api: httpx.Client, body: dict[str, Any]) -> str:
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    wait_job(api, job_id, {"succeeded"})
    return job_id


def downloaded_predictions(api: httpx.Client, job_id: str, x: Any, tmp_path: Path) -> np.ndarray:
    import keras

    response = api.get(f"/v1/jobs/{job_id}/artifacts/best-model")
    assert response.status_code == 200, response.text
    path = tmp_path / f"{job_id}.keras"
    path.write_bytes(response.content)
    return np.asarray(keras.models.load_model(path).predict(x, verbose=0))


@pytest.fixture(scope="module")
def xor_job(api: httpx.Client, workers: list[str]) -> str:
    """A finished XOR classifier whose classes are strings."""
    return finished(api, tiny_xor(["no", "yes", "yes", "no"]))


def predict(api: httpx.Client, job_id: str, rows: Any) -> httpx.Response:
    return api.post(f"/v1/jobs/{job_id}/predict", json={"rows": rows}, timeout=60)


def test_a_classifier_predicts_labels_and_probabilities(
    api: httpx.Client, xor_job: str, tmp_path: Path
) -> None:
    response = predict(api, xor_job, XOR_ROWS)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 4
    for prediction in predictions:
        assert prediction["label"] in ("no", "yes")
        assert set(prediction["probabilities"]) == {"no", "yes"}
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction["label"] == max(prediction["probabilities"], key=prediction["probabilities"].get)
    # The same numbers as the model a user downloads (its single unit is the probability of classes[1]).
    expected = downloaded_predictions(api, xor_job, np.array(XOR_ROWS, dtype=np.float32), tmp_path)
    assert [p["probabilities"]["yes"] for p in predictions] == pytest.approx(
        expected[:, 0].tolist(), abs=1e-5
    )


def test_rows_may_be_objects_keyed_by_feature_name(api: httpx.Client, xor_job: str) -> None:
    as_lists = predict(api, xor_job, XOR_ROWS).json()
    as_objects = predict(api, xor_job, [{"x0": a, "x1": b} for a, b in XOR_ROWS])
    assert as_objects.status_code == 200, as_objects.text
    assert as_objects.json() == as_lists


def test_a_regression_job_predicts_values(api: httpx.Client, workers: list[str], tmp_path: Path) -> None:
    body = tiny_xor([0.0, 10.0, 10.0, 0.0])
    body["task"] = "regression"
    del body["objective"]
    job_id = finished(api, body)
    response = predict(api, job_id, XOR_ROWS)
    assert response.status_code == 200, response.text
    values = [p["value"] for p in response.json()["predictions"]]
    assert [set(p) for p in response.json()["predictions"]] == [{"value"}] * 4
    expected = downloaded_predictions(api, job_id, np.array(XOR_ROWS, dtype=np.float32), tmp_path)
    assert values == pytest.approx(expected[:, 0].tolist(), rel=1e-5, abs=1e-5)


def test_a_data_set_job_takes_raw_rows_with_categorical_columns(
    api: httpx.Client, workers: list[str], tmp_path: Path
) -> None:
    lines = ["size,colour,kind"]
    for index in range(40):
        colour = ("red", "green", "blue")[index % 3]
        lines.append(f"{index % 7 + 0.5},{colour},{'a' if colour == 'red' else 'b'}")
    upload = api.post("/v1/datasets", files={"file": ("flowers.csv", "\n".join(lines).encode())})
    assert upload.status_code == 201, upload.text
    body = {
        "task": "binary_classification",
        "data": {"dataset": upload.json()["id"], "target": "kind"},
        "model": {"hidden_layers": 1, "units": 8},
        "optimizer": {"learning_rate": 0.05},
        "training": {"epochs": 20, "batch_size": 8},
        "tuner": {"max_trials": 1, "seed": 2},
    }
    job_id = finished(api, body)
    rows = [{"size": 1.5, "colour": "red"}, {"size": 6.5, "colour": "blue"}, {"size": 2.0, "colour": "pink"}]
    response = predict(api, job_id, rows)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions][:2] == ["a", "b"]
    # Lists in the order of the job's data.features give the same answer.
    order = [f["name"] for f in api.get(f"/v1/jobs/{job_id}").json()["data"]["features"]]
    as_lists = predict(api, job_id, [[row[name] for name in order] for row in rows])
    assert as_lists.json() == response.json()
    columns = {
        "size": np.array([r["size"] for r in rows], dtype=np.float32),
        "colour": np.array([r["colour"] for r in rows], dtype=object),
    }
    expected = downloaded_predictions(api, job_id, columns, tmp_path)
    probabilities = [p["probabilities"]["b"] for p in predictions]
    assert probabilities == pytest.approx(expected[:, 0].tolist(), abs=1e-5)
    wrong = predict(api, job_id, [{"size": 1.0, "colour": 3}])
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["error"]["fields"][0]["field"] == "rows[0]"


@pytest.mark.parametrize(
    ("rows", "field", "words"),
    [
        ([[0, 0], [0, 1, 1]], "rows[1]", "has 3 values but the job has 2 features"),
        ([["a", 0]], "rows[0]", "is numeric"),
        ([[None, 0]], "rows[0]", "is numeric"),
        ([[True, 0]], "rows[0]", "is numeric"),
        ([{"x0": 0, "x1": 1, "colour": "red"}], "rows[0]", "unknown feature 'colour'"),
        ([{"x0": 0}], "rows[0]", "feature 'x1' is missing"),
        ([[0, 0], "row"], "rows[1]", "must be a list"),
    ],
)
def test_a_bad_row_is_a_422_naming_it(
    api: httpx.Client, xor_job: str, rows: list[Any], field: str, words: str
) -> None:
    response = predict(api, xor_job, rows)
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["fields"]
    assert problem["field"] == field
    assert words in problem["message"]


def test_no_rows_or_too_many_rows_are_refused(api: httpx.Client, xor_job: str) -> None:
    for rows in ([], [[0, 0]] * 1001):
        response = predict(api, xor_job, rows)
        assert response.status_code == 422, response.text
        [problem] = response.json()["error"]["fields"]
        assert problem["field"] == "rows"
    assert "1000" in predict(api, xor_job, [[0, 0]] * 1001).json()["error"]["fields"][0]["message"]


def test_another_tenants_job_is_not_found(deployment: Deployment, xor_job: str) -> None:
    other = deployment.client_for("predict-other-tenant")
    response = predict(other, xor_job, XOR_ROWS)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "job_not_found"
    missing = predict(deployment.client, "00000000-0000-4000-8000-000000000000", XOR_ROWS)
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["code"] == "job_not_found"


def test_a_job_without_a_best_model_is_a_409(api: httpx.Client, workers: list[str]) -> None:
    job_id = long_job(api, max_trials=1)
    try:
        response = predict(api, job_id, XOR_ROWS)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "no_best_model"
    finally:
        assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    wait_job(api, job_id, {"cancelled"})


def test_no_worker_answering_is_a_503_naming_the_retry(
    redis_url: str, tmp_path: Path, logs_dir: Path
) -> None:
    # An API alone on Redis db 13 (its own broker too: the session's workers never see its messages), and a
    # job stored as if a trial had completed.
    url = redis_url.rsplit("/", 1)[0] + "/13"
    env = service_env_for(url, tmp_path / "artifacts", KTUNE_PREDICT_TIMEOUT_SECONDS="1.5")
    with Deployment.api_only(env, logs_dir) as deployment:
        spec = JobCreate.model_validate(tiny_xor([0, 1, 1, 0])).resolved()
        plan, data = stored_inline(spec)
        record = JobRecord(
            id=str(uuid.uuid4()),
            tenant=TEST_TENANT,
            status=JobStatus.QUEUED,
            spec=spec.without_data().model_dump(mode="json"),
            created_at=utcnow(),
            data=plan,
        )
        store = JobStore.from_url(url)
        store.create_job(record, data)
        best = BestTrial(trial_id="t0", hyperparameters={}, objective_value=1.0, metrics={})
        store.set_job_fields(record.id, best=best)
        response = predict(deployment.client, record.id, XOR_ROWS)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "prediction_unavailable"
    assert response.headers["Retry-After"] == "2"
    assert "retry in 2 s" in response.json()["error"]["message"]


def test_a_reply_no_worker_sends_is_waited_for_only_so_long(redis_url: str) -> None:
    replies = Replies(JobStore.from_url(redis_url, prefix="ktune-replies-test"))
    assert replies.wait(replies.new_id(), 0.3) is None
    reply_id = replies.new_id()
    replies.send(reply_id, {"predictions": []}, keep_seconds=5)
    assert replies.wait(reply_id, 1) == {"predictions": []}
