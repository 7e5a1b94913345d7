"""The stored form and the column statistics: counted a batch at a time, as ingest and built-ins use them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from service.core import dataset_writer
from tests.unit.dataset_files import ingest, rows_csv, write


def test_string_columns_with_many_values_are_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_writer, "MAX_TRACKED_VALUES", 3)
    rows = [f"{i},w{i},{'ab'[i % 2]}" for i in range(10)]
    info, _ = ingest(write(tmp_path, "d.csv", rows_csv("n,words,few", rows)))
    n, words, few = info.columns
    assert (n.type, n.distinct, n.values, n.min, n.max) == ("numeric", None, None, 0.0, 9.0)
    assert (words.type, words.distinct, words.values) == ("text", None, None)
    assert (few.type, few.distinct, few.values) == ("categorical", 2, ["a", "b"])


def test_a_tracker_counts_batches_from_their_offsets() -> None:
    tracker = dataset_writer.ColumnTracker("x", numeric=True)
    tracker.update(dataset_writer.to_stored(pa.array([2, 1]), numeric=True), 0)
    tracker.update(dataset_writer.to_stored(pa.array([float("nan"), 5.0, None]), numeric=True), 2)
    info = tracker.info()
    assert (info.name, info.type, info.missing, info.first_missing_row) == ("x", "numeric", 2, 2)
    assert (info.min, info.max, info.distinct, info.values) == (1.0, 5.0, 3, [1.0, 2.0, 5.0])


def test_the_stored_form_of_text_has_empty_strings_as_missing() -> None:
    stored = dataset_writer.to_stored(pa.array(["a", "", None]), numeric=False)
    assert stored.type == pa.string() and stored.to_pylist() == ["a", None, None]
    assert dataset_writer.to_stored(pa.array([True, False]), numeric=True).to_pylist() == [1.0, 0.0]
