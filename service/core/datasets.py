"""Uploaded data sets in their stored form: an Arrow IPC file that workers memory-map, plus what it holds.

`ingest` reads a CSV, Parquet or .npz upload a block at a time (an upload may be larger than the API
process may hold), writes float64 and string columns to an uncompressed Arrow file, and describes each
column on the way: type, missing cells, distinct values (up to MAX_TRACKED_VALUES) and range. The data
sets that ship inside scikit-learn are offered as tables of the same form. Nothing here imports
TensorFlow or talks to Redis or HTTP; callers turn DatasetFileError into a client error.

This module is the one the rest of ktune imports: it tells an upload's format, hashes it, and stores it
atomically; it reads stored tables back. The parts live beside it, each re-exported here:
`dataset_models` (ColumnInfo, DatasetInfo, DatasetFileError), `dataset_readers` (one reader per format),
`dataset_writer` (the stored form, column statistics and the Arrow writer) and `builtin_datasets`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as pa_ipc

from service.core.builtin_datasets import builtin_info, builtin_table
from service.core.dataset_models import (
    BUILTINS,
    MAX_TRACKED_VALUES,
    ColumnInfo,
    ColumnType,
    DatasetFileError,
    DatasetInfo,
)
from service.core.dataset_readers import ingest_csv, ingest_npz, ingest_parquet
from service.core.errors import shorten

__all__ = [
    "BUILTINS",
    "MAX_TRACKED_VALUES",
    "ColumnInfo",
    "ColumnType",
    "DatasetFileError",
    "DatasetInfo",
    "builtin_info",
    "builtin_table",
    "column_arrays",
    "ingest",
    "open_table",
]

_HASH_CHUNK = 1 << 20
_SNIFF_BYTES = 1 << 16  # read to tell the format, and to refuse binary files before parsing them

_CLAIMED = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
_FORMAT_NAMES = {"csv": "a CSV file", "parquet": "a Parquet file", "npz": "an .npz file"}


# ---------------------------------------------------------------------------------------------- ingest


def ingest(source: Path, filename: str | None, dest: Path) -> DatasetInfo:
    """Store the data set in `source` at `dest` as an Arrow IPC file and describe it.

    `filename` is the client's name for the file (for messages, and its extension must not contradict the
    content). Raises DatasetFileError when the file is not a data set this service reads; `dest` is then
    left untouched.
    """
    label = f"file {shorten(filename)!r}" if filename else "the file"
    fmt = _detect_format(source, filename, label)
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(handle)
    temp = Path(temp_name)
    # Hashed on another thread while the file is read (hashlib releases the GIL): a fifth of the time.
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-sha256") as pool:
        hashed = pool.submit(_size_and_sha256, source, stop)
        try:
            if fmt == "csv":
                rows, columns = ingest_csv(source, label, temp)
            elif fmt == "parquet":
                rows, columns = ingest_parquet(source, label, temp)
            else:
                rows, columns = ingest_npz(source, label, temp)
            if rows == 0:
                raise DatasetFileError(f"{label} holds no data rows")
            size, digest = hashed.result()
            os.replace(temp, dest)
        except BaseException:
            stop.set()
            temp.unlink(missing_ok=True)
            raise
    return DatasetInfo(format=fmt, rows=rows, columns=columns, size=size, sha256=digest)


def _detect_format(source: Path, filename: str | None, label: str) -> Literal["csv", "parquet", "npz"]:
    with source.open("rb") as file:
        head = file.read(_SNIFF_BYTES)
    found: Literal["csv", "parquet", "npz"] = "csv"
    if head.startswith(b"PAR1"):
        found = "parquet"
    elif head.startswith(b"PK\x03\x04"):
        found = "npz"
    claimed = _CLAIMED.get(Path(filename).suffix.lower()) if filename else None
    if claimed is not None and claimed != found:
        if found == "parquet":
            why = "it is a Parquet file"
        elif found == "npz":
            why = "it is a zip archive"
        elif claimed == "parquet":
            why = "it does not start with Parquet's magic bytes (PAR1)"
        else:
            why = "it is not a zip archive, as .npz files are"
        raise DatasetFileError(f"{label} is not {_FORMAT_NAMES[claimed]}: {why}")
    if found == "csv" and b"\0" in head:  # no UTF-8 text holds NUL; UTF-16 text and binary files do
        raise DatasetFileError(f"{label} is not a CSV file: it holds binary data or text that is not UTF-8")
    return found


def _size_and_sha256(source: Path, stop: threading.Event) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as file:
        while not stop.is_set() and (chunk := file.read(_HASH_CHUNK)):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


# --------------------------------------------------------------------------------------- stored tables


def open_table(path: Path) -> pa.Table:
    """The table `ingest` wrote at `path`, memory-mapped: its columns are read from the page cache."""
    with pa.memory_map(str(path)) as source:
        return pa_ipc.open_file(source).read_all()


def column_arrays(table: pa.Table, names: Sequence[str]) -> dict[str, np.ndarray]:
    """numpy arrays of the named columns: float64 with NaN for missing, or object arrays of str with None.

    Arrays without missing cells may be read-only views of the mapped file. Raises KeyError for a name
    the table does not have.
    """
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        if name not in table.column_names:
            raise KeyError(name)
        column = table.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            arrays[name] = np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)
        else:
            if column.type != pa.float64():
                column = pc.cast(column, pa.float64(), safe=False)
            # ChunkedArray.to_numpy gives NaN for null float cells; zero copy when it can.
            arrays[name] = np.asarray(column.to_numpy(), dtype=np.float64)
    return arrays
