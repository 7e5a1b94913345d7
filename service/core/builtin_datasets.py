"""The data sets that ship inside scikit-learn, offered as tables of the stored form, with no upload.

scikit-learn is imported only when a built-in set is first asked for: importing this module (and so
`service.core.datasets`, which re-exports its names) costs the API's start-up time and memory nothing.
Tables and descriptions are cached for the life of the process; the data never change within it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib

import numpy as np
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from service.core.dataset_models import BUILTINS, DatasetInfo
from service.core.dataset_writer import ColumnTracker, to_stored


def _builtin_name(name: str) -> str:
    if name not in BUILTINS:
        raise KeyError(f"no built-in data set {name!r}; there are {', '.join(BUILTINS)}")
    return name


@functools.cache
def builtin_table(name: str) -> pa.Table:
    """A scikit-learn data set: its feature_names as float64 columns, then `target`. Raises KeyError."""
    # Imported here: scikit-learn costs the API's start-up time and memory only once a built-in is used.
    sklearn_datasets = importlib.import_module("sklearn.datasets")
    bunch = getattr(sklearn_datasets, f"load_{_builtin_name(name)}")()
    data = np.asarray(bunch.data, dtype=np.float64)
    columns = {str(feature): data[:, i] for i, feature in enumerate(bunch.feature_names)}
    columns["target"] = np.asarray(bunch.target, dtype=np.float64)
    return pa.table(columns)


@functools.cache
def builtin_info(name: str) -> DatasetInfo:
    """builtin_table(name) described as ingest describes an upload (size 0). Raises KeyError."""
    table = builtin_table(name)
    trackers = [ColumnTracker(column_name, True) for column_name in table.column_names]
    sink = pa.BufferOutputStream()
    with pa_ipc.new_file(sink, table.schema) as writer:
        offset = 0
        for batch in table.to_batches():
            for tracker, array in zip(trackers, batch.columns, strict=True):
                tracker.update(to_stored(array, True), offset)
            writer.write_batch(batch)
            offset += batch.num_rows
    digest = hashlib.sha256(memoryview(sink.getvalue())).hexdigest()
    columns = [tracker.info() for tracker in trackers]
    return DatasetInfo(format="builtin", rows=table.num_rows, columns=columns, size=0, sha256=digest)
