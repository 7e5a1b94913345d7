"""Runs one trial: takes its lease, starts it, trains it (worker.executions), and acts on how that ended.

How a trial ends is decided in one place, `_act_on`, from what training returned: the outcome is recorded,
or the trial is cancelled with its job, handed back on a shutdown, or left to the worker that took it over.
"""

from __future__ import annotations

import logging
import random
import time

from celery.exceptions import SoftTimeLimitExceeded

from service.core import fair_share, lifecycle
from service.core.records import ErrorInfo, TrialRecord, utcnow
from service.core.spec import JobSpec
from service.core.states import JobStatus, TrialStatus
from worker import search
from worker.checkpoints import TrialCheckpoint, load_checkpoint
from worker.context import WorkerContext, load_spec
from worker.executions import ExecutionsRun, fit_options, train_executions
from worker.lease import Keeper, trial_lease
from worker.outcome import failed, trained_outcome
from worker.progress import TrialProgress
from worker.pruning import Pruner, record_completed
from worker.runtime import release_memory
from worker.stops import StopReason
from worker.transient import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

# A finished trial's result is recorded by a search step; transient errors there are retried in place, so
# that the trial is not trained again, before the task itself is retried.
_FINISH_ATTEMPTS = 8


def run_trial(ctx: WorkerContext, job_id: str, trial_id: str, node: str = "") -> None:
    """Train one trial unless it already ended or another worker holds it; idempotent."""
    store = ctx.store
    record = store.get_trial(job_id, trial_id)
    if record is None or record.status.is_final():
        log.info("trial %s/%s already ended or unknown; nothing to train", job_id, trial_id)
        if record is not None and store.get_status(job_id) is JobStatus.RUNNING:
            # A retried task whose trial was recorded before its search step failed: take that step now.
            search.advance(ctx, job_id)
        return
    owner = f"{ctx.worker_name}:{random.randrange(16**8):08x}"
    if not store.acquire_lease(job_id, trial_id, owner, ctx.settings.lease_seconds):
        log.info(
            "trial %s/%s is held by %s; nothing to do", job_id, trial_id, store.lease_holder(job_id, trial_id)
        )
        return
    try:
        with trial_lease(store, job_id, trial_id, owner, ctx.settings.lease_seconds) as lease:
            _run_leased(ctx, job_id, record, lease, node)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        # Training errors are the trial's (trial_error); anything else here (a stored spec this worker
        # cannot read, say) would fail every try, so the job ends with it instead of waiting forever.
        search.fail_search(ctx, job_id, exc)
        error = ErrorInfo(code="search_error", message=f"{type(exc).__name__}: {exc}")
        update = {"status": TrialStatus.FAILED, "finished_at": utcnow(), "error": error}
        lifecycle.end_trial(store, job_id, record.model_copy(update=update))
    finally:
        release_memory()


def _run_leased(ctx: WorkerContext, job_id: str, record: TrialRecord, lease: Keeper, node: str) -> None:
    store = ctx.store
    status = store.get_status(job_id)
    if status is None:
        return  # the job was deleted
    if record.status is TrialStatus.RUNNING and store.result_handed_in(job_id, record.id):
        # Its worker handed in its result and was lost before a search step took it in: take that step.
        search.advance(ctx, job_id)
        return
    spec = load_spec(store, job_id)
    runtime_left = search.runtime_left(ctx, job_id, spec)
    if status.is_final() or runtime_left <= 0:
        _stop_unfinished(ctx, job_id, record, None)
        return
    losses = store.trial_losses(job_id, record.id)
    if losses >= ctx.settings.trial_max_worker_losses:
        # Most likely the trial itself kills its worker (out of memory); running it again would too.
        lost = failed(
            "worker_lost",
            f"the worker running this trial was lost {losses} times (killed, out of memory or its machine "
            f"gone); the trial is not run again",
        )
        _finish(ctx, job_id, record, lost)
        return
    resume = _usable_checkpoint(ctx, job_id, record.id)
    record = record.model_copy(
        update={
            "status": TrialStatus.RUNNING,
            "started_at": utcnow(),
            "worker": ctx.worker_name,
            "executions": resume.executions if resume is not None else [],
        }
    )
    if not lifecycle.start_trial(store, job_id, record):
        log.info("trial %s/%s ended before it started here; nothing to train", job_id, record.id)
        return
    progress = TrialProgress(
        store,
        job_id,
        record,
        lease,
        node,
        spec.limits.trial_timeout_seconds,
        runtime_left,
        resume.elapsed_seconds if resume is not None else 0.0,
        _pruner(ctx, job_id, spec, record),
    )
    try:
        run = train_executions(ctx, job_id, spec, record, progress, resume)
    except TRANSIENT_ERRORS:
        raise  # the job store, not the trial, failed: the task is retried (worker.tasks)
    except SoftTimeLimitExceeded:
        _finish(
            ctx,
            job_id,
            record,
            failed("trial_timeout", f"the trial ran longer than {ctx.settings.trial_time_limit_seconds} s"),
            progress,
        )
        return
    # Anything else means these hyperparameters do not train here; TensorFlow raises many types for that
    # (out of memory, invalid arguments ...), so the trial fails with the exception and the search goes on.
    except Exception as exc:
        log.exception("trial %s/%s failed", job_id, record.id)
        _finish(ctx, job_id, record, failed("trial_error", f"{type(exc).__name__}: {exc}"), progress)
        return
    _act_on(ctx, job_id, spec, record, progress, run)


