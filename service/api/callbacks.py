"""A job request's callback_url, checked when the job is submitted (the 422 names `callback_url`)."""

from __future__ import annotations

from service.core.errors import FieldProblem, InvalidRequest
from service.core.settings import Settings
from service.core.spec import JobSpec
from service.core.webhooks import CallbackRefused, target


def check_callback(spec: JobSpec, settings: Settings) -> None:
    """Raises InvalidRequest when this service will not call the job's callback_url: webhooks are off (no
    KTUNE_WEBHOOK_SECRET), or its host does not resolve or resolves to a non-public address that
    KTUNE_WEBHOOK_ALLOWED_HOSTS does not allow. Resolves the host: run it in a thread."""
    if spec.callback_url is None:
        return
    if not settings.webhook_secret:
        raise InvalidRequest(
            [
                FieldProblem(
                    "callback_url",
                    "this service sends no webhooks (its operator has not set KTUNE_WEBHOOK_SECRET); "
                    "leave callback_url out and follow GET /v1/jobs/{id}/events instead",
                )
            ]
        )
    try:
        target(spec.callback_url, settings.webhook_allowed_hosts)
    except CallbackRefused as exc:
        raise InvalidRequest([FieldProblem("callback_url", str(exc))]) from None
