"""A job request's callback_url, checked when the job is submitted (the 422 names `callback_url`)."""

from __future__ import annotations

from collections.abc import Callable

from service.core.errors import FieldProblem, InvalidRequest
from service.core.settings import Settings
from service.core.spec import JobSpec
from service.core.webhooks import CallbackRefused, target


def check_callback(spec: JobSpec, settings: Settings, tenant_secret: Callable[[], str | None]) -> None:
    """Raises InvalidRequest when this service will not call the job's callback_url: nothing could sign
    it (no KTUNE_WEBHOOK_SECRET, and `tenant_secret()` gives none of the tenant's own), or its host does
    not resolve or resolves to a non-public address that KTUNE_WEBHOOK_ALLOWED_HOSTS does not allow.
    Resolves the host: run it in a thread."""
    if spec.callback_url is None:
        return
    if not settings.webhook_secret and not tenant_secret():
        raise InvalidRequest(
            [
                FieldProblem(
                    "callback_url",
                    "this service sends no webhooks (its operator has set neither KTUNE_WEBHOOK_SECRET nor "
                    "this tenant's webhook secret); leave callback_url out and follow "
                    "GET /v1/jobs/{id}/events instead",
                )
            ]
        )
    try:
        target(spec.callback_url, settings.webhook_allowed_hosts)
    except CallbackRefused as exc:
        raise InvalidRequest([FieldProblem("callback_url", str(exc))]) from None
