"""Authentication of /v1 requests: the Bearer header, the 401 body and header, KTUNE_AUTH=off and where it is
allowed. The key store is a stand-in here; tests/integration/test_api_keys.py runs the real one on Redis."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.api.app import create_app
from service.api.auth import (
    LOCAL_TENANT,
    CallerDep,
    UnsafeAuthSetting,
    authenticate,
    is_loopback,
    key_presented,
)
from service.core.api_keys import ApiKey
from service.core.settings import Settings

GOOD = "ktk_0123456789ab_" + "s" * 43
WELL_FORMED_BUT_UNKNOWN = "ktk_ba9876543210_" + "x" * 43


class _Keys:
    """Knows one key, GOOD, of tenant acme; counts the checks."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def verify(self, token: str) -> ApiKey | None:
        self.checked.append(token)
        if token != GOOD:
            return None
        return ApiKey("0123456789ab", "acme", datetime(2026, 1, 1, tzinfo=UTC), None)

    def verify_with(self, token: str, reads: Any) -> tuple[ApiKey | None, list[Any]]:
        return self.verify(token), []


def _app(**settings: Any) -> tuple[FastAPI, _Keys]:
    """The API with a probe route answering the caller it was given, on a store that is never reached."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", **settings))
    keys = _Keys()
    app.state.api_keys = keys
    probe = APIRouter(prefix="/v1/probe", dependencies=[Depends(authenticate)])

    @probe.get("")
    def whoami(caller: CallerDep) -> dict[str, Any]:
        return {"tenant": caller.tenant, "key_id": caller.key_id}

    app.include_router(probe)
    return app, keys


@pytest.fixture
def keyed() -> tuple[TestClient, _Keys]:
    app, keys = _app()
    return TestClient(app), keys


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_401(response: Any, code: str) -> str:
    """The response is ktune's 401: WWW-Authenticate: Bearer and the usual error body; returns its message."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == code and body["error"]["fields"] == []
    message: str = body["error"]["message"]
    return message


def test_auth_is_on_by_default_and_reads_ktune_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KTUNE_AUTH", raising=False)
    assert Settings().auth == "on"
    monkeypatch.setenv("KTUNE_AUTH", "off")
    assert Settings().auth == "off"
    monkeypatch.setenv("KTUNE_AUTH", "maybe")
    with pytest.raises(ValidationError):
        Settings()


# The probe depends on `authenticate`; the job GET reads the key itself (`key_presented`): both answer alike.
KEYED_PATHS = ["/v1/probe", "/v1/jobs/0b6e4a52-55a4-4c4f-9a39-3c1f3e4b8a10"]


@pytest.mark.parametrize("path", KEYED_PATHS)
def test_a_request_without_a_key_is_a_401_that_says_how_to_send_one(
    keyed: tuple[TestClient, _Keys], path: str
) -> None:
    client, keys = keyed
    message = assert_401(client.get(path), "unauthorized")
    assert "Authorization: Bearer" in message and "keys create" in message
    assert keys.checked == [], "nothing to look up"


@pytest.mark.parametrize("path", KEYED_PATHS)
@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "", GOOD, "Token " + GOOD])
def test_an_authorization_header_that_is_not_bearer_with_a_key_is_a_401(
    keyed: tuple[TestClient, _Keys], header: str, path: str
) -> None:
    client, keys = keyed
    assert "Bearer <API key>" in assert_401(
        client.get(path, headers={"Authorization": header}), "unauthorized"
    )
    assert keys.checked == []


@pytest.mark.parametrize("path", KEYED_PATHS)
@pytest.mark.parametrize("token", [WELL_FORMED_BUT_UNKNOWN, "not-a-key", GOOD + "x"])
def test_a_wrong_key_is_a_401_that_never_quotes_it(
    keyed: tuple[TestClient, _Keys], token: str, path: str
) -> None:
    client, _ = keyed
    response = client.get(path, headers=_bearer(token))
    assert token not in assert_401(response, "invalid_api_key")
    assert token not in response.text


