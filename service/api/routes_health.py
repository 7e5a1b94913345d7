"""Liveness and readiness."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import SettingsDep, StoreDep
from service.api.schemas import Health
from service.core.queue import QUEUES, get_celery
from service.core.settings import Settings
from service.core.store import JobStore

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz", summary="Liveness", response_model=Health)
def healthz() -> Health:
    """The API process is up."""
    return Health(status="ok")


@router.get("/readyz", summary="Readiness", response_model=Health, responses={503: {"model": Health}})
def readyz(store: StoreDep, settings: SettingsDep) -> JSONResponse:
    """Ready when Redis answers and at least one worker is consuming a queue."""
    checks: dict[str, object] = {}
    try:
        checks["redis"] = "ok" if store.ping() else "no answer"
    except Exception as exc:  # any failure to reach Redis means not ready
        # Redis' message names its address and its errors: logged, never shown to clients.
        log.warning("readyz: Redis unreachable: %s", exc)
        checks["redis"] = "unreachable"
    queues: dict[str, list[str]] = {}
    not_consuming: dict[str, str] = {}
    if checks["redis"] == "ok":
        try:
            active = get_celery().control.inspect(timeout=1.0).active_queues() or {}
        except Exception as exc:  # the broker may fail mid-call
            log.warning("readyz: asking the workers failed: %s", exc)
            active = {}
            checks["workers_error"] = "the workers could not be asked through the broker"
        try:
            heartbeats = store.worker_heartbeats()
        except Exception as exc:  # Redis may fail mid-call
            log.warning("readyz: reading worker heartbeats failed: %s", exc)
            heartbeats = {}
            checks["heartbeats_error"] = "the workers' heartbeats could not be read"
        # A worker answers `inspect` through its pidbox even when it no longer fetches tasks: its heartbeat
        # tells whether messages wait for it while its pool idles.
        for worker, heartbeat in heartbeats.items():
            if (reason := heartbeat.not_consuming(settings.stalled_seconds)) is not None:
                not_consuming[worker] = reason
        for worker, worker_queues in active.items():
            if worker not in not_consuming:
                for q in worker_queues:
                    queues.setdefault(q["name"], []).append(worker)
    checks["queues"] = queues
    checks["not_consuming"] = not_consuming
    if checks["redis"] == "ok":
        checks["unserved"] = _unserved(store, settings, set(queues))
    ready = checks["redis"] == "ok" and bool(queues)
    body = Health(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


def _unserved(store: JobStore, settings: Settings, served: set[str]) -> dict[str, str]:
    """Queues with messages waiting that no worker consumes, each with a sentence on what happens next."""
    try:
        waiting = store.queue_lengths(QUEUES)
    except Exception as exc:  # Redis may fail mid-call
        log.warning("readyz: reading queue lengths failed: %s", exc)
        return {"error": "the queues' lengths could not be read"}
    return {
        name: f"{count} message{'' if count == 1 else 's'} wait and no worker consumes this queue; its jobs "
        f"fail with no_worker after {settings.no_worker_seconds:.0f} s without one "
        f"(start one: python -m worker -Q {name})"
        for name, count in waiting.items()
        if count and name not in served
    }
