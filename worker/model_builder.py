"""Keras models from a job's spec and one trial's hyperparameter values."""

from __future__ import annotations

from typing import Any

import keras

from service.core.catalog import Task
from service.core.spec import JobSpec
from worker.data import output_units
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


def build_model(spec: JobSpec, values: dict[str, Any], data: TrainData) -> keras.Model:
    """A compiled mlp for one trial on `data`'s shapes; `values` holds every active hyperparameter."""
    inputs = keras.Input(shape=(data.x_train.shape[1],), name="features")
    x = inputs
    for index in range(int(values["hidden_layers"])):
        x = keras.layers.Dense(int(values[f"units_{index}"]), activation=values["activation"])(x)
        if float(values["dropout"]) > 0:
            x = keras.layers.Dropout(float(values["dropout"]))(x)
    units = output_units(data, spec.task)
    outputs = keras.layers.Dense(units, activation=spec.output_activation, name="output")(x)
    model = keras.Model(inputs, outputs)
    optimizer = _OPTIMIZERS[values["optimizer"]](learning_rate=float(values["learning_rate"]))
    model.compile(
        optimizer=optimizer,
        loss=spec.loss,
        metrics=[make_metric(name, spec.task) for name in spec.metrics],
    )
    return model
