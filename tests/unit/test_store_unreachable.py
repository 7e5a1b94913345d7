"""With Redis down every route answers a fixed 503 sentence: Redis' own message (its address, its error
text) goes to the API's log, never to a client (`errors`, `job_service`, `routes_health`, `rate_limit`)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


PORT = _closed_port()
URL = f"redis://127.0.0.1:{PORT}/0"


def redis_message() -> str:
    """What redis-py says about this Redis."""
    with pytest.raises(redis.ConnectionError) as raised:
        redis.Redis.from_url(URL).ping()
    return str(raised.value)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(redis_url=URL, auth="off", artifact_dir=str(tmp_path_factory.mktemp("artifacts")))
    yield TestClient(create_app(settings), raise_server_exceptions=False)


def assert_nothing_of_redis(text: str) -> None:
    message = redis_message()
    assert "Connection refused" in message and str(PORT) in message  # what must not leak is real
    for leak in (message, "Connection refused", "Error 111", f"127.0.0.1:{PORT}", str(PORT)):
        assert leak not in text, f"{leak!r} in {text[:500]}"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/00000000-0000-4000-8000-000000000000"),
        ("GET", "/v1/jobs/00000000-0000-4000-8000-000000000000/trials"),
        ("POST", "/v1/jobs/00000000-0000-4000-8000-000000000000/cancel"),
        ("DELETE", "/v1/jobs/00000000-0000-4000-8000-000000000000"),
        ("GET", "/v1/datasets"),
        ("GET", "/v1/datasets/00000000-0000-4000-8000-000000000000"),
    ],
)
def test_a_lookup_is_a_503_without_redis_text(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
    assert_nothing_of_redis(response.text)


def test_a_new_job_is_a_503_without_redis_text(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        response = client.post(
            "/v1/jobs",
            content=(EXAMPLES / "xor-seed.json").read_bytes(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "unavailable" and "nothing was queued" in error["message"]
    assert_nothing_of_redis(response.text)
    # The limiter let the request through to the store (fails open), and the log has Redis' reason.
    logged = caplog.text
    assert "job rate limit not applied" in logged and "could not store a job" in logged
    assert "Connection refused" in logged


def test_an_upload_is_a_503_without_redis_text(client: TestClient) -> None:
    response = client.post("/v1/datasets", files={"file": ("x.csv", b"a,b\n1,2\n3,4\n")})
    assert response.status_code == 503, response.text
    assert_nothing_of_redis(response.text)


def test_readyz_says_unreachable_without_redis_text(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == "unreachable"
    assert_nothing_of_redis(response.text)


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/jobs/00000000-0000-4000-8000-000000000000", "/v1/jobs/x"])
def test_the_hot_reads_check_of_a_key_is_a_503_without_redis_text(
    tmp_path_factory: pytest.TempPathFactory, path: str
) -> None:
    """With keys on, the job GET and the page check the key in the same round trip as their read: the same
    fixed 503."""
    settings = Settings(redis_url=URL, auth="on", artifact_dir=str(tmp_path_factory.mktemp("artifacts")))
    keyed = TestClient(create_app(settings), raise_server_exceptions=False)
    key = "ktk_0123456789ab_" + "s" * 43
    for _ in range(2):  # the second with the key's tenant remembered, or not, as the first left it
        response = keyed.get(path, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
        assert_nothing_of_redis(response.text)
