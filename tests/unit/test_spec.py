"""The job request (`service.core.spec.JobCreate`): every structural and semantic rule, and `check_limits`."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.api.errors import validation_problems
from service.core.params import FloatRange, IntChoice, IntRange, NameChoice, bounds, is_tuned
from service.core.settings import Limits
from service.core.spec import JobCreate, check_limits, inline_shape, largest_model_parameters

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Five rows, so the default validation_split of 0.2 holds out one row and trains on four.
REGRESSION: dict[str, Any] = {
    "task": "regression",
    "data": {"train": {"x": [[0, 0], [0, 1], [1, 0], [1, 1], [2, 2]], "y": [0, 1, 1, 0, 4.5]}},
}
BINARY: dict[str, Any] = {
    "task": "binary_classification",
    "data": {"train": {"x": [[0], [1], [2], [3], [4]], "y": [0, 1, 0, 1, 1]}},
}
MULTICLASS: dict[str, Any] = {
    "task": "multiclass_classification",
    "data": {"train": {"x": [[0], [1], [2], [3], [4]], "y": [0, 1, 2, 0, 2]}},
}
VALIDATION = {"x": [[0, 0], [1, 1]], "y": [0, 0]}


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of `base` with dotted paths (written with __ for the dots) set; None removes a key."""
    body = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = body
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return body


def problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The (field, message) pairs the API would report for an invalid body."""
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate(body)
    return [(p.field, p.message) for p in validation_problems(list(info.value.errors()))]


def assert_rejected(body: dict[str, Any], field: str, *fragments: str) -> None:
    found = problems(body)
    messages = [message for name, message in found if name == field]
    assert messages, f"expected a problem at {field!r}, got {found}"
    for fragment in fragments:
        assert any(fragment in message for message in messages), f"{fragment!r} not in {messages}"


# --- the examples -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xor-seed.json", "xor-classifier.json"])
def test_examples_validate_verbatim_and_their_resolved_form_validates_again(name: str) -> None:
    spec = JobCreate.model_validate(example(name))
    stored = spec.resolved().model_dump(mode="json")
    again = JobCreate.model_validate(stored)
    assert again.resolved() == spec.resolved()


def test_seed_example_keeps_its_own_choices() -> None:
    spec = JobCreate.model_validate(example("xor-seed.json")).resolved()
    assert spec.training.loss == "mean_absolute_error"
    assert spec.training.metrics == ["mean_absolute_error"]
    assert spec.objective is not None
    assert (spec.objective.name, spec.objective.direction) == ("val_mean_absolute_error", "min")
    assert isinstance(spec.model.hidden_layers, IntRange)
    assert bounds(spec.model.hidden_layers) == (2, 20)
    assert spec.data.validation is not None
    assert spec.queue == "cpu"


def test_classifier_example_parses_each_hyperparameter_shape() -> None:
    spec = JobCreate.model_validate(example("xor-classifier.json"))
    assert isinstance(spec.model.units, IntRange) and spec.model.units.step == 8
    assert isinstance(spec.model.activation, NameChoice) and spec.model.activation.values == ["relu", "tanh"]
    assert isinstance(spec.model.dropout, FloatRange) and spec.model.dropout.step == pytest.approx(0.1)
    assert isinstance(spec.optimizer.learning_rate, FloatRange)
    assert spec.optimizer.learning_rate.sampling == "log"
    assert spec.objective_direction == "max"


# --- defaults the task implies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "objective", "direction", "loss", "metrics", "output_activation"),
    [
        (BINARY, "val_accuracy", "max", "binary_crossentropy", ["accuracy"], "sigmoid"),
        (MULTICLASS, "val_accuracy", "max", "sparse_categorical_crossentropy", ["accuracy"], "softmax"),
        (REGRESSION, "val_loss", "min", "mean_squared_error", ["mean_absolute_error"], "linear"),
    ],
)
def test_resolved_fills_the_task_defaults(
    body: dict[str, Any],
    objective: str,
    direction: str,
    loss: str,
    metrics: list[str],
    output_activation: str,
) -> None:
    spec = JobCreate.model_validate(body)
    assert spec.objective is None and spec.training.loss is None and spec.model.output_activation is None
    resolved = spec.resolved()
    assert resolved.objective is not None
    assert (resolved.objective.name, resolved.objective.direction) == (objective, direction)
    assert resolved.training.loss == loss
    assert resolved.training.metrics == metrics
    assert resolved.model.output_activation == output_activation
    assert resolved.computed_metrics == ["loss", *metrics, "val_loss", *(f"val_{m}" for m in metrics)]


def test_resolved_fills_only_the_missing_direction() -> None:
    spec = JobCreate.model_validate(with_(BINARY, objective={"name": "val_loss"})).resolved()
    assert spec.objective is not None
    assert (spec.objective.name, spec.objective.direction) == ("val_loss", "min")


@pytest.mark.parametrize(
    ("body", "objective", "direction"),
    [
        (BINARY, {"name": "val_accuracy"}, "max"),
        (BINARY, {"name": "val_loss"}, "min"),
        (BINARY, {"name": "loss"}, "min"),
        (with_(BINARY, training__metrics=["auc", "accuracy"]), {"name": "val_auc"}, "max"),
        (with_(REGRESSION, training__metrics=["r2_score"]), {"name": "val_r2_score"}, "max"),
        (REGRESSION, {"name": "val_mean_absolute_error"}, "min"),
        (with_(MULTICLASS, training__metrics=["top_2_accuracy"]), {"name": "val_top_2_accuracy"}, "max"),
        # An explicit direction wins over the inferred one.
        (BINARY, {"name": "val_accuracy", "direction": "min"}, "min"),
    ],
)
def test_objective_direction(body: dict[str, Any], objective: dict[str, str], direction: str) -> None:
    assert JobCreate.model_validate(with_(body, objective=objective)).objective_direction == direction


@pytest.mark.parametrize(
    ("body", "classes"),
    [
        (MULTICLASS, [0, 1, 2]),
        # Labels that are not 0..k-1 are mapped: three classes, not five output units.
        (with_(MULTICLASS, data__train__y=[0, 1, 4, 0, 1]), [0, 1, 4]),
        (with_(MULTICLASS, data__train__y=["b", "a", "c", "a", "b"]), ["a", "b", "c"]),
        (BINARY, [0, 1]),
        (REGRESSION, None),
    ],
)
def test_classes(body: dict[str, Any], classes: list[Any] | None) -> None:
    assert JobCreate.model_validate(body).classes == classes


@pytest.mark.parametrize(
    ("accelerator", "queue"), [("gpu", "gpu"), ("cpu", "cpu"), ("any", "cpu"), (None, "cpu")]
)
def test_queue_follows_the_accelerator(accelerator: str | None, queue: str) -> None:
    body = with_(REGRESSION, resources={"accelerator": accelerator} if accelerator else None)
    assert JobCreate.model_validate(body).queue == queue


def test_unknown_accelerator_is_rejected() -> None:
    assert_rejected(with_(REGRESSION, resources={"accelerator": "tpu"}), "resources.accelerator")


# --- unknown and missing fields -----------------------------------------------------------------------

_EVERY_SECTION = with_(
    REGRESSION,
    data__validation=VALIDATION,
    model={"units": {"min": 1, "max": 4}, "activation": {"values": ["relu", "tanh"]}},
    training={"early_stopping": {"patience": 2}},
    objective={"name": "val_loss"},
    tuner={"max_trials": 2},
    resources={"accelerator": "cpu"},
)


@pytest.mark.parametrize(
    "path",
    [
        "foo",
        "data.foo",
        "data.train.foo",
        "data.validation.foo",
        "model.foo",
        "model.units.foo",
        "model.activation.foo",
        "optimizer.foo",
        "training.foo",
        "training.early_stopping.foo",
        "objective.foo",
        "tuner.foo",
        "resources.foo",
    ],
)
def test_unknown_fields_are_rejected_at_every_level(path: str) -> None:
    JobCreate.model_validate(_EVERY_SECTION)  # the body is valid without the unknown field
    assert_rejected(with_(_EVERY_SECTION, **{path.replace(".", "__"): 1}), path, "is not a field")


@pytest.mark.parametrize("path", ["task", "data", "data.train.x", "data.train.y"])
def test_missing_required_fields_are_named(path: str) -> None:
    assert_rejected(with_(REGRESSION, **{path.replace(".", "__"): None}), path, "is required")


def test_unknown_task_is_rejected() -> None:
    assert_rejected(with_(REGRESSION, task="clustering"), "task")


def test_unknown_architecture_is_rejected() -> None:
    assert_rejected(with_(REGRESSION, model={"architecture": "cnn"}), "model.architecture")


# --- hyperparameter shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tuned", "low", "high"),
    [
        (16, False, 16, 16),
        ({"min": 8, "max": 64}, True, 8, 64),
        ({"min": 8, "max": 64, "step": 8, "sampling": "linear"}, True, 8, 64),
        ({"min": 8, "max": 64, "step": 2, "sampling": "log"}, True, 8, 64),
        ({"min": 8, "max": 8}, True, 8, 8),
        ({"values": [16, 4, 32]}, True, 4, 32),
    ],
)
def test_int_hyperparameter_shapes(value: Any, tuned: bool, low: int, high: int) -> None:
    spec = JobCreate.model_validate(with_(REGRESSION, model={"units": value}))
    assert is_tuned(spec.model.units) is tuned
    assert bounds(spec.model.units) == (low, high)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        (0.01, 0.01, 0.01),
        ({"min": 1e-4, "max": 1e-1, "sampling": "log"}, 1e-4, 1e-1),
        ({"min": 1e-4, "max": 1e-1, "sampling": "reverse_log"}, 1e-4, 1e-1),
        ({"min": 0.01, "max": 0.05, "step": 0.01}, 0.01, 0.05),
        ({"values": [0.1, 0.01]}, 0.01, 0.1),
    ],
)
def test_float_hyperparameter_shapes(value: Any, low: float, high: float) -> None:
    spec = JobCreate.model_validate(with_(REGRESSION, optimizer={"learning_rate": value}))
    assert bounds(spec.optimizer.learning_rate) == pytest.approx((low, high))


def test_int_choice_keeps_its_values_as_ints() -> None:
    spec = JobCreate.model_validate(with_(REGRESSION, training={"batch_size": {"values": [2, 4]}}))
    assert isinstance(spec.training.batch_size, IntChoice)
    assert spec.training.batch_size.values == [2, 4]


@pytest.mark.parametrize(
    "value",
    [
        [8, 16],  # a list is neither a constant nor a range nor a choice
        None,
        {"min": 8, "max": 16, "values": [8]},  # both shapes at once
    ],
)
def test_other_hyperparameter_shapes_are_rejected(value: Any) -> None:
    found = problems(with_(REGRESSION, model={"units": value}))
    assert found and all(field.startswith("model.units") for field, _ in found), found


def test_non_shape_names_the_expected_shapes() -> None:
    assert_rejected(with_(REGRESSION, model={"units": [8, 16]}), "model.units", '{"min"', '{"values"')


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"min": 8}, "model.units.max"),
        ({"max": 8}, "model.units.min"),
        ({"values": []}, "model.units.values"),
        ({"min": 1, "max": 4, "sampling": "exponential"}, "model.units.sampling"),
        ({"min": 1, "max": 4, "step": 0}, "model.units.step"),
        ({"min": 1.5, "max": 4}, "model.units.min"),
        (8.5, "model.units"),
    ],
)
def test_malformed_int_hyperparameters_name_the_part(value: Any, field: str) -> None:
    assert_rejected(with_(REGRESSION, model={"units": value}), field)


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("model__units", {"min": 64, "max": 8}),
        ("model__dropout", {"min": 0.5, "max": 0.1}),
        ("optimizer__learning_rate", {"min": 0.1, "max": 0.01, "sampling": "log"}),
    ],
)
def test_min_above_max_is_rejected(section: str, value: dict[str, Any]) -> None:
    assert_rejected(
        with_(REGRESSION, **{section: value}), section.replace("__", "."), "must not be greater than max"
    )


@pytest.mark.parametrize("sampling", ["log", "reverse_log"])
@pytest.mark.parametrize("low", [0, -0.5])
def test_log_sampling_needs_a_positive_min(sampling: str, low: float) -> None:
    body = with_(REGRESSION, optimizer={"learning_rate": {"min": low, "max": 0.1, "sampling": sampling}})
    assert_rejected(body, "optimizer.learning_rate", f"{sampling} sampling needs min > 0")


def test_log_sampling_with_positive_min_is_accepted() -> None:
    body = with_(REGRESSION, model={"units": {"min": 1, "max": 64, "sampling": "log"}})
    assert bounds(JobCreate.model_validate(body).model.units) == (1, 64)


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("model__units", {"min": 1, "max": 64, "step": 1, "sampling": "log"}),
        ("optimizer__learning_rate", {"min": 1e-4, "max": 1e-1, "step": 0.5, "sampling": "log"}),
        ("optimizer__learning_rate", {"min": 1e-4, "max": 1e-1, "step": 1.0, "sampling": "reverse_log"}),
    ],
)
def test_log_sampling_step_must_multiply(section: str, value: dict[str, Any]) -> None:
    # keras-tuner multiplies by the step on a log scale and raises for a step <= 1 while building the space.
    assert_rejected(with_(REGRESSION, **{section: value}), section.replace("__", "."), "step must be over 1")


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("model__units", [8, 16, 8]),
        ("optimizer__learning_rate", [0.1, 0.01, 0.1]),
        ("model__activation", ["relu", "tanh", "relu"]),
        ("optimizer__name", ["adam", "adam"]),
    ],
)
def test_repeated_choice_values_are_rejected(section: str, values: list[Any]) -> None:
    assert_rejected(
        with_(REGRESSION, **{section: {"values": values}}), section.replace("__", "."), "must not repeat"
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model__units": True}, "model.units"),
        ({"model__dropout": False}, "model.dropout"),
        ({"optimizer__learning_rate": True}, "optimizer.learning_rate"),
        ({"training__batch_size": True}, "training.batch_size"),
        ({"model__units": {"min": True, "max": 8}}, "model.units.min"),
        ({"model__units": {"min": 1, "max": True}}, "model.units.max"),
        ({"model__units": {"min": 1, "max": 8, "step": True}}, "model.units.step"),
        ({"model__units": {"values": [True, 8]}}, "model.units.values[0]"),
        ({"optimizer__learning_rate": {"values": [0.1, True]}}, "optimizer.learning_rate.values[1]"),
        ({"optimizer__learning_rate": {"min": False, "max": 0.1}}, "optimizer.learning_rate.min"),
        ({"training__epochs": True}, "training.epochs"),
        ({"tuner__max_trials": True}, "tuner.max_trials"),
        ({"training__early_stopping": {"patience": True}}, "training.early_stopping.patience"),
    ],
)
def test_bool_where_a_number_is_expected_is_rejected(changes: dict[str, Any], field: str) -> None:
    assert_rejected(with_(REGRESSION, **changes), field)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"optimizer__learning_rate": math.nan}, "optimizer.learning_rate"),
        ({"optimizer__learning_rate": {"min": 0.01, "max": math.inf}}, "optimizer.learning_rate.max"),
        ({"model__dropout": math.nan}, "model.dropout"),
        ({"model__dropout": {"values": [0.1, math.nan]}}, "model.dropout.values[1]"),
        (
            {"training__early_stopping": {"patience": 2, "min_delta": math.inf}},
            "training.early_stopping.min_delta",
        ),
    ],
)
def test_nan_and_infinity_are_rejected_in_hyperparameters(changes: dict[str, Any], field: str) -> None:
    # Python's json (and so FastAPI) accepts NaN and Infinity literals; they can't be trained or stored.
    assert_rejected(with_(REGRESSION, **changes), field)


# --- data ---------------------------------------------------------------------------------------------


def test_non_rectangular_x_is_rejected() -> None:
    body = with_(REGRESSION, data__train__x=[[0, 0], [0], [1, 0], [1, 1], [2, 2]])
    assert_rejected(body, "data.train", "rectangular", "row 1 has 1")


def test_rows_without_features_are_rejected() -> None:
    assert_rejected(with_(REGRESSION, data__train__x=[[]] * 5), "data.train", "at least one feature")


def test_x_and_y_of_different_lengths_are_rejected() -> None:
    assert_rejected(with_(REGRESSION, data__train__y=[0, 1, 1]), "data.train", "5 rows but y has 3")


def test_validation_rows_are_checked_like_train_rows() -> None:
    body = with_(REGRESSION, data__validation={"x": [[0, 0], [1, 1]], "y": [0]})
    assert_rejected(body, "data.validation", "2 rows but y has 1")


@pytest.mark.parametrize(
    "changes",
    [
        {"data__train__x": [[0, math.nan], [0, 1], [1, 0], [1, 1], [2, 2]]},
        {"data__train__y": [0, 1, math.inf, 0, 1]},
    ],
)
def test_non_finite_data_is_rejected(changes: dict[str, Any]) -> None:
    assert_rejected(with_(REGRESSION, **changes), "data.train", "NaN or infinity")


def test_non_numeric_x_names_the_cell() -> None:
    assert_rejected(
        with_(REGRESSION, data__train__x=[[0, 0], [0, "a"], [1, 0], [1, 1], [2, 2]]), "data.train.x[1][1]"
    )


def test_validation_feature_count_must_match_train() -> None:
    body = with_(REGRESSION, data__validation={"x": [[0], [1]], "y": [0, 1]})
    assert_rejected(body, "data", "validation.x has 1 features but train.x has 2")


def test_validation_and_validation_split_are_exclusive() -> None:
    body = with_(REGRESSION, data__validation=VALIDATION, data__validation_split=0.5)
    assert_rejected(body, "data", "either validation or validation_split")


@pytest.mark.parametrize(
    ("rows", "split"),
    [
        (4, None),  # the default 0.2 of 4 rows holds out no row
        (5, 0.1),
        (1, 0.5),
        (1, None),
    ],
)
def test_a_split_leaving_no_row_to_validate_or_train_is_rejected(rows: int, split: float | None) -> None:
    body = with_(
        REGRESSION,
        data__train={"x": [[float(i)] for i in range(rows)], "y": [float(i) for i in range(rows)]},
        data__validation_split=split,
    )
    assert_rejected(body, "data", "leaves no row")


@pytest.mark.parametrize(("rows", "split"), [(5, None), (2, 0.5), (10, 0.1), (10, 0.9)])
def test_a_split_leaving_rows_on_both_sides_is_accepted(rows: int, split: float | None) -> None:
    body = with_(
        REGRESSION,
        data__train={"x": [[float(i)] for i in range(rows)], "y": [float(i) for i in range(rows)]},
        data__validation_split=split,
    )
    spec = JobCreate.model_validate(body)
    assert spec.data.effective_split == (split if split is not None else 0.2)
    assert spec.data.rows == rows


@pytest.mark.parametrize("split", [0, 1, -0.1, 1.5])
def test_validation_split_must_be_a_fraction(split: float) -> None:
    assert_rejected(with_(REGRESSION, data__validation_split=split), "data.validation_split")


def test_a_validation_set_replaces_the_default_split() -> None:
    # Four train rows are too few for the default split, but enough with a validation set.
    body = with_(
        REGRESSION,
        data__train={"x": [[0], [1], [2], [3]], "y": [0, 1, 2, 3]},
        data__validation={"x": [[4]], "y": [4]},
    )
    spec = JobCreate.model_validate(body)
    assert spec.data.rows == 5


# --- classification labels ----------------------------------------------------------------------------


def test_binary_labels_must_be_two_classes() -> None:
    assert_rejected(
        with_(BINARY, data__train__y=[0, 1, 2, 0, 1]), "data.train.y", "exactly 2 classes, the target has 3"
    )


@pytest.mark.parametrize("body", [BINARY, MULTICLASS], ids=["binary", "multiclass"])
def test_class_labels_must_be_whole_numbers_or_strings(body: dict[str, Any]) -> None:
    assert_rejected(with_(body, data__train__y=[0, 1, 0.5, 0, 1]), "data.train.y", "1 labels are not whole")


def test_negative_labels_are_classes_too() -> None:
    assert JobCreate.model_validate(with_(BINARY, data__train__y=[-1, 1, 1, -1, 1])).classes == [-1, 1]


def test_strings_in_regression_targets_are_refused_once() -> None:
    assert_rejected(with_(REGRESSION, data__train__y=["a"] * 5), "data.train.y", "5 hold strings")


def test_bad_labels_in_the_validation_set_are_named_there() -> None:
    body = with_(BINARY, data__validation={"x": [[1], [2]], "y": [1, 2]})
    assert_rejected(body, "data.validation.y", "not among the classes of the training rows")


def test_multiclass_accepts_any_whole_labels() -> None:
    spec = JobCreate.model_validate(with_(MULTICLASS, data__train__y=[0, 3, 7, 1.0, 2]))
    assert spec.classes == [0, 1, 2, 3, 7]


@pytest.mark.parametrize("body", [BINARY, MULTICLASS], ids=["binary", "multiclass"])
def test_a_single_class_is_rejected(body: dict[str, Any]) -> None:
    assert_rejected(with_(body, data__train__y=[1, 1, 1, 1, 1]), "data.train.y", "single class")


def test_regression_targets_may_be_any_number() -> None:
    spec = JobCreate.model_validate(with_(REGRESSION, data__train__y=[-1.5, 2.25, 1e6, 0, 0]))
    assert spec.data.train is not None and spec.data.train.y == [-1.5, 2.25, 1e6, 0, 0]


# --- what fits the task -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "changes", "field"),
    [
        (BINARY, {"model__output_activation": "softmax"}, "model.output_activation"),
        (MULTICLASS, {"model__output_activation": "sigmoid"}, "model.output_activation"),
        (REGRESSION, {"model__output_activation": "softmax"}, "model.output_activation"),
        (BINARY, {"training__loss": "mean_squared_error"}, "training.loss"),
        (MULTICLASS, {"training__loss": "binary_crossentropy"}, "training.loss"),
        (REGRESSION, {"training__loss": "binary_crossentropy"}, "training.loss"),
        (BINARY, {"training__metrics": ["accuracy", "mean_absolute_error"]}, "training.metrics"),
        (MULTICLASS, {"training__metrics": ["auc"]}, "training.metrics"),
        (REGRESSION, {"training__metrics": ["accuracy"]}, "training.metrics"),
    ],
)
def test_choices_that_do_not_fit_the_task_are_rejected(
    body: dict[str, Any], changes: dict[str, Any], field: str
) -> None:
    assert_rejected(with_(body, **changes), field, f"does not fit task {body['task']}", "choose from")


@pytest.mark.parametrize(
    ("body", "changes"),
    [
        (BINARY, {"training__loss": "binary_focal_crossentropy", "training__metrics": ["accuracy", "auc"]}),
        (MULTICLASS, {"training__metrics": ["accuracy", "top_3_accuracy"]}),
        (
            REGRESSION,
            {
                "model__output_activation": "softplus",
                "training__loss": "huber",
                "training__metrics": ["root_mean_squared_error", "r2_score"],
            },
        ),
    ],
)
def test_choices_that_fit_the_task_are_accepted(body: dict[str, Any], changes: dict[str, Any]) -> None:
    spec = JobCreate.model_validate(with_(body, **changes))
    if "training__metrics" in changes:
        assert list(spec.metrics) == changes["training__metrics"]


def test_repeated_metrics_are_rejected() -> None:
    assert_rejected(
        with_(BINARY, training__metrics=["accuracy", "accuracy"]), "training.metrics", "must not repeat"
    )


@pytest.mark.parametrize("value", ["swishy", {"values": ["relu", "swishy"]}])
def test_unknown_activation_is_rejected(value: Any) -> None:
    assert_rejected(with_(REGRESSION, model={"activation": value}), "model.activation", "'swishy'", "relu")


@pytest.mark.parametrize("value", ["lbfgs", {"values": ["adam", "lbfgs"]}])
def test_unknown_optimizer_is_rejected(value: Any) -> None:
    assert_rejected(with_(REGRESSION, optimizer={"name": value}), "optimizer.name", "'lbfgs'", "adam")


@pytest.mark.parametrize("value", [1, 1.0, 1.5, -0.1, {"min": 0.0, "max": 1.0}, {"values": [0.2, 1.0]}])
def test_dropout_must_be_below_1_and_not_negative(value: Any) -> None:
    assert_rejected(with_(REGRESSION, model={"dropout": value}), "model.dropout", "[0, 1)")


@pytest.mark.parametrize("value", [0, 0.99, {"min": 0.0, "max": 0.5}])
def test_dropout_in_range_is_accepted(value: Any) -> None:
    spec = JobCreate.model_validate(with_(REGRESSION, model={"dropout": value}))
    assert 0 <= bounds(spec.model.dropout)[1] < 1


@pytest.mark.parametrize(
    "value", [0, -0.01, {"min": 0.0, "max": 0.1}, {"min": -1.0, "max": 0.1}, {"values": [0.01, 0.0]}]
)
def test_learning_rate_must_be_positive(value: Any) -> None:
    assert_rejected(
        with_(REGRESSION, optimizer={"learning_rate": value}), "optimizer.learning_rate", "greater than 0"
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model__hidden_layers": 0}, "model.hidden_layers"),
        ({"model__hidden_layers": {"values": [0, 2]}}, "model.hidden_layers"),
        ({"model__units": {"min": 0, "max": 8}}, "model.units"),
        ({"training__batch_size": 0}, "training.batch_size"),
        ({"training__epochs": 0}, "training.epochs"),
        ({"tuner__max_trials": 0}, "tuner.max_trials"),
        ({"tuner__seed": -1}, "tuner.seed"),
        ({"tuner__seed": 2**31}, "tuner.seed"),
        ({"tuner__factor": 1}, "tuner.factor"),
        ({"training__early_stopping": {"patience": 0}}, "training.early_stopping.patience"),
        (
            {"training__early_stopping": {"patience": 2, "min_delta": -0.1}},
            "training.early_stopping.min_delta",
        ),
        ({"name": "x" * 201}, "name"),
    ],
)
def test_counts_and_sizes_below_their_minimum_are_rejected(changes: dict[str, Any], field: str) -> None:
    assert_rejected(with_(REGRESSION, **changes), field)


# --- the objective ------------------------------------------------------------------------------------


def test_seed_tutorial_objective_bug_is_rejected_with_the_valid_names() -> None:
    # The seed tutorial tuned a regression that computes only MAE for val_accuracy: every trial scored NaN.
    body = with_(example("xor-seed.json"), objective={"name": "val_accuracy", "direction": "max"})
    found = problems(body)
    assert [field for field, _ in found] == ["objective.name"]
    message = found[0][1]
    assert "'val_accuracy'" in message
    for name in ("loss", "mean_absolute_error", "val_loss", "val_mean_absolute_error"):
        assert f"'{name}'" in message


@pytest.mark.parametrize(
    ("body", "objective"),
    [
        (REGRESSION, "val_accuracy"),
        (BINARY, "val_auc"),  # auc is allowed for the task, but not computed unless listed in metrics
        (with_(BINARY, training__metrics=["auc"]), "val_accuracy"),
        (REGRESSION, "val_mean_squared_error"),
        (REGRESSION, "mae"),
    ],
)
def test_objective_must_be_a_computed_metric(body: dict[str, Any], objective: str) -> None:
    assert_rejected(
        with_(body, objective={"name": objective}), "objective.name", "not a metric this job computes"
    )


@pytest.mark.parametrize(
    ("body", "objective"),
    [
        (with_(BINARY, training__metrics=["auc"]), "val_auc"),
        (with_(BINARY, training__metrics=["auc"]), "auc"),
        (REGRESSION, "mean_absolute_error"),
        (with_(REGRESSION, training__metrics=[]), "val_loss"),
    ],
)
def test_objective_that_is_computed_is_accepted(body: dict[str, Any], objective: str) -> None:
    spec = JobCreate.model_validate(with_(body, objective={"name": objective}))
    assert spec.objective_name == objective


@pytest.mark.parametrize("metrics", [["auc"], []])
def test_default_objective_must_be_computed_too(metrics: list[str]) -> None:
    # Without an objective a classifier is tuned for val_accuracy, which these metrics don't compute.
    assert_rejected(
        with_(BINARY, training__metrics=metrics), "training.metrics", "'val_accuracy'", "val_loss"
    )


# --- check_limits -------------------------------------------------------------------------------------

LIMITS = Limits(
    max_rows=10,
    max_features=3,
    max_hidden_layers=4,
    max_units=64,
    max_epochs=50,
    max_trials=20,
    max_executions_per_trial=3,
    max_parallel_trials=4,
    max_body_bytes=10_000,
    max_range_values=20,
    max_grid_size=1_000,
    max_choice_values=5,
    max_classes=10,
    # The largest model of _AT_LIMITS: 3 features, 4 hidden layers of 64 units, 1 output.
    max_model_parameters=(3 + 1) * 64 + 3 * (64 + 1) * 64 + (64 + 1) * 1,
    max_hyperband_factor=5,
    max_hyperband_iterations=3,
)

_AT_LIMITS = with_(
    REGRESSION,
    data__train={"x": [[0.0, 1.0, 2.0]] * 8, "y": [float(i) for i in range(8)]},
    data__validation={"x": [[0.0, 1.0, 2.0]] * 2, "y": [0.0, 1.0]},
    model={
        "hidden_layers": {"min": 1, "max": 4},
        "units": {"values": [8, 64]},
        "dropout": {"values": [0.0, 0.1, 0.2, 0.3, 0.4]},
    },
    # 0.25, 0.5 ... 5.0: 20 values.
    optimizer={"learning_rate": {"min": 0.25, "max": 5.0, "step": 0.25}},
    training={"epochs": 50, "batch_size": {"min": 2, "max": 10}, "early_stopping": {"patience": 50}},
    tuner={
        "algorithm": "hyperband",
        "max_trials": 20,
        "executions_per_trial": 3,
        "max_parallel_trials": 4,
        "max_epochs": 50,
        "factor": 5,
        "hyperband_iterations": 3,
    },
    limits={"max_failed_trials": 20},
)


def test_a_request_within_every_limit_has_no_problems() -> None:
    assert check_limits(JobCreate.model_validate(_AT_LIMITS), LIMITS) == []


def test_examples_are_within_the_default_limits() -> None:
    defaults = Limits.model_construct()  # the documented defaults, not this environment's KTUNE_* values
    for name in ("xor-seed.json", "xor-classifier.json"):
        assert check_limits(JobCreate.model_validate(example(name)), defaults) == []


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        (
            {"data__validation": {"x": [[0.0, 1.0, 2.0]] * 3, "y": [0.0, 1.0, 2.0]}},
            "data.train.x",
            "rows (train and validation) 11 is over this service's limit of 10",
        ),
        (
            {
                "data__train": {"x": [[0.0] * 4] * 8, "y": [0.0] * 8},
                "data__validation": {"x": [[0.0] * 4] * 2, "y": [0.0, 1.0]},
            },
            "data.train.x",
            "features 4 is over this service's limit of 3",
        ),
        (
            {"model__hidden_layers": {"min": 1, "max": 5}},
            "model.hidden_layers",
            "hidden layers 5 is over this service's limit of 4",
        ),
        ({"model__hidden_layers": 5}, "model.hidden_layers", "hidden layers 5"),
        ({"model__units": {"values": [8, 65]}}, "model.units", "units 65 is over this service's limit of 64"),
        ({"training__epochs": 51}, "training.epochs", "epochs 51 is over this service's limit of 50"),
        ({"tuner__max_epochs": 51}, "tuner.max_epochs", "epochs 51 is over this service's limit of 50"),
        ({"tuner__max_trials": 21}, "tuner.max_trials", "trials 21 is over this service's limit of 20"),
        (
            {"tuner__executions_per_trial": 4},
            "tuner.executions_per_trial",
            "executions per trial 4 is over this service's limit of 3",
        ),
        (
            {"tuner__max_parallel_trials": 5},
            "tuner.max_parallel_trials",
            "parallel trials 5 is over this service's limit of 4",
        ),
        (
            {"training__batch_size": {"values": [2, 11]}},
            "training.batch_size",
            "batch size 11 is over this service's limit of 10",
        ),
        (
            {"training__early_stopping": {"patience": 51}},
            "training.early_stopping.patience",
            "patience 51 is over this service's limit of 50",
        ),
        ({"tuner__factor": 6}, "tuner.factor", "hyperband factor 6 is over this service's limit of 5"),
        (
            {"tuner__hyperband_iterations": 4},
            "tuner.hyperband_iterations",
            "hyperband iterations 4 is over this service's limit of 3",
        ),
        (
            {"limits__max_failed_trials": 21},
            "limits.max_failed_trials",
            "failed trials 21 is over this service's limit of 20",
        ),
        (
            {"model__units": {"min": 8, "max": 64, "step": 65}},
            "model.units.step",
            "step 65 is over this service's limit of 64",
        ),
        (
            {"model__hidden_layers": {"min": 1, "max": 4, "step": 5}},
            "model.hidden_layers.step",
            "step 5 is over this service's limit of 4",
        ),
        (
            {"training__batch_size": {"min": 2, "max": 10, "step": 11}},
            "training.batch_size.step",
            "step 11 is over this service's limit of 10",
        ),
        (
            {"model__dropout": {"values": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}},
            "model.dropout.values",
            "6 values is over this service's limit of 5 values in one list",
        ),
        (
            {"model__activation": {"values": ["relu", "tanh", "elu", "selu", "gelu", "swish"]}},
            "model.activation.values",
            "6 values is over this service's limit of 5",
        ),
        (
            {"optimizer__learning_rate": {"min": 0.25, "max": 5.25, "step": 0.25}},
            "optimizer.learning_rate",
            "this range has 21 values at its step, over this service's limit of 20 values per hyperparameter",
        ),
        (
            {"model__units": {"min": 1, "max": 21}},  # an int range steps by 1 by default
            "model.units",
            "this range has 21 values at its step",
        ),
    ],
)
def test_each_limit_is_checked(changes: dict[str, Any], field: str, text: str) -> None:
    found = check_limits(JobCreate.model_validate(with_(_AT_LIMITS, **changes)), LIMITS)
    assert [(p.field, p.message) for p in found if p.field == field and text in p.message], [
        (p.field, p.message) for p in found
    ]
    assert len(found) == 1, [(p.field, p.message) for p in found]


def test_every_limit_broken_at_once_is_reported() -> None:
    body = with_(
        _AT_LIMITS,
        training={"epochs": 51, "batch_size": 11},
        tuner={"max_trials": 21, "executions_per_trial": 4, "max_parallel_trials": 5, "max_epochs": 51},
        model={"hidden_layers": 5, "units": 65},
    )
    fields = sorted(p.field for p in check_limits(JobCreate.model_validate(body), LIMITS))
    assert fields == sorted(
        [
            "model.hidden_layers",
            "model.units",
            "training.epochs",
            "tuner.max_epochs",
            "tuner.max_trials",
            "tuner.executions_per_trial",
            "tuner.max_parallel_trials",
            "training.batch_size",
        ]
    )


DEFAULTS = Limits.model_construct()  # the documented defaults, not this environment's KTUNE_* values


def limit_problems(body: dict[str, Any], limits: Limits = DEFAULTS) -> dict[str, str]:
    return {p.field: p.message for p in check_limits(JobCreate.model_validate(body), limits)}


@pytest.mark.parametrize("algorithm", ["random", "grid", "bayesian", "hyperband"])
@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        # keras-tuner would list 5e11 grid values (the pool process grows until the kernel kills it).
        (
            {"model__dropout": {"min": 0, "max": 0.5, "step": 1e-12}},
            "model.dropout",
            "has 500000000001 values",
        ),
        # (max - min) / step is infinite: OverflowError in the worker.
        (
            {"optimizer__learning_rate": {"min": 1e-300, "max": 1e300, "step": 1e-300}},
            "optimizer.learning_rate",
            "more values than can be counted",
        ),
        # max / min is infinite: log sampling would draw infinite learning rates.
        (
            {"optimizer__learning_rate": {"min": 1e-300, "max": 1e300, "sampling": "log"}},
            "optimizer.learning_rate",
            "more values than can be counted",
        ),
    ],
)
def test_a_range_too_fine_or_too_wide_for_keras_tuner_is_refused(
    algorithm: str, changes: dict[str, Any], field: str, text: str
) -> None:
    found = limit_problems(with_(REGRESSION, tuner={"algorithm": algorithm}, **changes))
    assert list(found) == [field]
    assert text in found[field]
    assert f"limit of {DEFAULTS.max_range_values} values per hyperparameter" in found[field]
    assert "leave step out" in found[field]


def test_a_fine_range_just_within_the_limit_is_accepted() -> None:
    limits = DEFAULTS.model_copy(update={"max_range_values": 11})
    assert (
        limit_problems(with_(REGRESSION, model__dropout={"min": 0, "max": 0.5, "step": 0.05}), limits) == {}
    )
    found = limit_problems(with_(REGRESSION, model__dropout={"min": 0, "max": 0.5, "step": 0.04}), limits)
    assert "has 13 values" in found["model.dropout"]


def test_a_long_values_list_is_refused_at_the_default_limit() -> None:
    many = [i / 1_000_000 for i in range(1, DEFAULTS.max_choice_values + 2)]
    assert limit_problems(with_(REGRESSION, optimizer__learning_rate={"values": many[:-1]})) == {}
    found = limit_problems(with_(REGRESSION, optimizer__learning_rate={"values": many}))
    assert list(found) == ["optimizer.learning_rate.values"]
    assert (
        f"{len(many)} values is over this service's limit of {DEFAULTS.max_choice_values}"
        in (found["optimizer.learning_rate.values"])
    )


# 1 + 2 + 4 + ... : n hidden layers walk units ** n combinations; (2 + 4 + 8) x 2 learning rates = 28.
_GRID = with_(
    REGRESSION,
    model={"hidden_layers": {"min": 1, "max": 3}, "units": {"values": [4, 8]}},
    optimizer={"learning_rate": {"values": [0.1, 0.01]}},
    tuner={"algorithm": "grid"},
)


def test_a_grid_search_within_its_size_limit_is_accepted() -> None:
    assert limit_problems(_GRID, DEFAULTS.model_copy(update={"max_grid_size": 28})) == {}


def test_a_grid_search_over_its_size_limit_names_its_size() -> None:
    found = limit_problems(_GRID, DEFAULTS.model_copy(update={"max_grid_size": 27}))
    assert list(found) == ["tuner.algorithm"]
    assert "walks 28 combinations" in found["tuner.algorithm"]
    assert "limit of 27" in found["tuner.algorithm"]


def test_only_a_grid_search_is_bounded_by_its_size() -> None:
    limits = DEFAULTS.model_copy(update={"max_grid_size": 27})
    assert limit_problems(with_(_GRID, tuner={"algorithm": "random"}), limits) == {}


def test_the_seed_space_is_too_large_for_a_grid_search() -> None:
    found = limit_problems(with_(example("xor-seed.json"), tuner__algorithm="grid"))
    # 16 unit sizes on 2 to 20 layers and 3 learning rates: about 3.9e24 combinations.
    assert list(found) == ["tuner.algorithm"]
    assert "walks 3.86e+24 combinations" in found["tuner.algorithm"]


_CLASSES = DEFAULTS.model_copy(update={"max_classes": 10})


def test_labels_below_the_class_limit_are_accepted() -> None:
    labels = [0, 9, 2, 0, 2, 1, 3, 4, 5, 6, 7, 8]
    body = with_(MULTICLASS, data__train={"x": [[float(i)] for i in range(12)], "y": labels})
    assert limit_problems(body, _CLASSES) == {}


def test_labels_beyond_the_class_limit_are_refused() -> None:
    labels = [*range(11), 0]
    body = with_(MULTICLASS, data__train={"x": [[float(i)] for i in range(12)], "y": labels})
    found = limit_problems(body, _CLASSES)
    assert list(found) == ["data.train.y"]
    assert "the target has 11 classes, over this service's limit of 10 classes" in found["data.train.y"]


def test_huge_labels_are_one_class_each_not_an_output_unit_each() -> None:
    # Before labels were mapped, the worker would have built Dense(10**15 + 1).
    assert limit_problems(with_(MULTICLASS, data__train__y=[0, 1e15, 2, 0, 2]), _CLASSES) == {}


def test_binary_labels_are_within_the_smallest_class_limit() -> None:
    assert limit_problems(BINARY, DEFAULTS.model_copy(update={"max_classes": 2})) == {}


def test_the_seed_model_is_within_the_default_size_limit() -> None:
    # 2 features, 20 layers of 512 units, 1 output: 3 * 512 + 19 * 513 * 512 + 513 weights.
    spec = JobCreate.model_validate(example("xor-seed.json"))
    shape = inline_shape(spec)
    assert shape is not None
    assert largest_model_parameters(spec, shape) == 4_992_513 <= DEFAULTS.max_model_parameters


def test_a_model_just_over_the_size_limit_names_its_size() -> None:
    limits = DEFAULTS.model_copy(update={"max_model_parameters": 4_992_512})
    found = limit_problems(example("xor-seed.json"), limits)
    assert list(found) == ["model"]
    assert (
        "(2 features, 20 hidden layers of 512 units, an output layer of 1) has 4992513 parameters"
        in found["model"]
    )
    assert "limit of 4992512" in found["model"]


def test_the_model_size_counts_classes_as_outputs() -> None:
    body = with_(MULTICLASS, model={"hidden_layers": 1, "units": 10}, data__train__y=[0, 1, 99, 0, 1])
    spec = JobCreate.model_validate(body)
    shape = inline_shape(spec)
    assert shape is not None  # three classes (0, 1 and 99): three output units
    assert largest_model_parameters(spec, shape) == (1 + 1) * 10 + (10 + 1) * 3


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tuner__factor": 10**400}, "tuner.factor"),
        ({"tuner__hyperband_iterations": 10**400}, "tuner.hyperband_iterations"),
        ({"training__early_stopping": {"patience": 10**400}}, "training.early_stopping.patience"),
        ({"tuner__executions_per_trial": 10**400}, "tuner.executions_per_trial"),
        ({"limits__max_failed_trials": 10**400}, "limits.max_failed_trials"),
        ({"model__units": {"min": 1, "max": 8, "step": 10**400}}, "model.units.step"),
    ],
)
def test_huge_integers_are_refused_with_a_short_number(changes: dict[str, Any], field: str) -> None:
    found = limit_problems(with_(REGRESSION, **changes))
    assert list(found) == [field]
    assert " 1.00e+400 is over this service's limit" in found[field]


def test_limit_messages_show_large_numbers_in_full() -> None:
    found = check_limits(JobCreate.model_validate(with_(_AT_LIMITS, tuner__max_trials=1_234_567)), LIMITS)
    assert [p.message for p in found] == ["trials 1234567 is over this service's limit of 20"]


def test_data_without_train_or_dataset_says_to_give_one() -> None:
    assert_rejected(with_(REGRESSION, data__train=None), "data", "give either train", "or dataset")


def test_dataset_fields_do_not_mix_with_inline_arrays() -> None:
    assert_rejected(with_(REGRESSION, data__target="y"), "data", "target go with dataset")
    body = {"task": "regression", "data": {"dataset": "iris", "validation": {"x": [[1]], "y": [1]}}}
    assert_rejected(body, "data", "use validation_dataset")


# --- tuner.num_initial_points and the objective's tie rules ---------------------------------------------


def test_num_initial_points_is_accepted_for_bayesian_search() -> None:
    body = with_(example("xor-classifier.json"), tuner__num_initial_points=5)
    assert JobCreate.model_validate(body).tuner.num_initial_points == 5


@pytest.mark.parametrize("algorithm", ["random", "grid", "hyperband"])
def test_num_initial_points_of_another_algorithm_is_named(algorithm: str) -> None:
    body = with_(example("xor-classifier.json"), tuner__algorithm=algorithm, tuner__num_initial_points=5)
    assert_rejected(body, "tuner.num_initial_points", "bayesian search only", f"not {algorithm}")


def test_num_initial_points_must_be_positive() -> None:
    assert_rejected(
        with_(example("xor-classifier.json"), tuner__num_initial_points=0), "tuner.num_initial_points"
    )


def test_resolved_keeps_the_tie_rules_and_fills_their_defaults() -> None:
    default = JobCreate.model_validate(BINARY).resolved().objective
    assert default is not None and (default.tie_breaker, default.prefer_fewer_epochs) == ("val_loss", False)
    body = with_(
        BINARY, objective={"name": "val_accuracy", "tie_breaker": "loss", "prefer_fewer_epochs": True}
    )
    objective = JobCreate.model_validate(body).resolved().objective
    assert objective is not None
    assert (objective.name, objective.direction) == ("val_accuracy", "max")
    assert (objective.tie_breaker, objective.prefer_fewer_epochs) == ("loss", True)
    none = JobCreate.model_validate(with_(BINARY, objective={"name": "val_accuracy", "tie_breaker": None}))
    assert none.resolved().objective is not None and none.resolved().objective.tie_breaker is None


def test_a_tie_breaker_the_job_does_not_compute_is_named() -> None:
    body = with_(BINARY, objective={"name": "val_accuracy", "tie_breaker": "val_auc"})
    assert_rejected(body, "objective.tie_breaker", "'val_auc' is not a metric this job computes", "val_loss")
