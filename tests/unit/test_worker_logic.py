"""Pure worker logic: the celery argv and BestEpochTracker."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.__main__ import worker_argv
from worker.training import BestEpochTracker, FitOptions

NAN = math.nan

# --- worker_argv --------------------------------------------------------------------------------------


def test_worker_argv_defaults() -> None:
    assert worker_argv([], 6) == ["worker", "--loglevel", "INFO", "-Q", "cpu", "-c", "6"]


@pytest.mark.parametrize(
    "args",
    [["-Q", "gpu"], ["--queues", "cpu,gpu"], ["--queues=gpu"], ["-Qgpu"]],
)
def test_worker_argv_keeps_the_callers_queues(args: list[str]) -> None:
    argv = worker_argv(args, 4)
    assert argv == ["worker", "--loglevel", "INFO", *args, "-c", "4"]


@pytest.mark.parametrize("args", [["-c", "2"], ["--concurrency", "2"], ["--concurrency=2"], ["-c2"]])
def test_worker_argv_keeps_the_callers_concurrency(args: list[str]) -> None:
    argv = worker_argv(args, 4)
    assert argv == ["worker", "--loglevel", "INFO", *args, "-Q", "cpu"]


def test_worker_argv_passes_other_options_through_and_adds_defaults() -> None:
    argv = worker_argv(["-n", "one@%h", "-Q", "gpu", "-c", "1", "--max-tasks-per-child", "5"], 8)
    assert argv == [
        "worker",
        "--loglevel",
        "INFO",
        "-n",
        "one@%h",
        "-Q",
        "gpu",
        "-c",
        "1",
        "--max-tasks-per-child",
        "5",
    ]
    assert argv.count("-Q") == 1 and argv.count("-c") == 1


# --- BestEpochTracker ---------------------------------------------------------------------------------


class _Model:
    """Stands in for a keras model: its weights are the epoch it has reached."""

    def __init__(self) -> None:
        self.epoch = 0

    def get_weights(self) -> list[np.ndarray]:
        return [np.array([self.epoch])]


def track(
    values: list[float],
    mode: str = "min",
    patience: int | None = None,
    min_delta: float = 0.0,
    first_epoch: int = 0,
) -> tuple[BestEpochTracker, list[bool]]:
    options = FitOptions(
        epochs=len(values),
        batch_size=1,
        monitor="val_loss" if mode == "min" else "val_auc",
        mode=mode,
        patience=patience,
        min_delta=min_delta,
    )  # type: ignore[arg-type]
    tracker, model, stops = BestEpochTracker(options), _Model(), []
    for epoch, value in enumerate(values, start=first_epoch):
        model.epoch = epoch
        stops.append(tracker.observe(epoch, {"loss": float(epoch), options.monitor: value}, model))  # type: ignore[arg-type]
    return tracker, stops


def test_tracker_keeps_the_lowest_epoch_in_min_mode() -> None:
    tracker, stops = track([3.0, 2.0, 2.5, 1.0, 1.5])
    assert (tracker.result.best_epoch, tracker.result.best_value) == (3, 1.0)
    assert tracker.result.best_weights is not None
    assert [w.tolist() for w in tracker.result.best_weights] == [[3]]
    assert stops == [False] * 5


def test_tracker_keeps_the_highest_epoch_in_max_mode() -> None:
    tracker, _ = track([0.5, 0.9, 0.7, 0.85], mode="max")
    assert (tracker.result.best_epoch, tracker.result.best_value) == (1, 0.9)
    assert tracker.result.best_weights is not None
    assert tracker.result.best_weights[0].tolist() == [1]


def test_tracker_keeps_the_first_of_equal_epochs() -> None:
    tracker, _ = track([2.0, 1.0, 1.0])
    assert tracker.result.best_epoch == 1


def test_tracker_ignores_nan() -> None:
    tracker, _ = track([NAN, 2.0, NAN, 1.0, NAN])
    assert (tracker.result.best_epoch, tracker.result.best_value) == (3, 1.0)
    assert len(tracker.result.history["val_loss"]) == 5
    assert math.isnan(tracker.result.history["val_loss"][0])


def test_tracker_without_a_finite_value_has_no_best_epoch() -> None:
    tracker, stops = track([NAN, NAN, NAN], patience=2)
    assert (tracker.result.best_epoch, tracker.result.best_value, tracker.result.best_weights) == (
        None,
        None,
        None,
    )
    # Like Keras' EarlyStopping, NaN epochs count against patience, so a diverged run stops.
    assert stops == [False, True, True]


def test_tracker_nan_at_the_first_epoch_never_stops_it() -> None:
    _, stops = track([NAN, NAN], patience=1)
    assert stops == [False, True]


def test_tracker_ignores_epochs_without_the_monitored_metric() -> None:
    options = FitOptions(epochs=2, batch_size=1, monitor="val_loss", mode="min")
    tracker = BestEpochTracker(options)
    tracker.observe(0, {"loss": 1.0}, _Model())  # type: ignore[arg-type]
    assert tracker.result.best_epoch is None
    assert tracker.result.history == {"loss": [1.0]}


def test_tracker_records_history_and_epochs_run() -> None:
    tracker, _ = track([3.0, 2.0, 1.0])
    assert tracker.result.history == {"loss": [0.0, 1.0, 2.0], "val_loss": [3.0, 2.0, 1.0]}
    assert tracker.result.epochs_run == 3


def test_tracker_reports_epochs_as_given() -> None:
    tracker, _ = track([3.0, 1.0, 2.0], first_epoch=10)
    assert tracker.result.best_epoch == 11


def test_early_stopping_after_patience_epochs_without_improvement() -> None:
    _, stops = track([1.0, 1.1, 1.2, 1.3, 0.5], patience=3)
    assert stops == [False, False, False, True, False]


def test_early_stopping_counter_resets_on_improvement() -> None:
    _, stops = track([1.0, 1.1, 0.9, 1.0, 1.0], patience=2)
    assert stops == [False, False, False, False, True]


def test_early_stopping_needs_improvement_beyond_min_delta() -> None:
    # Each epoch improves by 0.05, under min_delta 0.1: not an improvement for early stopping ...
    tracker, stops = track([1.0, 0.95, 0.92, 0.91], patience=2, min_delta=0.1)
    assert stops == [False, False, True, True]
    # ... though the best epoch is still the lowest value.
    assert tracker.result.best_epoch == 3


def test_early_stopping_improvement_beyond_min_delta_resets() -> None:
    _, stops = track([1.0, 0.95, 0.8, 0.79, 0.78], patience=2, min_delta=0.1)
    assert stops == [False, False, False, False, True]


def test_early_stopping_in_max_mode() -> None:
    _, stops = track([0.5, 0.7, 0.65, 0.7, 0.69], mode="max", patience=3, min_delta=0.01)
    assert stops == [False, False, False, False, True]


def test_no_early_stopping_without_patience() -> None:
    _, stops = track([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert not any(stops)


def test_a_stale_queued_job_is_sent_again_less_and_less_often() -> None:
    from service.api.sweeper import resend_wait

    waits = [resend_wait(60, sends).total_seconds() for sends in (1, 2, 3, 7, 100)]
    assert waits == [60, 120, 240, 3600, 3600]
