"""The stored form of a job's data: arrays split for validation, round-tripped through .npz bytes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from service.core import data_codec
from service.core.catalog import Task
from service.core.spec import DataSpec


def data(rows: int, **extra: object) -> DataSpec:
    x = [[float(i), i / 7] for i in range(rows)]
    return DataSpec.model_validate({"train": {"x": x, "y": [float(i % 3) for i in range(rows)]}, **extra})


@pytest.mark.parametrize(("rows", "split"), [(10, None), (10, 0.25), (7, 0.5), (100, 0.01)])
def test_a_validation_split_holds_out_the_last_rows(rows: int, split: float | None) -> None:
    spec = data(rows) if split is None else data(rows, validation_split=split)
    arrays = data_codec.decode(data_codec.encode(spec, Task.REGRESSION), Task.REGRESSION)
    kept = math.ceil(rows * (1 - (split or 0.2)))  # Keras' rule: the last rows are held out
    assert len(arrays.x_train) == kept and len(arrays.x_val) == rows - kept
    everything = np.concatenate([arrays.x_train, arrays.x_val])
    np.testing.assert_array_equal(everything, np.asarray(spec.train.x, dtype=np.float32))
    np.testing.assert_array_equal(
        np.concatenate([arrays.y_train, arrays.y_val])[:, 0], np.asarray(spec.train.y, dtype=np.float32)
    )


def test_regression_targets_are_one_float32_column_and_features_float32() -> None:
    arrays = data_codec.decode(data_codec.encode(data(10), Task.REGRESSION), Task.REGRESSION)
    assert arrays.x_train.dtype == np.float32 and arrays.x_train.shape == (8, 2)
    assert arrays.y_train.dtype == np.float32 and arrays.y_train.shape == (8, 1)


def test_class_labels_are_int32_for_multiclass() -> None:
    arrays = data_codec.decode(
        data_codec.encode(data(10), Task.MULTICLASS_CLASSIFICATION), Task.MULTICLASS_CLASSIFICATION
    )
    assert arrays.y_train.dtype == np.int32 and arrays.y_train.shape == (8,)
    assert arrays.y_train.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_a_validation_set_is_kept_as_sent() -> None:
    spec = data(4, validation={"x": [[9.5, 8.25], [7.0, 6.0]], "y": [1, 0]})
    arrays = data_codec.decode(data_codec.encode(spec, Task.REGRESSION), Task.REGRESSION)
    assert len(arrays.x_train) == 4
    assert arrays.x_val.tolist() == [[9.5, 8.25], [7.0, 6.0]]
    assert arrays.y_val[:, 0].tolist() == [1.0, 0.0]


def test_the_stored_form_is_compact() -> None:
    spec = data(5_000)
    stored = data_codec.encode(spec, Task.REGRESSION)
    as_json = json.dumps(spec.model_dump(mode="json")).encode()
    # 3 float32 per row (two features, one target) plus the .npz headers: under half the JSON text.
    assert len(stored) < 5_000 * 3 * 4 + 2_000 < len(as_json) / 2


def test_data_stored_as_json_before_this_form_is_still_read() -> None:
    spec = data(10, validation_split=0.3)
    legacy = json.dumps(spec.model_dump(mode="json")).encode()
    old = data_codec.decode(legacy, Task.REGRESSION)
    new = data_codec.decode(data_codec.encode(spec, Task.REGRESSION), Task.REGRESSION)
    for name in ("x_train", "y_train", "x_val", "y_val"):
        np.testing.assert_array_equal(getattr(old, name), getattr(new, name))


def test_no_pickles_are_loaded() -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.array([object()], dtype=object))
    with pytest.raises(ValueError):
        data_codec.decode(buffer.getvalue(), Task.REGRESSION)
