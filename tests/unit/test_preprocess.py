"""Encoding raw columns for training, and the exported model that does the same encoding with Keras layers."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from service.core.catalog import Task
from service.core.spec import JobCreate, JobSpec
from worker.fast_training import fast_fit_execution
from worker.model_builder import build_model
from worker.preprocess import (
    UNSCALED_LOSSES,
    FeatureColumn,
    Preprocessing,
    PreprocessOptions,
    RawSplit,
    rescale_output,
    standardized_loss,
)
from worker.training import FitOptions, TrainData

NUMERIC = [FeatureColumn("sepal length (cm)", "numeric"), FeatureColumn("petal/width", "numeric")]


def _text(*values: str | None) -> np.ndarray:
    return np.array(values, dtype=object)


def _numbers(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def _numeric_split() -> RawSplit:
    return RawSplit(
        features=NUMERIC,
        x_train={
            "sepal length (cm)": _numbers(4.0, 6.0, 8.0, 5.0),
            "petal/width": _numbers(100, 300, 200, 400),
        },
        x_val={"sepal length (cm)": _numbers(7.0, 1000.0), "petal/width": _numbers(250, -50)},
        y_train=np.array([0, 1, 1, 0], dtype=np.int32),
        y_val=np.array([1, 0], dtype=np.int32),
    )


def _mixed_split() -> RawSplit:
    """Header names Keras can't use as input names, an all-missing column, a category spelled like the OOV."""
    features = [
        FeatureColumn("colour", "categorical"),
        FeatureColumn("sepal length (cm)", "numeric"),
        FeatureColumn("a/b", "categorical"),
        FeatureColumn("never seen", "categorical"),
        FeatureColumn("petal/width", "numeric"),
    ]
    x_train = {
        "colour": _text("red", "blue", None, "red", "[UNK]"),
        "sepal length (cm)": _numbers(4.0, 6.0, 8.0, 5.0, 7.0),
        "a/b": _text("x", "", "y", "x", "x"),
        "never seen": _text(None, "", None, None, ""),
        "petal/width": _numbers(100, 300, 200, 400, 0),
    }
    x_val = {
        "colour": _text("green", None, "blue", "[UNK]"),  # unseen, missing, known, known
        "sepal length (cm)": _numbers(7.0, 5.5, 1.0, 4.0),
        "a/b": _text("y", "z", "", "x"),
        "never seen": _text("q", None, "", "r"),
        "petal/width": _numbers(250, 10, 90, 400),
    }
    return RawSplit(
        features, x_train, x_val, np.array([1.5, 2.5, 3.0, 0.5, 1.0]), np.array([2.0, 1.0, 0, 3.0])
    )


def _core(width: int) -> keras.Model:
    keras.utils.set_random_seed(5)
    inputs = keras.Input(shape=(width,), name="features")
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="output")(hidden))


