"""Fair share on a real broker: one tenant's single job does not wait for another tenant's queue to drain.

The first tests send messages with `service.core.fair_share` and take them back as a worker does (kombu,
priority 0 first, first come first served within a priority); the last runs a deployment with a single
worker process, so messages are taken one at a time and trials start in the order of the queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
import redis
from celery import Celery

from service.core import fair_share, lifecycle, queue
from service.core.queue import make_celery
from service.core.records import JobRecord, TrialRecord, utcnow
from service.core.settings import Settings
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobStore
from tests.integration.conftest import Deployment, long_job, service_env_for, wait_job

pytestmark = pytest.mark.integration


# --- messages sent here and taken back with kombu, no worker ----------------------------------------------


@pytest.fixture
def broker(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Celery, str]]:
    """The Celery app `fair_share` sends with, on the test Redis, and a queue of this test's own."""
    app = make_celery(Settings(redis_url=redis_url))
    monkeypatch.setattr(queue, "get_celery", lambda: app)
    name = f"fair-share-{uuid.uuid4().hex[:8]}"
    yield app, name
    redis.Redis.from_url(redis_url).delete(f"_kombu.binding.{name}")  # what sending to a new queue declared


def taken_in_order(app: Celery, queue_name: str) -> list[str]:
    """The id each waiting message carries (a job's start, a trial's run), in the order workers take them:
    kombu reads the priority lists from 0 up, each first in, first out."""
    taken: list[str] = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue_name, no_ack=True)) is not None:
            args = message.decode()[0]
            taken.append(args[-1])  # start_job(job_id), run_trial(job_id, trial_id)
    return taken


def stored_job(store: JobStore, tenant: str, status: JobStatus = JobStatus.QUEUED) -> str:
    spec = {"resources": {"accelerator": "cpu"}, "tuner": {"max_trials": 8}}
    record = JobRecord(id=str(uuid.uuid4()), tenant=tenant, status=status, spec=spec, created_at=utcnow())
    store.create_job(record, b"placeholder data")
    return record.id


def submitted(store: JobStore, tenant: str, queue_name: str) -> str:
    """A job stored as queued, then its start sent, as a submit does."""
    job_id = stored_job(store, tenant)
    fair_share.send_start(store, job_id, tenant, queue_name)
    return job_id


def queued_trials(store: JobStore, job_id: str, count: int) -> list[str]:
    """`count` trials of the job stored as queued, as a search step stores them before sending them."""
    ids = [f"t{index}-{uuid.uuid4().hex[:6]}" for index in range(count)]
    for trial_id in ids:
        assert lifecycle.queue_trial(
            store, job_id, TrialRecord(id=trial_id, status=TrialStatus.QUEUED, hyperparameters={})
        )
    return ids


def test_a_tenants_only_job_is_taken_before_another_tenants_later_jobs(
    scratch_store: JobStore, broker: tuple[Celery, str]
) -> None:
    app, queue_name = broker
    busy = [submitted(scratch_store, "a", queue_name) for _ in range(5)]
    light = submitted(scratch_store, "b", queue_name)

    # First come, first served would take b's job last; b has nothing else in flight, a's first job had
    # nothing ahead either, and a's others wait behind their own tenant's work.
    assert taken_in_order(app, queue_name) == [busy[0], light, *busy[1:]]


def test_jobs_stored_at_once_keep_their_order_and_the_first_its_turn(
    scratch_store: JobStore, broker: tuple[Celery, str]
) -> None:
    app, queue_name = broker
    busy = [stored_job(scratch_store, "a") for _ in range(5)]  # five submits at the same moment
    light = stored_job(scratch_store, "b")
    for job_id in busy:
        fair_share.send_start(scratch_store, job_id, "a", queue_name)
    fair_share.send_start(scratch_store, light, "b", queue_name)

    # Each start is ranked behind the jobs its tenant runs or queued before it, not those queued after.
    assert taken_in_order(app, queue_name) == [busy[0], light, *busy[1:]]


def test_one_jobs_many_parallel_trials_do_not_hold_back_another_tenants_first_trial(
    scratch_store: JobStore, broker: tuple[Celery, str]
) -> None:
    app, queue_name = broker
    wide = stored_job(scratch_store, "a", JobStatus.RUNNING)
    wide_trials = queued_trials(scratch_store, wide, 6)
    fair_share.send_trials(scratch_store, wide, wide_trials, queue_name)
    narrow = stored_job(scratch_store, "b", JobStatus.RUNNING)
    narrow_trials = queued_trials(scratch_store, narrow, 1)
    fair_share.send_trials(scratch_store, narrow, narrow_trials, queue_name)

    assert taken_in_order(app, queue_name) == [wide_trials[0], *narrow_trials, *wide_trials[1:]]


# --- the real API, one worker process, real training ----------------------------------------------------

BUSY_JOBS = 6
BUSY_TRIALS = 2  # per job, all queued when the job starts (max_parallel_trials = max_trials)
EPOCHS = 20  # about a second a trial


@pytest.fixture(scope="module")
def one_worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment of its own (Redis database 8, its queues apart) with one worker process, so messages
    are taken strictly one at a time. Quotas are far above the test's jobs: only priorities decide."""
    env = service_env_for(
        redis_url.rsplit("/", 1)[0] + "/8",
        tmp_path_factory.mktemp("fair-share-artifacts"),
        KTUNE_KEY_PREFIX=f"fair-share-{uuid.uuid4().hex[:8]}",
        KTUNE_QUOTA_RUNNING_JOBS="50",
    )
    with Deployment.running(env, tmp_path_factory.mktemp("fair-share-logs"), ["f1@ktune-test"]) as d:
        yield d


def trial_starts(client: httpx.Client, job_id: str) -> list[datetime]:
    trials = client.get(f"/v1/jobs/{job_id}/trials", params={"history": "false"}).json()["items"]
    return [datetime.fromisoformat(trial["started_at"]) for trial in trials]


def test_a_tenants_one_job_runs_before_another_tenants_queue_drains(one_worker: Deployment) -> None:
    busy, light = one_worker.client_for("busy"), one_worker.client_for("light")
    busy_jobs = [
        long_job(busy, max_trials=BUSY_TRIALS, max_parallel_trials=BUSY_TRIALS, epochs=EPOCHS)
        for _ in range(BUSY_JOBS)
    ]
    light_job = long_job(light, max_trials=1, epochs=EPOCHS)

    light_done = wait_job(light, light_job, {"succeeded"}, timeout=180)
    for job_id in busy_jobs:
        wait_job(busy, job_id, {"succeeded"}, timeout=180)
    busy_starts = sorted(start for job_id in busy_jobs for start in trial_starts(busy, job_id))
    light_first = min(trial_starts(light, light_job))
    assert len(busy_starts) == BUSY_JOBS * BUSY_TRIALS

    # The busy tenant's starts were all queued before the light tenant submitted, and each start queues
    # two trials: first come, first served would run every busy trial before the light one. With fair share
    # only a busy trial a worker already held when the light job came can go ahead of it.
    after = [start for start in busy_starts if start > light_first]
    assert len(after) > len(busy_starts) / 2, (
        f"only {len(after)} of the busy tenant's {len(busy_starts)} trials started after the light "
        f"tenant's first trial ({light_first}); busy starts: {busy_starts}"
    )
    light_finished = datetime.fromisoformat(light_done["finished_at"])
    assert light_finished < busy_starts[-1], "the light job ended only after the busy queue drained"
