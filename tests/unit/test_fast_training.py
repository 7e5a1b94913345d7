"""`fast_fit_execution` must behave like `fit_execution` (plain `model.fit`) on the same model and data."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest

from worker.elastic_models import unload
from worker.fast_training import fast_fit_execution, trainer_for
from worker.training import EpochCallback, ExecutionResult, FitOptions, TrainData, fit_execution

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype="float32")
XOR = TrainData(XOR_X, np.array([0, 1, 1, 0]), XOR_X, np.array([0, 1, 1, 0]))


def _regression_data() -> TrainData:
    """10 training and 7 validation samples, float64 like JSON input, so batches of 4 end partial."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(17, 3))
    y = x @ np.array([0.5, -1.0, 2.0]) + 0.1
    return TrainData(x[:10], y[:10], x[10:], y[10:])


REGRESSION = _regression_data()


def _classifier(dropout: float = 0.3) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def _compile_classifier(model: keras.Model, learning_rate: float = 0.05) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )


def _regressor() -> keras.Model:
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
    )


def _compile_regressor(model: keras.Model, learning_rate: float = 0.01) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="mean_squared_error",
        metrics=[keras.metrics.MeanAbsoluteError(name="mean_absolute_error")],
    )


def _twins(
    build: Callable[[], keras.Model], compile_model: Callable[[keras.Model], None]
) -> tuple[keras.Model, keras.Model]:
    """Two identically initialised and compiled models, including dropout seed state."""
    keras.utils.set_random_seed(11)
    first = build()
    second = keras.models.clone_model(first)
    # `variables` covers the weights and the dropout layers' seed state, so both draw the same masks.
    for mine, theirs in zip(second.variables, first.variables, strict=True):
        mine.assign(theirs)
    for model in (first, second):
        compile_model(model)
    return first, second


def _never(epoch: int, logs: dict[str, float]) -> bool:
    return False


def _assert_same_history(expected: ExecutionResult, actual: ExecutionResult) -> None:
    assert list(actual.history) == list(expected.history)
    for name, values in expected.history.items():
        np.testing.assert_allclose(actual.history[name], values, rtol=1e-3, atol=1e-4, err_msg=name)