def _as_model_input(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What a user gives the exported model: 1-D arrays, "" for a missing category (object dtype)."""
    return {
        name: np.array(["" if v is None else v for v in values], dtype=object)
        if values.dtype == object
        else values
        for name, values in columns.items()
    }


def _save_and_load(model: keras.Model, path: Path) -> keras.Model:
    model.compile(loss="mean_squared_error")
    model.save(path)
    with warnings.catch_warnings():
        # The optimizer was never built (nothing trained the export); Keras says so on load.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return keras.models.load_model(path)  # safe mode, no custom objects


def test_numeric_columns_are_standardized_like_the_exported_normalization() -> None:
    raw = _numeric_split()
    pre = Preprocessing.fit(raw, PreprocessOptions(), Task.BINARY_CLASSIFICATION)
    assert pre.width == 2
    encoded = pre.encode(raw.x_val)
    assert encoded.dtype == np.float32 and encoded.shape == (2, 2)
    length = raw.x_train["sepal length (cm)"]
    assert encoded[0, 0] == pytest.approx((7.0 - length.mean()) / length.std(), rel=1e-6)

    core = _core(pre.width)
    exported = pre.export(core)
    rows = np.stack([raw.x_val[f.name] for f in NUMERIC], axis=1).astype(np.float32)
    np.testing.assert_allclose(np.asarray(exported(rows)), np.asarray(core(encoded)), rtol=1e-5, atol=1e-6)
    assert pre.summary()["input"] == "array"


def test_mixed_columns_one_hot_with_the_oov_slot_first() -> None:
    raw = _mixed_split()
    pre = Preprocessing.fit(raw, PreprocessOptions(), Task.REGRESSION)
    # 2 numeric + colour [OOV, "[UNK]", blue, red] + a/b [OOV, x, y] + never seen [OOV]
    assert pre.width == 2 + 4 + 3 + 1
    encoded = pre.encode(raw.x_val)
    colour = encoded[:, 2:6]
    assert colour.tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]]
    assert encoded[:, 6:9].tolist() == [[0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert encoded[:, 9].tolist() == [1, 1, 1, 1]
    assert pre.summary()["categorical"] == {
        "colour": {"categories": 3},
        "a/b": {"categories": 2},
        "never seen": {"categories": 0},
    }


def test_mixed_export_matches_encode() -> None:
    raw = _mixed_split()
    pre = Preprocessing.fit(raw, PreprocessOptions(), Task.REGRESSION)
    core = _core(pre.width)
    exported = pre.export(core)
    assert set(exported.input) == {f.name for f in raw.features}
    assert pre.summary()["input"] == "dict"
    expected = np.asarray(core(pre.encode(raw.x_val)))
    np.testing.assert_allclose(
        np.asarray(exported(_as_model_input(raw.x_val))), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("standardize", [True, False])
def test_saved_mixed_export_loads_without_custom_objects(tmp_path: Path, standardize: bool) -> None:
    raw = _mixed_split()
    pre = Preprocessing.fit(raw, PreprocessOptions(standardize=standardize), Task.REGRESSION)
    core = _core(pre.width)
    expected = np.asarray(core(pre.encode(raw.x_val)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")  # the "/" columns
        loaded = _save_and_load(pre.export(core), tmp_path / "m.keras")
    assert not [layer for layer in loaded.layers if isinstance(layer, keras.layers.Lambda)]
    assert set(loaded.input) == {f.name for f in raw.features}
    predicted = loaded.predict(_as_model_input(raw.x_val), verbose=0)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_saved_numeric_export_takes_a_plain_array(tmp_path: Path) -> None:
    raw = _numeric_split()
    pre = Preprocessing.fit(raw, PreprocessOptions(), Task.BINARY_CLASSIFICATION)
    core = _core(pre.width)
    loaded = _save_and_load(pre.export(core), tmp_path / "m.keras")
    rows = np.stack([raw.x_val[f.name] for f in NUMERIC], axis=1)
    predicted = loaded.predict(rows, verbose=0)
    np.testing.assert_allclose(predicted, np.asarray(core(pre.encode(raw.x_val))), rtol=1e-5, atol=1e-6)


def test_nothing_to_do_exports_the_core_itself() -> None:
    raw = _numeric_split()
    pre = Preprocessing.fit(raw, PreprocessOptions(standardize=False), Task.BINARY_CLASSIFICATION)
    core = _core(pre.width)
    assert pre.export(core) is core
    np.testing.assert_array_equal(pre.encode(raw.x_val)[:, 1], np.array([250, -50], dtype=np.float32))


def test_statistics_come_from_the_train_split_only() -> None:
    raw = _numeric_split()
    pre = Preprocessing.fit(raw, PreprocessOptions(), Task.BINARY_CLASSIFICATION)
    stats = pre.summary()["numeric"]["sepal length (cm)"]
    assert stats["mean"] == pytest.approx(5.75) and stats["std"] == pytest.approx(
        np.std([4.0, 6.0, 8.0, 5.0])
    )
    assert pre.encode(raw.x_val)[1, 0] == pytest.approx((1000.0 - 5.75) / stats["std"], rel=1e-6)


def test_missing_numbers_take_the_train_mean_when_imputing() -> None:
    raw = RawSplit(
        [FeatureColumn("n", "numeric")],
        {"n": _numbers(1.0, math.nan, 3.0)},
        {"n": _numbers(math.nan, 5.0)},
        np.zeros(3),
        np.zeros(2),
    )
    standardized = Preprocessing.fit(raw, PreprocessOptions(impute="mean"), Task.REGRESSION)
    assert standardized.encode(raw.x_val)[:, 0].tolist() == [0.0, 3.0]  # std of [1, 3] is 1
    assert standardized.summary()["numeric"]["n"]["fill"] == 2.0
    unscaled = Preprocessing.fit(raw, PreprocessOptions(standardize=False, impute="mean"), Task.REGRESSION)
    assert unscaled.encode(raw.x_val)[:, 0].tolist() == [2.0, 5.0]
    refusing = Preprocessing.fit(raw, PreprocessOptions(), Task.REGRESSION)
    with pytest.raises(ValueError, match="missing"):
        refusing.encode(raw.x_val)


def test_a_constant_column_is_shifted_not_blown_up() -> None:
    raw = RawSplit(
        [FeatureColumn("c", "numeric")],
        {"c": _numbers(2.0, 2.0)},
        {"c": _numbers(3.0)},
        np.zeros(2),
        np.zeros(1),
    )
    pre = Preprocessing.fit(raw, PreprocessOptions(), Task.REGRESSION)
    assert pre.encode(raw.x_val).tolist() == [[1.0]]


@pytest.mark.parametrize(
    ("task", "dtype", "shape"),
    [
        (Task.MULTICLASS_CLASSIFICATION, np.int32, (4,)),
        (Task.BINARY_CLASSIFICATION, np.float32, (4, 1)),
        (Task.REGRESSION, np.float32, (4, 1)),
    ],
)
def test_targets_take_the_trainers_shapes(task: Task, dtype: type, shape: tuple[int, ...]) -> None:
    raw = _numeric_split()
    data = Preprocessing.fit(raw, PreprocessOptions(scale_target=True), task).train_data(raw)
    assert data.y_train.dtype == dtype and data.y_train.shape == shape
    assert data.y_val.shape[0] == 2 and data.x_train.shape == (4, 2) and data.x_train.dtype == np.float32
    assert data.y_train.reshape(-1).tolist() == [0, 1, 1, 0]  # original units, also for regression


def test_target_scale_only_for_regression_that_asks() -> None:
    raw = _mixed_split()
    assert Preprocessing.fit(raw, PreprocessOptions(), Task.REGRESSION).target_scale() is None
    classes = RawSplit(raw.features, raw.x_train, raw.x_val, np.zeros(5, np.int32), np.zeros(4, np.int32))
    options = PreprocessOptions(scale_target=True)
    assert Preprocessing.fit(classes, options, Task.BINARY_CLASSIFICATION).target_scale() is None
    mean, std = Preprocessing.fit(raw, options, Task.REGRESSION).target_scale() or (0.0, 0.0)
    assert mean == pytest.approx(1.7) and std == pytest.approx(np.std(raw.y_train))
    constant = RawSplit(raw.features, raw.x_train, raw.x_val, np.full(5, 7.0), raw.y_val)
    pre = Preprocessing.fit(constant, options, Task.REGRESSION)
    assert pre.target_scale() == (7.0, 1.0)
    assert json.loads(json.dumps(pre.summary()))["target"] == {"mean": 7.0, "std": 1.0}


@pytest.mark.parametrize("name", ["mean_squared_error", "mean_absolute_error", "huber", "log_cosh"])
def test_standardized_loss_is_the_loss_on_standardized_values(name: str) -> None:
    y_true = np.array([[100.0], [180.0], [250.0]], dtype=np.float32)
    y_pred = np.array([[120.0], [150.0], [260.0]], dtype=np.float32)
    scale = (150.0, 77.0)
    expected = keras.losses.get(name)((y_true - 150.0) / 77.0, (y_pred - 150.0) / 77.0)
    actual = standardized_loss(name, scale)(y_true, y_pred)
    assert float(actual) == pytest.approx(float(np.mean(expected)), rel=1e-5)


@pytest.mark.parametrize("name", sorted(UNSCALED_LOSSES))
def test_losses_of_the_targets_own_units_are_not_standardized(name: str) -> None:
    with pytest.raises(ValueError, match="not standardized"):
        standardized_loss(name, (150.0, 77.0))


def test_rescale_output_returns_original_units() -> None:
    assert np.asarray(rescale_output((150.0, 77.0))(np.array([[0.0], [1.0]], dtype=np.float32))).tolist() == [
        [150.0],
        [227.0],
    ]


def _regression_spec(**training: Any) -> JobSpec:
    body: dict[str, Any] = {
        "task": "regression",
        "data": {"train": {"x": [[0.0], [1.0]], "y": [0.0, 1.0]}, "validation_split": 0.5},
        "model": {"hidden_layers": 1, "units": 8},
        "training": training,
    }
    return JobCreate.model_validate(body).resolved().without_data()


_VALUES = {
    "hidden_layers": 1,
    "units_0": 8,
    "activation": "tanh",
    "dropout": 0.0,
    "optimizer": "adam",
    "learning_rate": 0.01,
}


def _diabetes_like() -> TrainData:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 3)).astype(np.float32)
    y = (
        (150.0 + 77.0 * np.tanh(x @ np.array([0.8, -0.5, 0.3], dtype=np.float32)))
        .astype(np.float32)
        .reshape(-1, 1)
    )
    return TrainData(x[:64], y[:64], x[64:], y[64:])


def test_a_scaled_model_trains_on_large_targets_and_answers_in_original_units() -> None:
    data = _diabetes_like()
    scale = (float(data.y_train.mean()), float(data.y_train.std()))
    keras.utils.set_random_seed(1)
    model = build_model(_regression_spec(), _VALUES, data, units=1, target_scale=scale)
    # Before training the output is near the mean, in original units, not near 0.
    assert abs(float(model.predict(data.x_val, verbose=0).mean()) - scale[0]) < scale[1]
    options = FitOptions(epochs=60, batch_size=16, monitor="val_loss", mode="min")
    result = fast_fit_execution(model, data, options, lambda epoch, logs: None)
    model.set_weights(result.best_weights)
    predicted = model.predict(data.x_val, verbose=0)
    error = float(np.mean(np.abs(predicted - data.y_val)))
    assert error < 0.5 * float(np.mean(np.abs(data.y_val - scale[0])))  # beats predicting the mean
    # val_loss is the loss on standardized values, the metric is in original units.
    best = result.best_epoch or 0
    assert result.history["val_loss"][best] == pytest.approx(
        np.mean(((predicted - data.y_val) / scale[1]) ** 2), rel=1e-3
    )
    assert result.history["val_mean_absolute_error"][best] == pytest.approx(error, rel=1e-3)


def test_a_scaled_models_activation_bounds_original_units() -> None:
    data = _diabetes_like()
    spec = _regression_spec(loss="mean_absolute_percentage_error")
    model = build_model(
        spec.model_copy(update={"model": spec.model.model_copy(update={"output_activation": "relu"})}),
        _VALUES,
        data,
        units=1,
        target_scale=(-100.0, 10.0),
    )
    assert float(model.predict(data.x_val, verbose=0).max()) == 0.0  # relu after the rescale to about -100
    assert model.loss == "mean_absolute_percentage_error"


def test_without_target_scale_the_model_is_unchanged() -> None:
    model = build_model(_regression_spec(), _VALUES, _diabetes_like(), units=1)
    assert model.layers[-1].name == "output" and model.loss == "mean_squared_error"


def test_headers_named_like_the_models_own_layers_still_load(tmp_path: Path) -> None:
    core = _core(2 + 2)
    features = [FeatureColumn(core.name, "numeric"), FeatureColumn("ktune_normalization", "numeric")]
    features.append(FeatureColumn("ktune_lookup_0", "categorical"))
    columns = {
        core.name: _numbers(1, 2),
        "ktune_normalization": _numbers(3, 5),
        "ktune_lookup_0": _text("u", ""),
    }
    raw = RawSplit(features, columns, columns, np.zeros(2), np.zeros(2))
    pre = Preprocessing.fit(raw, PreprocessOptions(), Task.REGRESSION)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
        loaded = _save_and_load(pre.export(core), tmp_path / "m.keras")
    predicted = loaded.predict(_as_model_input(columns), verbose=0)
    np.testing.assert_allclose(predicted, np.asarray(core(pre.encode(columns))), rtol=1e-5, atol=1e-6)


def test_a_model_trained_with_the_standardized_loss_reloads_in_a_worker(tmp_path: Path) -> None:
    model = build_model(
        _regression_spec(loss="huber"), _VALUES, _diabetes_like(), units=1, target_scale=(150.0, 77.0)
    )
    model.save(tmp_path / "trained.keras")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        loaded = keras.models.load_model(tmp_path / "trained.keras")
    y_true, y_pred = np.array([[100.0]], dtype=np.float32), np.array([[177.0]], dtype=np.float32)
    assert float(loaded.loss(y_true, y_pred)) == pytest.approx(float(model.loss(y_true, y_pred)))
    assert float(model.loss(y_true, y_pred)) == pytest.approx(
        float(keras.losses.huber([[-50 / 77]], [[27 / 77]])[0])
    )
