"""A job request's callback_url is refused with a 422 naming it, before anything is queued."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.api.callbacks import check_callback
from service.core.errors import InvalidRequest
from service.core.settings import Settings
from service.core.spec import JobCreate

ROOT = Path(__file__).resolve().parents[2]


def spec(**fields: Any) -> JobCreate:
    body = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    return JobCreate.model_validate({**body, **fields})


def refusal(url: str, **settings: Any) -> str:
    with pytest.raises(InvalidRequest) as caught:
        check_callback(spec(callback_url=url), Settings(**{"webhook_secret": "k", **settings}), lambda: None)
    [problem] = caught.value.fields
    assert problem.field == "callback_url"
    return problem.message


def test_a_loopback_or_private_receiver_is_refused_unless_its_host_is_allowed() -> None:
    assert "not a public address" in refusal("http://127.0.0.1:9000/hook")
    assert "not a public address" in refusal("http://10.0.0.7/hook")
    check_callback(
        spec(callback_url="http://127.0.0.1:9000/hook"),
        Settings(webhook_secret="k", webhook_allowed_hosts="127.0.0.1"),  # type: ignore[arg-type]
        lambda: None,
    )


def test_without_a_signing_secret_no_callback_is_accepted() -> None:
    assert "KTUNE_WEBHOOK_SECRET" in refusal("https://93.184.215.14/hook", webhook_secret="")
    # The tenant's own secret signs its webhooks, with or without the service's.
    check_callback(spec(callback_url="https://93.184.215.14/hook"), Settings(webhook_secret=""), lambda: "t")


def test_no_callback_url_needs_nothing() -> None:
    def never() -> str:
        raise AssertionError("a job without callback_url reads no secret")

    check_callback(spec(), Settings(webhook_secret=""), never)


def test_the_request_itself_refuses_other_schemes() -> None:
    with pytest.raises(ValidationError, match="http:// or https://"):
        spec(callback_url="gopher://example.com/")
