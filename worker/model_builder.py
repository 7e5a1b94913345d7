"""Keras models from a job's spec and one trial's hyperparameter values."""

from __future__ import annotations

from typing import Any

import keras

from service.core.catalog import Task
from service.core.params import bounds, names
from service.core.spec import JobSpec
from worker import elastic_models
from worker.constants import configuration
from worker.preprocess import UNSCALED_LOSSES, rescale_output, standardized_loss
from worker.training import TrainData

_OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
    "adamax": keras.optimizers.Adamax,
    "nadam": keras.optimizers.Nadam,
}


def make_metric(name: str, task: Task) -> keras.metrics.Metric:
    """A Keras metric that logs under exactly `name`, the way the task's targets need it."""
    if name == "accuracy":
        if task is Task.MULTICLASS_CLASSIFICATION:
            return keras.metrics.SparseCategoricalAccuracy(name=name)
        return keras.metrics.BinaryAccuracy(name=name)
    if name.startswith("top_") and name.endswith("_accuracy"):
        return keras.metrics.SparseTopKCategoricalAccuracy(k=int(name.split("_")[1]), name=name)
    simple: dict[str, type[keras.metrics.Metric]] = {
        "auc": keras.metrics.AUC,
        "precision": keras.metrics.Precision,
        "recall": keras.metrics.Recall,
        "mean_squared_error": keras.metrics.MeanSquaredError,
        "mean_absolute_error": keras.metrics.MeanAbsoluteError,
        "mean_absolute_percentage_error": keras.metrics.MeanAbsolutePercentageError,
        "root_mean_squared_error": keras.metrics.RootMeanSquaredError,
        "r2_score": keras.metrics.R2Score,
    }
    return simple[name](name=name)


def _scaled_output(x: Any, units: int, activation: str, scale: tuple[float, float]) -> Any:
    """The output layer of a model trained on standardized targets, answering in original units.

    The activation comes after the rescaling so it bounds outputs in original units, as without scaling
    (relu: non-negative, not "above the mean"); the model can express exactly the same functions.
    """
    x = keras.layers.Dense(units, name="output")(x)
    x = rescale_output(scale)(x)
    if activation != "linear":
        x = keras.layers.Activation(activation, name="output_activation")(x)
    return x


def build_model(
    spec: JobSpec,
    values: dict[str, Any],
    data: TrainData,
    *,
    units: int,
    target_scale: tuple[float, float] | None = None,
    elastic: bool = False,
) -> keras.Model:
    """A compiled mlp for one trial on `data`'s input width, with `units` outputs (one per class for
    multiclass, else 1); `values` holds every active hyperparameter (the job's constants are added).

    With `target_scale` (mean, std) the model outputs original units while the loss is computed on
    standardized ones (except `UNSCALED_LOSSES`), so large targets train like standardized ones.

    `elastic` builds the model that trains every trial of the job with these layers, whatever their units,
    activation and dropout (`worker.elastic_models`): it has a Dropout layer after each hidden one whenever
    the job's dropout can be above zero.
    """
    values = configuration(spec, values)
    dropout = float(values["dropout"])
    if elastic and dropout == 0:
        dropout = bounds(spec.model.dropout)[1]  # a placeholder: the rate is a trial's own once loaded
    inputs = keras.Input(shape=(data.x_train.shape[1],), name="features")
    x = inputs
    for index in range(int(values["hidden_layers"])):
        x = keras.layers.Dense(int(values[f"units_{index}"]), activation=values["activation"])(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout)(x)
    loss: str | keras.losses.Loss = spec.loss
    if target_scale is None:
        outputs = keras.layers.Dense(units, activation=spec.output_activation, name="output")(x)
    else:
        outputs = _scaled_output(x, units, spec.output_activation, target_scale)
        if spec.loss not in UNSCALED_LOSSES:
            loss = standardized_loss(spec.loss, target_scale)
    model = keras.Model(inputs, outputs)
    optimizer = _OPTIMIZERS[values["optimizer"]](learning_rate=float(values["learning_rate"]))
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[make_metric(name, spec.task) for name in spec.metrics],
    )
    if elastic:
        elastic_models.mark_elastic(model, names(spec.model.activation))
    return model
