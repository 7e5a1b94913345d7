"""POST /v1/jobs/{id}/finalize apart from HTTP: the job and its test set checked here, the retraining done
by a worker of the job's queue (`worker.finalization`), its state kept in the job (`finalization`)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import partial
from typing import Any

from service.api import dataset_service, run_requests
from service.core import queue
from service.core.artifacts import ArtifactStore
from service.core.catalog import Task
from service.core.dataset_store import DatasetStore
from service.core.errors import Conflict, FieldProblem, InvalidRequest
from service.core.finalization import Finalization, FinalizationStatus, FinalizeRequest, check_test_set
from service.core.lazy_imports import needed_for
from service.core.records import JobRecord, utcnow
from service.core.settings import Settings
from service.core.spec import SpecError
from service.core.store import JobStore
from service.core.store_runs import Finalizations


def finalize(
    store: JobStore,
    datasets: DatasetStore,
    artifacts: ArtifactStore,
    settings: Settings,
    job_id: str,
    tenant: str,
    request: FinalizeRequest,
) -> Finalization:
    """Queue the job's finalization; a finished one is replaced. Raises NotFound (another tenant's job too),
    Conflict (`job_not_finished`, `no_best_model`, `finalization_running`), InvalidRequest naming `test.x`,
    `test.x[i]`, `test.y` or `test_dataset`, Unavailable when the queue is unreachable."""
    record = run_requests.succeeded_job(store, job_id, tenant, "finalized")
    if record.best is None or record.data is None:
        raise Conflict(f"job '{job_id}' has no best trial to finalize", "no_best_model")
    message: dict[str, Any] | None = None
    test_rows = 0
    if request.test is not None and request.test_dataset is not None:
        raise InvalidRequest([FieldProblem("test_dataset", "give `test` or `test_dataset`, not both")])
    if request.test is not None:
        test = check_test_set(request.test, record.data.features, record.data.classes)
        message, test_rows = {"rows": test.rows, "targets": test.targets}, len(test.rows)
    elif request.test_dataset is not None:
        test_rows = _check_test_dataset(datasets, artifacts, request.test_dataset, record, tenant)
        message = {"dataset": request.test_dataset}
    now = utcnow()
    run = Finalization(
        run_id=str(uuid.uuid4()),
        status=FinalizationStatus.QUEUED,
        requested_at=now,
        deadline_at=now + timedelta(seconds=settings.finalize_timeout_seconds),
        test_rows=test_rows,
    )
    send = partial(
        queue.send_finalize, job_id, run.run_id, message, seconds=settings.finalize_timeout_seconds
    )
    return run_requests.start(Finalizations(store), record, run, send)


def _check_test_dataset(
    datasets: DatasetStore, artifacts: ArtifactStore, ref: str, record: JobRecord, tenant: str
) -> int:
    """The rows of the test data set `ref`, checked against the job's data set. Raises InvalidRequest naming
    `test_dataset`."""
    assert record.data is not None
    source = dataset_service.source(datasets, artifacts, ref, "test_dataset", tenant)
    with needed_for("read a data set"):
        from service.core.job_data import check_test_dataset
    try:
        check_test_dataset(source, record.data, Task(record.spec["task"]))
    except SpecError as exc:
        raise InvalidRequest([FieldProblem(exc.field, exc.message)]) from exc
    return source.info.rows
