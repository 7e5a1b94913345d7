"""The worker's Celery app (`celery -A worker.app`), with the per-process TensorFlow set-up."""

from __future__ import annotations

import os
from typing import Any

from billiard.process import current_process
from celery.signals import celeryd_init, worker_process_init, worker_ready, worker_shutting_down

from service.core.queue import get_celery
from worker.consumption import ConsumptionMonitor
from worker.context import get_context
from worker.runtime import discover_gpus, export_gpus, prepare_process, warm_up_in_background

app = get_celery()

_CONCURRENCY_ENV = "KTUNE_POOL_PROCESSES"


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
