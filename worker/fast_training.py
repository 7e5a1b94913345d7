"""The epochs of `fit_execution` run as a few compiled chunks instead of one `model.fit` step per epoch.

`model.fit` costs tens of milliseconds per epoch in Python overhead, which dominates on small in-memory
data; one tf.function looping over many epochs (training, validation and best-epoch bookkeeping inside)
costs a fraction of a millisecond per epoch once traced. The host feeds each chunk's per-epoch logs to the
same `BestEpochTracker` and `on_epoch` as the reference path, so results match `fit_execution`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from worker import elastic_models
from worker.training import (
    BestEpochTracker,
    CheckpointHook,
    EpochCallback,
    ExecutionResult,
    ExecutionState,
    FitOptions,
    TrainData,
    assign_values,
)

_LOOP_ATTRIBUTE = "_ktune_fast_loop"
_MAX_CHUNK_GROWTH = 16  # a chunk is at most this many times the last one, so one noisy timing can't overshoot


class _NoWeights:
    """Stands in for the model in `BestEpochTracker.observe`: best weights come from the compiled loop."""

    def get_weights(self) -> list[np.ndarray]:
        # After a chunk the model has moved past the epoch being fed, and copying its weights on every
        # improvement would cost more than the epoch itself.
        return []


class _EpochLoop:
    """One model's traced epoch loop and the variables it keeps across chunks."""

    def __init__(self, model: keras.Model, x: Any, y: Any) -> None:
        self.model = model
        # Create the metric, loss and optimizer variables now, eagerly (Keras' own build step): they can't
        # be created inside the traced while loop.
        model._symbolic_build(data_batch=(x, y))
        if elastic_models.is_elastic(model):
            elastic_models.relax(model)  # before the trace reads the variables' shapes
        self.compiled = _compiled_objects(model)
        train_keys = list(model.get_metrics_result())
        self.keys = train_keys + [f"val_{key}" for key in train_keys]
        self.seed = keras.random.SeedGenerator()  # drawn from keras' global seed
        self.best = [
            tf.Variable(tf.convert_to_tensor(w), trainable=False, shape=tf.TensorShape(w.shape))
            for w in model.weights
        ]
        self.best_value = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.has_best = tf.Variable(False, trainable=False)
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.reference = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.has_reference = tf.Variable(False, trainable=False)
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False)
        # AutoGraph turns the Python `while`/`if`/`and` on tensors below into graph loops and conds. Every
        # argument is a tensor, so chunks of any length (and later executions) reuse the one trace.
        self.run = tf.function(self._run, reduce_retracing=True)

    def reset_tracking(self) -> None:
        """Forget the best epoch and the patience count of a previous execution."""
        self.has_best.assign(False)
        self.best_epoch.assign(-1)
        self.has_reference.assign(False)
        self.wait.assign(0)

    def state(self) -> list[Any]:
        """Every variable a chunk changes, for rewinding it."""
        tracking = [
            self.best_value,
            self.has_best,
            self.best_epoch,
            self.reference,
            self.has_reference,
            self.wait,
        ]
        return [
            *self.model.variables,
            *self.model.optimizer.variables,
            self.seed.state,
            *tracking,
            *self.best,
        ]

    def _run(
        self,
        x: Any,
        y: Any,
        x_val: Any,
        y_val: Any,
        first_epoch: Any,
        epochs: Any,
        batch_size: Any,
        shuffle: Any,
        monitor: Any,
        is_min: Any,
        patience: Any,
        min_delta: Any,
    ) -> Any:
        """Run up to `epochs` epochs, stopping early like `BestEpochTracker`; returns one log row each."""
        rows = tf.TensorArray(tf.float64, size=0, dynamic_size=True, element_shape=[len(self.keys)])
        epoch = tf.constant(0)
        stop = tf.constant(False)
        while epoch < epochs and not stop:
            train = self._train_epoch(x, y, batch_size, shuffle)
            row = tf.concat([train, self._evaluate(x_val, y_val, batch_size)], 0)
            rows = rows.write(epoch, row)
            # `monitor` is len(row) when the logs lack it: it then reads the NaN, which the tracker ignores.
            value = tf.concat([row, tf.constant([np.nan], tf.float64)], 0)[monitor]
            stop = self._observe(first_epoch + tf.cast(epoch, tf.int64), value, is_min, patience, min_delta)
            epoch += 1
        return rows.stack()

    def _train_epoch(self, x: Any, y: Any, batch_size: Any, shuffle: Any) -> Any:
        """One epoch of `train_step` over mini-batches; returns the epoch's metrics like `fit` logs them."""
        self.model.reset_metrics()
        size = tf.shape(x)[0]
        order = tf.range(size)
        if shuffle:
            order = keras.random.shuffle(order, seed=self.seed)
        start = tf.constant(0)
        while start < size:
            batch = order[start : start + batch_size]
            self.model.train_step((tf.gather(x, batch), tf.gather(y, batch)))
            start += batch_size
        return self._metrics_row()

    def _evaluate(self, x: Any, y: Any, batch_size: Any) -> Any:
        """`test_step` (inference mode) over the validation batches, like `evaluate` in `fit`."""
        self.model.reset_metrics()
        size = tf.shape(x)[0]
        start = tf.constant(0)
        while start < size:
            self.model.test_step((x[start : start + batch_size], y[start : start + batch_size]))
            start += batch_size
        return self._metrics_row()

    def _metrics_row(self) -> Any:
        result = self.model.get_metrics_result()
        return tf.stack([tf.cast(value, tf.float64) for value in result.values()])

    def _better(self, value: Any, than: Any, delta: Any, is_min: Any) -> Any:
        # The same float64 expressions as `BestEpochTracker._better`, so both decide alike at the edges.
        return tf.where(is_min, value < than - delta, value > than + delta)

    def _observe(self, epoch: Any, value: Any, is_min: Any, patience: Any, min_delta: Any) -> Any:
        """`BestEpochTracker.observe` in the graph: keeps the best weights; returns whether to stop."""
        seen = tf.math.is_finite(value)
        zero = tf.constant(0.0, tf.float64)
        improved = seen and (not self.has_best or self._better(value, self.best_value, zero, is_min))
        if improved:
            self.best_value.assign(value)
            self.has_best.assign(True)
            self.best_epoch.assign(epoch)
            for best, weight in zip(self.best, self.model.weights, strict=True):
                best.assign(weight)
        # The patience rule compares with the last value that beat the previous one by more than min_delta.
        # Like Keras' EarlyStopping, every epoch that does not progress counts, NaN included.
        beats_reference = self._better(value, self.reference, min_delta, is_min)
        progressed = seen and (not self.has_reference or beats_reference)
        if progressed:
            self.reference.assign(value)
            self.has_reference.assign(True)
            self.wait.assign(0)
        else:
            self.wait.assign_add(1)
        return not progressed and patience >= 0 and self.wait >= patience and epoch > 0


