"""Class labels: the sorted classes of a classifier's targets and each target's class index.

A classifier's output unit i stands for `classes[i]` (for binary classification, a probability above 0.5
stands for `classes[1]`). Labels may be strings or whole numbers of any sign: labels 1..3 make three
classes, never a fourth output unit for a class that was never seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.core.catalog import Label, Task

_SHOWN = 5  # rows named in a message about many rows


class LabelError(ValueError):
    """Targets that cannot be a classifier's labels; the message counts the rows and names the first."""


def as_labels(values: Sequence[object] | np.ndarray) -> np.ndarray:
    """Targets as labels: whole numbers as int64, strings as str; raises LabelError for anything else."""
    array = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if array.dtype.kind in "iub":
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (np.floor(array) == array)
        _refuse(~whole, array, "are not whole numbers; class labels are whole numbers or strings")
        return array.astype(np.int64)
    if array.dtype.kind in "US":
        return array.astype(str)
    kinds = np.array([_kind(v) for v in array], dtype=object)
    if (kinds == "str").any() and (kinds != "str").any():
        _refuse(kinds != "str", array, "are not strings like the rest; labels are all strings or all numbers")
    _refuse(kinds == "bad", array, "are not whole numbers; class labels are whole numbers or strings")
    if (kinds == "str").all():
        return array.astype(str)
    return np.array([int(v) for v in array], dtype=np.int64)


def _kind(value: object) -> str:
    if isinstance(value, str):
        return "str"
    if isinstance(value, bool):
        return "int"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return "int"
    return "bad"


def _refuse(bad: np.ndarray, values: np.ndarray, why: str) -> None:
    rows = np.flatnonzero(bad)
    if len(rows) == 0:
        return
    shown = ", ".join(f"row {r} ({_plain(values[r])!r})" for r in rows[:_SHOWN])
    more = f" and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else ""
    raise LabelError(f"{len(rows)} labels {why}: {shown}{more}")


def classes_of(labels: np.ndarray) -> list[Label]:
    """The distinct labels, sorted (numbers numerically, strings as text)."""
    return [_plain(v) for v in np.unique(labels)]


def _plain(value: object) -> Label:
    return value.item() if isinstance(value, np.generic) else value  # type: ignore[return-value]


def check_classes(task: Task, classes: Sequence[Label], max_classes: int) -> str | None:
    """Why these classes do not fit the task (a sentence), or None when they do."""
    count = len(classes)
    if count < 2:
        return f"the target has a single class ({_show(classes)}); a classifier needs at least two"
    if task is Task.BINARY_CLASSIFICATION and count != 2:
        return (
            f"binary_classification needs exactly 2 classes, the target has {count} ({_show(classes)}): "
            "use multiclass_classification"
        )
    if count > max_classes:
        return f"the target has {count} classes, over this service's limit of {max_classes} classes"
    return None


def _show(classes: Sequence[Label]) -> str:
    shown = ", ".join(repr(c) for c in classes[:_SHOWN])
    return shown + (f" and {len(classes) - _SHOWN} more" if len(classes) > _SHOWN else "")


def to_indices(labels: np.ndarray, classes: Sequence[Label]) -> np.ndarray:
    """Each label's index in `classes` (int32); raises LabelError for labels not among them."""
    known = np.asarray(list(classes))
    if len(known) == 0:
        _refuse(np.ones(len(labels), dtype=bool), labels, "are not among the classes of the training rows")
        return np.zeros(0, np.int32)
    order = np.argsort(known)
    positions = np.searchsorted(known[order], labels)
    positions = np.clip(positions, 0, len(known) - 1)
    found = known[order][positions] == labels
    _refuse(~found, labels, "are not among the classes of the training rows")
    return order[positions].astype(np.int32)


def column_indices(column: pa.ChunkedArray, classes: Sequence[Label]) -> np.ndarray:
    """Each row's class index in a data set's label column (int32), computed by Arrow: fast on millions of
    rows. Raises LabelError for a row whose label is not among `classes` (or is missing)."""
    numeric = pa.types.is_floating(column.type) or pa.types.is_integer(column.type)
    value_set = pa.array([float(c) for c in classes]) if numeric else pa.array([str(c) for c in classes])
    indices = pc.index_in(column.cast(value_set.type), value_set=value_set)
    unknown = pc.is_null(indices)
    if pc.any(unknown).as_py():
        rows = np.flatnonzero(unknown.to_numpy(zero_copy_only=False))
        _refuse(np.isin(np.arange(len(column)), rows), column.to_numpy(), "are not among the classes")
    result: np.ndarray = indices.to_numpy(zero_copy_only=False).astype(np.int32)
    return result
