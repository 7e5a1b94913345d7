"""The job-creation rate limit against a real Redis: 429 with Retry-After once a caller is over it, per API
key, shared by API replicas. Apps run in this process; the start message is recorded, not sent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.auth import Caller, authenticate
from service.core import queue
from service.core.settings import Settings
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

SEED = (ROOT / "examples" / "xor-seed.json").read_bytes()
MakeApp = Callable[[str], FastAPI]  # an app with this KTUNE_JOB_RATE_LIMIT


def _caller(request: Request) -> Caller:
    """Callers named by test headers, in place of the real authentication."""
    return Caller(request.headers.get("x-tenant", "local"), request.headers.get("x-key"))


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(queue, "send_start_job", lambda job_id, *_: calls.append(job_id))
    return calls


@pytest.fixture
def make_app(redis_url: str, tmp_path: Path) -> MakeApp:
    """Apps on one key prefix of their own: as API replicas of one deployment."""
    prefix = f"rate-{uuid.uuid4().hex[:8]}"

    def make(limit: str) -> FastAPI:
        settings = Settings(
            redis_url=redis_url,
            key_prefix=prefix,
            artifact_dir=str(tmp_path),
            job_rate_limit=limit,
            trusted_hosts=["testserver"],
        )
        app = create_app(settings)
        app.dependency_overrides[authenticate] = _caller
        return app

    return make


def post(client: TestClient, **headers: str) -> tuple[int, dict[str, str], dict[str, object]]:
    response = client.post("/v1/jobs", content=SEED, headers={"Content-Type": "application/json", **headers})
    return response.status_code, dict(response.headers), response.json()


def test_a_key_over_the_limit_gets_a_429_with_retry_after(make_app: MakeApp, sent: list[str]) -> None:
    client = TestClient(make_app("3/minute"))
    assert [post(client, **{"x-key": "k1"})[0] for _ in range(3)] == [202, 202, 202]
    status, headers, body = post(client, **{"x-key": "k1"})
    assert status == 429
    assert 1 <= int(headers["retry-after"]) <= 60
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == "rate_limited" and error["fields"] == []
    assert "at most 3 per minute" in error["message"] and f"{headers['retry-after']} s" in error["message"]
    assert len(sent) == 3, "the refused request queued nothing"

    # Another key of the same tenant, and another tenant with auth off, have their own counts.
    assert post(client, **{"x-key": "k2"})[0] == 202
    assert post(client, **{"x-tenant": "other"})[0] == 202
    assert post(client, **{"x-key": "k1"})[0] == 429


def test_every_post_counts_even_an_invalid_one(make_app: MakeApp, sent: list[str]) -> None:
    client = TestClient(make_app("2/minute"))
    assert client.post("/v1/jobs", json={"task": "painting"}).status_code == 422
    assert post(client)[0] == 202
    assert client.post("/v1/jobs", json={"task": "painting"}).status_code == 429


def test_api_replicas_share_the_count(make_app: MakeApp, sent: list[str]) -> None:
    first, second = TestClient(make_app("3/minute")), TestClient(make_app("3/minute"))
    assert [post(first)[0], post(second)[0], post(first)[0]] == [202, 202, 202]
    assert post(second)[0] == 429


def test_the_window_moves(make_app: MakeApp, sent: list[str]) -> None:
    client = TestClient(make_app("2/2 seconds"))
    assert [post(client)[0] for _ in range(3)] == [202, 202, 429]
    status, headers, _ = post(client)
    assert status == 429 and headers["retry-after"] in ("1", "2")
    time.sleep(2.1)
    assert post(client)[0] == 202


def test_off_means_no_limit(make_app: MakeApp, sent: list[str]) -> None:
    client = TestClient(make_app("off"))
    assert {post(client)[0] for _ in range(5)} == {202}


def test_dry_runs_are_counted_apart_from_job_creation(make_app: MakeApp, sent: list[str]) -> None:
    client = TestClient(make_app("2/minute"))
    headers = {"Content-Type": "application/json"}

    def validate() -> int:
        return client.post("/v1/jobs/validate", content=SEED, headers=headers).status_code

    assert [validate(), validate()] == [200, 200]
    refused = client.post("/v1/jobs/validate", content=SEED, headers=headers)
    assert refused.status_code == 429
    assert "job validations" in refused.json()["error"]["message"]
    assert [post(client)[0], post(client)[0], post(client)[0]] == [202, 202, 429]
    assert len(sent) == 2, "dry runs queued nothing"
