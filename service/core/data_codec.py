"""A job's data in its stored form (the job's data key in Redis).

Inline arrays are stored once, split, as `.npz` bytes with the job's `DataPlan` inside (float32 features;
class indices or float targets), so a worker loads a few compact arrays instead of parsing JSON. A job on a
data set stores only its plan, as JSON: workers read the rows from the data set's own file.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import numpy as np

from service.core.catalog import Task
from service.core.data_plan import DataPlan, FeatureInfo, SplitInfo
from service.core.splits import rows_checksum

_NAMES = ("x_train", "y_train", "x_val", "y_val")
_ZIP = b"PK"


@dataclass(frozen=True)
class DataArrays:
    """Inline features and targets, split: x float32 [rows, features], y 1-D (class indices or values)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass(frozen=True)
class StoredData:
    """What a job's data key holds: its plan, and the arrays themselves for inline data."""

    plan: DataPlan
    arrays: DataArrays | None


def encode(plan: DataPlan, arrays: DataArrays | None) -> bytes:
    """The stored form: `.npz` with the plan inside for inline data, the plan as JSON for a data set."""
    if arrays is None:
        return json.dumps({"plan": plan.model_dump(mode="json")}).encode()
    buffer = io.BytesIO()
    named = {name: getattr(arrays, name) for name in _NAMES}
    np.savez(buffer, plan=np.array(plan.model_dump_json()), **named)
    return buffer.getvalue()


def decode(raw: bytes, task: Task) -> StoredData:
    """The plan and arrays of `encode`'s bytes. Raises ValueError for bytes that are no stored data.

    Jobs queued before plans existed (inline data as JSON text, or `.npz` without a plan) still read.
    """
    if raw[:1] == b"{":
        document = json.loads(raw)
        if "plan" in document:
            return StoredData(DataPlan.model_validate(document["plan"]), None)
        return _legacy_json(document, task)
    if raw[:2] != _ZIP:
        raise ValueError("the job's stored data is neither .npz nor JSON")
    with np.load(io.BytesIO(raw), allow_pickle=False) as stored:
        arrays = DataArrays(*(stored[name] for name in _NAMES))
        plan = DataPlan.model_validate_json(str(stored["plan"])) if "plan" in stored.files else None
    if plan is None:  # before plans: y as a column for binary and regression, labels 0..k-1
        arrays = DataArrays(
            arrays.x_train, arrays.y_train.reshape(-1), arrays.x_val, arrays.y_val.reshape(-1)
        )
        plan = _legacy_plan(arrays, task)
    return StoredData(plan, arrays)


def _legacy_json(document: dict[str, object], task: Task) -> StoredData:
    """Inline data stored as the request's JSON (the first stored form): the last rows validate."""

    def part(name: str) -> tuple[np.ndarray, np.ndarray]:
        section = document[name]
        assert isinstance(section, dict)
        return np.asarray(section["x"], np.float32), np.asarray(section["y"], np.float64)

    x, y = part("train")
    if document.get("validation") is not None:
        x_val, y_val = part("validation")
    else:
        split = document.get("validation_split") or 0.2
        assert isinstance(split, float | int)
        cut = math.ceil(len(x) * (1 - split))
        x, y, x_val, y_val = x[:cut], y[:cut], x[cut:], y[cut:]
    arrays = DataArrays(x, _targets(y, task), x_val, _targets(y_val, task))
    return StoredData(_legacy_plan(arrays, task), arrays)


def _targets(y: np.ndarray, task: Task) -> np.ndarray:
    return y.astype(np.float32) if task is Task.REGRESSION else y.astype(np.int32)


def _legacy_plan(arrays: DataArrays, task: Task) -> DataPlan:
    classes = None
    if task is not Task.REGRESSION:
        top = int(max(arrays.y_train.max(), arrays.y_val.max()))
        classes = list(range(max(top + 1, 2)))
    train, validation = len(arrays.x_train), len(arrays.x_val)
    return DataPlan(
        source="inline",
        features=[FeatureInfo(name=f"x{i}", type="numeric") for i in range(arrays.x_train.shape[1])],
        classes=classes,
        split=SplitInfo(
            method="validation",
            shuffle=False,
            stratified=False,
            train_rows=train,
            validation_rows=validation,
            checksum=rows_checksum(np.arange(train), np.arange(validation)),
        ),
    )
