"""Uploaded data sets in their stored form: an Arrow IPC file that workers memory-map, plus what it holds.

`ingest` reads a CSV, Parquet or .npz upload a block at a time (an upload may be larger than the API
process may hold), writes float64 and string columns to an uncompressed Arrow file, and describes each
column on the way: type, missing cells, distinct values (up to MAX_TRACKED_VALUES) and range. The data
sets that ship inside scikit-learn are offered as tables of the same form. Nothing here imports
TensorFlow or talks to Redis or HTTP; callers turn DatasetFileError into a client error.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import queue
import re
import tempfile
import threading
import zipfile
from collections import Counter
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
from pydantic import BaseModel

from service.core.errors import QUOTE_CHARS, shorten

ColumnType = Literal["numeric", "categorical", "text"]
Format = Literal["csv", "parquet", "npz", "builtin"]

MAX_TRACKED_VALUES = 1000  # distinct values tracked per column; a string column with more is text

# pyarrow's default block: measured fastest for a 200 MB numeric CSV, and larger blocks only raise RSS.
_CSV_BLOCK_SIZE = 1 << 20
_BATCH_ROWS = 65_536  # rows per written batch for Parquet and .npz input
_PARQUET_BUFFER = 1 << 20
_HASH_CHUNK = 1 << 20
_SNIFF_BYTES = 1 << 16  # read to tell the format, and to refuse binary files before parsing them
_END = object()
_T = TypeVar("_T")

_CLAIMED = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
_FORMAT_NAMES = {"csv": "a CSV file", "parquet": "a Parquet file", "npz": "an .npz file"}

BUILTINS: Mapping[str, Literal["classification", "regression"]] = MappingProxyType(
    {
        "iris": "classification",
        "wine": "classification",
        "breast_cancer": "classification",
        "digits": "classification",
        "diabetes": "regression",
    }
)


class ColumnInfo(BaseModel):
    """One column of a data set, as ingest found it."""

    name: str
    type: ColumnType
    missing: int  # null/empty cells (NaN counts as missing for numeric)
    first_missing_row: int | None  # 0-based data-row index of the first missing cell (header not counted)
    distinct: int | None  # distinct non-missing values, None when more than MAX_TRACKED_VALUES
    values: list[float] | list[str] | None  # those distinct values sorted, when distinct is not None
    min: float | None = None  # numeric columns only (None when all missing)
    max: float | None = None


class DatasetInfo(BaseModel):
    """What a stored data set holds.

    `size` and `sha256` describe the uploaded file. A built-in set has no upload: its size is 0 and its
    sha256 is that of its table written as an Arrow IPC file (the stored form), so it changes only when the
    data scikit-learn ships (or pyarrow's encoding of it) does.
    """

    format: Format
    rows: int
    columns: list[ColumnInfo]  # in file order
    size: int
    sha256: str

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name == name), None)


class DatasetFileError(ValueError):
    """The file is not a data set this service reads; `message` says why, naming the file, column, line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
                rows, columns = _ingest_csv(source, label, temp)
            elif fmt == "parquet":
                rows, columns = _ingest_parquet(source, label, temp)
            else:
                rows, columns = _ingest_npz(source, label, temp)
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


def _check_names(names: Sequence[str], label: str) -> None:
    empty = [str(i + 1) for i, name in enumerate(names) if not name.strip()]
    if empty:
        raise DatasetFileError(f"{label} has columns without a name: column {', '.join(empty[:10])}")
    counts = Counter(names)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        quoted = ", ".join(repr(shorten(name)) for name in duplicates[:10])
        raise DatasetFileError(f"{label} has duplicate column names: {quoted}")


# ------------------------------------------------------------------------------------------ statistics


@dataclass
class _Tracker:
    """A column's statistics, updated one batch at a time."""

    name: str
    numeric: bool
    missing: int = 0
    first_missing_row: int | None = None
    values: set[Any] | None = field(default_factory=set)  # None once more than MAX_TRACKED_VALUES
    min: float | None = None
    max: float | None = None

    def update(self, array: pa.Array, offset: int) -> None:
        """Count `array` (already in stored form), whose first cell is data row `offset`."""
        nulls = array.null_count
        if nulls:
            if self.first_missing_row is None:
                self.first_missing_row = offset + pc.index(pc.is_null(array), True).as_py()
            self.missing += nulls
        if self.numeric and nulls < len(array):
            low, high = (v.as_py() for v in pc.min_max(array).values())
            self.min = low if self.min is None else min(self.min, low)
            self.max = high if self.max is None else max(self.max, high)
        if self.values is not None:
            unique = pc.unique(array).drop_null()
            if len(unique) > MAX_TRACKED_VALUES:
                self.values = None
                return
            self.values.update(unique.to_pylist())
            if len(self.values) > MAX_TRACKED_VALUES:
                self.values = None

    def info(self) -> ColumnInfo:
        values = None if self.values is None else sorted(self.values)
        kind: ColumnType = "numeric" if self.numeric else ("categorical" if values is not None else "text")
        return ColumnInfo(
            name=self.name,
            type=kind,
            missing=self.missing,
            first_missing_row=self.first_missing_row,
            distinct=None if values is None else len(values),
            values=values,
            min=self.min,
            max=self.max,
        )


def _stored(array: pa.Array, numeric: bool) -> pa.Array:
    """`array` as stored: float64 with NaN as null, or string with "" as null. Raises ArrowInvalid."""
    if numeric:
        if array.type != pa.float64():
            array = pc.cast(array, pa.float64(), safe=False)  # int64 beyond 2**53 rounds, as in numpy
        nan = pc.is_nan(array)
        if pc.any(nan).as_py():
            array = pc.if_else(nan, pa.scalar(None, pa.float64()), array)
        return array
    if array.type != pa.string():
        array = pc.cast(array, pa.string())
    empty = pc.equal(array, "")
    if pc.any(empty).as_py():
        array = pc.if_else(empty, pa.scalar(None, pa.string()), array)
    return array


def _schema(names: Sequence[str], numeric: Sequence[bool]) -> pa.Schema:
    kinds = [pa.float64() if num else pa.string() for num in numeric]
    return pa.schema([pa.field(name, kind) for name, kind in zip(names, kinds, strict=True)])


def _write(
    path: Path, names: Sequence[str], numeric: Sequence[bool], batches: Iterator[list[pa.Array]], label: str
) -> tuple[int, list[ColumnInfo]]:
    """Write `batches` (one raw array per column) to an Arrow IPC file at `path`; rows and column info."""
    schema = _schema(names, numeric)
    trackers = [_Tracker(name, num) for name, num in zip(names, numeric, strict=True)]
    rows = 0
    with (
        closing(_prefetched(batches)) as prefetched,
        pa.OSFile(str(path), "wb") as sink,
        pa_ipc.new_file(sink, schema) as writer,
    ):
        for raw in prefetched:
            arrays = []
            for tracker, array in zip(trackers, raw, strict=True):
                try:
                    stored = _stored(array, tracker.numeric)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                    raise DatasetFileError(
                        f"{label}: column {shorten(tracker.name)!r} of type {array.type} could not be read "
                        f"as {'a number' if tracker.numeric else 'text'}: {_reason(error)}"
                    ) from None
                tracker.update(stored, rows)
                arrays.append(stored)
            writer.write_batch(pa.record_batch(arrays, schema=schema))
            rows += len(raw[0]) if raw else 0
    return rows, [tracker.info() for tracker in trackers]


def _prefetched(items: Iterator[_T], depth: int = 4) -> Generator[_T, None, None]:
    """`items`, produced on another thread while the caller works on the ones before.

    pyarrow releases the GIL while it parses a block, so the next block is parsed while this one is counted
    and written: on two cores a 200 MB CSV went from about 1.45 s to 1.1 s.
    """
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((True, item)):
                    return
            offer((True, _END))
        except BaseException as error:
            offer((False, error))
        finally:
            if isinstance(items, Generator):
                items.close()  # a CSV reader's file is closed here, not whenever it is collected

    thread = threading.Thread(target=produce, name="ingest-read", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = ready.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return _clean(text)


def _clean(text: str, limit: int = 300) -> str:
    """`text` shortened and without control characters: pyarrow quotes the offending row, maybe binary."""
    return "".join(char if char.isprintable() else "?" for char in shorten(text, limit))


# ------------------------------------------------------------------------------------------------- CSV


# Read without pyarrow's threads: only then do its parse and conversion errors name the row ("Row #N", the
# header being row 1, blank lines not counted), and on the measured file they bought no speed;
# _prefetched overlaps parsing with counting and writing instead.
_COLUMN_ERROR = re.compile(r"^In CSV column #(\d+): (?:Row #(\d+): )?(.*)$", re.DOTALL)
_ROW = re.compile(r"Row #(\d+): ")
_CONVERSION = re.compile(r"CSV conversion error to (\w+): invalid value '(.*)'$", re.DOTALL)
_KIND_WORDS = {"double": "numbers", "bool": "true/false values"}


class _Retype(Exception):
    """A column typed from its first block (all empty there) turned out to hold text: read again."""

    def __init__(self, index: int) -> None:
        self.index = index


def _csv_reader(source: Path, column_types: Mapping[str, pa.DataType] | None = None) -> Any:
    return pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_SIZE, use_threads=False),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(column_types=column_types or {}, strings_can_be_null=True),
    )


