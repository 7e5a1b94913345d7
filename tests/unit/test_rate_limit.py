"""The job-creation rate limit's setting and its behaviour without Redis (`service.api.rate_limit`); the
counting itself runs against a real Redis in tests/integration/test_rate_limit.py."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from unittest import mock

import pytest
from fastapi.testclient import TestClient
from limits import parse
from pydantic import ValidationError

from service.api.app import create_app
from service.api.rate_limit import JobRateLimit, _window
from service.core.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def test_the_default_is_thirty_a_minute() -> None:
    with mock.patch.dict(os.environ, {}, clear=True):
        assert Settings().job_rate_limit == "30/minute"
    assert [(i.amount, i.get_expiry()) for i in JobRateLimit(Settings(), "p").items] == [(30, 60)]


@pytest.mark.parametrize("value", ["", "off", " OFF ", "Off"])
def test_off_or_empty_means_no_limit(value: str) -> None:
    with mock.patch.dict(os.environ, {"KTUNE_JOB_RATE_LIMIT": value}):
        settings = Settings()
    assert settings.job_rate_limit == ""
    assert JobRateLimit(settings, "p").items == []


def test_several_limits_may_be_given() -> None:
    limit = JobRateLimit(Settings(job_rate_limit="10/second; 500 per hour"), "p")
    assert [(i.amount, i.get_expiry()) for i in limit.items] == [(10, 1), (500, 3600)]


@pytest.mark.parametrize("value", ["lots", "30", "30/fortnight", "-1/minute"])
def test_a_limit_the_limits_package_cannot_read_fails_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match="job_rate_limit"):
        Settings(job_rate_limit=value)


def test_the_window_reads_as_words() -> None:
    assert _window(parse("30/minute")) == "minute"
    assert _window(parse("5/2 seconds")) == "2 seconds"


def test_with_the_limit_off_redis_is_not_asked(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
        job_rate_limit="off",
        artifact_dir=str(tmp_path),
        auth="off",
    )
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    with caplog.at_level(logging.WARNING):
        response = client.post(
            "/v1/jobs",
            content=(EXAMPLES / "xor-seed.json").read_bytes(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 503  # the store's, as before
    assert "could not store a job" in caplog.text and "job rate limit" not in caplog.text


def test_a_redis_failure_in_the_limiter_is_no_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It fails open: a body the limiter could not count is still validated (422), with a warning logged."""
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0", artifact_dir=str(tmp_path), auth="off"
    )
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    with caplog.at_level(logging.WARNING):
        response = client.post("/v1/jobs", json={"task": "painting"})
    assert response.status_code == 422, response.text
    assert "job rate limit not applied" in caplog.text
