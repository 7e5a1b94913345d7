"""A job's data in its stored form: the arrays workers train on, split for validation, as `.npz` bytes.

Encoded once when the job is accepted (float32 features; float32 targets, or int32 class labels for
multiclass), so a worker loads a few compact arrays instead of parsing and validating JSON lists.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import numpy as np

from service.core.catalog import Task
from service.core.spec import ArrayData, DataSpec

_NAMES = ("x_train", "y_train", "x_val", "y_val")


@dataclass(frozen=True)
class DataArrays:
    """Train and validation arrays of one job, as the worker trains on them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def _arrays(part: ArrayData, task: Task) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(part.x, dtype=np.float32)
    if task is Task.MULTICLASS_CLASSIFICATION:
        return x, np.asarray(part.y, dtype=np.int32)
    # One column of targets matches the single output unit, so every loss and metric sees equal shapes.
    return x, np.asarray(part.y, dtype=np.float32).reshape(-1, 1)


def to_arrays(data: DataSpec, task: Task) -> DataArrays:
    """Train and validation arrays; a validation_split holds out the last rows, as Keras does."""
    x, y = _arrays(data.train, task)
    if data.validation is not None:
        x_val, y_val = _arrays(data.validation, task)
        return DataArrays(x, y, x_val, y_val)
    split_at = math.ceil(len(x) * (1 - data.effective_split))
    return DataArrays(x[:split_at], y[:split_at], x[split_at:], y[split_at:])


def encode(data: DataSpec, task: Task) -> bytes:
    """The stored form of a validated data section."""
    arrays = to_arrays(data, task)
    buffer = io.BytesIO()
    np.savez(buffer, **{name: getattr(arrays, name) for name in _NAMES})
    return buffer.getvalue()


def decode(raw: bytes, task: Task) -> DataArrays:
    """The arrays of `encode`'s bytes. Raises ValueError for bytes that are neither form.

    Data stored as JSON text (before this form existed) is still read, so jobs queued across an
    upgrade run.
    """
    if raw[:1] == b"{":
        return to_arrays(DataSpec.model_validate(json.loads(raw)), task)
    with np.load(io.BytesIO(raw), allow_pickle=False) as stored:
        return DataArrays(*(stored[name] for name in _NAMES))
