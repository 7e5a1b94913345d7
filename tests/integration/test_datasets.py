"""Data sets end to end: upload real files, tune on them through real workers, and call the downloaded
model on raw rows with plain Keras."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import Deployment, wait_job

pytestmark = pytest.mark.integration

ROWS = 60


def flowers() -> pa.Table:
    """A classifier's table: raw-scale numbers, a categorical column and string labels, in class order."""
    generator = np.random.default_rng(0)
    species = np.repeat(["setosa", "versicolor", "virginica"], ROWS // 3)
    index = np.repeat([0, 1, 2], ROWS // 3)
    return pa.table(
        {
            "petal length (cm)": (1.5 + 2.5 * index + generator.normal(0, 0.2, ROWS)).round(2),
            "stem mass": (1000 + 800 * index + generator.normal(0, 50, ROWS)).round(1),
            "colour": np.array(["white", "blue", "purple"])[index],
            "species": species,
        }
    )


def file_bytes(table: pa.Table, kind: str) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    if kind == "csv":
        pa_csv.write_csv(table, buffer)
        return "flowers.csv", buffer.getvalue()
    if kind == "parquet":
        pq.write_table(table, buffer)
        return "flowers.parquet", buffer.getvalue()
    numeric = np.column_stack([table.column(0).to_numpy(), table.column(1).to_numpy()])
    np.savez(buffer, x=numeric, y=table.column("species").to_numpy(zero_copy_only=False).astype(str))
    return "flowers.npz", buffer.getvalue()


def upload(api: httpx.Client, name: str, content: bytes) -> dict[str, Any]:
    response = api.post("/v1/datasets", files={"file": (name, content)})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"
    return body


def tiny_job(data: dict[str, Any], task: str = "multiclass_classification", **tuner: Any) -> dict[str, Any]:
    return {
        "task": task,
        "data": data,
        "model": {"hidden_layers": 1, "units": {"values": [8, 16]}},
        "optimizer": {"learning_rate": 0.05},
        "training": {"epochs": 30, "batch_size": 16},
        "tuner": {"algorithm": "random", "max_trials": 2, "seed": 5, **tuner},
    }


def submit(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def best_model(api: httpx.Client, job_id: str, tmp_path: Path) -> Any:
    import keras

    response = api.get(f"/v1/jobs/{job_id}/artifacts/best-model")
    assert response.status_code == 200, response.text
    path = tmp_path / "best.keras"
    path.write_bytes(response.content)
    return keras.models.load_model(path)


@pytest.mark.parametrize("kind", ["csv", "parquet", "npz"])
def test_tune_on_an_upload_and_predict_raw_rows(
    api: httpx.Client, workers: list[str], tmp_path: Path, kind: str
) -> None:
    table = flowers()
    name, content = file_bytes(table, kind)
    dataset = upload(api, name, content)
    assert dataset["rows"] == ROWS and dataset["format"] == kind and not dataset["builtin"]
    types = {c["name"]: c["type"] for c in dataset["columns"]}
    target = "y" if kind == "npz" else "species"
    assert types[target] == "categorical"
    if kind != "npz":
        assert types == {
            "petal length (cm)": "numeric",
            "stem mass": "numeric",
            "colour": "categorical",
            "species": "categorical",
        }

    data = {"dataset": dataset["id"]} if kind == "npz" else {"dataset": dataset["id"], "target": "species"}
    job = submit(api, tiny_job(data))
    assert job["classes"] == ["setosa", "versicolor", "virginica"]
    assert job["data"]["split"]["stratified"] and job["data"]["split"]["validation_rows"] == 12
    done = wait_job(api, job["id"], {"succeeded"})
    assert done["best_trial"]["metrics"]["val_accuracy"] >= 0.9

    model = best_model(api, job["id"], tmp_path)
    rows = [0, 25, 59]  # one of each species
    if kind == "npz":
        raw: Any = np.column_stack([table.column(0).to_numpy(), table.column(1).to_numpy()])[rows]
    else:  # a dict keyed by the header's names, 1-D arrays; strings as dtype=object, as pandas has them
        raw = {
            name: np.array(table.column(name).to_pylist(), dtype=object if name == "colour" else np.float32)
            for name in ("petal length (cm)", "stem mass", "colour")
        }
        raw = {name: values[rows] for name, values in raw.items()}
    probabilities = model.predict(raw, verbose=0)
    assert [done["classes"][i] for i in probabilities.argmax(axis=1)] == ["setosa", "versicolor", "virginica"]


def test_a_builtin_set_end_to_end(api: httpx.Client, workers: list[str], tmp_path: Path) -> None:
    listed = api.get("/v1/datasets").json()["items"]
    builtins = {d["id"]: d for d in listed if d["builtin"]}
    assert set(builtins) == {"iris", "wine", "breast_cancer", "digits", "diabetes"}
    assert builtins["iris"]["rows"] == 150 and builtins["diabetes"]["task"] == "regression"

    job = submit(api, tiny_job({"dataset": "iris"}))  # the target is `target`, scikit-learn's name
    assert job["classes"] == [0, 1, 2] and job["data"]["builtin"]
    done = wait_job(api, job["id"], {"succeeded"})
    from sklearn.datasets import load_iris

    iris = load_iris()
    model = best_model(api, done["id"], tmp_path)
    predicted = model.predict(iris.data.astype(np.float32), verbose=0).argmax(axis=1)
    assert (predicted == iris.target).mean() >= 0.85  # raw measurements in, the scaling is in the model


def test_regression_targets_come_out_in_their_units(
    api: httpx.Client, workers: list[str], tmp_path: Path
) -> None:
    job = submit(api, tiny_job({"dataset": "diabetes"}, task="regression"))
    assert job["data"]["preprocessing"]["scale_target"]
    wait_job(api, job["id"], {"succeeded"})
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes()
    predictions = best_model(api, job["id"], tmp_path).predict(diabetes.data.astype(np.float32), verbose=0)
    assert 100 < float(predictions.mean()) < 200  # targets 25-346, mean 152: not standardized units


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("rows.csv", b"a,b\n1,2\n3,4,5\n", "rows.csv"),
        ("data.parquet", b"a,b\n1,2\n", "not a Parquet file"),
        ("empty.csv", b"a,b\n", "no data rows"),
        ("bad.npz", b"PK\x03\x04garbage", "bad.npz"),
    ],
)
def test_unreadable_files_are_a_422_that_names_the_file(
    api: httpx.Client, name: str, content: bytes, words: str
) -> None:
    response = api.post("/v1/datasets", files={"file": (name, content)})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["fields"][0]["field"] == "file" and words in error["fields"][0]["message"]


def test_a_pickled_npz_is_refused_without_unpickling(api: httpx.Client, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([[1.0]]), y=np.array([_Trap(str(marker))], dtype=object))
    response = api.post("/v1/datasets", files={"file": ("trap.npz", buffer.getvalue())})
    assert response.status_code == 422, response.text
    assert "object arrays" in response.json()["error"]["fields"][0]["message"]
    assert not marker.exists()


class _Trap:
    """Writes a file when unpickled: proof that nothing was unpickled when the file stays absent."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(self.path), "unpickled"))


@pytest.mark.parametrize(
    ("task", "data", "field", "words"),
    [
        ("multiclass_classification", {"target": "nope"}, "data.target", "has no column 'nope'"),
        ("multiclass_classification", {"features": ["colour", "size"]}, "data.features", "no column 'size'"),
        ("binary_classification", {}, "data.target", "exactly 2 classes, the target has 3"),
        ("regression", {}, "data.target", "regression needs a numeric target"),
        (
            "multiclass_classification",
            {"validation_split": 0.01, "shuffle": False},
            "data.validation_split",
            "leaves no row to validate",
        ),
    ],
)
def test_jobs_that_do_not_fit_their_data_set_are_refused(
    api: httpx.Client, task: str, data: dict[str, Any], field: str, words: str
) -> None:
    dataset = upload(api, "flowers.csv", file_bytes(flowers(), "csv")[1])
    body = tiny_job({"dataset": dataset["id"], "target": "species", **data}, task=task)
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()["error"]["fields"][0]
    assert problem["field"] == field and words in problem["message"]


def test_a_target_of_one_class_is_refused(api: httpx.Client) -> None:
    dataset = upload(api, "one.csv", b"size,kind\n1,red\n2,red\n3,red\n")
    body = tiny_job({"dataset": dataset["id"], "target": "kind"}, task="binary_classification")
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422 and "single class" in response.text


def test_missing_cells_are_refused_unless_imputed(api: httpx.Client, workers: list[str]) -> None:
    lines = ["size,kind"] + [f"{'' if i == 4 else i},{'a' if i % 2 else 'b'}" for i in range(30)]
    dataset = upload(api, "gaps.csv", "\n".join(lines).encode())
    size = next(c for c in dataset["columns"] if c["name"] == "size")
    assert size["missing"] == 1 and size["first_missing_row"] == 4
    body = tiny_job({"dataset": dataset["id"], "target": "kind"}, task="binary_classification")
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert "1 missing (empty or NaN) cells, the first in data row 5" in response.text
    body["data"]["preprocessing"] = {"impute": "mean"}
    wait_job(api, submit(api, body)["id"], {"succeeded"})


def test_delete_is_refused_while_a_job_uses_it_and_allowed_after(
    api: httpx.Client, workers: list[str]
) -> None:
    dataset = upload(api, "flowers.csv", file_bytes(flowers(), "csv")[1])
    held = upload(api, "held.csv", file_bytes(flowers(), "csv")[1])
    body = tiny_job({"dataset": dataset["id"], "target": "species", "validation_dataset": held["id"]})
    body["training"]["epochs"] = 5000
    job = submit(api, body)
    for used in (dataset["id"], held["id"]):
        refused = api.delete(f"/v1/datasets/{used}")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "dataset_in_use"
        assert job["id"] in refused.json()["error"]["message"]
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    wait_job(api, job["id"], {"cancelled"})
    assert api.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert api.get(f"/v1/datasets/{dataset['id']}").status_code == 404
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422 and response.json()["error"]["fields"][0]["field"] == "data.dataset"
    assert api.delete("/v1/datasets/iris").status_code == 409


def test_a_200_mb_upload_keeps_the_api_small(deployment: Deployment, tmp_path: Path) -> None:
    """The upload is streamed to disk and read a block at a time: the API's peak RSS grows by far less
    than the file (bound: 150 MB over its RSS before the upload; measured: 71 MB)."""
    assert deployment.api_process is not None
    api_process = psutil.Process(deployment.api_process.pid)
    generator = np.random.default_rng(1)
    path = tmp_path / "big.csv"
    columns = {f"f{i}": generator.normal(0, 1000, 1_000_000) for i in range(20)}
    pa_csv.write_csv(pa.table(columns), path)
    assert path.stat().st_size > 200_000_000
    before = api_process.memory_info().rss
    peak = [before]
    done = False

    def sample() -> None:
        while not done:
            peak.append(api_process.memory_info().rss)
            time.sleep(0.05)

    import threading

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with path.open("rb") as file:
            response = deployment.client.post("/v1/datasets", files={"file": ("big.csv", file)}, timeout=300)
    finally:
        done = True
        sampler.join()
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == 1_000_000
    grown = max(peak) - before
    print(f"API RSS before {before / 1024**2:.0f} MB, peak growth {grown / 1024**2:.0f} MB")
    assert grown < 150 * 1024**2, f"the API grew by {grown / 1024**2:.0f} MB"


def test_a_validation_dataset_validates_every_one_of_its_rows(api: httpx.Client, workers: list[str]) -> None:
    table = flowers()
    train, held = table.take(list(range(0, ROWS, 2))), table.take(list(range(1, ROWS, 2)))
    train_id = upload(api, "train.csv", file_bytes(train, "csv")[1])["id"]
    held_id = upload(api, "held.csv", file_bytes(held, "csv")[1])["id"]
    data = {"dataset": train_id, "target": "species", "validation_dataset": held_id}
    job = submit(api, tiny_job(data))
    split = job["data"]["split"]
    assert split["method"] == "validation_dataset"
    assert (split["train_rows"], split["validation_rows"]) == (ROWS // 2, ROWS // 2)
    done = wait_job(api, job["id"], {"succeeded"})
    assert done["best_trial"]["metrics"]["val_accuracy"] >= 0.9


def test_a_data_set_whose_file_is_gone_is_a_503_not_a_500(deployment: Deployment) -> None:
    api = deployment.client
    dataset = upload(api, "flowers.csv", file_bytes(flowers(), "csv")[1])
    table = Path(deployment.env["KTUNE_ARTIFACT_DIR"]) / "datasets" / dataset["id"] / "table.arrow"
    table.unlink()  # an API whose artifact directory is not the one the upload went to
    response = api.post("/v1/jobs", json=tiny_job({"dataset": dataset["id"], "target": "species"}))
    assert response.status_code == 503 and response.json()["error"]["code"] == "dataset_file_missing"
