"""A job's data as a worker trains on it: its rows from the stored plan, split, encoded; cached per job.

Inline arrays come with the job; a data set's rows are read from its stored file (memory-mapped, cached per
process) and split again exactly as the API split them (the plan's checksum says so). Preprocessing is
fitted on the training rows only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from service.core import data_codec, datasets
from service.core.artifacts import ArtifactStore
from service.core.catalog import Task, output_units
from service.core.data_plan import DataPlan
from service.core.labels import column_indices
from service.core.splits import Split, split_rows
from service.core.store import JobStore
from worker.preprocess import FeatureColumn, Preprocessing, PreprocessOptions, RawSplit
from worker.training import TrainData

_CACHE: OrderedDict[str, JobData] = OrderedDict()
_CACHE_SIZE = 4
_TABLES: OrderedDict[str, pa.Table] = OrderedDict()


class DataMismatch(ValueError):
    """The rows a worker finds are not those the job was accepted with (its split's checksum differs)."""


@dataclass(frozen=True)
class JobData:
    """What a job's trials train on, and how its models take raw rows."""

    train: TrainData
    units: int  # of the output layer
    preprocessing: Preprocessing | None  # None: the model takes the encoded rows as they are
    target_scale: tuple[float, float] | None  # regression targets' (mean, std) when trained standardized


def job_data(store: JobStore, artifacts: ArtifactStore, job_id: str, task: Task) -> JobData:
    """The job's data, prepared once per job in this process. Raises KeyError without data."""
    if job_id in _CACHE:
        _CACHE.move_to_end(job_id)
        return _CACHE[job_id]
    stored = data_codec.decode(store.get_data(job_id), task)
    data = _prepare(stored, artifacts, task)
    _CACHE[job_id] = data
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return data


def _prepare(stored: data_codec.StoredData, artifacts: ArtifactStore, task: Task) -> JobData:
    plan, units = stored.plan, output_units(task, stored.plan.classes)
    options = plan.preprocessing
    if stored.arrays is not None and options is None:
        return JobData(_plain(stored.arrays, task), units, None, None)
    raw = _inline_raw(stored.arrays, plan) if stored.arrays is not None else _dataset_raw(plan, artifacts)
    if options is None:  # a data set is always encoded (its categorical columns), scaled or not
        chosen = PreprocessOptions(standardize=False, impute=None, scale_target=False)
    else:
        chosen = PreprocessOptions(
            standardize=options.standardize, impute=options.impute, scale_target=options.scale_target
        )
    fitted = Preprocessing.fit(raw, chosen, task)
    return JobData(fitted.train_data(raw), units, fitted, fitted.target_scale())


def _plain(arrays: data_codec.DataArrays, task: Task) -> TrainData:
    """Inline arrays as the trainer takes them, without preprocessing."""
    return TrainData(
        arrays.x_train, _trainer_y(arrays.y_train, task), arrays.x_val, _trainer_y(arrays.y_val, task)
    )


def _trainer_y(y: np.ndarray, task: Task) -> np.ndarray:
    """Class indices (int32) for multiclass; one float32 column otherwise, matching the single output unit."""
    if task is Task.MULTICLASS_CLASSIFICATION:
        return y.astype(np.int32).reshape(-1)
    return y.astype(np.float32).reshape(-1, 1)


def _inline_raw(arrays: data_codec.DataArrays, plan: DataPlan) -> RawSplit:
    names = [f.name for f in plan.features]
    return RawSplit(
        features=[FeatureColumn(name, "numeric") for name in names],
        x_train={name: arrays.x_train[:, i].astype(np.float64) for i, name in enumerate(names)},
        x_val={name: arrays.x_val[:, i].astype(np.float64) for i, name in enumerate(names)},
        y_train=_raw_y(arrays.y_train, plan),
        y_val=_raw_y(arrays.y_val, plan),
    )


def _raw_y(y: np.ndarray, plan: DataPlan) -> np.ndarray:
    y = y.reshape(-1)
    return y.astype(np.int32) if plan.classes is not None else y.astype(np.float64)


def _dataset_raw(plan: DataPlan, artifacts: ArtifactStore) -> RawSplit:
    """A data set's rows, split as the API split them, with targets as class indices or values."""
    assert plan.dataset is not None and plan.target is not None
    features = [FeatureColumn(f.name, f.type) for f in plan.features]
    names = [f.name for f in plan.features]
    columns, y = _columns(_table(artifacts, plan.dataset, plan.builtin), names, plan)
    split = _split(plan, y)
    if plan.validation_dataset is not None:
        table = _table(artifacts, plan.validation_dataset, plan.validation_dataset in datasets.BUILTINS)
        val_columns, y_val = _columns(table, names, plan)
        return RawSplit(features, columns, val_columns, y, y_val)
    return RawSplit(
        features,
        {name: values[split.train] for name, values in columns.items()},
        {name: values[split.validation] for name, values in columns.items()},
        y[split.train],
        y[split.validation],
    )


def dataset_test_rows(
    artifacts: ArtifactStore, plan: DataPlan, ref: str
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every row of the data set `ref` as a test set of the job: its feature columns (`column_arrays`) and
    targets as class indices or values. Raises LabelError for a class the job does not know."""
    return _columns(_table(artifacts, ref, ref in datasets.BUILTINS), [f.name for f in plan.features], plan)


def _columns(table: pa.Table, names: list[str], plan: DataPlan) -> tuple[dict[str, np.ndarray], np.ndarray]:
    assert plan.target is not None
    columns = datasets.column_arrays(table, names)
    if plan.classes is None:
        return columns, datasets.column_arrays(table, [plan.target])[plan.target].astype(np.float64)
    return columns, column_indices(table.column(plan.target), plan.classes)


def _split(plan: DataPlan, y: np.ndarray) -> Split:
    info = plan.split
    if info.method == "validation_dataset":
        split = Split(np.arange(len(y)), np.empty(0, np.int64))
    else:
        fraction = info.fraction if info.fraction is not None else 0.2
        classes = y if info.stratified else None
        split = split_rows(len(y), fraction, info.seed or 0, info.shuffle, classes)
    if split.checksum != info.checksum:
        raise DataMismatch(
            f"the rows of data set '{plan.dataset}' split here differ from those the job was accepted with "
            "(checksum mismatch): the data set changed, or this worker runs another version"
        )
    return split


def _table(artifacts: ArtifactStore, ref: str, builtin: bool) -> pa.Table:
    """A data set's table, memory-mapped once per process (a few at a time)."""
    if builtin:
        return datasets.builtin_table(ref)
    if ref not in _TABLES:
        # A local file to memory-map: with S3, downloaded once to this machine's KTUNE_ARTIFACT_DIR.
        _TABLES[ref] = datasets.open_table(artifacts.local_dataset_table(ref))
        while len(_TABLES) > _CACHE_SIZE:
            _TABLES.popitem(last=False)
    _TABLES.move_to_end(ref)
    return _TABLES[ref]
