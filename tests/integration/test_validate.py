"""POST /v1/jobs/validate against the real API: a dry run answers as a submit would, and keeps nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((ROOT / "examples" / f"{name}.json").read_text())
    return body


def job_ids(api: httpx.Client) -> list[str]:
    response = api.get("/v1/jobs", params={"limit": 100})
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["items"]]


def test_a_valid_request_is_described_and_nothing_is_stored(api: httpx.Client) -> None:
    before = job_ids(api)
    response = api.post("/v1/jobs/validate", json=example("xor-classifier"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["valid"] is True
    assert answer["metrics"] == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert answer["objective"] == {"name": "val_accuracy", "direction": "max"}
    assert answer["search_space"]["size"] is None  # a continuous learning rate
    names = {hp["name"] for hp in answer["search_space"]["hyperparameters"]}
    assert names == {"hidden_layers", "units", "activation", "dropout", "optimizer", "learning_rate"}
    assert answer["largest_model_parameters"] == 3 * 128 + 2 * 129 * 128 + 129
    assert answer["warnings"] == []
    assert "location" not in response.headers
    assert job_ids(api) == before


def test_a_data_set_job_is_checked_against_the_data_set(api: httpx.Client) -> None:
    body = {"task": "multiclass_classification", "data": {"dataset": "iris"}, "tuner": {"max_trials": 2}}
    before = job_ids(api)
    response = api.post("/v1/jobs/validate", json=body)
    assert response.status_code == 200, response.text
    # 4 numeric features -> 2 layers of 32 (the defaults) -> 3 classes.
    assert response.json()["largest_model_parameters"] == 5 * 32 + 33 * 32 + 33 * 3
    assert job_ids(api) == before


def test_a_dry_run_does_not_attach_the_data_set(api: httpx.Client) -> None:
    csv = "a,b,label\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(20))
    upload = api.post("/v1/datasets", files={"file": ("tiny.csv", csv.encode())})
    assert upload.status_code == 201, upload.text
    dataset_id = upload.json()["id"]
    body = {"task": "binary_classification", "data": {"dataset": dataset_id, "target": "label"}}
    response = api.post("/v1/jobs/validate", json=body)
    assert response.status_code == 200, response.text
    # 2 numeric features -> 2 layers of 32 -> 1 unit.
    assert response.json()["largest_model_parameters"] == 3 * 32 + 33 * 32 + 33
    # No job holds it: it can be deleted at once (a submitted job would make this a 409 dataset_in_use).
    assert api.delete(f"/v1/datasets/{dataset_id}").status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"task": "regression"}',
        json.dumps({**example("xor-classifier"), "tuner": {"max_trials": 10**9}}).encode(),
        json.dumps({**example("xor-classifier"), "objective": {"name": "val_auc"}}).encode(),
        json.dumps({"task": "regression", "data": {"dataset": "iris", "target": "nope"}}).encode(),
        json.dumps({"task": "regression", "data": {"dataset": "no-such-set"}}).encode(),
        b"\xff\xfe",
    ],
    ids=["bad-json", "no-data", "over-limit", "bad-objective", "bad-target", "unknown-dataset", "not-utf8"],
)
def test_an_invalid_request_gets_exactly_what_a_submit_gets(api: httpx.Client, body: bytes) -> None:
    before = job_ids(api)
    headers = {"Content-Type": "application/json"}
    dry = api.post("/v1/jobs/validate", content=body, headers=headers)
    real = api.post("/v1/jobs", content=body, headers=headers)
    assert 400 <= real.status_code < 500, real.text
    assert (dry.status_code, dry.json()) == (real.status_code, real.json())
    assert job_ids(api) == before


def test_a_grid_smaller_than_max_trials_is_warned_about(api: httpx.Client) -> None:
    body = example("xor-seed") | {"tuner": {"algorithm": "grid", "max_trials": 50}}
    body["model"] = {"hidden_layers": 1, "units": {"values": [4, 8]}}
    body["optimizer"] = {"learning_rate": 0.01}
    body["training"] = {"epochs": 5, "batch_size": 4}
    response = api.post("/v1/jobs/validate", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["search_space"]["size"] == 2
    [warning] = answer["warnings"]
    assert warning["code"] == "grid_smaller_than_max_trials"
    assert "50" in warning["message"]


def test_validate_is_not_taken_for_a_job_id(api: httpx.Client) -> None:
    assert api.get("/v1/jobs/validate").status_code == 404
    assert api.post("/v1/jobs/validate/cancel").status_code == 404
