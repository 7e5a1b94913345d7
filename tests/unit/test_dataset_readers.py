"""The per-format readers, through ingest: what CSV, Parquet and .npz files become, and what is refused."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.core import dataset_readers, datasets
from tests.unit.dataset_files import ingest, refused, rows_csv, write


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """CSV blocks of a few rows, so a value can arrive after the block that decided its column's type."""
    monkeypatch.setattr(dataset_readers, "_CSV_BLOCK_SIZE", 64)


# ------------------------------------------------------------------------------------------------- CSV


def test_nan_and_pyarrows_null_spellings_are_missing(tmp_path: Path) -> None:
    info, table = ingest(write(tmp_path, "d.csv", b"x,s\n1,NA\nNaN,b\nnan,\n4,b\n"))
    x, s = info.columns
    assert (x.missing, x.first_missing_row, x.values) == (2, 1, [1.0, 4.0])
    assert (s.missing, s.first_missing_row, s.values) == (2, 0, ["b"])
    assert table.column("x").null_count == 2


@pytest.mark.usefixtures("small_blocks")
def test_integers_then_a_float_in_a_later_block(tmp_path: Path) -> None:
    source = write(tmp_path, "d.csv", rows_csv("a,b", [f"{i},{i}" for i in range(40)] + ["1.5,"]))
    info, table = ingest(source)
    assert table.column("a").num_chunks > 1  # one batch a block: 1.5 really came after the first
    assert info.rows == 41 and table.column("a").to_pylist()[-2:] == [39.0, 1.5]
    a, b = info.columns
    assert (a.min, a.max, a.missing) == (0.0, 39.0, 0)
    assert (b.missing, b.first_missing_row) == (1, 40)  # counted across blocks


@pytest.mark.usefixtures("small_blocks")
def test_a_word_in_a_later_block_of_a_number_column_names_the_column_and_row(tmp_path: Path) -> None:
    source = write(tmp_path, "d.csv", rows_csv("a,price", [f"{i},{i}.5" for i in range(40)] + ["3,abc"]))
    message = refused(source)
    assert "'price'" in message and "'abc'" in message and "row 42" in message  # the header is row 1
    assert "d.csv" in message
    assert not [t.name for t in threading.enumerate() if t.name.startswith("ingest-")]  # reader, hasher


@pytest.mark.usefixtures("small_blocks")
def test_a_column_empty_in_the_first_block_takes_its_type_from_later_ones(tmp_path: Path) -> None:
    rows = [f"{i},," for i in range(40)] + ["40,red,2.5"]
    info, table = ingest(write(tmp_path, "d.csv", rows_csv("n,colour,late", rows)))
    _, colour, late = info.columns
    assert (colour.type, colour.values) == ("categorical", ["red"])
    assert (colour.missing, colour.first_missing_row) == (40, 0)
    assert (late.type, late.values, late.min) == ("numeric", [2.5], 2.5)
    assert table.column("colour").type == pa.string() and table.column("late").type == pa.float64()


def test_true_false_columns_are_numbers(tmp_path: Path) -> None:
    info, _ = ingest(write(tmp_path, "d.csv", b"flag\ntrue\nfalse\ntrue\n"))
    assert info.columns[0].type == "numeric" and info.columns[0].values == [0.0, 1.0]


def test_dates_are_kept_as_text(tmp_path: Path) -> None:
    info, table = ingest(write(tmp_path, "d.csv", b"day,v\n2024-01-02,1\n2024-01-03,2\n"))
    assert info.columns[0].type == "categorical"
    assert table.column("day").to_pylist() == ["2024-01-02", "2024-01-03"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [(b"a,a,b", "duplicate column names: 'a'"), (b"a,,b", "without a name: column 2")],
)
def test_duplicate_and_empty_header_names_are_refused(tmp_path: Path, header: bytes, expected: str) -> None:
    assert expected in refused(write(tmp_path, "d.csv", header + b"\n1,2,3\n"))


@pytest.mark.parametrize(
    "content",
    [
        b"a,b\n\xff\xfe,1\n",
        b"a\xff,b\n1,2\n",
        rows_csv("a,b", [f"x{i},{i}" for i in range(40)]) + b"\xff,1\n",
        "a,b\n1,2\n".encode("utf-16"),
    ],
    ids=["first block", "header", "later block", "utf-16"],
)
@pytest.mark.usefixtures("small_blocks")
def test_text_that_is_not_utf8_is_refused(tmp_path: Path, content: bytes) -> None:
    assert "not UTF-8" in refused(write(tmp_path, "d.csv", content))


def test_a_ragged_row_is_refused_with_its_row(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "d.csv", b"a,b,c\n1,2,3\n1,2,3,4\n"))
    assert "expected 3 columns, got 4" in message and "row 3" in message