def _compiled_objects(model: keras.Model) -> list[Any]:
    """What `compile` replaces; the traced loop is bound to these exact objects."""
    return [model.optimizer, *model.metrics]


def _loop_for(model: keras.Model, x: Any, y: Any) -> _EpochLoop:
    """The model's epoch loop, traced once per model (and compilation) and then reused."""
    loop: _EpochLoop | None = getattr(model, _LOOP_ATTRIBUTE, None)
    current = _compiled_objects(model)
    if loop is None or [id(o) for o in current] != [id(o) for o in loop.compiled]:
        loop = _EpochLoop(model, x, y)
        # object.__setattr__ keeps Keras from tracking the loop's variables as the model's own.
        object.__setattr__(model, _LOOP_ATTRIBUTE, loop)
    return loop


def trainer_for(
    kept: keras.Model | None, fresh: keras.Model, build: Callable[[], keras.Model], data: TrainData
) -> keras.Model:
    """The model that trains exactly as `fresh` would, on a traced loop that takes any layer widths.

    It is `kept`, an elastic model (`worker.elastic_models`) traced for an earlier execution or trial with
    the same depth but for their units, activation and dropout (`worker.model_cache`), or else a new one
    from `build` (`build_model(..., elastic=True)` for the same trial as `fresh`), traced once at
    its first chunk. Either gets `fresh`'s weights, dropout seeds and rates, activation and optimizer state
    (its learning rate included; zero moments, or those a continued trial loaded) and this execution's
    shuffling seed. Hand the trained values back with `elastic_models.unload(model, fresh)`: an elastic
    model can be neither saved nor exported.
    """
    seed = keras.random.SeedGenerator().state.value  # this execution's shuffles, drawn before `build` draws
    model = kept
    if model is None:
        model = build()
        if not elastic_models.is_elastic(model):  # a model of exactly `fresh`'s layers and activation
            elastic_models.mark_elastic(model)
        loop = _loop_for(model, _to_tensor(data.x_train), _to_tensor(data.y_train))  # relaxes it
    else:
        loop = getattr(model, _LOOP_ATTRIBUTE)  # a kept model has trained, so it has its loop
    elastic_models.load(model, fresh)
    loop.seed.state.assign(seed)
    return model


