"""A deployment whose artifacts are on S3 (KTUNE_ARTIFACT_URL, a real S3-protocol server): the API and the
worker share no directory, yet a job tunes on an uploaded data set, its best model downloads through the
API and loads with Keras, and deleting the job and the data set deletes their objects."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.core.blobs_s3 import S3Blobs
from service.core.store import JobStore
from tests.integration.conftest import TEST_TENANT, Deployment, new_bucket, service_env_for, wait_job
from tests.integration.test_datasets import file_bytes, flowers, tiny_job, upload

pytestmark = pytest.mark.integration

PREFIX = "deployment"


def test_a_job_through_s3_artifacts(redis_url: str, s3_settings: dict[str, str], tmp_path: Path) -> None:
    bucket = new_bucket(s3_settings)
    objects = S3Blobs(bucket, PREFIX)  # what the bucket holds, seen from the test
    env = service_env_for(
        # A database of its own: its one worker is the only one /readyz may count, whatever else runs.
        redis_url.rsplit("/", 1)[0] + "/9",
        tmp_path / "api-disk",
        KTUNE_ARTIFACT_URL=f"s3://{bucket}/{PREFIX}",
        KTUNE_KEY_PREFIX=f"s3-{uuid.uuid4().hex[:8]}",
        KTUNE_CHECKPOINT_SECONDS="0",  # epoch checkpoints go to the bucket too, after every chunk
        **s3_settings,
    )
    worker_disk = tmp_path / "worker-disk"
    logs = tmp_path / "logs"
    logs.mkdir()
    deployment = Deployment(env, logs)
    try:
        deployment.start_worker("s3@ktune-test", KTUNE_ARTIFACT_DIR=str(worker_disk))
        deployment.start_api()
        deployment.wait_ready(workers=1)
        _tune_download_and_delete(deployment.client, objects, worker_disk, tmp_path, env)
    finally:
        deployment.stop()


def _tune_download_and_delete(
    api: httpx.Client, objects: S3Blobs, worker_disk: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    import keras

    name, content = file_bytes(flowers(), "csv")
    dataset = upload(api, name, content)
    assert objects.exists(f"datasets/{dataset['id']}/table.arrow")
    body: dict[str, Any] = tiny_job({"dataset": dataset["id"], "target": "species"}, max_trials=1)
    body["training"]["epochs"] = 3
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    wait_job(api, job_id, {"succeeded"}, timeout=240)

    assert (worker_disk / "datasets" / dataset["id"] / "table.arrow").is_file(), "fetched to the worker"
    stored = {info.key: info.size for info in objects.list(f"jobs/{job_id}/")}
    assert list(stored) == [f"jobs/{job_id}/best-model.keras"], "the trial's epoch checkpoint went"
    assert not list((worker_disk / "jobs" / job_id).rglob("*.keras")), "the candidate was moved, not copied"
    assert not (Path(env["KTUNE_ARTIFACT_DIR"]) / "jobs" / job_id).exists(), "nothing on the API's disk"
    jobs = JobStore.from_url(env["KTUNE_REDIS_URL"], env["KTUNE_KEY_PREFIX"])
    table_bytes = objects.size(f"datasets/{dataset['id']}/table.arrow")
    # Counted from the bucket: at least the model and the table (the job's usage is noted as its trial is
    # recorded, while that trial's epoch checkpoint is still stored, so it may count that too).
    assert jobs.usage(TEST_TENANT) >= sum(stored.values()) + table_bytes

    response = api.get(f"/v1/jobs/{job_id}/artifacts/best-model")
    assert response.status_code == 200, response.text
    assert int(response.headers["content-length"]) == len(response.content) == sum(stored.values())
    assert f"{job_id}-best-model.keras" in response.headers["content-disposition"]
    path = tmp_path / "best.keras"
    path.write_bytes(response.content)
    model = keras.models.load_model(path)
    rows = {
        "petal length (cm)": np.array([1.5, 6.5], dtype=np.float32),
        "stem mass": np.array([1000.0, 2600.0], dtype=np.float32),
        "colour": np.array(["white", "purple"], dtype=object),
    }
    assert model.predict(rows, verbose=0).shape == (2, 3)

    # The data set first: one a job was just deleted from counts as in use for a minute (it may be a
    # submit under way).
    assert api.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert objects.list("datasets/") == []
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert objects.list(f"jobs/{job_id}/") == []
    assert api.get(f"/v1/jobs/{job_id}/artifacts/best-model").status_code == 404
