"""A job's data as arrays, split for validation, cached per job in each worker process."""

from __future__ import annotations

from collections import OrderedDict

from service.core import data_codec
from service.core.catalog import Task
from service.core.store import JobStore
from worker.training import TrainData

_CACHE: OrderedDict[str, TrainData] = OrderedDict()
_CACHE_SIZE = 4


def job_arrays(store: JobStore, job_id: str, task: Task) -> TrainData:
    """The job's stored arrays, read once per job in this process. Raises KeyError without data."""
    if job_id in _CACHE:
        _CACHE.move_to_end(job_id)
        return _CACHE[job_id]
    arrays = data_codec.decode(store.get_data(job_id), task)
    data = TrainData(arrays.x_train, arrays.y_train, arrays.x_val, arrays.y_val)
    _CACHE[job_id] = data
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return data


def output_units(data: TrainData, task: Task) -> int:
    """Units of the output layer: 1, or the number of classes (max label + 1) for multiclass."""
    if task is Task.MULTICLASS_CLASSIFICATION:
        return int(max(data.y_train.max(), data.y_val.max())) + 1
    return 1
