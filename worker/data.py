"""A job's data as arrays, split for validation, cached per job in each worker process."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from service.core.catalog import Task
from service.core.spec import ArrayData, JobCreate
from worker.training import TrainData

_CACHE: OrderedDict[str, TrainData] = OrderedDict()
_CACHE_SIZE = 4


def _arrays(part: ArrayData, task: Task) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(part.x, dtype=np.float32)
    if task is Task.MULTICLASS_CLASSIFICATION:
        return x, np.asarray(part.y, dtype=np.int32)
    # One column of targets matches the single output unit, so every loss and metric sees equal shapes.
    return x, np.asarray(part.y, dtype=np.float32).reshape(-1, 1)


def to_arrays(spec: JobCreate) -> TrainData:
    """Train and validation arrays; a validation_split holds out the last rows, as Keras does."""
    x, y = _arrays(spec.data.train, spec.task)
    if spec.data.validation is not None:
        x_val, y_val = _arrays(spec.data.validation, spec.task)
        return TrainData(x, y, x_val, y_val)
    split_at = math.ceil(len(x) * (1 - spec.data.effective_split))
    return TrainData(x[:split_at], y[:split_at], x[split_at:], y[split_at:])


def job_arrays(job_id: str, spec: JobCreate) -> TrainData:
    """`to_arrays`, computed once per job in this process."""
    if job_id in _CACHE:
        _CACHE.move_to_end(job_id)
        return _CACHE[job_id]
    data = to_arrays(spec)
    _CACHE[job_id] = data
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return data
