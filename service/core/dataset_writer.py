"""The stored form of a data set, and the statistics taken on the way to it.

Every reader hands over raw column arrays a batch at a time; here they become float64 (NaN as null) or
string ("" as null) columns, are counted by a ColumnTracker each, and are written to an uncompressed Arrow
IPC file that workers memory-map. The built-in sets are described with the same tracker and stored form,
so an upload and a built-in set are described alike.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as pa_ipc

from service.core.dataset_models import (
    MAX_TRACKED_VALUES,
    ColumnInfo,
    ColumnType,
    DatasetFileError,
    reason_of,
)
from service.core.errors import shorten

_END = object()
_T = TypeVar("_T")


@dataclass
class ColumnTracker:
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


def to_stored(array: pa.Array, numeric: bool) -> pa.Array:
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


def write_batches(
    path: Path, names: Sequence[str], numeric: Sequence[bool], batches: Iterator[list[pa.Array]], label: str
) -> tuple[int, list[ColumnInfo]]:
    """Write `batches` (one raw array per column) to an Arrow IPC file at `path`; rows and column info.

    Raises DatasetFileError when a column cannot be converted to its stored type.
    """
    schema = _schema(names, numeric)
    trackers = [ColumnTracker(name, num) for name, num in zip(names, numeric, strict=True)]
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
                    stored = to_stored(array, tracker.numeric)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                    raise DatasetFileError(
                        f"{label}: column {shorten(tracker.name)!r} of type {array.type} could not be read "
                        f"as {'a number' if tracker.numeric else 'text'}: {reason_of(error)}"
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
