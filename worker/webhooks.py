"""Delivers a job's webhook: a signed POST of the job (as GET /v1/jobs/{id} shows it) to its callback_url.

Each attempt is noted on the job (`webhook.attempts`); one that gets no 2xx is tried again later, each wait
three times the one before (KTUNE_WEBHOOK_RETRY_SECONDS, KTUNE_WEBHOOK_ATTEMPTS), as a new task on the job's
queue. The receiver's address is checked again at each attempt, and the POST connects to that checked
address (the URL's host still goes in the Host header and TLS's SNI), so a DNS answer that changes after the
check (DNS rebinding) cannot send it elsewhere.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import httpx

from service.api.job_view import view_to_public
from service.core import queue
from service.core.api_keys import ApiKeyStore
from service.core.records import WebhookAttempt, WebhookStatus, utcnow
from service.core.settings import Settings
from service.core.spec import stored_queue
from service.core.store import JobStore
from service.core.webhooks import SIGNATURE_HEADER, CallbackRefused, sign, target

log = logging.getLogger(__name__)


def deliver(store: JobStore, settings: Settings, job_id: str, attempt: int) -> None:
    """Make attempt `attempt` of the job's webhook, note it on the job, and queue the next one if it failed
    and attempts are left. Nothing for a deleted job, one without callback_url, or one delivered already."""
    [view] = store.job_views([job_id])
    if view is None or not view.record.spec.get("callback_url"):
        return
    record = view.record
    url = str(record.spec["callback_url"])
    state = record.webhook or WebhookStatus(url=url)
    if state.delivered:
        return
    body = view_to_public(view).model_dump_json().encode()
    secret = ApiKeyStore(store).webhook_secret(record.tenant) or settings.webhook_secret
    status_code, error = _post(url, body, secret, settings)
    delivered = status_code is not None and 200 <= status_code < 300
    state.attempts.append(
        WebhookAttempt(at=utcnow(), event=record.status.value, status_code=status_code, error=error)
    )
    state.delivered = delivered
    store.set_job_fields(job_id, webhook=state)
    if delivered:
        log.info("webhook of job %s delivered to %s (attempt %d)", job_id, url, attempt)
        return
    if attempt >= settings.webhook_attempts:
        log.warning("webhook of job %s given up after %d attempts: %s", job_id, attempt, error)
        return
    wait = settings.webhook_retry_seconds * 3 ** (attempt - 1)
    log.warning("webhook of job %s failed (%s); attempt %d in %.0f s", job_id, error, attempt + 1, wait)
    queue.send_deliver_webhook(job_id, stored_queue(record.spec), attempt + 1, countdown=wait)


def _post(url: str, body: bytes, secret: str, settings: Settings) -> tuple[int | None, str | None]:
    """The receiver's status code, or None and why there was none; never raises for the receiver's sake."""
    if not secret:
        return None, "not sent: neither KTUNE_WEBHOOK_SECRET nor the tenant's webhook secret is set"
    try:
        checked = target(url, settings.webhook_allowed_hosts)
    except CallbackRefused as exc:
        return None, f"not sent: {exc}"
    parts = urlsplit(url)
    address = f"[{checked.address}]" if ":" in checked.address else checked.address
    pinned = parts._replace(netloc=f"{address}:{checked.port}").geturl()
    headers = {
        "Content-Type": "application/json",
        "Host": parts.netloc,
        "User-Agent": "ktune-webhooks",
        SIGNATURE_HEADER: sign(secret, int(time.time()), body),
    }
    try:
        # No proxies from the environment, no redirects: the POST goes to the checked address only.
        with httpx.Client(
            timeout=settings.webhook_timeout_seconds, trust_env=False, follow_redirects=False
        ) as client:
            response = client.post(
                pinned, content=body, headers=headers, extensions={"sni_hostname": checked.host}
            )
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    error = None if 200 <= response.status_code < 300 else f"answered {response.status_code}"
    return response.status_code, error
