"""Ids in paths (`service.api.deps`, and data-set ids in `dataset_service`) are checked as the ids this
service makes before any store lookup: anything else is a 404 in ktune's error body, never a 500 or 503.

The app's Redis is a closed port, so a lookup would show as a 503: each 404 here proves none was made.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.deps import is_uuid
from service.core.settings import Settings

JOB = str(uuid.uuid4())

BAD_IDS = [
    f"{JOB}:trials",  # another key of the same job, when ids were pasted into key names
    f"{JOB}:data",
    f"{JOB}:oracle",
    "..%2F..",
    "..%2F..%2Fdatasets",
    "%2e%2e",
    JOB.upper(),
    "{" + JOB + "}",
    JOB.replace("-", ""),
    JOB[:-1] + "%00",
    "é" * 36,
    "\u202e" + JOB[1:],
    "x" * 10_000,
    "*",
]

JOB_ROUTES = [
    ("GET", "/v1/jobs/{}"),
    ("GET", "/v1/jobs/{}/trials"),
    ("POST", "/v1/jobs/{}/cancel"),
    ("DELETE", "/v1/jobs/{}"),
    ("GET", "/v1/jobs/{}/artifacts/best-model"),
    ("GET", "/v1/jobs/{}/artifacts/best-hyperparameters"),
]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{_closed_port()}/0", auth="off"))
    return TestClient(app, raise_server_exceptions=False)


def not_found(response: Any, codes: set[str]) -> None:
    assert response.status_code == 404, response.text[:300]
    error = response.json()["error"]
    assert error["code"] in codes, error
    assert len(response.content) < 1_000, "an error message quotes at most a prefix of the id"


@pytest.mark.parametrize(("method", "path"), JOB_ROUTES)
@pytest.mark.parametrize("job_id", BAD_IDS, ids=lambda text: text[:40])
def test_a_job_id_that_is_no_uuid_is_a_404_without_a_lookup(
    client: TestClient, method: str, path: str, job_id: str
) -> None:
    # "not_found": a path that no longer fits a route once %2F is decoded to "/".
    not_found(client.request(method, path.format(job_id)), {"job_not_found", "not_found"})


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("dataset_id", BAD_IDS, ids=lambda text: text[:40])
def test_a_dataset_id_that_is_no_uuid_nor_built_in_is_a_404_without_a_lookup(
    client: TestClient, method: str, dataset_id: str
) -> None:
    not_found(client.request(method, f"/v1/datasets/{dataset_id}"), {"dataset_not_found", "not_found"})


def test_a_real_id_does_reach_the_store(client: TestClient) -> None:
    """The other side: with a well-formed id the lookup happens, and the closed port shows it (a 503)."""
    assert client.get(f"/v1/jobs/{JOB}").status_code == 503
    assert client.get(f"/v1/datasets/{JOB}").status_code == 503


def test_is_uuid_takes_only_the_form_this_service_makes() -> None:
    assert is_uuid(JOB)
    assert not any(is_uuid(text) for text in BAD_IDS)
