"""Every Redis key name of ktune, built from the store's prefix: the only module that spells them.

Layout (prefix `ktune` by default):
- `{p}:job:{id}` hash: status, spec (JSON, without data), created_at, enqueued_at, start_sends, started_at,
  finished_at, error (JSON), best (JSON), webhook (JSON: the deliveries of its callback_url)
- `{p}:job:{id}:data` the data as compact arrays (`.npz` bytes, `service.core.data_codec`), read by workers
- `{p}:job:{id}:trials` hash trial id -> trial record (JSON, without per-epoch history);
  `{p}:job:{id}:trial-status` id -> status; `{p}:job:{id}:trial-counts` status -> how many trials have it
  (kept with trial-status, so a job's progress is one small read however many trials it has);
  `{p}:job:{id}:history:{trial}` list of the trial's epochs (JSON `[execution, {metric: value}]`), appended
  as the trial trains
- `{p}:job:{id}:search-log` list of the search algorithm's state: a whole state (JSON), then each step's
  changes (`worker.oracles`); `{p}:job:{id}:oracle` the whole state as a single value, as ktune stored it
  before the log (read once, for a job that was running then); `{p}:job:{id}:results` hash trial id -> a
  finished trial's result (JSON) handed in for the next search step, which takes in every one there;
  `{p}:job:{id}:taken-in:{trial}` a token that step leaves for the worker waiting on that result
- `{p}:job:{id}:lock` the owner of the job's search step (renewed while a step runs); `{p}:job:{id}:lock-wake`
  a token its release leaves for one waiting step;
  `{p}:job:{id}:lease:{trial}` a trial's owner;
  `{p}:job:{id}:requeued:{trial}` marks a trial the sweeper has just sent again;
  `{p}:job:{id}:losses:{trial}` counts the workers a trial lost while running;
  `{p}:job:{id}:nudged` marks a stalled job the sweeper has just nudged
- `{p}:job:{id}:pruning` hash of what `tuner.pruning` compares trials by (`service.core.store_pruning`):
  `epoch:{n}` the objective at epoch n of each trial that trained to its end, `completed` how many did,
  `rung:{k}` the objective of each trial that reached ASHA's rung k, and a `done:{trial}` /
  `rung:{k}:{trial}` mark per value so that a trial run again never adds one twice
- `{p}:job:{id}:events` the job's event stream (`service.core.events`, capped): status changes (written
  with the change), trials started and finished, epochs, new bests
- `{p}:queue:{queue}:served-at` when a worker was last seen consuming a Celery queue
- `{p}:worker:{node}:draining` marks a worker node in warm shutdown
- `{p}:worker:{node}:heartbeat` a worker node's latest heartbeat (JSON), gone unless renewed; `{p}:workers`
  the set of nodes that wrote one
- the broker's own lists (kombu's layout, read only): `{queue}` holds a Celery queue's waiting messages, and
  `{queue}\x06\x16{n}` those of priority step n
- `{p}:jobs` and `{p}:jobs:status:{status}` sorted sets of `{created_us:020d}:{id}`, for listing; the same
  per tenant: `{p}:tenant:{tenant}:jobs` and `{p}:tenant:{tenant}:jobs:status:{status}` (what a tenant lists,
  and counts against its quotas of queued and running jobs)
- `{p}:tenant:{tenant}:trials:{yyyy-mm-dd}` the trials the tenant's jobs reserved that UTC day (a job
  reserves its max_trials when submitted and gives back those it never started when it ends)
- `{p}:tenant:{tenant}:usage` hash `job:{id}` / `dataset:{id}` -> bytes the tenant stores in artifacts
- `{p}:cleanup:claim` held by the API replica that runs the periodic cleanup (retention, scratch files);
  `{p}:cleanup:cursor` where its pass over leftover job keys has got to
- `{p}:metrics:trials` hash of trial counters and the trial-duration histogram's buckets, across every
  worker (`service.core.trial_metrics`)
- `{p}:rate-limit:...` the windows of the job-creation rate limit (`service.api.rate_limit`; the `limits`
  package names the keys under this prefix)
- `{p}:dataset:{id}` an uploaded data set's record, `{p}:dataset:{id}:jobs` the jobs that use it (scored by
  when each was submitted), `{p}:datasets` and `{p}:tenant:{tenant}:datasets` listing indexes like the
  jobs' (`service.core.dataset_store`)
- `{p}:apikey:{key_id}`, `{p}:apikeys`, `{p}:tenant:{tenant}:quotas` and `{p}:tenant:{tenant}:webhook-secret`:
  API keys (a hash of each, never the key), tenants' quota overrides and the keys of their webhook
  signatures (`service.core.api_keys`)
- `{p}:idempotency:{scope}:{tenant}:{sha256 of the key}`: a tenant's Idempotency-Key and what its request
  created, expiring (`service.core.idempotency`)
- `{p}:reply:{uuid}`: a worker's answer to one request that waits for it, such as a prediction, expiring
  (`service.core.replies`)

Every key of a job starts with `{p}:job:{id}` (ids are uuids, so no job's keys match another's name), and
is `{p}:job:{id}:{part}` for a `JobPart` or `{p}:job:{id}:{part}:{trial}` for a `TrialPart`: deleting a
job removes every member of both enums, so a key added to them cannot be forgotten by the deletion.

Lua scripts that read a job's tenant from its hash name that tenant's keys themselves, from
`tenant_prefix` and the tails below (`TENANT_JOBS`, ...), the same ones the methods use.
"""

