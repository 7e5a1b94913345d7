"""The job store's trial transitions, histories, step lock, tenants and quotas, against a real Redis
server."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from service.core import lifecycle
from service.core.records import ExecutionRecord, JobRecord, TrialRecord, utcnow
from service.core.states import TRIAL_TRANSITIONS, JobStatus, TrialStatus
from service.core.store import Admission, InvalidCursor, JobDeletion, JobStore, OverQuota

pytestmark = pytest.mark.integration


def _trial(status: TrialStatus = TrialStatus.QUEUED, epochs: int = 0) -> TrialRecord:
    history: dict[str, list[float | None]] = {"loss": [float(e) for e in range(epochs)]}
    return TrialRecord(
        id="00",
        status=status,
        hyperparameters={"units_0": 8},
        executions=[ExecutionRecord(history=history)] if epochs else [],
    )


def test_a_trial_is_created_once(scratch_store: JobStore, scratch_job: str) -> None:
    assert lifecycle.queue_trial(scratch_store, scratch_job, _trial())
    assert not lifecycle.queue_trial(
        scratch_store, scratch_job, _trial().model_copy(update={"hyperparameters": {}})
    )
    assert scratch_store.get_trial(scratch_job, "00").hyperparameters == {"units_0": 8}  # type: ignore[union-attr]


@pytest.mark.parametrize("final", [TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.CANCELLED])
def test_a_finished_trial_is_never_rewritten(
    scratch_store: JobStore, scratch_job: str, final: TrialStatus
) -> None:
    trial = _trial()
    lifecycle.queue_trial(scratch_store, scratch_job, trial)
    assert lifecycle.start_trial(scratch_store, scratch_job, trial)
    ended = trial.model_copy(update={"status": final, "objective_value": 0.5})
    assert scratch_store.transition_trial(scratch_job, ended, [TrialStatus.RUNNING])
    for target in TrialStatus:
        late = trial.model_copy(update={"status": target, "objective_value": 9.0})
        assert not scratch_store.transition_trial(scratch_job, late, list(TrialStatus)), target
    assert not lifecycle.report_progress(scratch_store, scratch_job, trial)
    assert not lifecycle.hand_back_trial(scratch_store, scratch_job, trial)
    assert not lifecycle.start_trial(scratch_store, scratch_job, trial)
    assert not lifecycle.cancel_trial(scratch_store, scratch_job, trial)
    stored = scratch_store.get_trial(scratch_job, "00")
    assert stored is not None and (stored.status, stored.objective_value) == (final, 0.5)
    assert scratch_store.trial_status_counts(scratch_job) == {final: 1}


def test_the_transition_table_has_no_way_out_of_a_final_status() -> None:
    for status, targets in TRIAL_TRANSITIONS.items():
        assert status.is_final() == (not targets), status


def test_a_queued_trial_cannot_be_completed_without_running(
    scratch_store: JobStore, scratch_job: str
) -> None:
    lifecycle.queue_trial(scratch_store, scratch_job, _trial())
    assert not lifecycle.end_trial(scratch_store, scratch_job, _trial(TrialStatus.COMPLETED))
    assert scratch_store.get_trial(scratch_job, "00").status is TrialStatus.QUEUED  # type: ignore[union-attr]


def test_a_cancelled_queued_trial_is_not_started(scratch_store: JobStore, scratch_job: str) -> None:
    lifecycle.queue_trial(scratch_store, scratch_job, _trial())
    assert lifecycle.cancel_queued_trial(scratch_store, scratch_job, _trial())
    assert not lifecycle.start_trial(scratch_store, scratch_job, _trial())


def test_history_is_appended_while_running_and_replaced_on_start(
    scratch_store: JobStore, scratch_job: str
) -> None:
    lifecycle.queue_trial(scratch_store, scratch_job, _trial())
    assert not scratch_store.append_history(scratch_job, "00", ['[0,{"loss":1.0}]']), "not running yet"
    assert lifecycle.start_trial(
        scratch_store, scratch_job, _trial(epochs=3)
    )  # as resumed from a 3-epoch checkpoint
    assert scratch_store.append_history(scratch_job, "00", ['[0,{"loss":3.0}]', '[1,{"loss":0.5}]'])
    (trial,) = scratch_store.get_trials(scratch_job)
    assert [e.history for e in trial.executions] == [{"loss": [0.0, 1.0, 2.0, 3.0]}, {"loss": [0.5]}]
    (bare,) = scratch_store.get_trials(scratch_job, history=False)
    assert all(not e.history for e in bare.executions)
    # Taken over from an older checkpoint: epochs written after it are dropped.
    assert lifecycle.start_trial(scratch_store, scratch_job, _trial(epochs=2))
    (trial,) = scratch_store.get_trials(scratch_job)
    assert [e.history for e in trial.executions] == [{"loss": [0.0, 1.0]}]
    running = _trial(TrialStatus.RUNNING)
    assert lifecycle.end_trial(
        scratch_store, scratch_job, running.model_copy(update={"status": TrialStatus.COMPLETED})
    )
    assert not scratch_store.append_history(scratch_job, "00", ['[0,{"loss":9.0}]']), "finished"


def test_late_writes_for_a_deleted_job_bring_nothing_back(scratch_store: JobStore) -> None:
    gone = str(uuid.uuid4())
    assert not lifecycle.queue_trial(scratch_store, gone, _trial())
    scratch_store.set_job_fields(gone, nudges=1, enqueued_at=utcnow())
    assert scratch_store.get_job(gone) is None
    assert not scratch_store.redis.keys(f"{scratch_store.prefix}:*")


def test_the_search_state_is_written_only_under_the_step_lock(
    scratch_store: JobStore, scratch_job: str
) -> None:
    assert not scratch_store.append_search_log(scratch_job, {"n": 1}, "me", 0), "no lock held"
    assert scratch_store.acquire_step_lock(scratch_job, "me", seconds=10)
    assert not scratch_store.acquire_step_lock(scratch_job, "other", seconds=10)
    assert scratch_store.append_search_log(scratch_job, {"n": 2}, "me", 0)
    assert not scratch_store.append_search_log(scratch_job, {"n": 3}, "other", 1)
    assert not scratch_store.append_search_log(scratch_job, {"n": 3}, "me", 0), "another step logged since"
    assert scratch_store.append_search_log(scratch_job, None, "me", 1), "a step that changed nothing"
    assert scratch_store.append_search_log(scratch_job, {"n": 4}, "me", 1)
    assert scratch_store.search_log(scratch_job) == (2, [{"n": 2}, {"n": 4}])
    assert scratch_store.search_log(scratch_job, 1) == (2, [{"n": 4}])
    record = scratch_store.get_job(scratch_job)
    assert record is not None and record.last_step_at is not None
    assert utcnow() - record.last_step_at < timedelta(seconds=5)
    scratch_store.release_step_lock(scratch_job, "other")  # not the owner: nothing happens
    assert scratch_store.renew_step_lock(scratch_job, "me", seconds=10)
    scratch_store.release_step_lock(scratch_job, "me")
    assert not scratch_store.append_search_log(scratch_job, {"n": 5}, "me", 2), "released"
    assert scratch_store.acquire_step_lock(scratch_job, "other", seconds=10)


# --- tenants and quotas ---------------------------------------------------------------------------------


def _job(tenant: str, trials: int = 1) -> JobRecord:
    spec = {"task": "regression", "resources": {"accelerator": "cpu"}, "tuner": {"max_trials": trials}}
    return JobRecord(
        id=str(uuid.uuid4()), tenant=tenant, status=JobStatus.QUEUED, spec=spec, created_at=utcnow()
    )


def test_each_tenant_lists_and_counts_only_its_own_jobs(scratch_store: JobStore) -> None:
    mine, theirs = _job("acme"), _job("globex")
    for record in (mine, theirs):
        scratch_store.create_job(record, b"npz bytes")
    assert [j.record.id for j in scratch_store.list_jobs("acme", None, 10, None)[0]] == [mine.id]
    queued = scratch_store.list_jobs("globex", JobStatus.QUEUED, 10, None)[0]
    assert [j.record.id for j in queued] == [theirs.id]
    assert scratch_store.get_job(mine.id).tenant == "acme"  # type: ignore[union-attr]
    assert lifecycle.start(scratch_store, mine.id)
    assert scratch_store.list_jobs("acme", JobStatus.QUEUED, 10, None)[0] == []
    assert scratch_store.tenant_job_counts("acme") == {JobStatus.QUEUED: 0, JobStatus.RUNNING: 1}
    assert lifecycle.cancel(scratch_store, mine.id)
    scratch_store.set_job_usage(mine.id, 1234)
    assert scratch_store.usage("acme") == 1234
    assert scratch_store.delete_job(mine.id) is JobDeletion.DELETED
    assert scratch_store.list_jobs("acme", None, 10, None)[0] == []
    assert scratch_store.list_jobs("acme", JobStatus.CANCELLED, 10, None)[0] == []
    assert scratch_store.usage("acme") == 0, "a deleted job's bytes no longer count"
    scratch_store.set_job_usage(mine.id, 99)  # a worker writing late
    assert scratch_store.usage("acme") == 0, "a deleted job never counts again"


def test_a_tenant_at_its_queued_jobs_quota_stores_nothing_more(scratch_store: JobStore) -> None:
    admission = Admission(trials=1, max_queued=2)
    first, second = _job("acme"), _job("acme")
    scratch_store.create_job(first, b"a", admission)
    scratch_store.create_job(second, b"b", admission)
    third = _job("acme")
    with pytest.raises(OverQuota) as refused:
        scratch_store.create_job(third, b"c", admission)
    assert (refused.value.quota, refused.value.used) == ("queued_jobs", 2)
    assert scratch_store.get_job(third.id) is None
    with pytest.raises(KeyError):
        scratch_store.get_data(third.id)
    scratch_store.create_job(_job("globex"), b"d", admission)  # another tenant's quota is its own
    assert lifecycle.start(scratch_store, first.id)  # one started: one more may queue
    scratch_store.create_job(third, b"c", admission)


def test_a_job_reserves_its_trials_from_the_day_and_gives_back_those_it_never_started(
    scratch_store: JobStore,
) -> None:
    day = utcnow().strftime("%Y-%m-%d")
    big = _job("acme", trials=6)
    scratch_store.create_job(big, b"a", Admission(trials=6, max_trials_per_day=10))
    assert scratch_store.trials_reserved("acme", day) == 6
    with pytest.raises(OverQuota) as refused:
        scratch_store.create_job(_job("acme", 5), b"b", Admission(trials=5, max_trials_per_day=10))
    assert (refused.value.quota, refused.value.used) == ("trials_per_day", 6)
    assert lifecycle.start(scratch_store, big.id)
    for trial_id in ("00", "01"):
        lifecycle.queue_trial(scratch_store, big.id, _trial().model_copy(update={"id": trial_id}))
    assert lifecycle.cancel(scratch_store, big.id)  # it ends having started 2 of its 6
    assert scratch_store.trials_reserved("acme", day) == 2
    assert scratch_store.release_trials(big.id) == 0, "given back once"
    scratch_store.create_job(_job("acme", 5), b"b", Admission(trials=5, max_trials_per_day=10))
    assert scratch_store.trials_reserved("acme", day) == 7


def test_a_tenant_at_its_running_jobs_quota_starts_its_next_job_only_when_one_ends(
    scratch_store: JobStore,
) -> None:
    first, second = _job("acme"), _job("acme")
    for record in (first, second):
        scratch_store.create_job(record, b"x")
    assert lifecycle.start(scratch_store, first.id, max_running=1)
    assert not lifecycle.start(scratch_store, second.id, max_running=1)
    waiting = scratch_store.get_job(second.id)
    assert waiting is not None and waiting.status is JobStatus.QUEUED
    assert waiting.waiting is not None and waiting.waiting.code == lifecycle.QUOTA_WAIT
    other = _job("globex")
    scratch_store.create_job(other, b"y")
    assert lifecycle.start(scratch_store, other.id, max_running=1), "another tenant runs its own quota"
    scratch_store.transition(first.id, [JobStatus.RUNNING], JobStatus.SUCCEEDED)
    assert lifecycle.start(scratch_store, second.id, max_running=1)
    started = scratch_store.get_job(second.id)
    assert started is not None and started.status is JobStatus.RUNNING and started.waiting is None


def test_a_tenants_jobs_ahead_of_one_are_its_running_ones_and_those_queued_before_it(
    scratch_store: JobStore,
) -> None:
    first, second, third = _job("acme"), _job("acme"), _job("acme")
    for record in (first, second, third):
        scratch_store.create_job(record, b"x")
    scratch_store.create_job(_job("globex"), b"y")
    assert [scratch_store.jobs_ahead("acme", r.id) for r in (first, second, third)] == [0, 1, 2]
    assert lifecycle.start(scratch_store, third.id)  # a running job does not count itself
    assert [scratch_store.jobs_ahead("acme", r.id) for r in (first, second, third)] == [1, 2, 2]


def test_trial_counts_follow_every_transition_and_are_read_with_the_job(
    scratch_store: JobStore, scratch_job: str
) -> None:
    trials = [_trial().model_copy(update={"id": f"{i:02d}"}) for i in range(4)]
    for trial in trials:
        assert lifecycle.queue_trial(scratch_store, scratch_job, trial)
    for trial in trials[:3]:
        assert lifecycle.start_trial(scratch_store, scratch_job, trial)
    assert lifecycle.hand_back_trial(scratch_store, scratch_job, trials[2])  # running -> queued again
    done = trials[0].model_copy(update={"status": TrialStatus.COMPLETED, "objective_value": 0.1})
    assert scratch_store.transition_trial(scratch_job, done, [TrialStatus.RUNNING])
    assert not scratch_store.transition_trial(scratch_job, done, [TrialStatus.RUNNING]), "counted once"

    expected = {TrialStatus.COMPLETED: 1, TrialStatus.RUNNING: 1, TrialStatus.QUEUED: 2}
    assert scratch_store.trial_status_counts(scratch_job) == expected
    [view, missing] = scratch_store.job_views([scratch_job, str(uuid.uuid4())])
    assert missing is None
    assert view is not None and view.record.id == scratch_job and view.trial_counts == expected


def test_a_job_stored_before_trial_counts_were_kept_is_counted_from_its_trials(
    scratch_store: JobStore, scratch_job: str
) -> None:
    for i in range(3):
        assert lifecycle.queue_trial(scratch_store, scratch_job, _trial().model_copy(update={"id": f"{i}"}))
    scratch_store.redis.delete(f"{scratch_store.prefix}:job:{scratch_job}:trial-counts")  # as an older store
    assert scratch_store.trial_status_counts(scratch_job) == {TrialStatus.QUEUED: 3}


def test_pages_of_jobs_come_newest_first_with_their_counts_in_one_read(scratch_store: JobStore) -> None:
    created = []
    for i in range(5):
        record = _job("paged").model_copy(update={"created_at": utcnow() + timedelta(seconds=i)})
        scratch_store.create_job(record, b"npz bytes")
        created.append(record.id)
    lifecycle.queue_trial(scratch_store, created[-1], _trial())
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = scratch_store.list_jobs("paged", None, 2, cursor)
        seen += [view.record.id for view in page]
        pages += 1
        if cursor is None:
            break
    assert seen == created[::-1] and pages == 3
    newest = scratch_store.list_jobs("paged", None, 1, None)[0][0]
    assert newest.trial_counts == {TrialStatus.QUEUED: 1}
    assert scratch_store.list_jobs("paged", None, 5, None)[1] is None, "no cursor when nothing is left"
    with pytest.raises(InvalidCursor):
        scratch_store.list_jobs("paged", None, 2, "not-a-cursor")


def test_a_page_is_read_after_redis_has_lost_its_scripts(scratch_store: JobStore) -> None:
    record = _job("flushed")
    scratch_store.create_job(record, b"npz bytes")
    scratch_store.list_jobs("flushed", None, 10, None)
    scratch_store.redis.script_flush()  # as after a restart without persistence of scripts
    assert [view.record.id for view in scratch_store.list_jobs("flushed", None, 10, None)[0]] == [record.id]
