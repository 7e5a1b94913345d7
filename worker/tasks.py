"""Celery tasks: thin, taking ids only. TensorFlow is imported in pool processes only (worker.runtime)."""

from __future__ import annotations

from typing import Any

from service.core.queue import (
    DELIVER_WEBHOOK,
    FINALIZE,
    PREDICT,
    RECHECK,
    RUN_TRIAL,
    START_JOB,
    get_celery,
)
from worker.context import get_context
from worker.runtime import warm_up
from worker.transient import TRANSIENT_ERRORS

app = get_celery()

# Redis unreachable or restarting, or a search step kept busy, is no fault of the job: such a task is tried
# again, waiting longer each time (up to 10 minutes). Every task is idempotent, so a retry after partial
# progress is safe. Any other error of a search step fails the job (worker.search).
_TRANSIENT = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 600,
    "max_retries": 30,
}


@app.task(name=START_JOB, **_TRANSIENT)  # type: ignore[untyped-decorator]
def start_job(job_id: str) -> None:
    """Mark the job running and hand out its first trials; a duplicate start does nothing new."""
    warm_up()
    from service.core import lifecycle
    from service.core.api_keys import ApiKeyStore
    from service.core.quotas import tenant_quotas
    from service.core.states import JobStatus
    from worker import search

    ctx = get_context()
    tenant = ctx.store.get_tenant(job_id)
    if tenant is None:
        return  # deleted
    running = tenant_quotas(ApiKeyStore(ctx.store), ctx.settings.quotas, tenant).running_jobs
    if not lifecycle.start(ctx.store, job_id, running) and ctx.store.get_status(job_id) is JobStatus.QUEUED:
        return  # its tenant runs its quota of jobs: it is sent again when one of them ends
    search.advance(ctx, job_id)


@app.task(name=RUN_TRIAL, bind=True, **_TRANSIENT)  # type: ignore[untyped-decorator]
def run_trial(self: Any, job_id: str, trial_id: str) -> None:
    """Train one trial, record it, and advance the search."""
    warm_up()
    from worker import runner

    runner.run_trial(get_context(), job_id, trial_id, node=self.request.hostname or "")


@app.task(name=DELIVER_WEBHOOK, **_TRANSIENT)  # type: ignore[untyped-decorator]
def deliver_webhook(job_id: str, attempt: int = 1) -> None:
    """POST the ended job to its callback_url; a failed attempt queues the next (worker.webhooks). No
    TensorFlow: it never waits for a pool process's imports."""
    from worker import webhooks

    ctx = get_context()
    webhooks.deliver(ctx.store, ctx.settings, job_id, attempt)


# Acknowledged on receipt and never retried: the API waits only KTUNE_PREDICT_TIMEOUT_SECONDS for the answer
# (the message expires then too), and a client retries a 503 itself.
@app.task(name=PREDICT, acks_late=False, ignore_result=True)  # type: ignore[untyped-decorator]
def predict(job_id: str, reply_id: str, rows: list[list[float | str]]) -> None:
    """Predict rows with the job's best model and hand the answer to the API waiting on `reply_id`."""
    warm_up()
    from worker import predictions

    predictions.answer(get_context(), job_id, reply_id, rows)


# Acknowledged on receipt and never retried: a finalization or recheck whose worker is lost fails at its
# deadline (service.core.job_runs.current), and the client requests it again.
@app.task(name=FINALIZE, acks_late=False, ignore_result=True)  # type: ignore[untyped-decorator]
def finalize(job_id: str, run_id: str, test: dict[str, Any] | None) -> None:
    """Retrain the job's best hyperparameters on training + validation rows; store the final model."""
    warm_up()
    from worker import finalization

    finalization.finalize(get_context(), job_id, run_id, test)


@app.task(name=RECHECK, acks_late=False, ignore_result=True)  # type: ignore[untyped-decorator]
def recheck(job_id: str, run_id: str) -> None:
    """Retrain the job's top trials with other seeds; store the spread of their objective."""
    warm_up()
    from worker import recheck

    recheck.recheck(get_context(), job_id, run_id)
