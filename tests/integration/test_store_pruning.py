"""`service.core.store_pruning` on a real Redis: values by epoch and by rung, each trial's kept once, none
written for a deleted job, and the job's deletion removes them."""

from __future__ import annotations

import math

import pytest

from service.core import lifecycle
from service.core.store import JobDeletion, JobStore

pytestmark = pytest.mark.integration


def test_completed_curves_are_read_by_epoch_and_kept_once_per_trial(
    scratch_store: JobStore, scratch_job: str
) -> None:
    store, job = scratch_store, scratch_job
    assert store.completed_at_epoch(job, 1) == (0, [])
    assert store.record_completed_curve(job, "0", [0.5, 0.25, 0.125])
    assert store.record_completed_curve(job, "1", [0.75, None, math.nan])  # diverged: no value there
    assert not store.record_completed_curve(job, "0", [9.0, 9.0, 9.0]), "a trial run again adds nothing"
    assert store.completed_at_epoch(job, 1) == (2, [0.5, 0.75])
    assert store.completed_at_epoch(job, 2) == (2, [0.25])
    assert store.completed_at_epoch(job, 3) == (2, [0.125])
    assert store.completed_at_epoch(job, 4) == (2, []), "no trial trained 4 epochs"
    assert store.completed_at_epochs(job, 2, 4) == (2, {2: [0.25], 3: [0.125], 4: []})


def test_a_rung_keeps_each_trials_first_value(scratch_store: JobStore, scratch_job: str) -> None:
    store, job = scratch_store, scratch_job
    assert store.record_rung(job, "0", 0, 0.5) == (0.5, [0.5])
    assert store.record_rung(job, "1", 0, 0.1 + 0.2) == (0.1 + 0.2, [0.5, 0.1 + 0.2])
    assert store.record_rung(job, "0", 0, 0.9) == (0.5, [0.5, 0.1 + 0.2]), "redelivered: its first value"
    assert store.record_rung(job, "0", 1, 0.4) == (0.4, [0.4]), "rungs apart"
    with pytest.raises(ValueError, match="finite"):
        store.record_rung(job, "2", 0, math.inf)


def test_nothing_is_written_for_a_deleted_job_and_deletion_removes_the_record(
    scratch_store: JobStore, scratch_job: str
) -> None:
    store, job = scratch_store, scratch_job
    store.record_completed_curve(job, "0", [0.5])
    store.record_rung(job, "0", 0, 0.5)
    pruning_key = store.keys.job_pruning(job)
    assert store.redis.exists(pruning_key)
    assert lifecycle.succeed(store, job)
    assert store.delete_job(job) is JobDeletion.DELETED
    assert not store.redis.exists(pruning_key), "deleted with its job"
    assert not store.record_completed_curve(job, "1", [0.5])
    assert store.record_rung(job, "1", 0, 0.5) == (0.5, [0.5]), "judged alone, recorded nowhere"
    assert store.redis.keys(f"{store.keys.job(job)}*") == [], "no key left behind"