def _csv_error(error: str, label: str, names: Sequence[str]) -> DatasetFileError:
    """pyarrow's reason in words for the client: which column and row, where pyarrow says."""
    text = error.strip()
    if text == "Empty CSV file":
        return DatasetFileError(f"{label} is empty")
    match = _COLUMN_ERROR.match(text)
    if match is None:
        reason = text.removeprefix("CSV parse error: ")
        row = _ROW.match(reason)
        if row:
            reason = reason[row.end() :]
        reason = reason[:1].lower() + reason[1:]
        if row:
            reason = f"row {row.group(1)} (the header is row 1): {reason}"
        return DatasetFileError(f"{label} is not a CSV file this service reads: {_clean(reason)}")
    index, row_number, reason = int(match.group(1)), match.group(2), match.group(3)
    column = f"column {shorten(names[index])!r}" if index < len(names) else f"column {index + 1}"
    where = f"{column}, row {row_number} (the header is row 1)" if row_number else column
    if "invalid UTF8" in reason:
        return DatasetFileError(f"{label} is not UTF-8 text: {where}")
    conversion = _CONVERSION.match(reason)
    if conversion and conversion.group(1) in _KIND_WORDS:
        value = _clean(conversion.group(2), QUOTE_CHARS)
        return DatasetFileError(
            f"{label}: {column} holds {_KIND_WORDS[conversion.group(1)]}, but "
            f"{f'row {row_number}' if row_number else 'a later row'} has {value!r} "
            "(the type of a column is decided by the first rows; the header is row 1)"
        )
    return DatasetFileError(f"{label}: {where}: {_clean(reason)}")