def test_a_valid_key_names_its_tenant_and_is_checked_once_a_request(keyed: tuple[TestClient, _Keys]) -> None:
    client, keys = keyed
    response = client.get("/v1/probe", headers=_bearer(GOOD))
    assert response.status_code == 200
    assert response.json() == {"tenant": "acme", "key_id": "0123456789ab"}
    # The router's dependency and the route's CallerDep are one call (FastAPI caches it per request) ...
    assert keys.checked == [GOOD]
    # ... and nothing is remembered between requests, so a revoked key is refused on the next one.
    client.get("/v1/probe", headers=_bearer(GOOD))
    assert keys.checked == [GOOD, GOOD]


def test_the_scheme_is_case_insensitive(keyed: tuple[TestClient, _Keys]) -> None:
    client, _ = keyed
    assert client.get("/v1/probe", headers={"Authorization": f"bearer {GOOD}"}).status_code == 200


@pytest.mark.parametrize("header", [f"Bearer {GOOD}", f"bearer {GOOD}", f"BEARER   {GOOD} "])
def test_the_job_gets_reading_of_the_key_is_bearers(header: str) -> None:
    app, _ = _app()
    request = Request({"type": "http", "app": app, "headers": [(b"authorization", header.encode())]})
    assert key_presented(request) == GOOD
    app.state.settings = Settings(redis_url="redis://127.0.0.1:1/0", auth="off")
    assert key_presented(request) is None


def test_every_v1_route_needs_a_key_before_anything_else(keyed: tuple[TestClient, _Keys]) -> None:
    """A 401 comes before a 404 for a bad id, a 415 or 422 for a bad body, or a 422 for a bad query."""
    client, _ = keyed
    for method, path in [
        ("GET", "/v1/jobs/not-a-uuid"),
        ("GET", "/v1/jobs?limit=0"),
        ("POST", "/v1/jobs"),
        ("POST", "/v1/datasets"),
        ("GET", "/v1/datasets/iris"),
        ("DELETE", "/v1/datasets/iris"),
    ]:
        assert_401(client.request(method, path, content=b"{"), "unauthorized")
    assert client.get("/v1/datasets/iris", headers=_bearer(GOOD)).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/docs", "/openapi.json"])
def test_health_docs_and_schema_need_no_key(keyed: tuple[TestClient, _Keys], path: str) -> None:
    client, _ = keyed
    assert client.get(path).status_code == 200


def test_with_auth_off_every_caller_is_the_local_tenant(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.api.auth"):
        app, keys = _app(auth="off", host="127.0.0.1")
    assert any("AUTHENTICATION IS OFF" in r.getMessage() for r in caplog.records), "a loud warning"
    client = TestClient(app)
    expected = {"tenant": LOCAL_TENANT, "key_id": None}
    assert client.get("/v1/probe").json() == expected
    assert client.get("/v1/probe", headers=_bearer(WELL_FORMED_BUT_UNKNOWN)).json() == expected
    assert keys.checked == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_auth_may_be_off_on_a_loopback_address(host: str) -> None:
    assert is_loopback(host)
    create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth="off", host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "api.example.com", ""])
def test_the_api_refuses_auth_off_on_any_other_address(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(UnsafeAuthSetting, match="KTUNE_AUTH=off is allowed only") as refused:
        create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth="off", host=host))
    assert f"KTUNE_HOST={host}" in str(refused.value)
    create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth="on", host=host))  # keys: any address


def test_a_key_checked_while_redis_is_down_is_a_503_not_a_401() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    response = TestClient(app, raise_server_exceptions=False).get(
        "/v1/jobs", headers=_bearer(WELL_FORMED_BUT_UNKNOWN)
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


def test_the_schema_declares_the_bearer_scheme_and_the_401_of_every_v1_operation() -> None:
    schema = TestClient(create_app(Settings(redis_url="redis://127.0.0.1:1/0"))).get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert [(s["type"], s["scheme"]) for s in schemes.values()] == [("http", "bearer")]
    (name,) = schemes
    operations = [(path, op) for path, ops in schema["paths"].items() for op in ops.values()]
    keyed = [(path, op) for path, op in operations if path.startswith("/v1/")]
    assert len(keyed) >= 12
    for path, op in keyed:
        assert op["security"] == [{name: []}], path
        unauthorized = op["responses"]["401"]
        body = unauthorized["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ErrorBody"}, path
        assert "WWW-Authenticate" in unauthorized["headers"]
    for path, op in operations:
        if not path.startswith("/v1/"):
            assert "security" not in op and "401" not in op["responses"], path
