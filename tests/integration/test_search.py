"""Search steps under the job's step lock, in this process, against a real Redis server and real keras-tuner.

Only the sending of trial messages is replaced (recorded instead of queued), so no worker is needed.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import pytest
import redis

from service.core import lifecycle, queue
from service.core.records import BestTrial, TrialRecord, utcnow
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobStore
from service.core.store_trials import HandIn
from tests.integration.conftest import IN_PROCESS_LOCK_SECONDS as LOCK_SECONDS
from tests.integration.conftest import running_job
from worker import results, search, search_state
from worker.context import WorkerContext, load_spec
from worker.oracles import dump_oracle, replay
from worker.runner import run_trial
from worker.transient import StepLockLost

pytestmark = pytest.mark.integration


def _lock_key(store: JobStore) -> str:
    (key,) = store.redis.keys(f"{store.prefix}:*:lock")
    return str(key)


def test_a_step_outliving_its_lock_length_keeps_the_lock_and_writes_once(
    worker_ctx: WorkerContext, sent_trials: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = running_job(worker_ctx)
    real_entry = search_state.log_entry

    def slow_entry(*args: Any) -> dict[str, Any] | None:
        time.sleep(4 * LOCK_SECONDS)  # a long Gaussian-process fit, say
        return real_entry(*args)

    writes: list[bool] = []
    real_append = worker_ctx.store.append_search_log

    def counted_append(*args: Any) -> bool:
        writes.append(real_append(*args))
        return writes[-1]

    monkeypatch.setattr(search_state, "log_entry", slow_entry)
    monkeypatch.setattr(worker_ctx.store, "append_search_log", counted_append)
    taken: list[bool] = []
    done = threading.Event()

    def compete() -> None:
        other = JobStore.from_url(worker_ctx.settings.redis_url, worker_ctx.store.prefix)
        # Another worker's step, started once this one holds the lock (had it come first, this one waits).
        while not done.is_set() and not other.redis.keys(f"{other.prefix}:*:lock"):
            time.sleep(0.01)
        while not done.is_set():
            taken.append(other.acquire_step_lock(job_id, "another worker", 10))
            time.sleep(0.05)

    competitor = threading.Thread(target=compete)
    competitor.start()
    try:
        search.advance(worker_ctx, job_id)
    finally:
        done.set()
        competitor.join()
    assert len(taken) > 20 and not any(taken), "another step got the lock while this one ran"
    assert writes == [True]
    trials = worker_ctx.store.get_trials(job_id)
    assert [t.status for t in trials] == [TrialStatus.QUEUED] * 2
    assert sorted(sent_trials) == [t.id for t in trials]
    assert not worker_ctx.store.redis.keys(f"{worker_ctx.store.prefix}:*:lock"), "released after the step"


def test_a_step_whose_lock_lapsed_writes_nothing_and_its_retry_hands_out_trials_once(
    worker_ctx: WorkerContext, sent_trials: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = running_job(worker_ctx)
    real_entry = search_state.log_entry
    stolen: list[str] = []

    def entry_after_a_takeover(*args: Any) -> dict[str, Any] | None:
        if not stolen:  # the process froze past its lock, and another step took the lock
            stolen.append(_lock_key(worker_ctx.store))
            worker_ctx.store.redis.set(stolen[0], "another worker")
        return real_entry(*args)

    monkeypatch.setattr(search_state, "log_entry", entry_after_a_takeover)
    with pytest.raises(StepLockLost):
        search.advance(worker_ctx, job_id)
    assert worker_ctx.store.search_log(job_id) == (0, [])
    assert worker_ctx.store.get_trials(job_id) == [] and sent_trials == []
    worker_ctx.store.redis.delete(stolen[0])  # the other step ended
    search.advance(worker_ctx, job_id)  # the task's retry
    trials = worker_ctx.store.get_trials(job_id)
    assert len(trials) == 2 and sorted(sent_trials) == [t.id for t in trials]
    assert worker_ctx.store.get_status(job_id) is JobStatus.RUNNING


class _Died(BaseException):
    """The worker process dying: nothing after this point runs."""


def test_trials_stored_in_the_search_state_but_not_recorded_are_recorded_by_the_next_step(
    worker_ctx: WorkerContext, sent_trials: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = running_job(worker_ctx)

    def die(*args: Any) -> bool:
        raise _Died

    monkeypatch.setattr(lifecycle, "queue_trials", die)
    with pytest.raises(_Died):
        search.advance(worker_ctx, job_id)
    monkeypatch.undo()
    monkeypatch.setattr(queue, "send_run_trial", lambda job_id, trial_id, *_: sent_trials.append(trial_id))
    store = worker_ctx.store
    assert store.search_log(job_id)[0] == 1 and store.get_trials(job_id) == []
    search.advance(worker_ctx, job_id)  # the sweeper's nudge, or any later step
    trials = store.get_trials(job_id)
    assert [t.id for t in trials] == sorted(sent_trials) and len(trials) == 2, "the same two, not two more"
    search.advance(worker_ctx, job_id)
    assert len(worker_ctx.store.get_trials(job_id)) == 2 and len(sent_trials) == 2


def test_a_step_that_raises_fails_the_job_with_search_error(
    worker_ctx: WorkerContext, sent_trials: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = running_job(worker_ctx)

    def broken(*args: Any) -> Any:
        raise ImportError("Please install scipy before using the BayesianOptimization")

    monkeypatch.setattr(search_state, "load_oracle", broken)
    monkeypatch.setattr(search_state, "replay", broken)
    search.advance(worker_ctx, job_id)
    record = worker_ctx.store.get_job(job_id)
    assert record is not None and record.status is JobStatus.FAILED
    assert record.error is not None and record.error.code == "search_error"
    assert "ImportError: Please install scipy" in record.error.message
    assert not worker_ctx.store.redis.keys(f"{worker_ctx.store.prefix}:*:lock")


def _started_trial(ctx: WorkerContext, job_id: str, sent: list[str]) -> TrialRecord:
    search.advance(ctx, job_id)
    record = ctx.store.get_trial(job_id, sent[0])
    assert record is not None
    running = record.model_copy(update={"status": TrialStatus.RUNNING, "started_at": utcnow()})
    assert lifecycle.start_trial(ctx.store, job_id, running)
    return running


def _completed(value: float) -> search.TrialOutcome:
    metrics = {"loss": 0.1, "accuracy": value, "val_loss": 0.1, "val_accuracy": value}
    return search.TrialOutcome(TrialStatus.COMPLETED, metrics, value, 1)


def test_a_failing_finish_step_fails_the_job_and_keeps_the_trials_result(
    worker_ctx: WorkerContext, sent_trials: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = running_job(worker_ctx)
    trial = _started_trial(worker_ctx, job_id, sent_trials)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("an oracle bug")

    monkeypatch.setattr(search, "_keep_if_best", broken)
    search.finish_trial(worker_ctx, job_id, trial, _completed(0.75))
    record = worker_ctx.store.get_job(job_id)
    assert record is not None and record.status is JobStatus.FAILED
    assert record.error is not None and record.error.code == "search_error"
    assert "ValueError: an oracle bug" in record.error.message
    stored = worker_ctx.store.get_trial(job_id, trial.id)
    assert stored is not None and (stored.status, stored.objective_value) == (TrialStatus.COMPLETED, 0.75)


def test_a_finish_step_retried_after_a_redis_error_counts_the_trial_once_and_advances(
    worker_ctx: WorkerContext, sent_trials: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = running_job(worker_ctx)
    trial = _started_trial(worker_ctx, job_id, sent_trials)
    real_end = lifecycle.end_trials

    def end_then_lose_redis(*args: Any) -> list[bool]:
        real_end(*args)
        raise redis.ConnectionError("Redis went away after the trial was recorded")

    monkeypatch.setattr(lifecycle, "end_trials", end_then_lose_redis)
    with pytest.raises(redis.ConnectionError):
        search.finish_trial(worker_ctx, job_id, trial, _completed(0.75))
    assert worker_ctx.store.get_status(job_id) is JobStatus.RUNNING, "a transient error does not fail the job"
    assert len(sent_trials) == 2, "the search did not advance yet"
    monkeypatch.setattr(lifecycle, "end_trials", real_end)
    search.finish_trial(worker_ctx, job_id, trial, _completed(0.75))  # the retry
    oracle = replay(load_spec(worker_ctx.store, job_id), worker_ctx.store.search_log(job_id)[1])
    told = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    assert len(told) == 1, "the oracle counted the trial once"
    assert len(sent_trials) == 3, "the retry advanced the search: a third trial was handed out"
    stored = worker_ctx.store.get_trial(job_id, trial.id)
    assert stored is not None and stored.status is TrialStatus.COMPLETED


def test_a_search_begun_before_the_log_goes_on_from_its_stored_state(
    worker_ctx: WorkerContext, sent_trials: list[str]
) -> None:
    store = worker_ctx.store
    job_id = running_job(worker_ctx)
    search.advance(worker_ctx, job_id)
    spec = load_spec(store, job_id)
    # As an older ktune left it: the whole state as one value, no log, no worker that kept the oracle.
    state = dump_oracle(replay(spec, store.search_log(job_id)[1]))
    store.redis.set(f"{store.prefix}:job:{job_id}:oracle", json.dumps(state))
    store.redis.delete(f"{store.prefix}:job:{job_id}:search-log")
    search_state.forget(store, job_id)

    trial = store.get_trial(job_id, sent_trials[0])
    assert trial is not None
    assert lifecycle.start_trial(store, job_id, trial.model_copy(update={"status": TrialStatus.RUNNING}))
    search.finish_trial(worker_ctx, job_id, trial, _completed(0.5))

    length, entries = store.search_log(job_id)
    assert length == 2 and "state" in entries[0] and "changes" in entries[1]
    oracle = replay(spec, entries)
    assert set(oracle.trials) == set(state["trials"]) | {sent_trials[2]}, "the two trials, and one more"
    assert oracle.trials[trial.id].status == "COMPLETED"


def test_results_handed_in_while_a_step_runs_are_taken_in_by_one_step_and_counted_once(
    worker_ctx: WorkerContext, sent_trials: list[str]
) -> None:
    # A lock that outlasts any pause of this busy test process: one step, not a takeover, is tested here.
    settings = worker_ctx.settings.model_copy(update={"step_lock_seconds": 30})
    worker_ctx = dataclasses.replace(worker_ctx, settings=settings)
    store = worker_ctx.store
    job_id = running_job(worker_ctx)
    search.advance(worker_ctx, job_id)
    trials = []
    for trial_id in sent_trials[:2]:
        record = store.get_trial(job_id, trial_id)
        assert record is not None
        running = record.model_copy(update={"status": TrialStatus.RUNNING, "started_at": utcnow()})
        assert lifecycle.start_trial(store, job_id, running)
        trials.append(running)
    assert store.acquire_step_lock(job_id, "another worker's step", 30)
    finishing = [
        threading.Thread(target=search.finish_trial, args=(worker_ctx, job_id, trial, _completed(value)))
        for trial, value in zip(trials, (0.5, 0.6), strict=True)
    ]
    for thread in finishing:
        thread.start()
    deadline = time.monotonic() + 30
    while len(store.handed_in_results(job_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(store.handed_in_results(job_id)) == {t.id for t in trials}, "both wait for the lock"
    store.release_step_lock(job_id, "another worker's step")
    for thread in finishing:
        thread.join(30)
    assert not any(thread.is_alive() for thread in finishing)
    length, entries = store.search_log(job_id)
    # The first hand-out, then ONE step: its take-in of both results and its hand-out of the next two.
    assert length == 3, entries
    assert set(entries[1]["changes"]["trials"]) == {t.id for t in trials}
    oracle = replay(load_spec(store, job_id), entries)
    assert sorted(t.trial_id for t in oracle.trials.values() if t.status == "COMPLETED") == sorted(
        t.id for t in trials
    )
    for trial in trials:
        stored = store.get_trial(job_id, trial.id)
        assert stored is not None and stored.status is TrialStatus.COMPLETED
    assert store.handed_in_results(job_id) == {}
    assert len(sent_trials) == 4, "the next two handed out once"
    assert store.trial_status_counts(job_id) == {TrialStatus.COMPLETED: 2, TrialStatus.QUEUED: 2}


def test_a_result_whose_worker_died_before_a_step_took_it_in_is_taken_in_by_the_next_run_of_its_trial(
    worker_ctx: WorkerContext, sent_trials: list[str]
) -> None:
    store = worker_ctx.store
    job_id = running_job(worker_ctx)
    trial = _started_trial(worker_ctx, job_id, sent_trials)
    # The worker handed in its result, took the lock for its step, and died: its lock and lease lapse.
    standing = store.hand_in_result(job_id, trial.id, results.encode(trial, _completed(0.75)), "dead", 0.05)
    assert standing is HandIn.ACQUIRED
    time.sleep(0.1)
    assert store.get_trial(job_id, trial.id).status is TrialStatus.RUNNING  # type: ignore[union-attr]
    search_state.forget(store, job_id)  # total worker loss: no process kept the oracle
    run_trial(worker_ctx, job_id, trial.id)  # the sweeper re-sent the trial: no training, a step
    stored = store.get_trial(job_id, trial.id)
    assert stored is not None and (stored.status, stored.objective_value) == (TrialStatus.COMPLETED, 0.75)
    assert store.handed_in_results(job_id) == {}
    assert len(sent_trials) == 3, "its next trial handed out"
    # The dead worker's result arriving again (a late retry) counts nothing twice.
    search.finish_trial(worker_ctx, job_id, trial, _completed(0.75))
    search.advance(worker_ctx, job_id)
    oracle = replay(load_spec(store, job_id), store.search_log(job_id)[1])
    assert [t.trial_id for t in oracle.trials.values() if t.status == "COMPLETED"] == [trial.id]
    assert store.trial_status_counts(job_id) == {TrialStatus.COMPLETED: 1, TrialStatus.QUEUED: 2}
    assert len(sent_trials) == 3


# --- completion criteria (tuner.stop_when) ------------------------------------------------------------------


def _start(ctx: WorkerContext, job_id: str, trial_id: str) -> TrialRecord:
    record = ctx.store.get_trial(job_id, trial_id)
    assert record is not None
    running = record.model_copy(update={"status": TrialStatus.RUNNING, "started_at": utcnow()})
    assert lifecycle.start_trial(ctx.store, job_id, running)
    return running


def test_a_reached_objective_hands_out_no_more_trials_and_the_job_succeeds_once_those_running_end(
    worker_ctx: WorkerContext, sent_trials: list[str]
) -> None:
    store = worker_ctx.store
    job_id = running_job(worker_ctx, max_trials=10, stop_when={"objective_reaches": 0.9})
    search.advance(worker_ctx, job_id)
    first, second = (_start(worker_ctx, job_id, trial_id) for trial_id in sent_trials)
    search.finish_trial(worker_ctx, job_id, first, _completed(0.5))
    assert len(sent_trials) == 3, "not reached: the search goes on"
    third = _start(worker_ctx, job_id, sent_trials[2])
    search.finish_trial(worker_ctx, job_id, second, _completed(0.95))
    assert len(sent_trials) == 3, "reached: no new trial"
    record = store.get_job(job_id)
    assert record is not None and record.status is JobStatus.RUNNING, "the third trial still runs"
    search.finish_trial(worker_ctx, job_id, third, _completed(1.0))
    record = store.get_job(job_id)
    assert record is not None and record.status is JobStatus.SUCCEEDED
    assert record.stopped_by is not None
    assert (record.stopped_by.criterion, record.stopped_by.value, record.stopped_by.trial) == (
        "objective_reaches",
        0.9,
        second.id,
    )
    trials = store.get_trials(job_id)
    assert [t.status for t in trials] == [TrialStatus.COMPLETED] * 3, "the trial in flight ran to its end"


def test_a_redelivered_finish_does_not_count_twice_toward_no_improvement(
    worker_ctx: WorkerContext, sent_trials: list[str]
) -> None:
    store = worker_ctx.store
    job_id = running_job(
        worker_ctx, max_trials=10, max_parallel_trials=1, stop_when={"no_improvement_trials": 2}
    )
    search.advance(worker_ctx, job_id)
    best = _start(worker_ctx, job_id, sent_trials[-1])
    search.finish_trial(worker_ctx, job_id, best, _completed(0.75))
    worse = _start(worker_ctx, job_id, sent_trials[-1])
    search.finish_trial(worker_ctx, job_id, worse, _completed(0.5))
    search.finish_trial(worker_ctx, job_id, worse, _completed(0.5))  # the same finish, delivered again
    assert store.get_status(job_id) is JobStatus.RUNNING, "one trial without improvement, not two"
    assert len(sent_trials) == 3
    # Every worker lost: the next step replays the whole log, standing included.
    search_state.forget(store, job_id)
    last = _start(worker_ctx, job_id, sent_trials[-1])
    search.finish_trial(worker_ctx, job_id, last, _completed(0.75))  # a tie does not improve
    record = store.get_job(job_id)
    assert record is not None and record.status is JobStatus.SUCCEEDED
    assert record.stopped_by is not None and record.stopped_by.criterion == "no_improvement_trials"
    assert record.stopped_by.trial == last.id and record.stopped_by.value == 2
    assert f"(trial {best.id})" in record.stopped_by.message
    assert len(sent_trials) == 3


def test_an_enqueued_trial_is_handed_out_first_and_once(
    worker_ctx: WorkerContext, sent_trials: list[str]
) -> None:
    entry = {"hidden_layers": 1, "units_0": 24, "activation": "tanh", "optimizer": "rmsprop"}
    job_id = running_job(worker_ctx, max_parallel_trials=1, enqueue=[entry])
    search.advance(worker_ctx, job_id)
    search.advance(worker_ctx, job_id)  # a repeated start: nothing more
    assert len(sent_trials) == 1
    first = _start(worker_ctx, job_id, sent_trials[0])
    assert first.hyperparameters.items() >= entry.items()
    search_state.forget(worker_ctx.store, job_id)
    search.finish_trial(worker_ctx, job_id, first, _completed(0.5))
    second = worker_ctx.store.get_trial(job_id, sent_trials[1])
    assert second is not None and not second.hyperparameters.items() >= entry.items()


def _accurate(ctx: WorkerContext, job_id: str, trial_id: str, val_loss: float) -> search.TrialOutcome:
    """A completed trial at val_accuracy 1.0, with its model written where a trial leaves a candidate."""
    candidate = ctx.artifacts.candidate_model_path(job_id, trial_id)
    candidate.parent.mkdir(parents=True, exist_ok=True)
    candidate.write_bytes(f"model of trial {trial_id}".encode())
    metrics = {"loss": val_loss, "accuracy": 1.0, "val_loss": val_loss, "val_accuracy": 1.0}
    return search.TrialOutcome(TrialStatus.COMPLETED, metrics, 1.0, 7, candidate)


def test_trials_tied_on_the_objective_are_ranked_by_val_loss_and_the_job_says_so(
    worker_ctx: WorkerContext, sent_trials: list[str]
) -> None:
    store = worker_ctx.store
    job_id = running_job(worker_ctx)  # xor-classifier: val_accuracy, batch_size 4 a constant
    best_model = worker_ctx.artifacts.best_model_path(job_id)
    search.advance(worker_ctx, job_id)

    def finish(trial_id: str, val_loss: float) -> search.TrialOutcome:
        outcome = _accurate(worker_ctx, job_id, trial_id, val_loss)
        search.finish_trial(worker_ctx, job_id, _start(worker_ctx, job_id, trial_id), outcome)
        return outcome

    def best() -> BestTrial:
        record = store.get_job(job_id)
        assert record is not None and record.best is not None
        return record.best

    first, second = sent_trials
    finish(first, 0.1)
    assert (best().trial_id, best().chosen_by, best().best_epoch) == (first, "objective", 7)
    assert best().constants == {"batch_size": 4} and "batch_size" not in best().hyperparameters

    outcome = finish(second, 0.3)
    assert (best().trial_id, best().chosen_by) == (first, "tie_breaker:val_loss"), "it won a tie by val_loss"
    assert outcome.candidate is not None and not outcome.candidate.exists(), (
        "a trial that lost leaves no model"
    )
    assert best_model.read_bytes() == f"model of trial {first}".encode()

    third = sent_trials[2]
    finish(third, 0.05)
    assert (best().trial_id, best().chosen_by) == (third, "tie_breaker:val_loss")
    assert best().metrics["val_loss"] == 0.05
    assert best_model.read_bytes() == f"model of trial {third}".encode(), "its model is the job's best"
    trial = store.get_trial(job_id, third)
    assert trial is not None and trial.constants == {"batch_size": 4}
    assert "batch_size" not in trial.hyperparameters