def _to_tensor(array: np.ndarray) -> Any:
    """Convert like Keras' array adapter does: floats become floatx, other dtypes stay."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(keras.backend.floatx())
    return tf.convert_to_tensor(array)


def _state(loop: _EpochLoop, tracker: BestEpochTracker, next_epoch: int) -> ExecutionState:
    return ExecutionState("fast", next_epoch, tracker.snapshot(), [v.numpy() for v in loop.state()])


def _restore(loop: _EpochLoop, tracker: BestEpochTracker, state: ExecutionState) -> int:
    """Continue from a checkpoint of this loop; returns the epoch to go on from."""
    if state.loop != "fast":
        raise ValueError(f"a checkpoint of the {state.loop!r} training loop")
    assign_values(loop.state(), state.variables)
    tracker.restore(state.tracker)
    return state.next_epoch


def fast_fit_execution(
    model: keras.Model,
    data: TrainData,
    options: FitOptions,
    on_epoch: EpochCallback,
    checkpoint: CheckpointHook | None = None,
    resume: ExecutionState | None = None,
    chunk_seconds: float = 1.0,
) -> ExecutionResult:
    """Same as `fit_execution`, but runs epochs in compiled chunks of about `chunk_seconds` each.

    `checkpoint` is offered the execution's state after every chunk; `resume` continues from such a state
    exactly: the model, optimizer, shuffling and early-stopping state all continue where they stopped.
    """
    x, y, x_val, y_val = (_to_tensor(a) for a in (data.x_train, data.y_train, data.x_val, data.y_val))
    loop = _loop_for(model, x, y)
    loop.reset_tracking()
    tracker = BestEpochTracker(options)
    result = tracker.result
    monitor = loop.keys.index(options.monitor) if options.monitor in loop.keys else len(loop.keys)
    settings = (
        tf.constant(options.batch_size),
        tf.constant(options.shuffle),
        tf.constant(monitor),
        tf.constant(options.mode == "min"),
        tf.constant(-1 if options.patience is None else options.patience, tf.int64),
        tf.constant(abs(options.min_delta), tf.float64),
    )
    epoch, chunk = options.initial_epoch, 1
    if resume is not None:
        epoch = _restore(loop, tracker, resume)
    while epoch < options.epochs and not (result.stopped_early or result.cancelled):
        saved = [v.numpy() for v in loop.state()]  # to rewind to if a cancel lands mid-chunk
        started = time.perf_counter()
        count = min(chunk, options.epochs - epoch)
        rows = loop.run(x, y, x_val, y_val, tf.constant(epoch, tf.int64), tf.constant(count), *settings)
        rows = rows.numpy()
        elapsed = time.perf_counter() - started
        for offset, row in enumerate(rows):
            # Sorted like Keras sorts the logs it hands to callbacks.
            logs = dict(sorted(zip(loop.keys, (float(value) for value in row), strict=True)))
            if tracker.observe(epoch + offset, logs, _NoWeights()):
                result.stopped_early = True  # the loop stopped at this epoch too: it is the chunk's last
            if reason := on_epoch(epoch + offset, logs):
                result.stopped_by = reason
            if result.stopped_early or result.cancelled:
                break
        fed = offset + 1
        if fed < len(rows):
            # `fit` would have stopped at the cancelled epoch: rerun the chunk up to it, so that the model and
            # the best weights are those of the epochs in the history, not of the chunk's later ones.
            for variable, value in zip(loop.state(), saved, strict=True):
                variable.assign(value)
            loop.run(x, y, x_val, y_val, tf.constant(epoch, tf.int64), tf.constant(fed), *settings)
        epoch += fed
        # Size the next chunk to take about `chunk_seconds`; the first call's time is mostly tracing.
        chunk = max(1, min(chunk * _MAX_CHUNK_GROWTH, int(chunk_seconds * len(rows) / max(elapsed, 1e-9))))
        if checkpoint is not None and epoch < options.epochs and not result.stopped_early:
            checkpoint(lambda: _state(loop, tracker, epoch))  # noqa: B023 - called at once, not later
    if result.best_epoch is not None:
        if int(loop.best_epoch.numpy()) != result.best_epoch:
            # The loop's bookkeeping must mirror BestEpochTracker's; never hand out another epoch's weights.
            raise RuntimeError(
                f"best epoch {result.best_epoch} but the loop kept epoch {int(loop.best_epoch)}"
            )
        result.best_weights = [best.numpy() for best in loop.best]
    return result
