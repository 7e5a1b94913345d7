"""Steps of a job's search, each under the job's lock: hand out trials, take in results, end the job."""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

from service.core import events, fair_share, lifecycle
from service.core.records import BestTrial, ErrorInfo, TrialRecord, utcnow
from service.core.spec import JobSpec
from service.core.states import JobStatus, TrialStatus
from service.core.stop_when import StoppedBy
from service.core.store import JobStore
from service.core.store_trials import HandIn
from worker import completion, constants, ranking, results, search_state
from worker.context import WorkerContext, load_spec
from worker.lease import Keeper, step_lock
from worker.oracles import KtStatus, is_seeded, ktune_state
from worker.results import TrialOutcome
from worker.search_state import SearchState
from worker.transient import TRANSIENT_ERRORS, SearchBusy, StepLockLost

__all__ = ["TrialOutcome", "advance", "finish_trial"]

log = logging.getLogger(__name__)

_LOCK_POLL_SECONDS = 0.05


def public_values(values: dict[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameters without keras-tuner's bookkeeping entries (tuner/epochs ...)."""
    return {name: value for name, value in values.items() if not name.startswith("tuner/")}


@contextlib.contextmanager
def search_step(ctx: WorkerContext, job_id: str) -> Iterator[Keeper]:
    """Hold the job's step lock, renewed by a thread, for one step of its search.

    Raises SearchBusy when another step holds it for longer than `KTUNE_STEP_WAIT_SECONDS`.
    """
    store, settings = ctx.store, ctx.settings
    owner = _step_owner(ctx)
    deadline = time.monotonic() + settings.step_wait_seconds
    while not store.acquire_step_lock(job_id, owner, settings.step_lock_seconds):
        if time.monotonic() > deadline:
            raise SearchBusy(f"the search of job {job_id} stayed busy for {settings.step_wait_seconds} s")
        # A release wakes one waiting step at once; the timeout covers a holder that died holding the lock
        # (it lapses) and a wake another step took.
        store.wait_step_lock(job_id, _LOCK_POLL_SECONDS)
    with step_lock(store, job_id, owner, settings.step_lock_seconds) as lock:
        yield lock


def _step_owner(ctx: WorkerContext) -> str:
    return f"{ctx.worker_name}:{uuid.uuid4().hex[:8]}"


def _save(
    store: JobStore, job_id: str, state: SearchState, lock: Keeper, touched: tuple[str, ...] = ()
) -> None:
    """Log what the step changed in the oracle, only while this step still holds the lock. Raises
    StepLockLost."""
    if lock.lost:
        raise StepLockLost(f"the search step of job {job_id} lost its lock before storing its result")
    search_state.commit(store, job_id, state, lock.owner, touched)


def fail_search(ctx: WorkerContext, job_id: str, exc: BaseException) -> None:
    """End the job `failed` with `search_error`: a search step raised something no retry will mend."""
    log.error("a search step of job %s failed", job_id, exc_info=exc)
    lifecycle.fail(ctx.store, job_id, "search_error", f"the search failed: {type(exc).__name__}: {exc}")


def advance(ctx: WorkerContext, job_id: str) -> None:
    """Start trials up to max_parallel_trials and queue them; end the job once the search is over.

    Idempotent: trials the oracle holds with no record yet (a step interrupted after storing the oracle)
    get their record and message here. A step that raises anything but a transient error fails the job
    with `search_error`; transient errors propagate, for the task to be tried again.
    """
    try:
        created, queue_name = _advance(ctx, job_id)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        fail_search(ctx, job_id, exc)
        return
    fair_share.send_trials(ctx.store, job_id, created, queue_name)


def _advance(ctx: WorkerContext, job_id: str) -> tuple[list[str], str]:
    with search_step(ctx, job_id) as lock:
        return _step(ctx, job_id, lock)


def _hand_out(
    ctx: WorkerContext,
    job_id: str,
    lock: Keeper,
    state: SearchState | None = None,
    status: JobStatus | None = None,
) -> tuple[list[str], str]:
    """Hand out trials, in a step that holds the lock (and has checked out `state` and read the job's
    `status` in this hold, if given): the trials it recorded, and the queue to send them to."""
    store = ctx.store
    status = status or store.get_status(job_id)
    if status is None or status.is_final():
        return [], ""
    spec = load_spec(store, job_id)
    state = state or search_state.checkout(store, spec, job_id)
    oracle = state.oracle
    if runtime_left(ctx, job_id, spec) <= 0:
        # SageMaker's MaxRuntimeInSeconds: no new trial; the job ends with what it found.
        _save(store, job_id, state, lock)
        if not store.trial_status_counts(job_id).keys() & {TrialStatus.QUEUED, TrialStatus.RUNNING}:
            _end_search(ctx, job_id, oracle)
        return [], spec.queue
    # A completion criterion that fired: no new trial; those handed out run to their end.
    stop = _stopped_by(oracle)
    stopped = stop is not None
    while stop is None and len(oracle.ongoing_trials) < spec.tuner.max_parallel_trials:
        trial = oracle.create_trial(f"slot-{uuid.uuid4().hex[:8]}")
        if trial.status != KtStatus.RUNNING:
            stopped = trial.status == KtStatus.STOPPED
            break
    _save(store, job_id, state, lock)
    # Every ongoing trial, not only those this step created: one a step cut short stored in the oracle
    # without its record gets it now (a trial with a record keeps it: queueing only makes new ones).
    ongoing = list(oracle.ongoing_trials.values())
    records = [_queued(spec, trial.trial_id, trial.hyperparameters.values) for trial in ongoing]
    queued = lifecycle.queue_trials(store, job_id, records)
    created = [record.id for record, new in zip(records, queued, strict=True) if new]
    if stopped and not oracle.ongoing_trials:
        _end_search(ctx, job_id, oracle)
    return created, spec.queue


def _stopped_by(oracle: Any) -> StoppedBy | None:
    """The completion criterion that ended the search, if one has."""
    return completion.Standing.from_state(ktune_state(oracle).get("completion")).stopped_by


def _weigh_completion(spec: JobSpec, oracle: Any, kt_trial: Any) -> None:
    """Take a trial the oracle was just told into the completion criteria's standing, if the job has any."""
    rule = spec.tuner.stop_when
    if rule is None:
        return
    state = ktune_state(oracle)
    score = kt_trial.score if kt_trial.status == KtStatus.COMPLETED else None
    standing = completion.after_trial(
        rule,
        spec.objective_direction,
        completion.Standing.from_state(state.get("completion")),
        kt_trial.trial_id,
        None if score is None else float(score),
    )
    state["completion"] = standing.to_state()


def _queued(spec: JobSpec, trial_id: str, values: dict[str, Any]) -> TrialRecord:
    hyperparameters, fixed = constants.split(spec, dict(values))
    return TrialRecord(
        id=trial_id, status=TrialStatus.QUEUED, hyperparameters=hyperparameters, constants=fixed
    )


def runtime_left(ctx: WorkerContext, job_id: str, spec: JobSpec) -> float:
    """Seconds the job may still run under limits.max_runtime_seconds; infinity without that limit."""
    limit = spec.limits.max_runtime_seconds
    record = ctx.store.get_job(job_id) if limit is not None else None
    if limit is None or record is None or record.started_at is None:
        return math.inf
    return limit - (utcnow() - record.started_at).total_seconds()


def _end_search(ctx: WorkerContext, job_id: str, oracle: Any) -> None:
    # tuner.warm_start's trials are earlier jobs' (Optuna's oracle keeps them out of `trials`).
    own = [t for t in oracle.trials.values() if not is_seeded(t.trial_id)]
    if any(t.status == KtStatus.COMPLETED for t in own):
        lifecycle.succeed(ctx.store, job_id, _stopped_by(oracle))
    else:
        lifecycle.fail(
            ctx.store,
            job_id,
            "no_trial_completed",
            f"none of the {len(own)} trials completed; see each trial's error",
        )


def current_best(ctx: WorkerContext, job_id: str) -> BestTrial | None:
    record = ctx.store.get_job(job_id)
    return record.best if record else None


def against_best(spec: JobSpec, challenger: ranking.Standing, best: BestTrial | None) -> ranking.Verdict:
    """How a completed trial compares with the job's best so far (a NaN objective never wins)."""
    if not math.isfinite(challenger.objective):
        return ranking.Verdict(False, ranking.OBJECTIVE)
    incumbent = ranking.Standing.of_best(best) if best is not None else None
    return ranking.compare(ranking.Ranking.of(spec), challenger, incumbent)


def finish_trial(ctx: WorkerContext, job_id: str, record: TrialRecord, outcome: TrialOutcome) -> None:
    """Tell the oracle a trial's result, keep the best model, record the trial, then advance the search.

    Safe to call again after a transient error: the oracle is told once, and the search still advances. A
    step that fails otherwise fails the job with `search_error`, and the trial keeps its own result.
    """
    try:
        created, queue_name = _finish(ctx, job_id, record, outcome)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        fail_search(ctx, job_id, exc)
        lifecycle.end_trial(ctx.store, job_id, _finished(record, outcome))
        ctx.store.results_taken_in(job_id, [record.id], [])
        if outcome.candidate is not None:
            outcome.candidate.unlink(missing_ok=True)
        return
    # What the job now stores counts against its tenant's artifact_bytes quota.
    ctx.store.set_job_usage(job_id, ctx.artifacts.job_bytes(job_id))
    fair_share.send_trials(ctx.store, job_id, created, queue_name)


def _finish(
    ctx: WorkerContext, job_id: str, record: TrialRecord, outcome: TrialOutcome
) -> tuple[list[str], str]:
    """Take in the trial's result, then hand out the next trials in the same hold of the lock.

    A result without a candidate model is handed in to the store first (group commit): the step that
    holds the job's lock takes in every result handed in, so while one step runs, the results of other
    workers wait for it or for the next, and one step takes in many. A worker whose result another step
    took in is done (that step handed out the next trials); one that finds the lock free takes the step.
    A result with a candidate is taken in by its own worker's step, which holds the file to promote.
    """
    store, settings = ctx.store, ctx.settings
    if outcome.candidate is not None:
        with search_step(ctx, job_id) as lock:
            return _step(ctx, job_id, lock, (record, outcome))
    owner = _step_owner(ctx)
    seconds = settings.step_lock_seconds
    standing = store.hand_in_result(job_id, record.id, results.encode(record, outcome), owner, seconds)
    deadline = time.monotonic() + settings.step_wait_seconds
    while standing is HandIn.BUSY:
        if time.monotonic() > deadline:
            raise SearchBusy(f"the search of job {job_id} stayed busy for {settings.step_wait_seconds} s")
        if store.wait_taken_in(job_id, record.id, _LOCK_POLL_SECONDS):
            return [], ""  # taken in by another worker's step, which handed out the next trials
        standing = store.step_or_taken_in(job_id, record.id, owner, seconds)
    if standing is not HandIn.ACQUIRED:
        return [], ""  # taken in by another worker's step (or the job is gone)
    with step_lock(store, job_id, owner, seconds) as lock:
        return _step(ctx, job_id, lock, (record, outcome))


def _step(
    ctx: WorkerContext,
    job_id: str,
    lock: Keeper,
    own: tuple[TrialRecord, TrialOutcome] | None = None,
) -> tuple[list[str], str]:
    """One step under the job's lock: take in every result handed in (and this worker's own, `own`), then
    hand out trials. Each part logs its own changes, so a step cut short between them leaves taken-in
    results whose next trials the next step hands out; results are removed from the store only once their
    trials are recorded, so a step cut short before that leaves them for the next step, which finds the
    oracle told and only records them."""
    store = ctx.store
    status = store.get_status(job_id)
    if status is None:
        return [], ""  # the job was deleted
    spec = load_spec(store, job_id)
    state, handed_in = search_state.checkout_with_results(store, spec, job_id)
    taking = sorted(
        (results.decode(raw) for trial_id, raw in handed_in.items() if own is None or trial_id != own[0].id),
        key=lambda entry: entry[0],
    )
    taken = [(record, outcome) for _, record, outcome in taking] + ([own] if own is not None else [])
    if not taken:
        return _hand_out(ctx, job_id, lock, state, status)
    oracle = state.oracle
    told_now = []
    for record, outcome in taken:
        kt_trial = oracle.trials[record.id]
        # A retried step may find the oracle already told: it must not count the trial twice.
        told = kt_trial.status in (KtStatus.COMPLETED, KtStatus.FAILED)
        if not told:
            _tell_oracle(store, job_id, oracle, kt_trial, outcome)
            _weigh_completion(spec, oracle, kt_trial)
        told_now.append((record, _as_told(spec, kt_trial, outcome)))
        if not told and told_now[-1][1].status is not TrialStatus.COMPLETED:
            # Only a failure adds to the count (the check after the last one passed): no walk otherwise.
            _check_failed_trials(store, job_id, spec, oracle, told_now[-1][1])
    _save(store, job_id, state, lock, tuple(record.id for record, _ in taken))
    for record, outcome in told_now:
        _keep_if_best(ctx, job_id, spec, oracle, record, outcome, running=not status.is_final())
    lifecycle.end_trials(store, job_id, [_finished(record, outcome) for record, outcome in told_now])
    store.results_taken_in(
        job_id,
        [record.id for record, _ in taken if record.id in handed_in],
        [record.id for _, record, _ in taking],
    )
    # A failure may have ended the job (too many failed trials): then the status is read again.
    failures = any(outcome.status is not TrialStatus.COMPLETED for _, outcome in told_now)
    return _hand_out(ctx, job_id, lock, search_state.resume(store, job_id), None if failures else status)


def _tell_oracle(store: JobStore, job_id: str, oracle: Any, kt_trial: Any, outcome: TrialOutcome) -> None:
    """End the trial in the oracle; it may find a completed trial's score NaN and fail it."""
    if outcome.status is TrialStatus.COMPLETED:
        oracle.update_trial(kt_trial.trial_id, outcome.metrics, step=outcome.best_step)
        kt_trial.status = KtStatus.COMPLETED
    else:
        kt_trial.status = KtStatus.FAILED
        kt_trial.message = outcome.error_message
    try:
        oracle.end_trial(kt_trial)
    except RuntimeError as exc:  # keras-tuner's limit of consecutive failed trials
        lifecycle.fail(store, job_id, "too_many_failed_trials", str(exc).strip())


def _as_told(spec: JobSpec, kt_trial: Any, outcome: TrialOutcome) -> TrialOutcome:
    """The outcome as the oracle took it: failed when the oracle found a completed trial's score NaN."""
    if kt_trial.status == KtStatus.FAILED and outcome.status is TrialStatus.COMPLETED:
        return TrialOutcome(
            TrialStatus.FAILED,
            outcome.metrics,
            None,
            outcome.best_step,
            outcome.candidate,
            "objective_nan",
            f"the objective {spec.objective_name} was NaN or infinite in every epoch",
        )
    return outcome


def _check_failed_trials(
    store: JobStore, job_id: str, spec: JobSpec, oracle: Any, outcome: TrialOutcome
) -> None:
    limit = spec.limits.max_failed_trials
    failed = sum(1 for trial in oracle.trials.values() if trial.status == KtStatus.FAILED)
    if limit is not None and failed > limit:
        lifecycle.fail(
            store,
            job_id,
            "too_many_failed_trials",
            f"{failed} trials failed, more than limits.max_failed_trials ({limit}); the last one: "
            f"{outcome.error_message}",
        )


def _keep_if_best(
    ctx: WorkerContext,
    job_id: str,
    spec: JobSpec,
    oracle: Any,
    record: TrialRecord,
    outcome: TrialOutcome,
    running: bool,
) -> None:
    # The best so far is the job's: a trial that beats it (by `worker.ranking`'s rules) is the new best,
    # found without sorting every ended trial.
    kt_trial = oracle.trials[record.id]
    best, verdict = None, None
    if (
        running
        and outcome.status is TrialStatus.COMPLETED
        and kt_trial.status == KtStatus.COMPLETED
        and kt_trial.score is not None
    ):
        best = current_best(ctx, job_id)
        challenger = ranking.Standing(float(kt_trial.score), outcome.metrics, outcome.best_step)
        verdict = against_best(spec, challenger, best)
    if verdict and verdict.wins and outcome.candidate is not None and outcome.candidate.exists():
        ctx.artifacts.promote(job_id, outcome.candidate)
        ctx.store.set_job_fields(
            job_id,
            best=BestTrial(
                trial_id=record.id,
                hyperparameters=public_values(record.hyperparameters),
                constants=record.constants,
                objective_value=float(kt_trial.score),
                metrics=outcome.metrics,
                best_epoch=outcome.best_step,
                chosen_by=verdict.rule,
            ),
        )
        events.new_best(ctx.store, job_id, record.id, float(kt_trial.score))
        return
    if outcome.candidate is not None:
        outcome.candidate.unlink(missing_ok=True)
    if verdict is not None and best is not None and not verdict.wins:
        # The best stays, told apart from this trial perhaps by a finer rule than before (a tie-breaker).
        rule = ranking.chosen_by(best.chosen_by, verdict)
        if rule != best.chosen_by:
            ctx.store.set_job_fields(job_id, best=best.model_copy(update={"chosen_by": rule}))


def _finished(record: TrialRecord, outcome: TrialOutcome) -> TrialRecord:
    finished = utcnow()
    error = (
        ErrorInfo(code=outcome.error_code or "trial_failed", message=outcome.error_message or "")
        if outcome.status is TrialStatus.FAILED
        else None
    )
    return record.model_copy(
        update={
            "status": outcome.status,
            "metrics": outcome.metrics,
            "objective_value": outcome.objective_value,
            "finished_at": finished,
            "duration_seconds": (finished - record.started_at).total_seconds() if record.started_at else None,
            "error": error,
        }
    )
