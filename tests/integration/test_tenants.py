"""Two tenants on one service: each sees only its own jobs, trials, models and data sets.

Another tenant's resource answers exactly as one that does not exist (404, never 403), on every route.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Deployment, wait_job
from tests.integration.test_datasets import submit, tiny_job, upload

pytestmark = pytest.mark.integration

CSV = b"a,b,label\n" + b"".join(f"{i % 7},{i % 3},{'xy'[i % 2]}\n".encode() for i in range(60))


@pytest.fixture(scope="module")
def owner(deployment: Deployment) -> httpx.Client:
    return deployment.client_for(f"owner-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def stranger(deployment: Deployment) -> httpx.Client:
    return deployment.client_for(f"stranger-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def owned(owner: httpx.Client, workers: list[str]) -> dict[str, Any]:
    """A data set of the owner's, and a job of the owner's on it that has succeeded (with a best model)."""
    dataset = upload(owner, "owned.csv", CSV)
    job = submit(
        owner,
        tiny_job({"dataset": dataset["id"], "target": "label"}, task="binary_classification", max_trials=1),
    )
    wait_job(owner, job["id"], {"succeeded"}, timeout=240)
    return {"dataset": dataset["id"], "job": job["id"]}


def _same_as_missing(client: httpx.Client, method: str, path: str, real: str) -> None:
    """`client` gets for `real` exactly what it gets for an id that was never made, but for the id."""
    missing = str(uuid.uuid4())
    answer = client.request(method, path.format(real))
    unknown = client.request(method, path.format(missing))
    assert answer.status_code == unknown.status_code == 404, (path, answer.text)
    assert answer.json()["error"]["code"] == unknown.json()["error"]["code"]
    assert answer.json()["error"]["message"].replace(real, "X") == unknown.json()["error"]["message"].replace(
        missing, "X"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/{}"),
        ("GET", "/v1/jobs/{}/trials"),
        ("POST", "/v1/jobs/{}/cancel"),
        ("DELETE", "/v1/jobs/{}"),
        ("GET", "/v1/jobs/{}/artifacts/best-model"),
        ("GET", "/v1/jobs/{}/artifacts/best-hyperparameters"),
    ],
)
def test_another_tenants_job_is_not_found_on_every_route(
    owner: httpx.Client, stranger: httpx.Client, owned: dict[str, Any], method: str, path: str
) -> None:
    _same_as_missing(stranger, method, path, owned["job"])
    if method == "GET":
        assert owner.get(path.format(owned["job"])).status_code == 200, "the owner still may"


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/datasets/{}"), ("DELETE", "/v1/datasets/{}")])
def test_another_tenants_data_set_is_not_found(
    owner: httpx.Client, stranger: httpx.Client, owned: dict[str, Any], method: str, path: str
) -> None:
    _same_as_missing(stranger, method, path, owned["dataset"])


def test_nothing_a_stranger_tried_changed_the_owners_resources(
    owner: httpx.Client, stranger: httpx.Client, owned: dict[str, Any]
) -> None:
    stranger.post(f"/v1/jobs/{owned['job']}/cancel")
    stranger.delete(f"/v1/jobs/{owned['job']}")
    stranger.delete(f"/v1/datasets/{owned['dataset']}")
    assert owner.get(f"/v1/jobs/{owned['job']}").json()["status"] == "succeeded"
    assert owner.get(f"/v1/jobs/{owned['job']}/artifacts/best-model").status_code == 200
    assert owner.get(f"/v1/datasets/{owned['dataset']}").status_code == 200


def test_lists_show_only_the_callers_own(
    owner: httpx.Client, stranger: httpx.Client, owned: dict[str, Any]
) -> None:
    theirs = submit(stranger, tiny_job({"dataset": "iris"}, max_trials=1))["id"]
    for status in (None, "succeeded"):
        params = {"limit": 100, **({"status": status} if status else {})}
        mine = {job["id"] for job in owner.get("/v1/jobs", params=params).json()["items"]}
        seen = {job["id"] for job in stranger.get("/v1/jobs", params=params).json()["items"]}
        assert owned["job"] in mine and owned["job"] not in seen
        assert theirs not in mine
    assert theirs in {job["id"] for job in stranger.get("/v1/jobs").json()["items"]}
    owner_sets = [d["id"] for d in owner.get("/v1/datasets", params={"limit": 100}).json()["items"]]
    stranger_sets = [d["id"] for d in stranger.get("/v1/datasets", params={"limit": 100}).json()["items"]]
    assert owned["dataset"] in owner_sets and owned["dataset"] not in stranger_sets
    assert "iris" in owner_sets and "iris" in stranger_sets, "built-in sets are everyone's"
    stranger.post(f"/v1/jobs/{theirs}/cancel")


def test_a_job_cannot_name_another_tenants_data_set(stranger: httpx.Client, owned: dict[str, Any]) -> None:
    body = tiny_job({"dataset": owned["dataset"], "target": "label"}, task="binary_classification")
    response = stranger.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["fields"]
    assert problem["field"] == "data.dataset" and "no data set with id" in problem["message"]
