"""The Keras names a job may use, and what each task implies by default.

Everything here is plain data so the API can validate a request without importing TensorFlow; the worker
maps these names to Keras objects in `worker.model_builder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Direction = Literal["min", "max"]
# A classifier's class label (`service.core.labels` works with them); here, with no numpy, so that the
# request and response models need none.
Label = str | int


class Task(StrEnum):
    BINARY_CLASSIFICATION = "binary_classification"
    MULTICLASS_CLASSIFICATION = "multiclass_classification"
    REGRESSION = "regression"


ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "softplus", "leaky_relu", "linear")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad", "adadelta", "adamax", "nadam")


@dataclass(frozen=True)
class TaskRules:
    """Output layer, loss and metrics a task uses by default, and which overrides it accepts."""

    output_activation: str
    loss: str
    metrics: tuple[str, ...]
    objective: str
    output_activations: tuple[str, ...]
    losses: tuple[str, ...]
    allowed_metrics: tuple[str, ...]


_CLASSIFICATION_METRICS = ("accuracy", "auc", "precision", "recall")
_REGRESSION = (
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "huber",
    "log_cosh",
    "mean_squared_logarithmic_error",
)

TASK_RULES: dict[Task, TaskRules] = {
    Task.BINARY_CLASSIFICATION: TaskRules(
        output_activation="sigmoid",
        loss="binary_crossentropy",
        metrics=("accuracy",),
        objective="val_accuracy",
        output_activations=("sigmoid",),
        losses=("binary_crossentropy", "binary_focal_crossentropy"),
        allowed_metrics=_CLASSIFICATION_METRICS,
    ),
    Task.MULTICLASS_CLASSIFICATION: TaskRules(
        output_activation="softmax",
        loss="sparse_categorical_crossentropy",
        metrics=("accuracy",),
        objective="val_accuracy",
        output_activations=("softmax",),
        losses=("sparse_categorical_crossentropy",),
        allowed_metrics=("accuracy", "top_2_accuracy", "top_3_accuracy", "top_5_accuracy"),
    ),
    Task.REGRESSION: TaskRules(
        output_activation="linear",
        loss="mean_squared_error",
        metrics=("mean_absolute_error",),
        objective="val_loss",
        output_activations=("linear", "relu", "sigmoid", "tanh", "softplus"),
        losses=_REGRESSION,
        allowed_metrics=(*_REGRESSION[:3], "root_mean_squared_error", "r2_score"),
    ),
}

_MAXIMISED = ("accuracy", "auc", "precision", "recall", "r2_score")


def metric_direction(name: str) -> Direction:
    """Whether a logged metric gets better as it grows ("max") or shrinks ("min")."""
    base = name.removeprefix("val_")
    return "max" if base.endswith(_MAXIMISED) else "min"


def computed_metrics(metrics: tuple[str, ...] | list[str], with_validation: bool = True) -> list[str]:
    """The names Keras logs for a job compiled with these metrics: loss, metrics, then val_ versions."""
    names = ["loss", *metrics]
    return names + [f"val_{name}" for name in names] if with_validation else names


def output_units(task: Task, classes: Sequence[Label] | None) -> int:
    """Units of the output layer: one per class for multiclass, else 1 (a sigmoid or a value)."""
    if task is Task.MULTICLASS_CLASSIFICATION:
        return len(classes or ())
    return 1
