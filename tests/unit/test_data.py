"""A worker's view of a job's data: rebuilt from the stored plan once per job, split as the API split it,
and the shapes models take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.core import data_codec
from service.core.artifacts import ArtifactStore
from service.core.catalog import Task
from service.core.datasets import builtin_info, builtin_table
from service.core.job_data import DatasetSource, prepare_dataset, prepare_inline
from service.core.settings import Limits
from service.core.spec import JobCreate
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


def _job(task: str, y: list[Any], **data_fields: Any) -> JobCreate:
    body = {
        "task": task,
        "data": {"train": {"x": [[float(i), 1.0, 2.0] for i in range(len(y))], "y": y}, **data_fields},
        "model": {"hidden_layers": 1, "units": 4},
        "tuner": {"seed": 2},
    }
    return JobCreate.model_validate(body).resolved()


def _inline_store(spec: JobCreate) -> _Store:
    plan, arrays = prepare_inline(spec)
    return _Store(data_codec.encode(plan, arrays))


def test_a_jobs_data_is_read_once_per_process(tmp_path: Path) -> None:
    store = _inline_store(_job("regression", [0.5, 1.5, 2.5, 3.5, 4.5]))
    artifacts = ArtifactStore(tmp_path)
    first = data.job_data(store, artifacts, "job-read-once", Task.REGRESSION)  # type: ignore[arg-type]
    again = data.job_data(store, artifacts, "job-read-once", Task.REGRESSION)  # type: ignore[arg-type]
    assert again is first and store.reads == 1
    assert first.preprocessing is None  # inline arrays are trained on as sent unless asked
    assert first.train.x_train.dtype == np.float32 and first.train.x_train.shape == (4, 3)
    assert first.train.y_val.shape == (1, 1) and first.units == 1


def test_labels_one_to_three_give_three_output_units(tmp_path: Path) -> None:
    spec = _job("multiclass_classification", [1, 2, 3] * 4)
    prepared = data.job_data(_inline_store(spec), ArtifactStore(tmp_path), "job-classes", spec.task)  # type: ignore[arg-type]
    assert prepared.units == 3
    assert set(prepared.train.y_train.tolist()) == {0, 1, 2} and prepared.train.y_train.dtype == np.int32
    values = {
        "hidden_layers": 1,
        "units_0": 4,
        "activation": "relu",
        "dropout": 0.0,
        "optimizer": "adam",
        "learning_rate": 0.01,
    }
    model = build_model(spec.without_data(), values, prepared.train, units=prepared.units)
    assert model.input_shape == (None, 3) and model.output_shape == (None, 3)


def test_inline_preprocessing_standardizes_on_the_training_rows(tmp_path: Path) -> None:
    spec = _job("regression", [float(i * 100) for i in range(10)], preprocessing=True)
    prepared = data.job_data(_inline_store(spec), ArtifactStore(tmp_path), "job-pre", spec.task)  # type: ignore[arg-type]
    assert prepared.preprocessing is not None and prepared.target_scale is not None
    np.testing.assert_allclose(prepared.train.x_train[:, 0].mean(), 0.0, atol=1e-5)


def _iris_plan(**data_fields: Any) -> data_codec.StoredData:
    spec = JobCreate.model_validate(
        {
            "task": "multiclass_classification",
            "data": {"dataset": "iris", **data_fields},
            "tuner": {"seed": 4},
        }
    ).resolved()
    source = DatasetSource("iris", True, builtin_info("iris"), lambda: builtin_table("iris"))
    plan = prepare_dataset(spec, source, None, Limits()).plan
    return data_codec.StoredData(plan, None)


def test_a_data_set_is_split_as_the_api_split_it(tmp_path: Path) -> None:
    stored = _iris_plan()
    store = _Store(data_codec.encode(stored.plan, None))
    prepared = data.job_data(store, ArtifactStore(tmp_path), "job-iris", Task.MULTICLASS_CLASSIFICATION)  # type: ignore[arg-type]
    assert len(prepared.train.x_train) == stored.plan.split.train_rows == 120
    assert sorted(set(prepared.train.y_val.tolist())) == [0, 1, 2]  # stratified: every class validates
    np.testing.assert_allclose(prepared.train.x_train.mean(axis=0), 0.0, atol=1e-4)  # standardized
    assert prepared.units == 3


def test_a_split_that_differs_from_the_accepted_one_is_refused(tmp_path: Path) -> None:
    stored = _iris_plan()
    split = stored.plan.split.model_copy(update={"checksum": "0" * 64})
    plan = stored.plan.model_copy(update={"split": split})
    store = _Store(data_codec.encode(plan, None))
    with pytest.raises(data.DataMismatch, match="checksum"):
        data.job_data(store, ArtifactStore(tmp_path), "job-mismatch", Task.MULTICLASS_CLASSIFICATION)  # type: ignore[arg-type]
