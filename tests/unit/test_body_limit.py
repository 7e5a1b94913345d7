"""Bodies that arrive too slowly: a 408 and a closed connection, over real connections to uvicorn."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from service.api.app import create_app
from service.core.settings import Settings
from service.core.store import JobStore
from tests.unit.live_server import read_response, serving

TIMEOUT = 1.0


class _NoRedis:
    def register_script(self, script: str) -> object:
        return object()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was used ({name}) on a request that fails before reaching it")


def _app() -> FastAPI:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", body_timeout_seconds=TIMEOUT, auth="off")
    app = create_app(settings)  # API keys: test_auth.py
    app.state.store = JobStore(_NoRedis())  # type: ignore[arg-type]
    return app


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with serving(_app()) as port:
        yield port


def _head(length: int) -> bytes:
    return (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _status_and_error(response: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)["error"]


def test_a_body_that_stops_arriving_is_a_408_and_the_connection_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(1_000) + b'{"task": ')
        started = time.monotonic()
        response = read_response(sock, timeout=TIMEOUT + 10)
        elapsed = time.monotonic() - started
    status, headers, error = _status_and_error(response)
    assert status == 408 and headers["connection"] == "close"
    assert error["code"] == "body_timeout" and f"{TIMEOUT:g} seconds" in error["message"]
    # Answered at the limit, and the server closed the connection (read_response saw its end).
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 5


def test_a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_limit(port: int) -> None:
    body = b'{"name": "' + b"x" * 500 + b'"}'
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(len(body)))
        started = time.monotonic()
        for byte in body:  # each byte arrives well within any per-read timeout; the whole never does
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            if select.select([sock], [], [], 0.05)[0]:
                break
        response = read_response(sock, timeout=10)
        elapsed = time.monotonic() - started
    assert _status_and_error(response)[0] == 408
    assert elapsed < TIMEOUT + 5


def test_a_slow_body_that_arrives_in_time_is_read(port: int) -> None:
    body = b'{"task": "regression", "name": "slow but in time"}'
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(len(body)))
        for start in range(0, len(body), 20):
            time.sleep(TIMEOUT / 10)
            sock.sendall(body[start : start + 20])
        status, _, error = _status_and_error(read_response(sock, timeout=0.5 + TIMEOUT))
    assert status == 422 and error["fields"] == [{"field": "data", "message": "is required"}]


def test_a_request_without_a_body_is_not_timed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(TIMEOUT * 1.5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response = read_response(sock)
    assert response.count(b"HTTP/1.1 200") == 2
