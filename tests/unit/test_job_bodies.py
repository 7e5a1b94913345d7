"""Reading job bodies: 415 for what is not JSON, 400 for what cannot be read as JSON, large bodies parsed
in separate processes with the same answers, and a bounded number of them at once. No Redis: every body
here is refused before the job store is used."""

from __future__ import annotations

import copy
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api import job_bodies
from service.api.app import create_app
from service.core.settings import Limits, Settings
from service.core.store import JobStore
from tests.unit.live_server import serving

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class _NoRedis:
    def register_script(self, script: str) -> object:
        return object()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was used ({name}) on a request that fails before reaching it")


def _app(**settings: Any) -> FastAPI:
    # auth="off": API keys are test_auth.py's
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth="off", **settings))
    app.state.store = JobStore(_NoRedis())  # type: ignore[arg-type]
    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(_app())


@pytest.fixture(scope="module")
def pooled() -> Iterator[TestClient]:
    """Every body with a length is parsed in the pool of processes."""
    app = _app(large_body_bytes=0)
    yield TestClient(app)
    app.state.job_bodies.close()


def seed() -> dict[str, Any]:
    return json.loads((EXAMPLES / "xor-seed.json").read_text())


def post(client: TestClient, body: bytes, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return client.post("/v1/jobs", content=body, headers=headers)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "fields"}
    return error


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_a_body_that_is_not_json_is_a_415(client: TestClient, content_type: str) -> None:
    error = error_of(post(client, json.dumps(seed()).encode(), content_type), 415)
    assert error["code"] == "unsupported_media_type"
    assert "Content-Type: application/json" in error["message"] and content_type in error["message"]


def test_a_body_without_a_content_type_is_a_415(client: TestClient) -> None:
    response = post(client, json.dumps(seed()).encode(), content_type=None)
    assert "content-type" not in response.request.headers
    error = error_of(response, 415)
    assert "no Content-Type" in error["message"]


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/vnd.ktune+json", "Application/JSON"]
)
def test_json_content_types_are_read(client: TestClient, content_type: str) -> None:
    body = seed()
    body["model"]["foo"] = 1
    error = error_of(post(client, json.dumps(body).encode(), content_type), 422)
    assert [f["field"] for f in error["fields"]] == ["model.foo"]


def test_a_body_that_is_not_utf8_is_a_400(client: TestClient) -> None:
    error = error_of(post(client, json.dumps(seed()).encode("utf-16")), 400)
    assert error["code"] == "body_not_utf8"
    assert "byte 0 is invalid" in error["message"]


def test_a_body_nested_too_deep_is_a_400(client: TestClient) -> None:
    body = seed()
    body["name"] = json.loads("[" * 40 + "]" * 40)
    error = error_of(post(client, json.dumps(body).encode()), 400)
    assert error["code"] == "body_too_deep"


def _bad_bodies() -> list[bytes]:
    bodies = [b"", b"[]", b'{"task": ', b'{"task": "regression"} x', b"\xff", b"[" * 50]
    for path, value in [("model.foo", 1), ("data.train.y", [0, 1]), ("tuner.max_trials", 10**6)]:
        body = copy.deepcopy(seed())
        *parents, last = path.split(".")
        node = body
        for part in parents:
            node = node[part]
        node[last] = value
        bodies.append(json.dumps(body).encode())
    return bodies


@pytest.mark.parametrize("body", _bad_bodies())
def test_a_body_parsed_in_a_separate_process_gets_the_same_answer(
    client: TestClient, pooled: TestClient, body: bytes
) -> None:
    here, there = post(client, body), post(pooled, body)
    assert (there.status_code, there.json()) == (here.status_code, here.json())
    assert here.status_code in (400, 422)


def test_a_body_of_unknown_length_is_parsed_in_a_separate_process(pooled: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"task": "regression", '
        yield b'"data": {"train": {"x": [[1]], "y": [1, 2]}}}'

    response = pooled.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {name.lower() for name in response.request.headers}
    assert "1 rows but y has 2" in error_of(response, 422)["fields"][0]["message"]


def test_large_bodies_beyond_the_concurrency_wait_then_get_a_503_with_retry_after() -> None:
    app = _app(
        large_body_bytes=100,
        large_body_concurrency=1,
        large_body_wait_seconds=2,
        limits=Limits(max_body_bytes=1_000),
    )
    body = json.dumps({"task": "regression", "name": "x" * 200}).encode()
    try:
        with serving(app) as port, socket.create_connection(("127.0.0.1", port)) as holder:
            url = f"http://127.0.0.1:{port}/v1/jobs"
            headers = {"content-type": "application/json"}
            # A large body that is still arriving holds the only slot.
            holder.sendall(
                b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:50]
            )
            time.sleep(0.2)
            started = time.monotonic()
            refused = httpx.post(url, content=body, headers=headers, timeout=10)
            assert 1.9 < time.monotonic() - started < 8
            error = error_of(refused, 503)
            assert error["code"] == "busy" and refused.headers["retry-after"] == "2"
            # Neither a small body nor one over the size limit waits for the slot.
            started = time.monotonic()
            assert httpx.post(url, json={"task": "regression"}, timeout=10).status_code == 422
            assert httpx.post(url, content=b"x" * 1_001, headers=headers, timeout=10).status_code == 413
            assert time.monotonic() - started < 1.5  # well under the 2 s wait
            holder.close()  # its slot is given back when the server sees it gone
            time.sleep(0.3)
            error = error_of(httpx.post(url, content=body, headers=headers, timeout=30), 422)
            assert [f["field"] for f in error["fields"]] == ["data"]
    finally:
        app.state.job_bodies.close()


def _die(path: str, limits: Limits, fingerprint: bool = False) -> None:
    """A parse that ends its process, as the kernel's out-of-memory killer would."""
    os._exit(1)


def test_a_lost_parse_process_is_a_503_and_the_next_body_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(large_body_bytes=0)
    client = TestClient(app)
    body = json.dumps({"task": "regression"}).encode()
    try:
        monkeypatch.setattr(job_bodies, "parse_job_file", _die)
        error = error_of(post(client, body), 503)
        assert error["code"] == "parse_failed" and "try again" in error["message"]
        monkeypatch.undo()
        error = error_of(post(client, body), 422)
        assert [f["field"] for f in error["fields"]] == ["data"]
    finally:
        app.state.job_bodies.close()
