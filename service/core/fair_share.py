"""Tenants take turns: each message's priority falls with the work its tenant already has in flight.

Workers take a queue's messages highest priority first, first in first out within one priority (kombu keeps
a Redis list per priority step and pops them in order; 0 is the highest). A message is sent with the
priority of its rank, the work of its tenant queued or running ahead of it: for a job's start, the tenant's
running jobs and those it queued before this one; for a trial, the tenant's other queued and running jobs
plus the job's own trials already queued or running. So the single job of a tenant
with nothing else in flight goes ahead of the 50th job of a busy one, and one job with 64 parallel trials
does not hold back another tenant's first trial until all 64 are done. Priorities are fixed when a message
is sent: messages already waiting keep theirs, and first-come order holds between equal ranks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from service.core import queue
from service.core.spec import queue_for
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobStore

# kombu's Redis priority steps (PRIORITY_STEPS); a message's priority is rounded down to one of them.
_STEPS = ((0, 0), (1, 3), (3, 6), (9, 9))  # (lowest rank, priority)


def priority(rank: int) -> int:
    """The message priority (0 highest) of work with `rank` units of its tenant's work ahead of it."""
    return max(step for lowest, step in _STEPS if rank >= lowest)


# A job's tenant never changes: a worker process reads it once per job (its last few jobs are kept).
_TENANTS: OrderedDict[tuple[str, str], str] = OrderedDict()


def _tenant(store: JobStore, job_id: str) -> str | None:
    key = (store.prefix, job_id)
    tenant = _TENANTS.get(key)
    if tenant is None:
        tenant = store.get_tenant(job_id)
        if tenant is None:
            return None
        _TENANTS[key] = tenant
        while len(_TENANTS) > 64:
            _TENANTS.popitem(last=False)
    return tenant


def send_start(store: JobStore, job_id: str, tenant: str, queue_name: str) -> None:
    """Queue the first step of a job's search, ranked behind its tenant's running and earlier jobs (so
    jobs submitted at once keep their order, and a re-sent start of the oldest one is not held back)."""
    queue.send_start_job(job_id, queue_name, priority(store.jobs_ahead(tenant, job_id)))


def resend_start(store: JobStore, job_id: str) -> None:
    """Send a stored job's start again (it may have waited, or its message may be lost)."""
    record = store.get_job(job_id)
    if record is not None and record.status is JobStatus.QUEUED:
        send_start(store, job_id, record.tenant, queue_for(record.spec["resources"]["accelerator"]))


def send_trials(store: JobStore, job_id: str, trial_ids: Sequence[str], queue_name: str) -> None:
    """Queue trials of a job whose records are stored as queued (new, or sent again), ranked behind its
    tenant's other jobs and the job's own trials already in flight."""
    if not trial_ids:
        return
    tenant = _tenant(store, job_id)
    if tenant is None:
        return
    counts, jobs = store.trial_send_counts(job_id, tenant)
    ahead = counts[TrialStatus.QUEUED] + counts[TrialStatus.RUNNING] - len(trial_ids)
    others = max(0, sum(jobs.values()) - 1)
    for index, trial_id in enumerate(trial_ids):
        queue.send_run_trial(job_id, trial_id, queue_name, priority(others + max(0, ahead) + index))
