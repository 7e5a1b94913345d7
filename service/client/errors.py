"""What the client raises: the service's own error (`KtuneError`, rebuilt from the `{"error": {...}}` body the
API renders it as), `Unreachable` when no answer came, `WaitTimeout` when a wait ran out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from service.core.errors import FieldProblem, KtuneError

if TYPE_CHECKING:
    from service.api.schemas import JobPublic
    from service.core.job_runs import JobRun

__all__ = ["KtuneError", "Unreachable", "WaitTimeout", "error_from"]

# Headers of an error answer worth keeping: when to try again, how to authenticate.
_KEPT_HEADERS = ("Retry-After", "WWW-Authenticate")


class Unreachable(ConnectionError):
    """No answer from the service: the connection was refused, reset or timed out."""


class WaitTimeout(TimeoutError):
    """`Client.wait` (or `wait_run`) ran out of time; `job` is the job as last seen (still queued or running,
    or its run `run` still is)."""

    def __init__(self, job: JobPublic, timeout: float, run: JobRun | None = None) -> None:
        if run is None:
            message = (
                f"job {job.id} is still {job.status.value} after {timeout:g} s "
                f"({job.progress.completed}/{job.progress.trials_total} trials completed)"
            )
        else:
            message = f"the {run.noun} of job {job.id} is still {run.status.value} after {timeout:g} s"
        super().__init__(message)
        self.job = job
        self.timeout = timeout


def error_from(response: httpx.Response) -> KtuneError:
    """The error an unsuccessful answer carries: its code, message and fields, its status, Retry-After.

    An answer without ktune's error body (a proxy's page, say) keeps its status and quotes its start."""
    status = response.status_code
    headers = {name: response.headers[name] for name in _KEPT_HEADERS if name in response.headers}
    detail = _error_detail(response)
    if detail is None:
        text = response.text.strip()[:200] or response.reason_phrase
        return KtuneError(f"HTTP {status}: {text}", "http_error", status, [], headers)
    fields = [
        FieldProblem(str(f.get("field", "")), str(f.get("message", "")))
        for f in detail.get("fields") or []
        if isinstance(f, dict)
    ]
    message, code = str(detail.get("message", "")), str(detail.get("code", "error"))
    return KtuneError(message, code, status, fields, headers)


def _error_detail(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    detail = body.get("error") if isinstance(body, dict) else None
    return detail if isinstance(detail, dict) else None