from __future__ import annotations

from enum import StrEnum

from service.core.states import JobStatus


class JobPart(StrEnum):
    """A key of a job besides its hash: `{job}:{part}`."""

    DATA = "data"
    TRIALS = "trials"
    TRIAL_STATUS = "trial-status"
    TRIAL_COUNTS = "trial-counts"
    SEARCH_LOG = "search-log"
    RESULTS = "results"
    ORACLE = "oracle"
    LOCK = "lock"
    LOCK_WAKE = "lock-wake"
    NUDGED = "nudged"
    EVENTS = "events"
    PRUNING = "pruning"


class TrialPart(StrEnum):
    """A key of each trial of a job: `{job}:{part}:{trial}`."""

    LEASE = "lease"
    REQUEUED = "requeued"
    LOSSES = "losses"
    HISTORY = "history"
    TAKEN_IN = "taken-in"


# The tails of a tenant's keys after `{p}:tenant:{tenant}`; Lua scripts use them too.
TENANT_JOBS = ":jobs"
TENANT_STATUS = ":jobs:status:"
TENANT_TRIALS = ":trials:"
TENANT_USAGE = ":usage"


class StoreKeys:
    """The key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    # a job's keys
    def job(self, job_id: str) -> str:
        """The job's hash; every other key of the job starts with it."""
        return f"{self.prefix}:job:{job_id}"

    def job_part(self, job_id: str, part: JobPart) -> str:
        return f"{self.job(job_id)}:{part.value}"

    def trial_part(self, job_id: str, part: TrialPart, trial_id: str) -> str:
        return f"{self.job(job_id)}:{part.value}:{trial_id}"

    def job_data(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.DATA)

    def job_trials(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.TRIALS)

    def trial_status(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.TRIAL_STATUS)

    def trial_counts(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.TRIAL_COUNTS)

    def search_log(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.SEARCH_LOG)

    def trial_results(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.RESULTS)

    def legacy_oracle(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.ORACLE)

    def step_lock(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.LOCK)

    def step_lock_wake(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.LOCK_WAKE)

    def nudged(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.NUDGED)

    def job_events(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.EVENTS)

    def job_pruning(self, job_id: str) -> str:
        return self.job_part(job_id, JobPart.PRUNING)

    def trial_lease(self, job_id: str, trial_id: str) -> str:
        return self.trial_part(job_id, TrialPart.LEASE, trial_id)

    def trial_requeued(self, job_id: str, trial_id: str) -> str:
        return self.trial_part(job_id, TrialPart.REQUEUED, trial_id)

    def trial_losses(self, job_id: str, trial_id: str) -> str:
        return self.trial_part(job_id, TrialPart.LOSSES, trial_id)

    def trial_history(self, job_id: str, trial_id: str) -> str:
        return self.trial_part(job_id, TrialPart.HISTORY, trial_id)

    def result_taken_in(self, job_id: str, trial_id: str) -> str:
        return self.trial_part(job_id, TrialPart.TAKEN_IN, trial_id)

    # listing indexes
    def jobs(self, status: JobStatus | None = None) -> str:
        """The index of every job, or of those with `status`."""
        return f"{self.prefix}:jobs" if status is None else f"{self.jobs_status_prefix}{status.value}"

    @property
    def jobs_status_prefix(self) -> str:
        """`jobs(status)` without the status (for Lua scripts, which know the status)."""
        return f"{self.prefix}:jobs:status:"

    # a tenant's keys
    @property
    def tenant_prefix(self) -> str:
        """What every tenant's keys start with, before the tenant (for Lua scripts that read the tenant)."""
        return f"{self.prefix}:tenant:"

    def tenant_jobs(self, tenant: str, status: JobStatus | None = None) -> str:
        """The index of the tenant's jobs, or of those with `status`."""
        if status is None:
            return f"{self.tenant_prefix}{tenant}{TENANT_JOBS}"
        return f"{self.tenant_prefix}{tenant}{TENANT_STATUS}{status.value}"

    def tenant_trials(self, tenant: str, day: str) -> str:
        """The trials the tenant's jobs reserved on a UTC day (YYYY-MM-DD)."""
        return f"{self.tenant_prefix}{tenant}{TENANT_TRIALS}{day}"

    def tenant_usage(self, tenant: str) -> str:
        return f"{self.tenant_prefix}{tenant}{TENANT_USAGE}"

    def tenant_datasets(self, tenant: str) -> str:
        return f"{self.tenant_prefix}{tenant}:datasets"

    def tenant_quotas(self, tenant: str) -> str:
        return f"{self.tenant_prefix}{tenant}:quotas"

    def tenant_webhook_secret(self, tenant: str) -> str:
        return f"{self.tenant_prefix}{tenant}:webhook-secret"

    # the API replicas' shared work
    @property
    def cleanup_claim(self) -> str:
        return f"{self.prefix}:cleanup:claim"

    @property
    def cleanup_cursor(self) -> str:
        return f"{self.prefix}:cleanup:cursor"

    @property
    def metrics_trials(self) -> str:
        return f"{self.prefix}:metrics:trials"

    @property
    def rate_limit_prefix(self) -> str:
        return f"{self.prefix}:rate-limit"

    # worker nodes and queues
    def worker_draining(self, node: str) -> str:
        return f"{self.prefix}:worker:{node}:draining"

    def worker_heartbeat(self, node: str) -> str:
        return f"{self.prefix}:worker:{node}:heartbeat"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def queue_served_at(self, queue: str) -> str:
        return f"{self.prefix}:queue:{queue}:served-at"

    # data sets, API keys, idempotency keys
    def dataset(self, dataset_id: str) -> str:
        return f"{self.prefix}:dataset:{dataset_id}"

    def dataset_jobs(self, dataset_id: str) -> str:
        return f"{self.dataset(dataset_id)}:jobs"

    @property
    def datasets(self) -> str:
        return f"{self.prefix}:datasets"

    def api_key(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}"

    @property
    def api_keys(self) -> str:
        return f"{self.prefix}:apikeys"

    def idempotency(self, scope: str, tenant: str, digest: str) -> str:
        return f"{self.prefix}:idempotency:{scope}:{tenant}:{digest}"

    def reply(self, reply_id: str) -> str:
        return f"{self.prefix}:reply:{reply_id}"


# How kombu's Redis transport names a queue's list per priority step (its Channel's `sep` and
# `priority_steps`), written out so that naming them needs no kombu at the API's start;
# tests/unit/test_store_keys.py checks them against kombu's own.
BROKER_SEP = "\x06\x16"
BROKER_PRIORITY_STEPS = (0, 3, 6, 9)


def broker_lists(queue: str) -> list[str]:
    """kombu's Redis lists of a Celery queue, one per priority step; the first is named after the queue."""
    return [f"{queue}{BROKER_SEP}{step}" if step else queue for step in BROKER_PRIORITY_STEPS]
