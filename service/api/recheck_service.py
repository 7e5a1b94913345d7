"""POST /v1/jobs/{id}/recheck apart from HTTP: the job checked here, its top trials retrained by a worker of
the job's queue (`worker.recheck`), its state kept in the job (`recheck`)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import partial

from service.api import run_requests
from service.core import queue
from service.core.errors import Conflict
from service.core.job_runs import RunStatus
from service.core.recheck import Recheck, RecheckRequest
from service.core.records import utcnow
from service.core.settings import Settings
from service.core.store import JobStore
from service.core.store_runs import Rechecks


def recheck(
    store: JobStore, settings: Settings, job_id: str, tenant: str, request: RecheckRequest
) -> Recheck:
    """Queue the job's recheck; a finished one is replaced. Raises NotFound (another tenant's job too),
    Conflict (`job_not_finished`, `no_completed_trial`, `recheck_running`), Unavailable when the queue is
    unreachable."""
    record = run_requests.succeeded_job(store, job_id, tenant, "rechecked")
    if record.best is None or record.data is None:
        raise Conflict(f"job '{job_id}' has no completed trial to recheck", "no_completed_trial")
    now, seconds = utcnow(), settings.recheck_timeout_seconds
    run = Recheck(
        run_id=str(uuid.uuid4()),
        status=RunStatus.QUEUED,
        requested_at=now,
        deadline_at=now + timedelta(seconds=seconds),
        top_k=request.top_k,
        seeds=request.seeds,
    )
    send = partial(queue.send_recheck, job_id, run.run_id, seconds=seconds)
    return run_requests.start(Rechecks(store), record, run, send)