def _assert_same_weights(expected: list[np.ndarray], actual: list[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for mine, theirs in zip(actual, expected, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    ("build", "compile_model", "data", "options"),
    [
        (
            _classifier,
            _compile_classifier,
            XOR,
            FitOptions(epochs=12, batch_size=3, monitor="val_accuracy", mode="max", shuffle=False),
        ),
        (
            _regressor,
            _compile_regressor,
            REGRESSION,
            FitOptions(epochs=12, batch_size=4, monitor="val_loss", mode="min", shuffle=False),
        ),
    ],
    ids=["xor-classifier-dropout", "regression-partial-batches"],
)
def test_history_matches_fit(
    build: Callable[[], keras.Model],
    compile_model: Callable[[keras.Model], None],
    data: TrainData,
    options: FitOptions,
) -> None:
    reference_model, fast_model = _twins(build, compile_model)
    expected = fit_execution(reference_model, data, options, _never)
    # A tiny chunk_seconds makes many one-epoch chunks: the trace must carry over between them.
    actual = fast_fit_execution(fast_model, data, options, _never, chunk_seconds=1e-6)
    assert actual.epochs_run == options.epochs
    _assert_same_history(expected, actual)
    assert (actual.best_epoch, actual.stopped_early, actual.cancelled) == (expected.best_epoch, False, False)
    assert fast_model._ktune_fast_loop.run.experimental_get_tracing_count() == 1


def test_best_weights_reproduce_the_best_value() -> None:
    reference_model, fast_model = _twins(_regressor, _compile_regressor)
    # Maximising the error makes an early epoch the best while training moves the weights away from it.
    options = FitOptions(
        epochs=15, batch_size=4, monitor="val_mean_absolute_error", mode="max", shuffle=False
    )
    expected = fit_execution(reference_model, REGRESSION, options, _never)
    result = fast_fit_execution(fast_model, REGRESSION, options, _never)
    assert result.best_epoch is not None and result.best_epoch < result.epochs_run - 1
    assert result.best_weights is not None and expected.best_weights is not None
    _assert_same_weights(expected.best_weights, result.best_weights)
    fast_model.set_weights(result.best_weights)
    logs = fast_model.evaluate(REGRESSION.x_val, REGRESSION.y_val, batch_size=4, verbose=0, return_dict=True)
    assert logs["mean_absolute_error"] == pytest.approx(result.best_value, rel=1e-5)


def test_early_stopping_on_a_plateau() -> None:
    reference_model, fast_model = _twins(_classifier, lambda model: _compile_classifier(model, 0.0))
    # A learning rate of 0 keeps val_loss constant: epoch 0 is best, then 3 epochs without improvement.
    options = FitOptions(epochs=50, batch_size=4, monitor="val_loss", mode="min", patience=3)
    expected = fit_execution(reference_model, XOR, options, _never)
    actual = fast_fit_execution(fast_model, XOR, options, _never)
    assert expected.epochs_run == 4
    assert (actual.epochs_run, actual.stopped_early, actual.best_epoch) == (4, True, 0)


def test_early_stopping_matches_fit() -> None:
    reference_model, fast_model = _twins(_regressor, lambda model: _compile_regressor(model, 0.01))
    options = FitOptions(
        epochs=40, batch_size=4, monitor="val_loss", mode="min", shuffle=False, patience=2, min_delta=0.2
    )
    expected = fit_execution(reference_model, REGRESSION, options, _never)
    # Chunks of 1, then 16 epochs: the stop (epoch 13) lands inside the second chunk.
    actual = fast_fit_execution(fast_model, REGRESSION, options, _never, chunk_seconds=60.0)
    assert expected.stopped_early and 2 < expected.epochs_run < options.epochs
    assert actual.stopped_early
    _assert_same_history(expected, actual)
    assert actual.best_epoch == expected.best_epoch


def test_cancel_at_first_epoch_stops_within_one_chunk() -> None:
    calls: list[int] = []

    def cancel(epoch: int, logs: dict[str, float]) -> bool:
        calls.append(epoch)
        return True

    keras.utils.set_random_seed(5)
    model = _classifier()
    _compile_classifier(model)
    result = fast_fit_execution(
        model, XOR, FitOptions(epochs=100_000, batch_size=4, monitor="val_loss", mode="min"), cancel
    )
    assert result.cancelled and not result.stopped_early
    assert calls == [0]
    assert result.epochs_run == 1


def test_cancel_mid_chunk_rewinds_to_the_cancelled_epoch() -> None:
    def cancel_at(epoch_to_cancel: int) -> EpochCallback:
        return lambda epoch, logs: epoch == epoch_to_cancel

    reference_model, fast_model = _twins(_regressor, _compile_regressor)
    # val_loss still falls at epoch 5, so later epochs of the chunk (1..16) would replace the best weights.
    options = FitOptions(epochs=200, batch_size=4, monitor="val_loss", mode="min", shuffle=False)
    expected = fit_execution(reference_model, REGRESSION, options, cancel_at(5))
    actual = fast_fit_execution(fast_model, REGRESSION, options, cancel_at(5), chunk_seconds=60.0)
    assert actual.cancelled and actual.epochs_run == expected.epochs_run == 6
    _assert_same_history(expected, actual)
    assert actual.best_epoch == expected.best_epoch == 5
    assert actual.best_weights is not None and expected.best_weights is not None
    _assert_same_weights(expected.best_weights, actual.best_weights)
    # The model stays at the cancelled epoch, like after `fit`, not at the end of the chunk.
    _assert_same_weights(reference_model.get_weights(), fast_model.get_weights())


def test_initial_epoch_is_respected() -> None:
    reference_model, fast_model = _twins(_regressor, _compile_regressor)
    options = FitOptions(
        epochs=8, batch_size=4, monitor="val_loss", mode="min", shuffle=False, initial_epoch=3
    )
    seen: dict[str, list[int]] = {"fit": [], "fast": []}

    def recorder(name: str) -> EpochCallback:
        def record(epoch: int, logs: dict[str, float]) -> bool:
            seen[name].append(epoch)
            return False

        return record

    expected = fit_execution(reference_model, REGRESSION, options, recorder("fit"))
    actual = fast_fit_execution(fast_model, REGRESSION, options, recorder("fast"))
    assert seen["fast"] == seen["fit"] == [3, 4, 5, 6, 7]
    _assert_same_history(expected, actual)
    assert (
        actual.best_epoch == expected.best_epoch and actual.best_epoch is not None and actual.best_epoch >= 3
    )


@pytest.mark.parametrize(("patience", "epochs_run"), [(None, 6), (1, 2)])
def test_nan_loss_trains_and_stops_like_fit(patience: int | None, epochs_run: int) -> None:
    # Without early stopping a NaN run trains on; with it, NaN epochs count against patience (Keras' rule).
    reference_model, fast_model = _twins(_regressor, _compile_regressor)
    y_train = REGRESSION.y_train.copy()
    y_train[0] = np.nan
    data = TrainData(REGRESSION.x_train, y_train, REGRESSION.x_val, REGRESSION.y_val)
    options = FitOptions(epochs=6, batch_size=4, monitor="loss", mode="min", shuffle=False, patience=patience)
    expected = fit_execution(reference_model, data, options, _never)
    actual = fast_fit_execution(fast_model, data, options, _never)
    assert actual.epochs_run == expected.epochs_run == epochs_run
    assert np.isnan(actual.history["loss"]).all()
    assert actual.best_epoch is None and actual.best_weights is None
    assert actual.stopped_early == expected.stopped_early == (patience is not None)
    _assert_same_history(expected, actual)


def test_shuffle_is_seeded_and_changes_the_batches() -> None:
    def run(shuffle: bool) -> list[float]:
        keras.utils.set_random_seed(2)
        model = _regressor()
        _compile_regressor(model)
        options = FitOptions(epochs=4, batch_size=2, monitor="val_loss", mode="min", shuffle=shuffle)
        return fast_fit_execution(model, REGRESSION, options, _never).history["loss"]

    shuffled = run(True)
    assert run(True) == shuffled
    assert not np.allclose(run(False), shuffled, rtol=1e-6)


def _regressor_of(units: int) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        return keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(units, activation="relu"),
                keras.layers.Dense(1, name="output"),
            ]
        )

    return build


