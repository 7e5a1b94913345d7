"""What `ktune` prints for people: a job's progress line and summary, a table of trials. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from service.api.schemas import JobPublic, TrialPublic
from service.core.finalization import Finalization
from service.core.recheck import Recheck

BAR_WIDTH = 20


def number(value: float | None) -> str:
    """An objective or metric value, short: 6 significant digits."""
    return "-" if value is None else f"{value:.6g}"


def trials_done(job: JobPublic) -> int:
    """Trials that ended, however they ended."""
    progress = job.progress
    return progress.completed + progress.failed + progress.cancelled


def progress_line(job: JobPublic) -> str:
    """One line: status, a bar of trials done out of the budget, counts, the best objective so far."""
    progress, done = job.progress, trials_done(job)
    total = max(progress.trials_total, 1)
    filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    parts = [f"{job.status.value:<9} [{bar}] {done}/{progress.trials_total} trials"]
    if progress.running:
        parts.append(f"{progress.running} running")
    if progress.failed:
        parts.append(f"{progress.failed} failed")
    best = job.best_trial
    if best is None:
        parts.append(f"best {job.objective.name}: -")
    else:
        parts.append(f"best {job.objective.name}: {number(best.objective_value)} (trial {best.id})")
    if job.waiting is not None:
        parts.append(f"waiting: {job.waiting.message}")
    return "  ".join(parts)


def _moment(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hyperparameters(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{name}={number(value) if isinstance(value, float) else value}" for name, value in values.items()
    )


def job_summary(job: JobPublic) -> str:
    """A job, a field a line: what `ktune status` prints."""
    progress = job.progress
    rows = [
        ("id", job.id),
        ("name", job.name or "-"),
        ("status", job.status.value),
        ("task", f"{job.task}, {job.algorithm} search"),
        ("objective", f"{job.objective.name} ({job.objective.direction})"),
        (
            "trials",
            f"{trials_done(job)}/{progress.trials_total} done: {progress.completed} completed, "
            f"{progress.failed} failed, {progress.cancelled} cancelled; {progress.running} running, "
            f"{progress.queued} queued",
        ),
    ]
    best = job.best_trial
    if best is not None:
        rows.append(("best", f"trial {best.id}: {number(best.objective_value)}, chosen by {best.chosen_by}"))
        rows.append(("best hps", _hyperparameters(best.hyperparameters)))
    if job.stopped_by is not None:
        rows.append(("stopped by", f"{job.stopped_by.criterion} (trial {job.stopped_by.trial})"))
    if job.finalization is not None:
        rows.append(("finalized", finalization(job.finalization)))
    if job.recheck is not None:
        rows.append(("rechecked", recheck(job.recheck)))
    if job.error is not None:
        rows.append(("error", f"{job.error.code}: {job.error.message}"))
    if job.waiting is not None:
        rows.append(("waiting", f"{job.waiting.code}: {job.waiting.message}"))
    rows += [
        ("created", _moment(job.created_at)),
        ("started", _moment(job.started_at)),
        ("finished", _moment(job.finished_at)),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def finalization(run: Finalization) -> str:
    """A finalization's status and, once it succeeded, its test metrics."""
    outcome = run.status.value
    if run.test_metrics:
        outcome += f", test {_hyperparameters(run.test_metrics)}"
    if run.error is not None:
        outcome += f": {run.error.code}: {run.error.message}"
    return outcome


def recheck(run: Recheck) -> str:
    """A recheck's status and, once it succeeded, whether the winner holds, with its mean and spread."""
    outcome = run.status.value
    result = run.result
    if result is not None and result.trials:
        winner = result.trials[0]
        outcome += (
            f", winner {result.winner} holds"
            if result.winner_holds
            else f", winner {result.winner} does not hold: trial {result.best_by_mean} is best by mean"
        )
        outcome += f" (mean {number(winner.mean)}, std {number(winner.std)} over {len(winner.seeds)} seeds)"
    if run.error is not None:
        outcome += f": {run.error.code}: {run.error.message}"
    return outcome


def ranked(trials: Sequence[TrialPublic], direction: str) -> list[TrialPublic]:
    """Trials best first by objective (`direction` "min" or "max"), those without a value last by id."""
    sign = 1.0 if direction == "min" else -1.0
    scored = sorted(
        (t for t in trials if t.objective_value is not None),
        key=lambda t: (sign * (t.objective_value or 0.0), t.id),
    )
    unscored = sorted((t for t in trials if t.objective_value is None), key=lambda t: t.id)
    return scored + unscored


def _status(trial: TrialPublic) -> str:
    """A trial's status; a pruned one says at which epoch (`tuner.pruning`)."""
    stop = trial.stopped_early
    if stop is None:
        return trial.status.value
    return f"{trial.status.value} (pruned at epoch {stop.epoch})"


def trials_table(trials: Sequence[TrialPublic], direction: str, objective: str) -> str:
    """A table of trials, best first: id, status, objective, seconds, hyperparameters."""
    rows = [("TRIAL", "STATUS", objective.upper(), "SECONDS", "HYPERPARAMETERS")]
    for trial in ranked(trials, direction):
        seconds = "-" if trial.duration_seconds is None else f"{trial.duration_seconds:.1f}"
        rows.append(
            (
                trial.id,
                _status(trial),
                number(trial.objective_value),
                seconds,
                _hyperparameters(trial.hyperparameters),
            )
        )
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
