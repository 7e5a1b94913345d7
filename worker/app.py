"""The worker's Celery app (`celery -A worker.app`), with the per-process TensorFlow set-up."""

from __future__ import annotations

import os
from typing import Any

from billiard.process import current_process
from celery.signals import (
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)

from service.core.logs import configure_logging, enter_context, exit_context
from service.core.queue import RUN_TRIAL, get_celery
from service.core.settings import get_settings
from worker.consumption import ConsumptionMonitor
from worker.context import get_context
from worker.runtime import discover_gpus, export_gpus, prepare_process, warm_up_in_background

app = get_celery()

_CONCURRENCY_ENV = "KTUNE_POOL_PROCESSES"
_LOG_CONTEXTS: dict[str, Any] = {}  # a running task's id -> its log context's token


@setup_logging.connect  # type: ignore[untyped-decorator]
def _logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery leaves logging to this receiver: the root logger in KTUNE_LOG_FORMAT, as the API's."""
    configure_logging(get_settings().log_format, loglevel or "INFO")


@task_prerun.connect  # type: ignore[untyped-decorator]
def _task_context(task_id: str = "", task: Any = None, args: Any = None, **_: Any) -> None:
    """A task's records (Celery's own included) name its job and trial; every task takes the job id
    first, and a trial's task the trial id second."""
    args = list(args or [])
    job_id = str(args[0]) if args else None
    trial_id = str(args[1]) if len(args) > 1 and getattr(task, "name", "") == RUN_TRIAL else None
    _LOG_CONTEXTS[task_id] = enter_context(job_id=job_id, trial_id=trial_id)


@task_postrun.connect  # type: ignore[untyped-decorator]
def _task_context_end(task_id: str = "", **_: Any) -> None:
    token = _LOG_CONTEXTS.pop(task_id, None)
    if token is not None:
        exit_context(token)


@celeryd_init.connect  # type: ignore[untyped-decorator]
def _before_pool(options: dict[str, Any] | None = None, **_: Any) -> None:
    """In the parent, before the pool forks: find GPUs and note the pool size for the children."""
    export_gpus(*discover_gpus())
    concurrency = (options or {}).get("concurrency") or app.conf.worker_concurrency or os.cpu_count() or 1
    os.environ[_CONCURRENCY_ENV] = str(concurrency)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _prepare(**_: Any) -> None:
    index = getattr(current_process(), "index", 0) or 0
    processes = int(os.environ.get(_CONCURRENCY_ENV, "1"))
    prepare_process(index, processes, os.cpu_count() or 1)
    warm_up_in_background()


@worker_ready.connect  # type: ignore[untyped-decorator]
def _serving(sender: Any = None, **_: Any) -> None:
    """When the node is ready: start its heartbeat, and clear a shutdown mark left under its name."""
    context = get_context()
    ConsumptionMonitor(sender, context.store, context.settings).start()
    context.store.set_draining(sender.hostname, False)


@worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _draining(sender: str, how: str = "", **_: Any) -> None:
    """On a warm shutdown (SIGTERM), running trials hand themselves back instead of being waited for."""
    if how == "Warm":
        get_context().store.set_draining(sender, True)
