"""The baseline of bench/run.py: bare keras-tuner doing the same search as a ktune request, in this process.

Usage: python bench/baseline.py {seed,digits} REQUEST.json RESULT.json

Reads data, objective and budget from the ktune request (so both sides search the same thing) and writes
the wall time of the search, the best score and this process's peak RSS to RESULT.json.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
from keras import layers
from keras_tuner.src.engine import tuner_utils


def build_seed_model(hp: kt.HyperParameters) -> keras.Model:
    """The seed tutorial's model function, verbatim (XOR regression, 2-20 relu layers)."""
    model = keras.Sequential()
    for i in range(hp.Int('num_layers', 2, 20)):
        model.add(layers.Dense(units=hp.Int('units_' + str(i),
                                            min_value=32,
                                            max_value=512,
                                            step=32),
                               activation='relu'))
    model.add(layers.Dense(1, activation='linear'))
    model.compile(
        optimizer=keras.optimizers.Adam(
            hp.Choice('learning_rate', [1e-2, 1e-3, 1e-4])),
        loss='mean_absolute_error',
        metrics=['mean_absolute_error'])
    return model


def build_digits_model(hp: kt.HyperParameters) -> keras.Model:
    """The digits search as a keras-tuner user writes it: the ktune request's hp names and ranges."""
    model = keras.Sequential([keras.Input(shape=(64,))])
    activation = hp.Choice("activation", ["relu", "tanh"])
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1)
    for i in range(hp.Int("hidden_layers", 1, 3)):
        model.add(layers.Dense(hp.Int(f"units_{i}", 32, 256, step=32), activation=activation))
        model.add(layers.Dropout(dropout))
    model.add(layers.Dense(10, activation="softmax"))
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


BUILDERS: dict[str, Callable[[kt.HyperParameters], keras.Model]] = {
    "seed": build_seed_model,
    "digits": build_digits_model,
}


class RandomSearchWithoutTensorBoard(kt.RandomSearch):  # type: ignore[misc]
    """RandomSearch running keras-tuner 1.4.8's own run_trial minus its TensorBoard set-up."""

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> list[Any]:
        """Stock Tuner.run_trial: per execution, TunerCallback and one best-epoch checkpoint for the trial."""
        model_checkpoint = tuner_utils.SaveBestEpoch(
            objective=self.oracle.objective,
            filepath=self._get_checkpoint_fname(trial.trial_id),
        )
        original_callbacks = kwargs.pop("callbacks", [])
        histories = []
        for _execution in range(self.executions_per_trial):
            copied_kwargs = copy.copy(kwargs)
            callbacks = self._deepcopy_callbacks(original_callbacks)
            # Stock code calls self._configure_tensorboard_dir(callbacks, trial, execution) here.
            callbacks.append(tuner_utils.TunerCallback(self, trial))
            callbacks.append(model_checkpoint)
            copied_kwargs["callbacks"] = callbacks
            histories.append(self._build_and_fit_model(trial, *args, **copied_kwargs))
        return histories


def tuner_class() -> type[kt.RandomSearch]:
    """Stock RandomSearch when tensorboard is importable, else the copy without TensorBoard handling."""
    if importlib.util.find_spec("tensorboard") is not None:
        return kt.RandomSearch
    return RandomSearchWithoutTensorBoard


def arrays(part: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """x and y of one data part of a ktune request, as float32 arrays."""
    return np.asarray(part["x"], dtype="float32"), np.asarray(part["y"], dtype="float32")


def run(search: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run the search with keras-tuner; wall time runs from tuner creation to the end of search()."""
    x, y = arrays(request["data"]["train"])
    validation = arrays(request["data"]["validation"])
    training, tuner_spec, objective = request["training"], request["tuner"], request["objective"]
    fit_kwargs: dict[str, Any] = {"epochs": training["epochs"], "validation_data": validation, "verbose": 0}
    if "batch_size" in training:
        fit_kwargs["batch_size"] = training["batch_size"]
    cls = tuner_class()
    with tempfile.TemporaryDirectory(prefix="ktune-bench-kt-") as directory:
        started = time.perf_counter()
        tuner = cls(
            BUILDERS[search],
            objective=kt.Objective(objective["name"], direction=objective["direction"]),
            max_trials=tuner_spec["max_trials"],
            executions_per_trial=tuner_spec.get("executions_per_trial", 1),
            seed=tuner_spec.get("seed"),
            directory=directory,
            project_name=search,
            overwrite=True,
        )
        tuner.search(x, y, **fit_kwargs)
        wall = time.perf_counter() - started
        best = tuner.oracle.get_best_trials(1)[0]
        completed = sum(1 for t in tuner.oracle.trials.values() if t.status == "COMPLETED")
    return {
        "wall_s": wall,
        "best_objective": best.score,
        "best_hyperparameters": best.hyperparameters.values,
        "trials_completed": completed,
        "tuner_class": f"{cls.__module__}.{cls.__qualname__}",
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }


def main() -> None:
    """Read the request, run the search, write the result."""
    search, request_path, result_path = sys.argv[1:4]
    request = json.loads(Path(request_path).read_text())
    Path(result_path).write_text(json.dumps(run(search, request), indent=2))


if __name__ == "__main__":
    main()