def _first_block_types(source: Path, label: str) -> tuple[list[str], dict[str, pa.DataType], set[int]]:
    """Column names and the types to read them as, inferred from the first block; also the columns
    inferred as all-empty there, read as numbers until a later block shows text."""
    try:
        reader = _csv_reader(source)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise _csv_error(str(error), label, []) from None
    schema = reader.schema
    reader.close()
    try:
        names = list(schema.names)
    except UnicodeDecodeError:
        raise DatasetFileError(f"{label} is not UTF-8 text: its header row is not") from None
    _check_names(names, label)
    types: dict[str, pa.DataType] = {}
    guessed: set[int] = set()
    for index, column in enumerate(schema):
        kind = column.type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            raise DatasetFileError(f"{label} is not UTF-8 text: column {shorten(column.name)!r} is not")
        if pa.types.is_boolean(kind):
            types[column.name] = kind  # pyarrow parses true/false only as bool; _stored makes it float64
        elif pa.types.is_null(kind):
            types[column.name] = pa.float64()
            guessed.add(index)
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            types[column.name] = pa.float64()  # so a later "1.5" in a column of integers still reads
        else:
            types[column.name] = pa.string()  # dates, times and timestamps are kept as written
    return names, types, guessed


def _csv_batches(
    source: Path, label: str, names: Sequence[str], types: Mapping[str, pa.DataType], guessed: set[int]
) -> Iterator[list[pa.Array]]:
    try:
        reader = _csv_reader(source, types)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise _csv_error(str(error), label, names) from None
    with reader:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                match = _COLUMN_ERROR.match(str(error).strip())
                if match and int(match.group(1)) in guessed and "conversion error" in match.group(3):
                    raise _Retype(int(match.group(1))) from None
                raise _csv_error(str(error), label, names) from None
            yield list(batch.columns)


def _ingest_csv(source: Path, label: str, temp: Path) -> tuple[int, list[ColumnInfo]]:
    names, types, guessed = _first_block_types(source, label)
    while True:
        numeric = [not pa.types.is_string(types[name]) for name in names]
        try:
            return _write(temp, names, numeric, _csv_batches(source, label, names, types, guessed), label)
        except _Retype as retype:
            # Rare (a column empty throughout the first block): reading again beats buffering the file.
            types[names[retype.index]] = pa.string()
            guessed.discard(retype.index)


# --------------------------------------------------------------------------------------------- Parquet


