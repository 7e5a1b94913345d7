"""The Python client against a real deployment (Redis, two Celery workers, the API with API keys on)."""

from __future__ import annotations

import itertools
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.api.schemas import JobPublic
from service.client import Client, KtuneError, Unreachable, WaitTimeout
from service.core.predictions import ClassPrediction
from service.core.spec import JobCreate
from service.core.states import JobStatus, TrialStatus
from tests.integration.conftest import ROOT, Deployment, free_port, wait_job

pytestmark = pytest.mark.integration

WAIT_SECONDS = 300


def small_job(epochs: int = 3, max_trials: int = 2) -> dict[str, Any]:
    """The README's XOR classifier as a random search of `max_trials` short trials, two at a time."""
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["name"] = f"client-{uuid.uuid4().hex[:8]}"
    body["training"]["epochs"] = epochs
    body["tuner"].update(algorithm="random", max_trials=max_trials, max_parallel_trials=2)
    return body


def long_job() -> dict[str, Any]:
    """Trials that train for many seconds: a job that is still running when the test acts on it."""
    return small_job(epochs=10_000)


@pytest.fixture
def client(deployment: Deployment) -> Iterator[Client]:
    with Client(str(deployment.client.base_url), deployment.api_key) as client:
        yield client


def test_submit_wait_trials_and_download(client: Client, tmp_path: Path) -> None:
    job = client.submit(small_job())
    assert isinstance(job, JobPublic)
    assert job.status is JobStatus.QUEUED and job.progress.trials_total == 2

    seen: list[JobPublic] = []
    done = client.wait(job.id, timeout=WAIT_SECONDS, on_update=seen.append)

    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.progress.completed == 2 and done.best_trial is not None
    assert seen[0].id == job.id and seen[-1] == done
    assert all(a != b for a, b in itertools.pairwise(seen)), "a job is passed on only when it changed"
    completed = [j.progress.completed for j in seen]
    assert completed == sorted(completed)

    trials = client.trials(job.id)
    assert len(trials) == 2 and {t.status for t in trials} == {TrialStatus.COMPLETED}
    best = max(trials, key=lambda t: t.objective_value or 0.0)
    assert done.best_trial.objective_value == best.objective_value
    assert all(t.executions and t.executions[0].history for t in trials)
    assert all(not t.executions[0].history for t in client.trials(job.id, history=False))

    path = client.download_best_model(job.id, tmp_path / "best.keras")
    assert path == tmp_path / "best.keras"
    assert zipfile.is_zipfile(path)  # a .keras file is a zip archive
    with zipfile.ZipFile(path) as archive:
        assert "config.json" in archive.namelist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras"]  # no partial file left

    rows = [[0, 0], [0, 1], [1, 0], [1, 1]]
    predictions = client.predict(job.id, rows).predictions
    assert len(predictions) == len(rows)
    for prediction in predictions:
        assert isinstance(prediction, ClassPrediction) and prediction.label in (done.classes or [])
        assert abs(sum(prediction.probabilities.values()) - 1) < 1e-4

    with pytest.raises(KtuneError) as finished:
        client.cancel(job.id)
    assert finished.value.status_code == 409 and finished.value.code == "job_finished"
    assert job.id in finished.value.message


def test_finalize_with_a_test_set_then_the_final_model_and_its_card(client: Client, tmp_path: Path) -> None:
    body = small_job()
    job = client.wait(client.submit(body).id, timeout=WAIT_SECONDS)
    with pytest.raises(KtuneError) as early:
        client.download_final_model(job.id, tmp_path / "final.keras")
    assert early.value.status_code == 409 and early.value.code == "no_final_model"

    run = client.finalize(job.id, test=body["data"]["validation"])
    assert run.status.value == "queued" and run.test_rows == len(body["data"]["validation"]["x"])
    ended = client.wait_run(job.id, run, timeout=WAIT_SECONDS, poll_interval=0.5)
    final = ended.finalization
    assert final is not None and final.run_id == run.run_id and final.status.value == "succeeded", final
    assert final.test_metrics is not None and "accuracy" in final.test_metrics

    path = client.download_final_model(job.id, tmp_path / "final.keras")
    assert zipfile.is_zipfile(path)
    card = client.final_model_card(job.id)
    assert job.best_trial is not None and card["trial_id"] == job.best_trial.id
    assert card["hyperparameters"] == job.best_trial.hyperparameters
    assert card["metrics"]["test"] == final.test_metrics and card["run_id"] == run.run_id


def test_a_job_create_model_is_sent_as_its_request(client: Client) -> None:
    job = client.submit(JobCreate.model_validate(small_job(epochs=1, max_trials=1)))
    assert job.spec["training"]["epochs"] == 1 and job.objective.name == "val_accuracy"
    assert client.wait(job.id, timeout=WAIT_SECONDS).status is JobStatus.SUCCEEDED


def test_an_invalid_job_raises_the_servers_422_naming_the_field(client: Client) -> None:
    body = small_job()
    body["objective"] = {"name": "val_nonsense", "direction": "max"}
    with pytest.raises(KtuneError) as raised:
        client.submit(body)
    error = raised.value
    assert error.status_code == 422 and error.code == "invalid_request"
    assert [f.field for f in error.fields] == ["objective.name"]
    assert "val_nonsense" in error.message and "val_accuracy" in error.message  # says what to choose


def test_an_unknown_job_and_a_missing_key_raise_the_servers_error(
    client: Client, deployment: Deployment
) -> None:
    with pytest.raises(KtuneError) as unknown:
        client.get(str(uuid.uuid4()))
    assert unknown.value.status_code == 404 and unknown.value.code == "job_not_found"
    with Client(str(deployment.client.base_url)) as anonymous, pytest.raises(KtuneError) as refused:
        anonymous.get(str(uuid.uuid4()))
    assert refused.value.status_code == 401
    assert refused.value.headers.get("WWW-Authenticate") == "Bearer"


def test_no_model_before_a_completed_trial_is_a_409(client: Client, tmp_path: Path) -> None:
    job = client.submit(long_job())
    try:
        with pytest.raises(KtuneError) as raised:
            client.download_best_model(job.id, tmp_path / "best.keras")
        assert raised.value.status_code == 409 and raised.value.code == "no_best_model"
        assert not list(tmp_path.iterdir())
    finally:
        client.cancel(job.id)


def test_wait_times_out_then_cancel_ends_the_job(client: Client, deployment: Deployment) -> None:
    job = client.submit(long_job())
    wait_job(deployment.client, job.id, {"running"}, timeout=120)
    with pytest.raises(WaitTimeout) as raised:
        client.wait(job.id, timeout=1.5)
    assert isinstance(raised.value, TimeoutError)
    assert raised.value.job.id == job.id and raised.value.job.status is JobStatus.RUNNING

    cancelled = client.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert client.wait(job.id, timeout=5).status is JobStatus.CANCELLED


def test_upload_dataset(client: Client, tmp_path: Path) -> None:
    csv = tmp_path / "points.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    dataset = client.upload_dataset(csv, name="points")
    assert dataset.name == "points" and dataset.format == "csv" and dataset.rows == 20
    assert [c.name for c in dataset.columns] == ["a", "b", "label"]

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    with pytest.raises(KtuneError) as raised:
        client.upload_dataset(ragged)
    assert raised.value.status_code == 422 and raised.value.code == "invalid_dataset"


def test_no_service_raises_unreachable() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", "key") as nobody, pytest.raises(Unreachable):
        nobody.get("anything")
