"""Whether a tenant's quotas admit a new job or upload (`service.core.quotas` says what each bounds)."""

from __future__ import annotations

from service.core.errors import QuotaExceeded
from service.core.quotas import Quotas, seconds_to_next_day
from service.core.store import Admission, JobStore, OverQuota

# A tenant at its queued_jobs quota can submit again once one of its jobs starts: a guess at how soon.
QUEUED_RETRY_SECONDS = 30


def job_admission(store: JobStore, quotas: Quotas, tenant: str, trials: int) -> Admission:
    """The quotas `JobStore.create_job` checks as it stores the job; raises QuotaExceeded for those that
    can be checked before (a single job larger than the day's trials; the tenant's stored bytes)."""
    if trials > quotas.trials_per_day:
        raise QuotaExceeded(
            "trials_per_day",
            trials,
            quotas.trials_per_day,
            f"tuner.max_trials is {trials}, more than tenant '{tenant}' may start in a day "
            f"(quota trials_per_day: {quotas.trials_per_day}); lower it",
            None,
        )
    check_storage(store, quotas, tenant)
    return Admission(trials=trials, max_queued=quotas.queued_jobs, max_trials_per_day=quotas.trials_per_day)


def check_storage(store: JobStore, quotas: Quotas, tenant: str) -> None:
    """Raise QuotaExceeded while the tenant stores its quota of artifact bytes or more."""
    used = store.usage(tenant)
    if used >= quotas.artifact_bytes:
        raise QuotaExceeded(
            "artifact_bytes",
            used,
            quotas.artifact_bytes,
            f"tenant '{tenant}' stores {used} bytes of models, checkpoints and data sets, its quota "
            f"artifact_bytes is {quotas.artifact_bytes}; delete finished jobs or data sets to go on",
            None,
        )


def refused(exc: OverQuota, quotas: Quotas, tenant: str, trials: int) -> QuotaExceeded:
    """The 429 of a quota `JobStore.create_job` found full."""
    if exc.quota == "queued_jobs":
        return QuotaExceeded(
            "queued_jobs",
            exc.used,
            quotas.queued_jobs,
            f"tenant '{tenant}' has {exc.used} jobs waiting to start, its quota queued_jobs is "
            f"{quotas.queued_jobs}; submit again when one has started, or cancel one",
            QUEUED_RETRY_SECONDS,
        )
    return QuotaExceeded(
        "trials_per_day",
        exc.used,
        quotas.trials_per_day,
        f"this job reserves {trials} trials (tuner.max_trials) and tenant '{tenant}' has reserved "
        f"{exc.used} of its {quotas.trials_per_day} trials today (quota trials_per_day, UTC days); "
        "submit it tomorrow or with fewer trials",
        seconds_to_next_day(),
    )
