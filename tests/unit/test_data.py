"""A worker's view of a job's data: the stored arrays, read once per job, and the shapes models take."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.core import data_codec
from service.core.catalog import Task
from service.core.spec import DataSpec, JobCreate
from worker import data
from worker.model_builder import build_model


class _Store:
    """A job store holding one job's data; counts reads."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.reads = 0

    def get_data(self, job_id: str) -> bytes:
        self.reads += 1
        return self.raw


def _stored(task: Task, train_y: list[float], validation_y: list[float]) -> _Store:
    spec = DataSpec.model_validate(
        {
            "train": {"x": [[float(i), 1.0, 2.0] for i in range(len(train_y))], "y": train_y},
            "validation": {"x": [[0.5, 1.0, 2.0]] * len(validation_y), "y": validation_y},
        }
    )
    return _Store(data_codec.encode(spec, task))


def test_a_jobs_arrays_are_read_once_per_process() -> None:
    store = _stored(Task.REGRESSION, [0.5, 1.5, 2.5], [1.0])
    first = data.job_arrays(store, "job-read-once", Task.REGRESSION)  # type: ignore[arg-type]
    again = data.job_arrays(store, "job-read-once", Task.REGRESSION)  # type: ignore[arg-type]
    assert again is first and store.reads == 1
    assert first.x_train.dtype == np.float32 and first.x_train.shape == (3, 3)
    assert first.y_val.tolist() == [[1.0]]


def test_output_units_count_the_classes_of_train_and_validation() -> None:
    store = _stored(Task.MULTICLASS_CLASSIFICATION, [0, 1, 2], [5])
    arrays = data.job_arrays(store, "job-classes", Task.MULTICLASS_CLASSIFICATION)  # type: ignore[arg-type]
    assert data.output_units(arrays, Task.MULTICLASS_CLASSIFICATION) == 6
    assert data.output_units(arrays, Task.BINARY_CLASSIFICATION) == 1


def test_a_model_takes_its_shapes_from_the_arrays() -> None:
    body: dict[str, Any] = {
        "task": "multiclass_classification",
        "data": {"train": {"x": [[0.0, 1.0, 2.0], [1.0, 0.0, 2.0]], "y": [0, 3]}, "validation_split": 0.5},
        "model": {"hidden_layers": 1, "units": 4},
    }
    spec = JobCreate.model_validate(body).resolved()
    arrays = data.job_arrays(
        _Store(data_codec.encode(spec.data, spec.task)),  # type: ignore[arg-type]
        "job-model",
        spec.task,
    )
    values = {
        "hidden_layers": 1,
        "units_0": 4,
        "activation": "relu",
        "dropout": 0.0,
        "optimizer": "adam",
        "learning_rate": 0.01,
    }
    model = build_model(spec.without_data(), values, arrays)
    assert model.input_shape == (None, 3)
    assert model.output_shape == (None, 4) == (None, spec.output_units)
