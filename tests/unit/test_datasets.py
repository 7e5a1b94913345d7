"""ingest end to end (format detection, hashing, atomic storing) and reading stored tables back."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.core import datasets
from service.core.datasets import DatasetFileError
from tests.unit.dataset_files import ingest, refused, write

PUBLIC = (
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
)


def test_the_public_names_are_all_importable_from_this_module() -> None:
    assert set(datasets.__all__) == set(PUBLIC)
    for name in PUBLIC:
        assert getattr(datasets, name) is not None


# ---------------------------------------------------------------------------------------------- ingest


def test_a_csv_with_numbers_labels_and_a_missing_cell(tmp_path: Path) -> None:
    source = write(tmp_path, "d.csv", b"a,b,label\n1,2.5,cat\n2,3.5,dog\n3,,cat\n4,-1,\n")
    info, table = ingest(source)
    assert info.format == "csv" and info.rows == 4
    assert [c.name for c in info.columns] == ["a", "b", "label"]
    a, b, label = info.columns
    assert (a.type, a.missing, a.first_missing_row, a.min, a.max) == ("numeric", 0, None, 1.0, 4.0)
    assert a.values == [1.0, 2.0, 3.0, 4.0] and a.distinct == 4
    assert (b.missing, b.first_missing_row, b.min, b.max) == (1, 2, -1.0, 3.5)
    assert label.type == "categorical" and label.values == ["cat", "dog"] and label.distinct == 2
    assert (label.missing, label.first_missing_row) == (1, 3)  # an empty cell of a string column
    assert info.column("label") == label and info.column("nope") is None
    assert table.schema == pa.schema([("a", pa.float64()), ("b", pa.float64()), ("label", pa.string())])
    assert table.column("b").to_pylist() == [2.5, 3.5, None, -1.0]
    assert table.column("label").to_pylist() == ["cat", "dog", "cat", None]
    content = source.read_bytes()
    assert info.size == len(content) and info.sha256 == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize(("content", "expected"), [(b"a,b\n", "no data rows"), (b"", "is empty")])
def test_a_file_without_rows_is_refused(tmp_path: Path, content: bytes, expected: str) -> None:
    assert expected in refused(write(tmp_path, "d.csv", content))


def test_binary_garbage_is_refused(tmp_path: Path) -> None:
    garbage = np.random.default_rng(0).bytes(5000)
    message = refused(write(tmp_path, "upload", garbage), filename=None)
    assert message.startswith("the file is not a CSV file: it holds binary data")


# --------------------------------------------------------------------------------- formats and names


def test_the_content_decides_when_the_name_says_nothing(tmp_path: Path) -> None:
    info, _ = ingest(write(tmp_path, "upload.bin", b"a\n1\n"))
    assert info.format == "csv"
    parquet = tmp_path / "noext"
    pq.write_table(pa.table({"a": [1]}), parquet)
    assert ingest(parquet)[0].format == "parquet"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("x.parquet", b"a,b\n1,2\n", "file 'x.parquet' is not a Parquet file: "),
        ("x.npz", b"a,b\n1,2\n", "file 'x.npz' is not an .npz file: "),
        ("x.csv", b"PAR1\x00\x00", "file 'x.csv' is not a CSV file: it is a Parquet file"),
        ("x.CSV", b"PK\x03\x04\x00\x00", "file 'x.CSV' is not a CSV file: it is a zip archive"),
    ],
)
def test_an_extension_that_contradicts_the_content_is_refused(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    assert refused(write(tmp_path, "upload", content), filename=name).startswith(expected)


# ------------------------------------------------------------------------------------- stored tables


def test_column_arrays_give_nan_and_none_for_missing(tmp_path: Path) -> None:
    _, table = ingest(write(tmp_path, "d.csv", b"a,s\n1,x\n,\n3,y\n"))
    arrays = datasets.column_arrays(table, ["a", "s"])
    assert arrays["a"].dtype == np.float64 and np.isnan(arrays["a"][1]) and arrays["a"][2] == 3.0
    assert arrays["s"].dtype == object and arrays["s"].tolist() == ["x", None, "y"]
    with pytest.raises(KeyError):
        datasets.column_arrays(table, ["a", "nope"])


def test_a_failed_ingest_leaves_an_earlier_file_at_dest_alone(tmp_path: Path) -> None:
    dest = tmp_path / "data.arrow"
    datasets.ingest(write(tmp_path, "good.csv", b"a\n1\n"), "good.csv", dest)
    before = dest.read_bytes()
    with pytest.raises(DatasetFileError):
        datasets.ingest(write(tmp_path, "bad.csv", b"a\n"), "bad.csv", dest)
    assert dest.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.csv",
        "data.arrow",
        "good.csv",
    ]
