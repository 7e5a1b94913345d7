"""Trusted hosts (`service.api.trusted_hosts`, KTUNE_TRUSTED_HOSTS): a request for a host the service is not
gets a 400 in ktune's error body; the default answers local use only."""

from __future__ import annotations

import os
import socket
from typing import Any
from unittest import mock

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.api.app import create_app
from service.core.settings import LOCAL_HOSTS, Settings
from tests.unit.live_server import read_response, serving

CLOSED = "redis://127.0.0.1:1/0"  # nothing listens: /healthz and refusals never need Redis


def client(hosts: list[str], base_url: str) -> TestClient:
    app = create_app(Settings(redis_url=CLOSED, trusted_hosts=hosts))
    return TestClient(app, base_url=base_url, raise_server_exceptions=False)


def refused(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == "invalid_host" and body["fields"] == []
    return body


def test_the_default_is_the_loopback_names() -> None:
    with mock.patch.dict(os.environ, {}, clear=True):
        assert Settings().trusted_hosts == ["127.0.0.1", "localhost", "[::1]"] == list(LOCAL_HOSTS)


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8000", "http://localhost", "http://[::1]:8000"])
def test_local_use_is_answered_by_default(base_url: str) -> None:
    assert client(list(LOCAL_HOSTS), base_url).get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "base_url", ["http://evil.example", "http://127.0.0.2:8000", "http://localhost.evil.example"]
)
def test_another_host_is_refused_with_ktunes_error_body(base_url: str) -> None:
    api = client(list(LOCAL_HOSTS), base_url)
    body = refused(api.get("/healthz"))
    assert base_url.split("//")[1] in body["message"] and "KTUNE_TRUSTED_HOSTS" in body["message"]
    # Refused before any route runs: a job body is never read, a job id never looked up.
    refused(api.post("/v1/jobs", json={"task": "regression"}))
    refused(api.get("/v1/jobs/00000000-0000-4000-8000-000000000000"))


def test_a_wildcard_admits_subdomains_and_no_www_redirect_is_made() -> None:
    hosts = ["*.example.com", "www.example.org"]
    assert client(hosts, "http://api.example.com").get("/healthz").status_code == 200
    refused(client(hosts, "http://example.com").get("/healthz"))
    # Starlette would redirect example.org to www.example.org; an API answers 400 instead.
    refused(client(hosts, "http://example.org").get("/healthz", follow_redirects=False))


def test_a_star_admits_any_host() -> None:
    assert client(["*"], "http://anything.example").get("/healthz").status_code == 200


def test_a_request_without_a_host_header_is_refused() -> None:
    app = create_app(Settings(redis_url=CLOSED, trusted_hosts=list(LOCAL_HOSTS)))
    with serving(app) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")  # HTTP/1.0 may leave Host out
        head, _, body = read_response(sock).partition(b"\r\n\r\n")
    assert head.split()[1] == b"400"
    assert b'"code":"invalid_host"' in body and b"no Host header" in body


@pytest.mark.parametrize(
    ("env", "hosts"),
    [
        ("api.example.com", ["api.example.com"]),
        (" api.example.com , 10.0.0.5,", ["api.example.com", "10.0.0.5"]),
        ('["api.example.com", "[::1]"]', ["api.example.com", "[::1]"]),
        ("[::1],localhost", ["[::1]", "localhost"]),
        ("*", ["*"]),
    ],
)
def test_the_setting_reads_a_comma_separated_or_json_list(env: str, hosts: list[str]) -> None:
    with mock.patch.dict(os.environ, {"KTUNE_TRUSTED_HOSTS": env}):
        assert Settings().trusted_hosts == hosts


@pytest.mark.parametrize("env", ["", ",", "api.example.com:8000", "::1", "a.*.example.com", "*example.com"])
def test_a_host_list_that_could_never_match_fails_at_start(env: str) -> None:
    with mock.patch.dict(os.environ, {"KTUNE_TRUSTED_HOSTS": env}), pytest.raises(ValidationError):
        Settings()
