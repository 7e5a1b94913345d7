"""The /v1/datasets routes without Redis: what is refused before any record is touched, and built-in sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.api_keys import ApiKeyStore
from service.core.dataset_store import DatasetStore
from service.core.settings import Limits, Settings
from service.core.store import JobStore


class _NoRedis:
    """A Redis client that must not be used, but for reading a tenant's quotas and usage (none)."""

    def register_script(self, script: str) -> object:
        return object()

    def hgetall(self, key: str) -> dict[str, str]:
        assert key.endswith(":quotas"), key
        return {}

    def hvals(self, key: str) -> list[str]:
        assert key.endswith(":usage"), key
        return []

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was used ({name})")


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        artifact_dir=str(tmp_path),
        limits=Limits(max_dataset_bytes=2_000),
        auth="off",  # API keys: test_auth.py
    )
    app = create_app(settings)
    app.state.store = JobStore(_NoRedis())  # type: ignore[arg-type]
    app.state.datasets = DatasetStore(app.state.store)
    app.state.api_keys = ApiKeyStore(app.state.store)
    return TestClient(app)


def error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


def test_a_file_over_the_limit_is_a_413(client: TestClient, tmp_path: Path) -> None:
    big = b"a,b\n" + b"1,2\n" * 20_000
    response = client.post("/v1/datasets", files={"file": ("big.csv", big)})
    assert response.status_code == 413
    assert "limit of" in error(response)["message"]
    assert not any(tmp_path.rglob("*.*"))  # refused from its Content-Length: nothing was written


def test_a_body_that_is_not_multipart_is_a_415(client: TestClient) -> None:
    response = client.post("/v1/datasets", json={"file": "a,b\n1,2\n"})
    assert response.status_code == 415
    assert "curl -F file=@data.csv" in error(response)["message"]


def test_an_upload_without_a_file_field_names_it(client: TestClient) -> None:
    response = client.post("/v1/datasets", data={"name": "no file"}, files={"other": ("x.csv", b"a\n1\n")})
    assert response.status_code == 422
    assert error(response)["fields"][0]["field"] == "file"


def test_an_unreadable_file_is_a_422_and_leaves_no_files(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/v1/datasets", files={"file": ("x.parquet", b"a,b\n1,2\n")})
    assert response.status_code == 422
    assert error(response)["code"] == "invalid_dataset"
    assert "not a Parquet file" in error(response)["fields"][0]["message"]
    assert not any((tmp_path / "datasets").rglob("*.*"))


def test_built_in_sets_need_no_store(client: TestClient) -> None:
    iris = client.get("/v1/datasets/iris").json()
    assert iris["builtin"] and iris["rows"] == 150 and iris["task"] == "classification"
    assert [c["name"] for c in iris["columns"]][-1] == "target"
    refused = client.delete("/v1/datasets/iris")
    assert refused.status_code == 409 and error(refused)["code"] == "builtin_dataset"


def test_an_id_that_is_no_uuid_is_a_404_before_any_lookup(client: TestClient) -> None:
    response = client.get("/v1/datasets/../../jobs")
    assert response.status_code == 404
    response = client.get("/v1/datasets/not-an-id")
    assert response.status_code == 404 and error(response)["code"] == "dataset_not_found"
    assert "built-in set (iris, wine, breast_cancer, digits, diabetes)" in error(response)["message"]


def test_a_name_longer_than_a_jobs_is_refused(client: TestClient) -> None:
    response = client.post("/v1/datasets", data={"name": "n" * 201}, files={"file": ("x.csv", b"a\n1\n")})
    assert response.status_code == 422
    assert error(response)["fields"][0] == {"field": "name", "message": "is 201 characters; at most 200"}


def test_a_cursor_not_handed_out_is_a_422(client: TestClient) -> None:
    response = client.get("/v1/datasets", params={"cursor": "garbage"})
    assert response.status_code == 422
    assert [f["field"] for f in error(response)["fields"]] == ["cursor"]