def test_ragged_garbage_without_nul_bytes_gets_pyarrows_reason(tmp_path: Path) -> None:
    garbage = bytes(range(1, 256)) * 4
    assert "expected 1 columns, got 2" in refused(write(tmp_path, "upload", garbage))


# --------------------------------------------------------------------------------------------- Parquet


def test_a_parquet_file_is_stored_as_numbers_and_text(tmp_path: Path) -> None:
    source = tmp_path / "d.parquet"
    when = [datetime.datetime(2024, 1, 2, 3, 4, 5), None, datetime.datetime(2024, 1, 3)]
    pq.write_table(
        pa.table(
            {
                "n": pa.array([1, None, 3], pa.int32()),
                "f": [0.5, float("nan"), 2.0],
                "ok": [True, False, None],
                "s": ["a", "", None],
                "when": pa.array(when, pa.timestamp("us")),
            }
        ),
        source,
    )
    info, table = ingest(source)
    assert info.format == "parquet" and info.rows == 3
    assert [c.type for c in info.columns] == ["numeric", "numeric", "numeric", "categorical", "categorical"]
    assert table.schema.types == [pa.float64()] * 3 + [pa.string()] * 2
    assert table.column("n").to_pylist() == [1.0, None, 3.0]
    f = info.column("f")
    assert f is not None and (f.missing, f.first_missing_row, f.min, f.max) == (1, 1, 0.5, 2.0)
    assert table.column("s").to_pylist() == ["a", None, None]  # an empty string is missing
    stamps = table.column("when").to_pylist()
    assert stamps[0] is not None and stamps[0].startswith("2024-01-02 03:04:05") and stamps[1] is None


def test_a_corrupt_parquet_file_is_refused(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "d.parquet", b"PAR1" + b"0" * 64))
    assert "is not a Parquet file this service reads" in message


def test_a_parquet_column_of_bytes_that_are_not_utf8_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "d.parquet"
    pq.write_table(pa.table({"n": range(100_000), "b": [b"ok"] * 99_999 + [b"\xff"]}), source)
    assert "column 'b' of type binary could not be read as text" in refused(source)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("ingest-")]


def test_a_parquet_column_of_lists_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "d.parquet"
    pq.write_table(pa.table({"l": [[1], [2]]}), source)
    assert "column 'l' has type list" in refused(source)


# ------------------------------------------------------------------------------------------------- npz


def test_an_npz_file_becomes_feature_columns_and_y(tmp_path: Path) -> None:
    source = tmp_path / "d.npz"
    x = np.array([[1, 2.5], [np.nan, 4], [5, 6]])
    np.savez(source, x=x, y=np.array([0, 1, 1]))
    info, table = ingest(source)
    assert info.format == "npz" and info.rows == 3
    assert table.column_names == ["x0", "x1", "y"] and table.schema.types == [pa.float64()] * 3
    x0 = info.column("x0")
    assert x0 is not None and (x0.missing, x0.first_missing_row, x0.values) == (1, 1, [1.0, 5.0])
    np.testing.assert_array_equal(datasets.column_arrays(table, ["x1"])["x1"], x[:, 1])


def test_an_npz_file_with_string_labels(tmp_path: Path) -> None:
    source = tmp_path / "d.npz"
    np.savez(source, x=np.ones((3, 1), dtype=np.float32), y=np.array(["cat", "dog", ""]))
    info, table = ingest(source)
    y = info.column("y")
    assert y is not None and (y.type, y.values, y.missing) == ("categorical", ["cat", "dog"], 1)
    assert table.column("y").to_pylist() == ["cat", "dog", None]


def test_an_npz_file_with_an_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    source = tmp_path / "d.npz"
    np.savez(source, x=np.ones((2, 1)), y=np.array([{"a": 1}, None], dtype=object))  # pickled inside
    assert "holds object arrays" in refused(source) and "without unpickling" in refused(source)


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"x": np.ones((2, 2))}, "holds no array 'y'"),
        ({"y": np.ones(2)}, "holds no array 'x'"),
        ({"x": np.ones(2), "y": np.ones(2)}, "array 'x' must be 2-D"),
        ({"x": np.ones((2, 2)), "y": np.ones((2, 1))}, "array 'y' must be 1-D"),
        ({"x": np.ones((3, 2)), "y": np.ones(2)}, "array 'x' has 3 rows but array 'y' has 2"),
        ({"x": np.ones((2, 2)), "y": np.array([b"a", b"b"])}, "array 'y' must be 1-D and hold"),
    ],
)
def test_an_npz_file_without_the_arrays_it_needs_is_refused(
    tmp_path: Path, arrays: dict[str, np.ndarray], expected: str
) -> None:
    source = tmp_path / "d.npz"
    np.savez(source, **arrays)  # type: ignore[arg-type]
    assert expected in refused(source)


def test_a_corrupt_zip_is_refused(tmp_path: Path) -> None:
    assert "is not an .npz file this service reads" in refused(write(tmp_path, "d.npz", b"PK\x03\x04junk"))
