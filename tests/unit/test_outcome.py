"""A trained trial's result: each execution's metrics at its best epoch, averaged (keras-tuner's rule)."""

from __future__ import annotations

import math

import pytest

from worker.outcome import best_epoch_metrics
from worker.training import ExecutionResult

NAN = math.nan

# --- best_epoch_metrics -------------------------------------------------------------------------------


def result(history: dict[str, list[float]], best_epoch: int | None) -> ExecutionResult:
    return ExecutionResult(history=history, best_epoch=best_epoch)


def test_best_epoch_metrics_average_each_execution_at_its_best_epoch() -> None:
    first = result({"loss": [4.0, 2.0, 3.0], "val_loss": [5.0, 1.0, 2.0]}, best_epoch=1)
    second = result({"loss": [6.0, 5.0, 4.0], "val_loss": [7.0, 6.0, 3.0]}, best_epoch=2)
    metrics, best_step = best_epoch_metrics([first, second], initial_epoch=0)
    assert metrics == {"loss": pytest.approx(3.0), "val_loss": pytest.approx(2.0)}
    assert best_step == 2


def test_best_epoch_metrics_skip_executions_without_a_best_epoch() -> None:
    scored = result({"val_loss": [3.0, 1.5]}, best_epoch=1)
    unscored = result({"val_loss": [NAN, NAN]}, best_epoch=None)
    metrics, best_step = best_epoch_metrics([unscored, scored], initial_epoch=0)
    assert metrics == {"val_loss": 1.5}
    assert best_step == 1


def test_best_epoch_metrics_of_no_scored_execution_are_empty() -> None:
    assert best_epoch_metrics([result({"val_loss": [NAN]}, None)], initial_epoch=0) == ({}, 0)
    assert best_epoch_metrics([], initial_epoch=0) == ({}, 0)


def test_best_epoch_metrics_offset_by_the_initial_epoch() -> None:
    # A hyperband continuation trains epochs 4, 5, 6: its history starts at index 0 for epoch 4.
    first = result({"val_accuracy": [0.5, 0.9, 0.7]}, best_epoch=5)
    second = result({"val_accuracy": [0.6, 0.65, 0.8]}, best_epoch=6)
    metrics, best_step = best_epoch_metrics([first, second], initial_epoch=4)
    assert metrics == {"val_accuracy": pytest.approx(0.85)}
    assert best_step == 6
