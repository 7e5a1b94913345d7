"""The per-format readers of uploads: CSV, Parquet and .npz, each streamed into the stored form.

Each `ingest_*` function takes the upload at `source` and writes it to `temp` through
`dataset_writer.write_batches` a block at a time (an upload may be larger than the API process may hold),
returning the number of rows and the columns' descriptions. What is particular to a format lives here: how
it is opened and typed, and how its library's errors are put in words for the client, as DatasetFileError.
`datasets.ingest` chooses the reader and owns `temp`.
"""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from service.core.dataset_models import ColumnInfo, DatasetFileError, clean_text, reason_of
from service.core.dataset_writer import write_batches
from service.core.errors import QUOTE_CHARS, shorten
from service.core.npy_stream import NpyMember

# pyarrow's default block: measured fastest for a 200 MB numeric CSV, and larger blocks only raise RSS.
_CSV_BLOCK_SIZE = 1 << 20
_BATCH_ROWS = 65_536  # rows per written batch for Parquet and .npz input
_PARQUET_BUFFER = 1 << 20


def _check_names(names: Sequence[str], label: str) -> None:
    empty = [str(i + 1) for i, name in enumerate(names) if not name.strip()]
    if empty:
        raise DatasetFileError(f"{label} has columns without a name: column {', '.join(empty[:10])}")
    counts = Counter(names)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        quoted = ", ".join(repr(shorten(name)) for name in duplicates[:10])
        raise DatasetFileError(f"{label} has duplicate column names: {quoted}")


# ------------------------------------------------------------------------------------------------- CSV


# Read without pyarrow's threads: only then do its parse and conversion errors name the row ("Row #N", the
# header being row 1, blank lines not counted), and on the measured file they bought no speed;
# write_batches overlaps parsing with counting and writing instead.
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
        return DatasetFileError(f"{label} is not a CSV file this service reads: {clean_text(reason)}")
    index, row_number, reason = int(match.group(1)), match.group(2), match.group(3)
    column = f"column {shorten(names[index])!r}" if index < len(names) else f"column {index + 1}"
    where = f"{column}, row {row_number} (the header is row 1)" if row_number else column
    if "invalid UTF8" in reason:
        return DatasetFileError(f"{label} is not UTF-8 text: {where}")
    conversion = _CONVERSION.match(reason)
    if conversion and conversion.group(1) in _KIND_WORDS:
        value = clean_text(conversion.group(2), QUOTE_CHARS)
        return DatasetFileError(
            f"{label}: {column} holds {_KIND_WORDS[conversion.group(1)]}, but "
            f"{f'row {row_number}' if row_number else 'a later row'} has {value!r} "
            "(the type of a column is decided by the first rows; the header is row 1)"
        )
    return DatasetFileError(f"{label}: {where}: {clean_text(reason)}")


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
            types[column.name] = kind  # pyarrow parses true/false only as bool; to_stored makes it float64
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


def ingest_csv(source: Path, label: str, temp: Path) -> tuple[int, list[ColumnInfo]]:
    """Store the CSV file `source` at `temp`; rows and column info. Raises DatasetFileError."""
    names, types, guessed = _first_block_types(source, label)
    while True:
        numeric = [not pa.types.is_string(types[name]) for name in names]
        try:
            batches = _csv_batches(source, label, names, types, guessed)
            return write_batches(temp, names, numeric, batches, label)
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


def ingest_parquet(source: Path, label: str, temp: Path) -> tuple[int, list[ColumnInfo]]:
    """Store the Parquet file `source` at `temp`; rows and column info. Raises DatasetFileError."""
    try:
        # Column chunks read through a small buffer, not whole: a 165 MB file of one row group took 440 MB
        # of RSS to ingest with pyarrow's defaults, 210 MB this way.
        parquet = pq.ParquetFile(source, pre_buffer=False, buffer_size=_PARQUET_BUFFER)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as error:
        reason = reason_of(error)
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
                    f"{label} is not a Parquet file this service reads: {reason_of(error)}"
                ) from None

        return write_batches(temp, names, numeric, batches(), label)


# ------------------------------------------------------------------------------------------------- npz


def ingest_npz(source: Path, label: str, temp: Path) -> tuple[int, list[ColumnInfo]]:
    """Store the .npz file `source` ('x' and 'y') at `temp`; rows and column info. Raises DatasetFileError.

    The arrays are read a block of rows at a time (`npy_stream`); object arrays are refused from their
    headers, without unpickling anything.
    """
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DatasetFileError(
            f"{label} is not an .npz file this service reads: {reason_of(error)}"
        ) from None
    with archive:
        held = [name.removesuffix(".npy") for name in archive.namelist()]
        missing = [name for name in ("x", "y") if name not in held]
        if missing:
            listed = ", ".join(repr(shorten(name)) for name in held[:10]) or "none"
            raise DatasetFileError(
                f"{label} holds no array {missing[0]!r}; an .npz data set holds 'x' (2-D features) "
                f"and 'y' (1-D targets) (arrays it holds: {listed})"
            )
        try:
            x, y = NpyMember(archive, "x"), NpyMember(archive, "y")
        except (ValueError, zipfile.BadZipFile, OSError, EOFError) as error:
            raise DatasetFileError(
                f"{label} is not an .npz file this service reads: {reason_of(error)}"
            ) from None
        try:
            return _store_npz(x, y, label, temp)
        finally:
            x.close()
            y.close()


def _store_npz(x: NpyMember, y: NpyMember, label: str, temp: Path) -> tuple[int, list[ColumnInfo]]:
    if x.dtype.hasobject or y.dtype.hasobject:
        raise DatasetFileError(
            f"{label} holds object arrays; it was refused without unpickling them "
            "(store numbers, booleans or unicode strings)"
        )
    if len(x.shape) != 2 or x.dtype.kind not in "biuf":
        raise DatasetFileError(
            f"{label}: array 'x' must be 2-D and hold numbers or booleans; it is {len(x.shape)}-D of "
            f"{x.dtype}"
        )
    if len(y.shape) != 1 or y.dtype.kind not in "biufU":
        raise DatasetFileError(
            f"{label}: array 'y' must be 1-D and hold numbers, booleans or unicode strings; "
            f"it is {len(y.shape)}-D of {y.dtype}"
        )
    if x.rows != y.rows:
        raise DatasetFileError(f"{label}: array 'x' has {x.rows} rows but array 'y' has {y.rows}")
    names = [f"x{i}" for i in range(x.shape[1])] + ["y"]
    numeric = [True] * x.shape[1] + [y.dtype.kind != "U"]

    def batches() -> Iterator[list[pa.Array]]:
        for _ in range(0, x.rows, _BATCH_ROWS):
            try:
                features, targets = x.next_rows(_BATCH_ROWS), y.next_rows(_BATCH_ROWS)
            except (ValueError, zipfile.BadZipFile, OSError, EOFError) as error:
                raise DatasetFileError(f"{label} could not be read: {reason_of(error)}") from None
            # One contiguous row per feature, so each becomes an Arrow array without another copy.
            block = np.ascontiguousarray(features.T, dtype=np.float64)
            yield [pa.array(column) for column in block] + [
                pa.array(targets) if y.dtype.kind == "U" else pa.array(targets.astype(np.float64))
            ]

    return write_batches(temp, names, numeric, batches(), label)