def _act_on(
    ctx: WorkerContext,
    job_id: str,
    spec: JobSpec,
    record: TrialRecord,
    progress: TrialProgress,
    run: ExecutionsRun,
) -> None:
    """Record, cancel, hand back or let go of a trial, as the way its training ended says."""
    match run.stop:
        case None:
            initial_epoch = fit_options(spec, record.hyperparameters).initial_epoch
            outcome = trained_outcome(ctx, job_id, record.id, spec, run, initial_epoch)
            if outcome.status is TrialStatus.COMPLETED:
                record_completed(ctx.store, job_id, spec, record)  # before the result: it is kept once
            _finish(ctx, job_id, record, outcome, progress)
        case StopReason.PRUNED:
            # Completed with its best value so far (Optuna's and SageMaker's rule); its worker is free now.
            initial_epoch = fit_options(spec, record.hyperparameters).initial_epoch
            outcome = trained_outcome(ctx, job_id, record.id, spec, run, initial_epoch)
            pruned = record.model_copy(update={"stopped_early": progress.pruned})
            _finish(ctx, job_id, pruned, outcome, progress)
        case StopReason.TIMED_OUT:
            timeout = spec.limits.trial_timeout_seconds
            message = f"the trial ran longer than limits.trial_timeout_seconds ({timeout} s)"
            _finish(ctx, job_id, record, failed("trial_timeout", message), progress)
        case StopReason.LEASE_LOST:
            log.warning("trial %s/%s lost its lease; leaving it to its new owner", job_id, record.id)
        case StopReason.SHUTDOWN:
            _hand_back(ctx, job_id, spec, record, progress.lease)
        case StopReason.JOB_ENDED | StopReason.OUT_OF_RUNTIME:
            _stop_unfinished(ctx, job_id, record, progress)


def _pruner(ctx: WorkerContext, job_id: str, spec: JobSpec, record: TrialRecord) -> Pruner | None:
    """The judge of the trial's first execution under the job's tuner.pruning, if it has one and that
    execution is still to train (a checkpoint's first execution goes on from its epochs)."""
    if spec.tuner.pruning is None or len(record.executions) > 1:
        return None
    history = record.executions[0].history.get(spec.objective_name, []) if record.executions else []
    return Pruner(ctx.store, job_id, record.id, spec, history)


def _finish(
    ctx: WorkerContext,
    job_id: str,
    record: TrialRecord,
    outcome: search.TrialOutcome,
    progress: TrialProgress | None = None,
) -> None:
    """Record the trial's outcome through a search step, retrying transient errors in place."""
    if progress is not None:
        progress.flush_history()
    for attempt in range(_FINISH_ATTEMPTS):
        try:
            search.finish_trial(ctx, job_id, record, outcome)
            break
        except TRANSIENT_ERRORS as exc:
            if attempt + 1 == _FINISH_ATTEMPTS:
                raise
            log.warning("recording trial %s/%s failed (%s); trying again", job_id, record.id, exc)
            time.sleep(min(2**attempt, 30))
    ctx.artifacts.discard_resume(job_id, record.id)


def _usable_checkpoint(ctx: WorkerContext, job_id: str, trial_id: str) -> TrialCheckpoint | None:
    """The trial's epoch checkpoint, if it was written by the training loop this worker runs."""
    with ctx.artifacts.fetched(ctx.artifacts.resume_key(job_id, trial_id)) as path:
        checkpoint = load_checkpoint(path)
    if checkpoint is None:
        return None
    if checkpoint.current is not None and checkpoint.current.loop != ctx.settings.training_loop:
        log.warning("trial %s/%s starts over: its checkpoint is of another training loop", job_id, trial_id)
        return None
    log.warning("trial %s/%s continues from its checkpoint", job_id, trial_id)
    return checkpoint


def _hand_back(ctx: WorkerContext, job_id: str, spec: JobSpec, record: TrialRecord, lease: Keeper) -> None:
    """Give a trial back to the queue for another worker (this one is shutting down).

    Its checkpoint, just written, lets the next worker continue from the last epoch trained here.
    """
    if not lifecycle.hand_back_trial(ctx.store, job_id, record):
        return  # it ended meanwhile (its job was cancelled)
    # Released before the message goes, since the next owner acts on the message.
    ctx.store.release_lease(job_id, record.id, lease.owner)
    fair_share.send_trials(ctx.store, job_id, [record.id], spec.queue)
    log.warning("trial %s/%s handed back: this worker is shutting down", job_id, record.id)


def _stop_unfinished(
    ctx: WorkerContext, job_id: str, record: TrialRecord, progress: TrialProgress | None
) -> None:
    """Record a trial stopped by its job (cancelled, or out of runtime), then let the search end the job."""
    if progress is not None:
        progress.flush_history()
    lifecycle.cancel_trial(ctx.store, job_id, record)
    ctx.artifacts.discard_resume(job_id, record.id)
    search.advance(ctx, job_id)
