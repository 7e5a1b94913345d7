"""The stored form of a job's data: inline arrays with their plan as .npz bytes, a data set's plan as JSON,
and the forms stored before plans existed."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pytest

from service.core import data_codec
from service.core.catalog import Task
from service.core.job_data import prepare_inline
from service.core.spec import JobCreate


def job(rows: int, task: str = "regression", **data: Any) -> JobCreate:
    x = [[float(i), i / 7] for i in range(rows)]
    y = [float(i % 3) for i in range(rows)]
    body = {"task": task, "data": {"train": {"x": x, "y": y}, **data}, "tuner": {"seed": 1}}
    if task == "regression":
        body["training"] = {"metrics": ["mean_absolute_error"]}
    return JobCreate.model_validate(body).resolved()


def roundtrip(spec: JobCreate) -> data_codec.StoredData:
    plan, arrays = prepare_inline(spec)
    return data_codec.decode(data_codec.encode(plan, arrays), spec.task)


@pytest.mark.parametrize(("rows", "split"), [(10, None), (10, 0.25), (7, 0.5), (100, 0.01)])
def test_an_unshuffled_split_holds_out_the_last_rows(rows: int, split: float | None) -> None:
    extra: dict[str, Any] = {"shuffle": False}
    if split is not None:
        extra["validation_split"] = split
    spec = job(rows, **extra)
    arrays = roundtrip(spec).arrays
    assert arrays is not None
    kept = math.ceil(rows * (1 - (split or 0.2)))  # Keras' rule: the last rows are held out
    assert len(arrays.x_train) == kept and len(arrays.x_val) == rows - kept
    assert spec.data.train is not None
    everything = np.concatenate([arrays.x_train, arrays.x_val])
    np.testing.assert_array_equal(everything, np.asarray(spec.data.train.x, dtype=np.float32))


def test_the_plan_travels_with_the_arrays() -> None:
    spec = job(30, "multiclass_classification")
    plan, arrays = prepare_inline(spec)
    stored = data_codec.decode(data_codec.encode(plan, arrays), spec.task)
    assert stored.plan == plan and stored.plan.classes == [0, 1, 2]
    assert stored.arrays is not None
    np.testing.assert_array_equal(stored.arrays.y_val, arrays.y_val)
    assert stored.arrays.y_train.dtype == np.int32 and stored.arrays.x_train.dtype == np.float32


def test_a_data_set_job_stores_only_its_plan() -> None:
    plan, _ = prepare_inline(job(10))
    raw = data_codec.encode(plan, None)
    assert raw.startswith(b"{") and len(raw) < 2_000
    stored = data_codec.decode(raw, Task.REGRESSION)
    assert stored.arrays is None and stored.plan == plan


def test_the_stored_form_is_compact() -> None:
    spec = job(5_000)
    plan, arrays = prepare_inline(spec)
    stored = data_codec.encode(plan, arrays)
    as_json = json.dumps(spec.data.model_dump(mode="json")).encode()
    # 3 float32 per row (two features, one target) plus the .npz headers and the plan: under half the JSON.
    assert len(stored) < 5_000 * 3 * 4 + 4_000 < len(as_json) / 2


def test_data_stored_as_json_before_plans_is_still_read() -> None:
    legacy = {
        "train": {"x": [[float(i)] for i in range(10)], "y": [i % 2 for i in range(10)]},
        "validation_split": 0.3,
    }
    stored = data_codec.decode(json.dumps(legacy).encode(), Task.BINARY_CLASSIFICATION)
    assert stored.arrays is not None and len(stored.arrays.x_val) == 3  # the last rows, as then
    assert stored.plan.classes == [0, 1] and stored.plan.preprocessing is None


def test_npz_stored_before_plans_is_still_read() -> None:
    buffer = io.BytesIO()
    y = np.array([[0.0], [3.0]], dtype=np.float32)
    np.savez(
        buffer, x_train=np.ones((2, 2), np.float32), y_train=y, x_val=np.ones((1, 2), np.float32), y_val=y[:1]
    )
    stored = data_codec.decode(buffer.getvalue(), Task.MULTICLASS_CLASSIFICATION)
    assert stored.plan.classes == [0, 1, 2, 3]  # labels were unit indices then
    assert stored.arrays is not None and stored.arrays.y_train.shape == (2,)


def test_no_pickles_are_loaded() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.array([object()], dtype=object))
    with pytest.raises(ValueError):
        data_codec.decode(buffer.getvalue(), Task.REGRESSION)
