"""One training execution of a compiled Keras model on in-memory data.

`fit_execution` is the reference path (plain `model.fit`); `worker.fast_training` runs the same epochs as
compiled chunks. Both take and return the same types so the trial runner can use either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from worker.stops import StopReason

# Called after every epoch with (epoch index, logs); returning a reason stops training there.
EpochCallback = Callable[[int, dict[str, float]], StopReason | None]


@dataclass(frozen=True)
class TrainData:
    """Arrays of one job, already split into train and validation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass(frozen=True)
class FitOptions:
    """What one execution trains for, and how its best epoch is judged."""

    epochs: int
    batch_size: int
    monitor: str
    mode: Literal["min", "max"]
    initial_epoch: int = 0
    shuffle: bool = True
    patience: int | None = None
    min_delta: float = 0.0


@dataclass
class ExecutionResult:
    """Per-epoch history of one execution and the weights of its best epoch."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None
    best_value: float | None = None
    best_weights: list[np.ndarray] | None = None
    stopped_early: bool = False
    stopped_by: StopReason | None = None  # what the epoch callback stopped training with

    @property
    def cancelled(self) -> bool:
        """Whether the epoch callback stopped training before its end."""
        return self.stopped_by is not None

    @property
    def epochs_run(self) -> int:
        return len(next(iter(self.history.values()), []))


@dataclass
class ExecutionState:
    """An unfinished execution after some epoch: what another process needs to continue it.

    `variables` are the trainer's own (model, optimizer, shuffling, best-epoch weights); `loop` names the
    trainer that wrote them, the only one that can read them back.
    """

    loop: str
    next_epoch: int
    tracker: dict[str, Any]
    variables: list[np.ndarray]


# Called by a trainer after every chunk of epochs with a function that captures the execution's state;
# the hook calls it only when it wants a checkpoint, so an unwanted one costs nothing.
CheckpointHook = Callable[[Callable[[], ExecutionState]], None]


class BestEpochTracker:
    """Keeps the best epoch's value and weights and decides early stopping, like Keras' EarlyStopping."""

    def __init__(self, options: FitOptions) -> None:
        self.options = options
        self.result = ExecutionResult()
        self._since_improvement = 0
        self._reference: float | None = None

    def snapshot(self) -> dict[str, Any]:
        """Everything but the best weights, which each trainer keeps its own way; JSON-serialisable."""
        return {
            "history": self.result.history,
            "best_epoch": self.result.best_epoch,
            "best_value": self.result.best_value,
            "since_improvement": self._since_improvement,
            "reference": self._reference,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.result.history = {name: list(values) for name, values in snapshot["history"].items()}
        self.result.best_epoch = snapshot["best_epoch"]
        self.result.best_value = snapshot["best_value"]
        self._since_improvement = snapshot["since_improvement"]
        self._reference = snapshot["reference"]

    def _better(self, value: float, than: float | None, min_delta: float) -> bool:
        if than is None:
            return True
        if self.options.mode == "min":
            return value < than - min_delta
        return value > than + min_delta

    def observe(self, epoch: int, logs: dict[str, float], model: keras.Model) -> bool:
        """Record one epoch; returns True when early stopping says to stop (Keras' EarlyStopping rule)."""
        for name, value in logs.items():
            self.result.history.setdefault(name, []).append(float(value))
        monitored = logs.get(self.options.monitor)
        if monitored is None:
            return False
        value = float(monitored)
        finite = math.isfinite(value)
        if finite and self._better(value, self.result.best_value, 0.0):
            self.result.best_value = value
            self.result.best_epoch = epoch
            self.result.best_weights = [np.array(w) for w in model.get_weights()]
        if self.options.patience is None:
            return False
        # Like Keras, a NaN epoch counts against patience: a diverged run stops instead of training on.
        # An infinite value is a diverged epoch too, never the best one.
        self._since_improvement += 1
        if finite and self._better(value, self._reference, abs(self.options.min_delta)):
            self._reference = value
            self._since_improvement = 0
            return False
        return self._since_improvement >= self.options.patience and epoch > 0


def assign_values(variables: list[Any], values: list[np.ndarray]) -> None:
    """Load a checkpoint's arrays into variables; ValueError when they do not belong to this model."""
    if len(variables) != len(values) or any(
        # A free dimension (None: an elastic model's width, worker.elastic_models) takes any size.
        not tf.TensorShape(v.shape).is_compatible_with(a.shape)
        for v, a in zip(variables, values, strict=False)
    ):
        raise ValueError("the checkpoint's variables do not match this model")
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


class _EpochHook(keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(
        self, tracker: BestEpochTracker, on_epoch: EpochCallback, checkpoint: CheckpointHook | None
    ) -> None:
        super().__init__()
        self.tracker = tracker
        self.on_epoch = on_epoch
        self.checkpoint = checkpoint

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        floats = {name: float(value) for name, value in (logs or {}).items()}
        if self.tracker.observe(epoch, floats, self.model):
            self.tracker.result.stopped_early = True
            self.model.stop_training = True
        if reason := self.on_epoch(epoch, floats):
            self.tracker.result.stopped_by = reason
            self.model.stop_training = True
        if self.checkpoint is not None and not self.tracker.result.stopped_early:
            self.checkpoint(lambda: _fit_state(self.model, self.tracker, epoch + 1))


def _fit_state(model: keras.Model, tracker: BestEpochTracker, next_epoch: int) -> ExecutionState:
    variables = [*model.variables, *model.optimizer.variables]
    best = tracker.result.best_weights or []
    return ExecutionState(
        "fit", next_epoch, tracker.snapshot(), [np.array(v) for v in variables] + [np.array(w) for w in best]
    )


def _restore_fit_state(
    model: keras.Model, data: TrainData, tracker: BestEpochTracker, state: ExecutionState
) -> None:
    if state.loop != "fit":
        raise ValueError(f"a checkpoint of the {state.loop!r} training loop")
    model._symbolic_build(
        data_batch=(data.x_train[:1], data.y_train[:1])
    )  # creates the optimizer's variables
    variables = [*model.variables, *model.optimizer.variables]
    saved, best = state.variables[: len(variables)], state.variables[len(variables) :]
    assign_values(variables, saved)
    tracker.restore(state.tracker)
    tracker.result.best_weights = best if best else None


def fit_execution(
    model: keras.Model,
    data: TrainData,
    options: FitOptions,
    on_epoch: EpochCallback,
    checkpoint: CheckpointHook | None = None,
    resume: ExecutionState | None = None,
) -> ExecutionResult:
    """Train with `model.fit`, validating after every epoch; the reference for the fast path.

    `resume` continues an execution from its checkpoint: weights, optimizer and early-stopping state are
    restored, the order of shuffled batches is not.
    """
    tracker = BestEpochTracker(options)
    initial_epoch = options.initial_epoch
    if resume is not None:
        _restore_fit_state(model, data, tracker, resume)
        initial_epoch = resume.next_epoch
    model.fit(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=options.epochs,
        initial_epoch=initial_epoch,
        batch_size=options.batch_size,
        shuffle=options.shuffle,
        callbacks=[_EpochHook(tracker, on_epoch, checkpoint)],
        verbose=0,
    )
    return tracker.result
