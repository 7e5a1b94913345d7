"""The client's errors rebuilt from the service's answers (service/client/errors.py)."""

from __future__ import annotations

import httpx

from service.client.errors import KtuneError, error_from


def test_the_error_body_gives_status_code_message_fields_and_retry_after() -> None:
    body = {
        "error": {
            "code": "quota_exceeded",
            "message": "tenant acme runs 4 jobs, its quota",
            "fields": [{"field": "quota.running_jobs", "message": "4 in use of 4"}],
        }
    }
    error = error_from(httpx.Response(429, json=body, headers={"Retry-After": "30", "X-Other": "1"}))
    assert isinstance(error, KtuneError)
    assert (error.status_code, error.code, error.message) == (429, "quota_exceeded", body["error"]["message"])
    assert [(f.field, f.message) for f in error.fields] == [("quota.running_jobs", "4 in use of 4")]
    assert error.headers == {"Retry-After": "30"}
    assert str(error) == body["error"]["message"]


def test_an_answer_without_the_error_body_keeps_its_status_and_quotes_its_start() -> None:
    page = "<html><body>" + "bad gateway " * 100 + "</body></html>"
    error = error_from(httpx.Response(502, text=page))
    assert error.status_code == 502 and error.code == "http_error"
    assert error.message.startswith("HTTP 502: <html><body>bad gateway") and len(error.message) < 220
    assert error_from(httpx.Response(500, json={"detail": "x"})).message == 'HTTP 500: {"detail":"x"}'
    assert error_from(httpx.Response(504)).message == "HTTP 504: Gateway Timeout"
