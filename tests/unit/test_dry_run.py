"""The dry run's arithmetic (`service.core.dry_run`), checked against the worker's real Keras models."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.core.catalog import Task, output_units
from service.core.dry_run import logged_metrics, space_size, validation_of
from service.core.params import bounds
from service.core.spec import JobCreate, grid_size, inline_shape

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BINARY: dict[str, Any] = {
    "task": "binary_classification",
    "data": {"train": {"x": [[0, 0], [0, 1], [1, 0], [1, 1]] * 2, "y": [0, 1, 1, 0] * 2}},
}
MULTICLASS: dict[str, Any] = {
    "task": "multiclass_classification",
    "data": {"train": {"x": [[0.0, 1.0, 2.0]] * 6, "y": ["a", "b", "c"] * 2}},
}
REGRESSION: dict[str, Any] = {
    "task": "regression",
    "data": {"train": {"x": [[0.0], [1.0], [2.0], [3.0], [4.0]], "y": [0, 1, 2, 3, 4]}},
}


def spec_of(body: dict[str, Any], **sections: Any) -> JobCreate:
    body = copy.deepcopy(body)
    body.update(sections)
    return JobCreate.model_validate(body).resolved()


# --- metric names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (BINARY, ["loss", "accuracy", "val_loss", "val_accuracy"]),
        (MULTICLASS, ["loss", "accuracy", "val_loss", "val_accuracy"]),
        (REGRESSION, ["loss", "mean_absolute_error", "val_loss", "val_mean_absolute_error"]),
    ],
)
def test_default_metrics_of_each_task(body: dict[str, Any], expected: list[str]) -> None:
    assert logged_metrics(spec_of(body)) == expected


def test_metrics_the_request_names_are_logged_with_their_validation_versions() -> None:
    spec = spec_of(BINARY, training={"metrics": ["auc", "precision"]}, objective={"name": "val_auc"})
    assert logged_metrics(spec) == ["loss", "auc", "precision", "val_loss", "val_auc", "val_precision"]


# --- search space size ----------------------------------------------------------------------------------


def test_a_space_of_constants_has_one_configuration() -> None:
    spec = spec_of(REGRESSION)
    assert space_size(spec) == 1
    assert validation_of(spec, _shape(spec), []).search_space.hyperparameters == []


def test_a_continuous_range_makes_a_random_search_unbounded() -> None:
    spec = spec_of(REGRESSION, optimizer={"learning_rate": {"min": 0.001, "max": 0.1}})
    assert space_size(spec) is None
    [hp] = validation_of(spec, _shape(spec), []).search_space.hyperparameters
    assert (hp.name, hp.field, hp.values) == ("learning_rate", "optimizer.learning_rate", None)


def test_discrete_random_space_counts_units_per_layer() -> None:
    # 1 or 2 layers of 2 unit choices each: 2 + 2*2 = 6 layouts, times 2 activations.
    spec = spec_of(
        REGRESSION,
        model={
            "hidden_layers": {"min": 1, "max": 2},
            "units": {"values": [4, 8]},
            "activation": {"values": ["relu", "tanh"]},
        },
    )
    assert space_size(spec) == (2 + 2 * 2) * 2
    counts = {hp.name: hp.values for hp in validation_of(spec, _shape(spec), []).search_space.hyperparameters}
    assert counts == {"hidden_layers": 2, "units": 2, "activation": 2}


def test_a_grid_is_sized_as_keras_tuners_grid_walks() -> None:
    spec = spec_of(
        REGRESSION,
        model={"hidden_layers": {"values": [1, 2]}, "units": {"values": [4, 8, 16]}},
        optimizer={"learning_rate": {"min": 0.001, "max": 0.1}},  # a grid walks min and 10 samples
        tuner={"algorithm": "grid", "max_trials": 5},
    )
    assert space_size(spec) == grid_size(spec) == (3 + 3 * 3) * 11


def test_a_grid_smaller_than_max_trials_is_warned_about() -> None:
    spec = spec_of(
        REGRESSION, model={"units": {"values": [4, 8]}}, tuner={"algorithm": "grid", "max_trials": 5}
    )
    answer = validation_of(spec, _shape(spec), ["data warning"])
    assert answer.search_space.size == 2 * 2  # two layers (the default), each of 4 or 8 units
    assert [(w.code, "5" in w.message) for w in answer.warnings] == [
        ("data", False),
        ("grid_smaller_than_max_trials", True),
    ]


@pytest.mark.parametrize(
    ("algorithm", "ending"),
    [("random", "ends once it finds no configuration"), ("tpe", "some trials repeat a configuration")],
)
def test_a_space_smaller_than_max_trials_is_warned_about_as_the_algorithm_behaves(
    algorithm: str, ending: str
) -> None:
    spec = spec_of(
        REGRESSION, model={"units": {"values": [4, 8]}}, tuner={"algorithm": algorithm, "max_trials": 5}
    )
    [warning] = validation_of(spec, _shape(spec), []).warnings
    assert warning.code == "space_smaller_than_max_trials" and ending in warning.message


def test_no_warning_when_the_grid_is_large_enough() -> None:
    spec = spec_of(
        REGRESSION, model={"units": {"values": [4, 8]}}, tuner={"algorithm": "grid", "max_trials": 2}
    )
    assert validation_of(spec, _shape(spec), []).warnings == []


# --- the largest model, against the worker's Keras model ------------------------------------------------


def _shape(spec: JobCreate) -> Any:
    shape = inline_shape(spec)
    assert shape is not None
    return shape


def _largest_values(spec: JobCreate) -> dict[str, Any]:
    layers, units = int(bounds(spec.model.hidden_layers)[1]), int(bounds(spec.model.units)[1])
    return {
        "hidden_layers": layers,
        **{f"units_{i}": units for i in range(layers)},
        "activation": "relu",
        "dropout": 0.1,
        "optimizer": "adam",
        "learning_rate": 0.01,
    }


def _worker_model(spec: JobCreate, target_scale: tuple[float, float] | None = None) -> Any:
    from worker.model_builder import build_model
    from worker.training import TrainData

    assert spec.data.train is not None
    x = np.asarray(spec.data.train.x, dtype=np.float32)
    y = np.zeros((len(x), 1), dtype=np.float32)
    data = TrainData(x, y, x, y)
    units = output_units(spec.task, spec.classes)
    return build_model(spec, _largest_values(spec), data, units=units, target_scale=target_scale)


@pytest.mark.parametrize(
    ("body", "model"),
    [
        (BINARY, {"hidden_layers": {"min": 1, "max": 3}, "units": {"min": 8, "max": 24, "step": 8}}),
        (MULTICLASS, {"hidden_layers": 2, "units": {"values": [5, 7]}}),
        (REGRESSION, {"hidden_layers": {"values": [1, 4]}, "units": 3}),
    ],
)
def test_largest_model_parameters_equal_keras_count_params(
    body: dict[str, Any], model: dict[str, Any]
) -> None:
    spec = spec_of(body, model=model)
    answer = validation_of(spec, _shape(spec), [])
    assert answer.largest_model_parameters == _worker_model(spec).count_params()


def test_largest_model_parameters_with_a_scaled_regression_target() -> None:
    spec = spec_of(REGRESSION, model={"hidden_layers": 2, "units": 6})
    keras_model = _worker_model(spec, target_scale=(10.0, 2.0))
    assert validation_of(spec, _shape(spec), []).largest_model_parameters == keras_model.count_params()


@pytest.mark.parametrize(
    ("body", "task"), [(BINARY, Task.BINARY_CLASSIFICATION), (REGRESSION, Task.REGRESSION)]
)
def test_metric_names_are_the_keys_keras_logs(body: dict[str, Any], task: Task) -> None:
    metrics = (
        ["auc", "accuracy"] if task is Task.BINARY_CLASSIFICATION else ["r2_score", "mean_absolute_error"]
    )
    spec = spec_of(body, training={"metrics": metrics, "epochs": 1}, model={"hidden_layers": 1, "units": 2})
    model = _worker_model(spec)
    assert spec.data.train is not None
    x = np.asarray(spec.data.train.x, dtype=np.float32)
    y = np.asarray(spec.data.train.y, dtype=np.float32).reshape(-1, 1)
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert sorted(history.history) == sorted(logged_metrics(spec))


def test_the_xor_example_is_described() -> None:
    spec = JobCreate.model_validate(json.loads((EXAMPLES / "xor-classifier.json").read_text())).resolved()
    answer = validation_of(spec, _shape(spec), [])
    assert answer.objective.name == "val_accuracy" and answer.objective.direction == "max"
    assert answer.search_space.size is None  # a continuous learning rate
    # 2 features -> 3 layers of 128 -> 1 sigmoid unit.
    assert answer.largest_model_parameters == 3 * 128 + 2 * 129 * 128 + 129
