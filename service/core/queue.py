"""The Celery app both sides share: the API sends tasks by name, workers register and run them.

Importing this never imports TensorFlow: task code lives in `worker.tasks`, loaded only by workers. Nor
Celery: the API loads it when it first sends a task (`service.core.lazy_imports`), and the send functions
turn kombu's OperationalError into QueueUnreachable, so their callers need no kombu to catch it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from service.core.lazy_imports import needed_for
from service.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

START_JOB = "ktune.start_job"
RUN_TRIAL = "ktune.run_trial"
DELIVER_WEBHOOK = "ktune.deliver_webhook"
PREDICT = "ktune.predict"
FINALIZE = "ktune.finalize"
RECHECK = "ktune.recheck"
QUEUES = ("cpu", "gpu")


class QueueUnreachable(Exception):
    """The broker refused or could not take a message (kombu's OperationalError, which is the cause)."""


@contextlib.contextmanager
def _sending() -> Iterator[None]:
    from kombu.exceptions import OperationalError  # loaded with Celery by get_celery

    try:
        yield
    except OperationalError as exc:
        raise QueueUnreachable(str(exc)) from exc


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for long, late-acknowledged trial tasks on the Redis broker."""
    with needed_for("send work to the queue"):
        from celery import Celery
    app = Celery("ktune", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # results live in the job store, not in Celery's backend
        task_acks_late=True,  # a task is acknowledged after it ran, so a lost worker's task comes back
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # trials are long: never hold a second one while training
        task_time_limit=settings.trial_time_limit_seconds + 60,
        task_soft_time_limit=settings.trial_time_limit_seconds,
        broker_transport_options={
            # Above the longest trial: Redis redelivers unacknowledged messages after this long. A trial
            # redelivered while it runs does nothing (its lease is held), so a lower value only wastes work.
            "visibility_timeout": settings.visibility_timeout_seconds,
            **settings.broker_transport_options,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        # Celery's limit is in KiB of resident memory, measured after each task (with psutil); 0 is none.
        worker_max_memory_per_child=settings.worker_max_memory_per_child_mb * 1024,
        worker_hijack_root_logger=False,
        task_default_queue="cpu",
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    """The process-wide Celery app, configured from the settings on first use."""
    return make_celery(get_settings())


def send_start_job(job_id: str, queue: str, priority: int = 0) -> None:
    """Queue the first step of a job's search; raises QueueUnreachable when Redis is down.

    `priority` 0 is taken first (`service.core.fair_share` ranks a tenant's work).
    """
    app = get_celery()
    with _sending():
        app.send_task(START_JOB, args=[job_id], queue=queue, priority=priority)


def send_run_trial(job_id: str, trial_id: str, queue: str, priority: int = 0) -> None:
    """Queue one trial of a job; raises QueueUnreachable."""
    app = get_celery()
    with _sending():
        app.send_task(RUN_TRIAL, args=[job_id, trial_id], queue=queue, priority=priority)


def send_deliver_webhook(job_id: str, queue: str, attempt: int = 1, countdown: float = 0) -> None:
    """Queue a POST of an ended job to its callback_url (attempt `attempt`, after `countdown` seconds);
    raises QueueUnreachable."""
    app = get_celery()
    with _sending():
        app.send_task(
            DELIVER_WEBHOOK, args=[job_id, attempt], queue=queue, priority=0, countdown=countdown or None
        )


def send_predict(
    job_id: str, reply_id: str, rows: list[list[float | str]], queue: str, seconds: float
) -> None:
    """Ask a worker of the job's queue for predictions of `rows`, answered under `reply_id`
    (`service.core.replies`); at the highest priority, and dropped unstarted after `seconds`, when no one
    waits any more. Raises QueueUnreachable."""
    app = get_celery()
    with _sending():
        app.send_task(PREDICT, args=[job_id, reply_id, rows], queue=queue, priority=0, expires=seconds)


def send_finalize(job_id: str, run_id: str, test: dict[str, Any] | None, queue: str, seconds: float) -> None:
    """Ask a worker of the job's queue to finalize it (`worker.finalization`), with the checked test set
    (`rows`, `targets`), a test data set (`dataset`) or None. It stops itself after the epoch that ends
    `seconds` after it started (`timed_out`); Celery's time limits, a minute later, are a backstop, as for
    a recheck. Raises QueueUnreachable."""
    app = get_celery()
    with _sending():
        app.send_task(
            FINALIZE,
            args=[job_id, run_id, test],
            queue=queue,
            soft_time_limit=seconds + 60,
            time_limit=seconds + 120,
        )


def send_recheck(job_id: str, run_id: str, queue: str, seconds: float) -> None:
    """Ask a worker of the job's queue to recheck its top trials (`worker.recheck`), which stops itself
    `seconds` after it starts (`timed_out`); Celery's time limits, a minute later, are a backstop (the
    trials' limits, KTUNE_TRIAL_TIME_LIMIT_SECONDS, would stop a longer recheck). Raises QueueUnreachable."""
    app = get_celery()
    with _sending():
        app.send_task(
            RECHECK,
            args=[job_id, run_id],
            queue=queue,
            soft_time_limit=seconds + 60,
            time_limit=seconds + 120,
        )