def test_a_trainer_of_other_widths_trains_like_a_fresh_model_on_one_trace() -> None:
    # A later trial (or execution) trains the kept model, traced for other widths, from the fresh model's
    # starting point; the values it trained to go back into the fresh model.
    options = FitOptions(epochs=8, batch_size=3, monitor="val_loss", mode="min", shuffle=True)
    keras.utils.set_random_seed(5)
    kept = trainer_for(None, _compiled(_regressor_of(4)), _compiled_builder(4), REGRESSION)
    fast_fit_execution(kept, REGRESSION, options, _never)
    trace = kept._ktune_fast_loop.run

    keras.utils.set_random_seed(11)
    fresh = _compiled(_regressor_of(16))
    trainer = trainer_for(kept, fresh, _unused, REGRESSION)
    actual = fast_fit_execution(trainer, REGRESSION, options, _never)
    trained = unload(trainer, fresh)
    keras.utils.set_random_seed(11)
    twin = _compiled(_regressor_of(16))
    expected = fast_fit_execution(twin, REGRESSION, options, _never)  # a plain model, traced for itself

    assert trainer is kept and kept._ktune_fast_loop.run is trace
    assert trace.experimental_get_tracing_count() == 1
    _assert_same_history(expected, actual)
    assert actual.best_epoch == expected.best_epoch
    _assert_same_weights(expected.best_weights or [], actual.best_weights or [])
    _assert_same_weights(twin.get_weights(), trained.get_weights())
    _assert_same_weights(
        [v.numpy() for v in twin.optimizer.variables], [v.numpy() for v in trained.optimizer.variables]
    )
    assert [w.shape for w in trained.get_weights()] == [(3, 16), (16,), (16, 1), (1,)]


def _compiled(build: Callable[[], keras.Model]) -> keras.Model:
    model = build()
    _compile_regressor(model)
    return model


def _compiled_builder(units: int) -> Callable[[], keras.Model]:
    return lambda: _compiled(_regressor_of(units))


def _unused() -> keras.Model:
    raise AssertionError("a kept model needs no new one")
