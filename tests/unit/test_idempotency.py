"""The Idempotency-Key header: which values are keys, the 422 for one that is not (before the body is read
or Redis is used), and how /docs shows it. What a key does is in tests/integration/test_idempotency.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.idempotency import HEADER, MAX_KEY_CHARS, check_key
from service.core.errors import InvalidRequest
from service.core.idempotency import IdempotencyStore
from service.core.settings import Settings
from service.core.store import JobStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class _NoRedis:
    def register_script(self, script: str) -> object:
        return object()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was used ({name}) on a request that fails before reaching it")


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth="off"))
    app.state.store = JobStore(_NoRedis())  # type: ignore[arg-type]
    app.state.idempotency.redis = _NoRedis()
    return TestClient(app)


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "3f0b6a4e-4a8e-4c53-9d1e-0a4c2b9e8f10",
        "submit 2026-11-27 #1 (retry ok)",
        "!~" + "x" * (MAX_KEY_CHARS - 2),
    ],
)
def test_printable_ascii_up_to_255_characters_is_a_key(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "is empty"),
        ("x" * (MAX_KEY_CHARS + 1), f"is {MAX_KEY_CHARS + 1} characters long"),
        ("café", "holds 'é' at position 3"),
        ("a\tb", "holds '\\t' at position 1"),
        ("a\x7f", "holds '\\x7f' at position 1"),
    ],
)
def test_anything_else_is_a_422_naming_the_header_and_why(key: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_key(key)
    error = raised.value
    assert error.status_code == 422 and error.code == "invalid_idempotency_key"
    [problem] = error.fields
    assert problem.field == HEADER
    assert problem.message.startswith(why) and "1 to 255 printable ASCII characters" in problem.message
    assert len(problem.message) < 200  # a long key is not quoted back


@pytest.mark.parametrize("value", [b"", b"caf\xe9", b"x" * 300])
def test_the_api_refuses_a_bad_key_before_it_reads_the_body(client: TestClient, value: bytes) -> None:
    # The body is no job either: the header's 422 comes first, and Redis is never used.
    response = client.post(
        "/v1/jobs",
        content=b'{"task": "clustering"}',
        headers={"Content-Type": "application/json", HEADER: value},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_idempotency_key"
    assert [f["field"] for f in error["fields"]] == [HEADER]


def test_a_valid_key_does_not_hide_the_bodys_own_422(client: TestClient) -> None:
    body = json.loads((EXAMPLES / "xor-seed.json").read_text())
    body["tuner"]["max_trials"] = 0
    response = client.post("/v1/jobs", json=body, headers={HEADER: "k-1"})
    assert response.status_code == 422, response.text
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["tuner.max_trials"]


def test_docs_show_the_header_and_the_replay_and_conflict_answers(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]
    [parameter] = [p for p in operation["parameters"] if p["name"] == HEADER]
    assert parameter["in"] == "header" and parameter["required"] is False
    assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobPublic"
    }
    assert "idempotency_in_progress" in operation["responses"]["409"]["description"]
    assert "idempotency_key_reused" in operation["responses"]["422"]["description"]


def test_keys_are_named_per_kind_of_request_and_tenant_and_hashed() -> None:
    keys = IdempotencyStore(JobStore.from_url("redis://127.0.0.1:1/0", "kt"))  # names only: no connection
    name = keys.key_name("jobs", "acme", "my key: * [x]")
    assert name.startswith("kt:idempotency:jobs:acme:") and "my key" not in name
    assert name != keys.key_name("jobs", "globex", "my key: * [x]")
    assert name != keys.key_name("datasets", "acme", "my key: * [x]")
    assert name != keys.key_name("jobs", "acme", "my key: * [y]")
