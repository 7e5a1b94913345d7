"""What `ktune` prints: the progress line, the job summary, trials ranked by objective either way."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from service.api.schemas import JobPublic, TrialPublic
from service.cli import render

NOW = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)


def job(**changes: Any) -> JobPublic:
    base: dict[str, Any] = {
        "id": "j1",
        "name": "xor",
        "status": "running",
        "task": "binary_classification",
        "algorithm": "random",
        "objective": {"name": "val_accuracy", "direction": "max"},
        "progress": {
            "trials_total": 4,
            "completed": 1,
            "running": 2,
            "queued": 0,
            "failed": 1,
            "cancelled": 0,
        },
        "best_trial": None,
        "error": None,
        "created_at": NOW,
        "started_at": NOW,
        "finished_at": None,
        "spec": {},
    }
    return JobPublic.model_validate({**base, **changes})


def trial(trial_id: str, value: float | None, status: str = "completed") -> TrialPublic:
    return TrialPublic.model_validate(
        {
            "id": trial_id,
            "status": status,
            "hyperparameters": {"units": 8, "activation": "relu", "learning_rate": 0.006722677777040343},
            "objective_value": value,
            "metrics": {},
            "executions": [],
            "created_at": NOW,
            "started_at": NOW,
            "finished_at": NOW,
            "duration_seconds": 1.25,
            "worker": "w1",
            "error": None,
        }
    )


def test_the_progress_line_counts_trials_done_and_shows_the_best_so_far() -> None:
    best = {"id": "03", "trial_id": "03", "hyperparameters": {}, "objective_value": 0.875, "metrics": {}}
    line = render.progress_line(job(best_trial=best))
    assert line.startswith("running   [##########..........] 2/4 trials")
    assert "2 running" in line and "1 failed" in line
    assert line.endswith("best val_accuracy: 0.875 (trial 03)")


def test_the_progress_line_before_any_trial_and_when_waiting() -> None:
    empty = {"trials_total": 3, "completed": 0, "running": 0, "queued": 0, "failed": 0, "cancelled": 0}
    waiting = {"code": "no_worker", "message": "no worker consumes the queue cpu"}
    line = render.progress_line(job(status="queued", progress=empty, waiting=waiting))
    assert line.startswith("queued    [....................] 0/3 trials  best val_accuracy: -")
    assert line.endswith("waiting: no worker consumes the queue cpu")


def test_a_full_bar_when_every_trial_is_done() -> None:
    done = {"trials_total": 2, "completed": 2, "running": 0, "queued": 0, "failed": 0, "cancelled": 0}
    assert "[" + "#" * render.BAR_WIDTH + "] 2/2 trials" in render.progress_line(job(progress=done))


@pytest.mark.parametrize(
    ("direction", "order"), [("max", ["b", "c", "a", "d", "e"]), ("min", ["a", "c", "b", "d", "e"])]
)
def test_trials_are_ranked_best_first_and_those_without_a_value_last(
    direction: str, order: list[str]
) -> None:
    trials = [
        trial("e", None, "failed"),
        trial("a", 0.1),
        trial("b", 0.9),
        trial("d", None, "running"),
        trial("c", 0.5),
    ]
    assert [t.id for t in render.ranked(trials, direction)] == order


def test_the_trials_table_aligns_its_columns() -> None:
    table = render.trials_table([trial("01", 0.25), trial("02", None, "failed")], "min", "val_loss")
    assert table.splitlines() == [
        "TRIAL  STATUS     VAL_LOSS  SECONDS  HYPERPARAMETERS",
        "01     completed  0.25      1.2      units=8, activation=relu, learning_rate=0.00672268",
        "02     failed     -         1.2      units=8, activation=relu, learning_rate=0.00672268",
    ]


def test_the_summary_names_the_error_of_a_failed_job() -> None:
    error = {"code": "all_trials_failed", "message": "every trial failed"}
    summary = render.job_summary(job(status="failed", error=error, finished_at=NOW))
    assert "error      all_trials_failed: every trial failed" in summary.splitlines()
    assert "finished   2026-12-04T21:00:00Z" in summary.splitlines()


def test_a_pruned_trial_says_at_which_epoch() -> None:
    stop = {"epoch": 2, "rule": "median", "reason": "below the median"}
    pruned = TrialPublic.model_validate({**trial("03", 0.5).model_dump(), "stopped_early": stop})
    row = render.trials_table([pruned], "max", "val_accuracy").splitlines()[1]
    assert row.startswith("03     completed (pruned at epoch 2)  0.5")


def test_the_summary_says_what_chose_the_best_what_ended_the_search_and_the_finalization() -> None:
    best = {
        "id": "03",
        "trial_id": "03",
        "hyperparameters": {"units": 8},
        "objective_value": 1.0,
        "metrics": {},
        "chosen_by": "tie_breaker:val_loss",
    }
    stopped = {"criterion": "objective_reaches", "value": 1.0, "trial": "03", "message": "reached 1.0"}
    final = {
        "run_id": "f1",
        "status": "succeeded",
        "requested_at": NOW,
        "deadline_at": NOW,
        "test_metrics": {"accuracy": 0.75},
    }
    lines = render.job_summary(
        job(status="succeeded", best_trial=best, stopped_by=stopped, finalization=final)
    ).splitlines()
    assert "best        trial 03: 1, chosen by tie_breaker:val_loss" in lines
    assert "stopped by  objective_reaches (trial 03)" in lines
    assert "finalized   succeeded, test accuracy=0.75" in lines


def test_the_summary_says_whether_the_winner_held_its_recheck() -> None:
    rechecked = {
        "trial_id": "03",
        "hyperparameters": {"units": 8},
        "epochs": 20,
        "search_objective": 1.0,
        "seeds": [11, 12],
        "values": [0.75, 0.5],
        "mean": 0.625,
        "std": 0.176777,
        "min": 0.5,
        "max": 0.75,
    }
    result = {
        "objective": "val_accuracy",
        "direction": "max",
        "winner": "03",
        "best_by_mean": "07",
        "winner_holds": False,
        "trials": [rechecked],
    }
    run = {"run_id": "r1", "requested_at": NOW, "deadline_at": NOW, "top_k": 2, "seeds": 2}
    done = {**run, "status": "succeeded", "result": result}
    lines = render.job_summary(job(status="succeeded", recheck=done)).splitlines()
    assert (
        "rechecked  succeeded, winner 03 does not hold: trial 07 is best by mean "
        "(mean 0.625, std 0.176777 over 2 seeds)"
    ) in lines
    failed = {**run, "status": "failed", "error": {"code": "timed_out", "message": "past its deadline"}}
    lines = render.job_summary(job(status="succeeded", recheck=failed)).splitlines()
    assert "rechecked  failed: timed_out: past its deadline" in lines