def _parquet_numeric(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    )


def _ingest_parquet(source: Path, label: str, temp: Path) -> tuple[int, list[ColumnInfo]]:
    try:
        # Column chunks read through a small buffer, not whole: a 165 MB file of one row group took 440 MB
        # of RSS to ingest with pyarrow's defaults, 210 MB this way.
        parquet = pq.ParquetFile(source, pre_buffer=False, buffer_size=_PARQUET_BUFFER)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as error:
        reason = _reason(error)
        raise DatasetFileError(f"{label} is not a Parquet file this service reads: {reason}") from None
    with parquet:
        names = list(schema.names)
        if not names:
            raise DatasetFileError(f"{label} has no columns")
        _check_names(names, label)
        for column in schema:
            if pa.types.is_nested(column.type):
                raise DatasetFileError(
                    f"{label}: column {shorten(column.name)!r} has type {column.type}; "
                    "only numbers, text, dates and times are read"
                )
        numeric = [_parquet_numeric(column.type) for column in schema]

        def batches() -> Iterator[list[pa.Array]]:
            try:
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
                    yield list(batch.columns)
            except (pa.ArrowException, OSError) as error:
                raise DatasetFileError(
                    f"{label} is not a Parquet file this service reads: {_reason(error)}"
                ) from None

        return _write(temp, names, numeric, batches(), label)


# ------------------------------------------------------------------------------------------------- npz


def _ingest_npz(source: Path, label: str, temp: Path) -> tuple[int, list[ColumnInfo]]:
    try:
        with np.load(source, allow_pickle=False) as archive:
            held = list(archive.files)
            missing = [name for name in ("x", "y") if name not in held]
            if not missing:
                x, y = archive["x"], archive["y"]
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DatasetFileError(
                f"{label} holds object arrays; it was refused without unpickling them "
                "(store numbers, booleans or unicode strings)"
            ) from None
        raise DatasetFileError(f"{label} is not an .npz file this service reads: {_reason(error)}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DatasetFileError(f"{label} is not an .npz file this service reads: {_reason(error)}") from None
    if missing:
        listed = ", ".join(repr(shorten(name)) for name in held[:10]) or "none"
        raise DatasetFileError(
            f"{label} holds no array {missing[0]!r}; an .npz data set holds 'x' (2-D features) "
            f"and 'y' (1-D targets) (arrays it holds: {listed})"
        )
    if x.ndim != 2 or x.dtype.kind not in "biuf":
        raise DatasetFileError(
            f"{label}: array 'x' must be 2-D and hold numbers or booleans; it is {x.ndim}-D of {x.dtype}"
        )
    if y.ndim != 1 or y.dtype.kind not in "biufU":
        raise DatasetFileError(
            f"{label}: array 'y' must be 1-D and hold numbers, booleans or unicode strings; "
            f"it is {y.ndim}-D of {y.dtype}"
        )
    if len(x) != len(y):
        raise DatasetFileError(f"{label}: array 'x' has {len(x)} rows but array 'y' has {len(y)}")
    names = [f"x{i}" for i in range(x.shape[1])] + ["y"]
    numeric = [True] * x.shape[1] + [y.dtype.kind != "U"]

    def batches() -> Iterator[list[pa.Array]]:
        for start in range(0, len(x), _BATCH_ROWS):
            # One contiguous row per feature, so each becomes an Arrow array without another copy.
            block = np.ascontiguousarray(x[start : start + _BATCH_ROWS].T, dtype=np.float64)
            targets = y[start : start + _BATCH_ROWS]
            yield [pa.array(column) for column in block] + [
                pa.array(targets) if y.dtype.kind == "U" else pa.array(targets.astype(np.float64))
            ]

    return _write(temp, names, numeric, batches(), label)


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


# ------------------------------------------------------------------------------------------- built-ins


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
    trackers = [_Tracker(column_name, True) for column_name in table.column_names]
    sink = pa.BufferOutputStream()
    with pa_ipc.new_file(sink, table.schema) as writer:
        offset = 0
        for batch in table.to_batches():
            for tracker, array in zip(trackers, batch.columns, strict=True):
                tracker.update(_stored(array, True), offset)
            writer.write_batch(batch)
            offset += batch.num_rows
    digest = hashlib.sha256(memoryview(sink.getvalue())).hexdigest()
    columns = [tracker.info() for tracker in trackers]
    return DatasetInfo(format="builtin", rows=table.num_rows, columns=columns, size=0, sha256=digest)
