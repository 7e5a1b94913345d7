"""Times `fit_execution` against `fast_fit_execution`: 100 epochs of a 2x32 relu XOR regression model."""

from __future__ import annotations

import time

import keras
import numpy as np

from worker.fast_training import fast_fit_execution
from worker.training import FitOptions, TrainData, fit_execution


def build() -> keras.Model:
    """A fresh compiled 2x32 relu regression MLP."""
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(32, "relu"),
            keras.layers.Dense(32, "relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mean_absolute_error", metrics=["mean_absolute_error"])
    return model


def main() -> None:
    """Print the seconds each path takes and their ratio."""
    keras.utils.set_random_seed(0)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype="float32")
    y = np.array([0, 1, 1, 0], dtype="float32")
    data = TrainData(x, y, x, y)
    options = FitOptions(epochs=100, batch_size=4, monitor="val_mean_absolute_error", mode="min")
    timings = {}
    for name, run in [("fit", fit_execution), ("fast (with tracing)", fast_fit_execution)]:
        model = build()
        started = time.perf_counter()
        run(model, data, options, lambda epoch, logs: False)
        timings[name] = time.perf_counter() - started
    started = time.perf_counter()
    fast_fit_execution(model, data, options, lambda epoch, logs: False)  # same model: the trace is reused
    timings["fast (traced)"] = time.perf_counter() - started
    for name, seconds in timings.items():
        print(f"{name:>20}: {seconds:8.3f} s   fit/this = {timings['fit'] / seconds:7.1f}x")


if __name__ == "__main__":
    main()
