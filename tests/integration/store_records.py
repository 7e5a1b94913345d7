"""Records and reads the store's contract tests share (tests/integration/test_store_*.py)."""

from __future__ import annotations

import uuid
from datetime import datetime

from service.core.records import ExecutionRecord, JobRecord, TrialRecord, utcnow
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobStore


def job_record(
    tenant: str = "acme",
    status: JobStatus = JobStatus.QUEUED,
    trials: int = 1,
    created_at: datetime | None = None,
) -> JobRecord:
    """A new job's record (not stored)."""
    spec = {"task": "regression", "resources": {"accelerator": "cpu"}, "tuner": {"max_trials": trials}}
    return JobRecord(
        id=str(uuid.uuid4()), tenant=tenant, status=status, spec=spec, created_at=created_at or utcnow()
    )


def stored_job(store: JobStore, tenant: str = "acme", status: JobStatus = JobStatus.QUEUED) -> str:
    """A job stored with `status` (and its placeholder data); returns its id."""
    record = job_record(tenant, status)
    store.create_job(record, b"npz bytes")
    return record.id


def trial_record(
    trial_id: str = "00", status: TrialStatus = TrialStatus.QUEUED, epochs: int = 0
) -> TrialRecord:
    """A trial with `epochs` epochs of one execution's loss history."""
    history: dict[str, list[float | None]] = {"loss": [float(e) for e in range(epochs)]}
    return TrialRecord(
        id=trial_id,
        status=status,
        hyperparameters={"units_0": 8},
        executions=[ExecutionRecord(history=history)] if epochs else [],
    )


def keys_under(store: JobStore, prefix: str | None = None) -> set[str]:
    """Every key whose name starts with `prefix` (the store's prefix when None), by SCAN."""
    start = f"{store.prefix}:" if prefix is None else prefix
    return {key for key in store.redis.scan_iter(match=f"{start}*", count=1000)}
