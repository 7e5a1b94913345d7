"""Uploaded data sets: what ingest stores and reports for CSV, Parquet and .npz files, and what it refuses."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.core import datasets
from service.core.datasets import DatasetFileError, DatasetInfo


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def ingest(source: Path) -> tuple[DatasetInfo, pa.Table]:
    dest = source.parent / "stored" / f"{source.name}.arrow"
    info = datasets.ingest(source, source.name, dest)
    return info, datasets.open_table(dest)


def refused(source: Path, filename: str | None = "") -> str:
    """The message of ingest's refusal; also checks that nothing was left where it would have stored.

    `filename` is the client's name for the file: the source's name unless given.
    """
    stored = source.parent / "stored"
    with pytest.raises(DatasetFileError) as caught:
        datasets.ingest(source, source.name if filename == "" else filename, stored / "data.arrow")
    assert not stored.exists() or list(stored.iterdir()) == []  # neither the file nor its temporary
    return caught.value.message


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """CSV blocks of a few rows, so a value can arrive after the block that decided its column's type."""
    monkeypatch.setattr(datasets, "_CSV_BLOCK_SIZE", 64)


def rows_csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


# ------------------------------------------------------------------------------------------------- CSV


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


@pytest.mark.parametrize(("content", "expected"), [(b"a,b\n", "no data rows"), (b"", "is empty")])
def test_a_file_without_rows_is_refused(tmp_path: Path, content: bytes, expected: str) -> None:
    assert expected in refused(write(tmp_path, "d.csv", content))


def test_a_ragged_row_is_refused_with_its_row(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "d.csv", b"a,b,c\n1,2,3\n1,2,3,4\n"))
    assert "expected 3 columns, got 4" in message and "row 3" in message


def test_binary_garbage_is_refused(tmp_path: Path) -> None:
    garbage = np.random.default_rng(0).bytes(5000)
    message = refused(write(tmp_path, "upload", garbage), filename=None)
    assert message.startswith("the file is not a CSV file: it holds binary data")


def test_ragged_garbage_without_nul_bytes_gets_pyarrows_reason(tmp_path: Path) -> None:
    garbage = bytes(range(1, 256)) * 4
    assert "expected 1 columns, got 2" in refused(write(tmp_path, "upload", garbage))


def test_string_columns_with_many_values_are_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_TRACKED_VALUES", 3)
    rows = [f"{i},w{i},{'ab'[i % 2]}" for i in range(10)]
    info, _ = ingest(write(tmp_path, "d.csv", rows_csv("n,words,few", rows)))
    n, words, few = info.columns
    assert (n.type, n.distinct, n.values, n.min, n.max) == ("numeric", None, None, 0.0, 9.0)
    assert (words.type, words.distinct, words.values) == ("text", None, None)
    assert (few.type, few.distinct, few.values) == ("categorical", 2, ["a", "b"])


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


# ------------------------------------------------------------------------------------------- built-ins


def test_every_builtin_loads_and_is_described() -> None:
    assert set(datasets.BUILTINS) == {"iris", "wine", "breast_cancer", "digits", "diabetes"}
    for name in datasets.BUILTINS:
        table, info = datasets.builtin_table(name), datasets.builtin_info(name)
        assert info.format == "builtin" and info.size == 0 and len(info.sha256) == 64
        assert info.rows == table.num_rows > 0 and table.column_names[-1] == "target"
        assert [c.name for c in info.columns] == table.column_names
        assert all(c.type == "numeric" for c in info.columns)
        assert set(table.schema.types) == {pa.float64()}
    assert datasets.builtin_info("iris") is datasets.builtin_info("iris")  # cached


def test_iris_and_diabetes() -> None:
    iris = datasets.builtin_info("iris")
    assert iris.rows == 150 and len(iris.columns) == 5
    assert iris.column("target") == iris.columns[-1] and iris.columns[-1].values == [0.0, 1.0, 2.0]
    assert datasets.BUILTINS["iris"] == "classification" and datasets.BUILTINS["diabetes"] == "regression"
    target = datasets.builtin_info("diabetes").column("target")
    assert target is not None and target.type == "numeric" and target.min is not None and target.min > 0


def test_an_unknown_builtin_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        datasets.builtin_table("mnist")


def test_importing_the_module_loads_neither_scikit_learn_nor_tensorflow_nor_fastapi() -> None:
    code = "import sys, json, service.core.datasets; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {name.split(".")[0] for name in json.loads(out)}
    assert not loaded & {"sklearn", "tensorflow", "keras", "fastapi", "redis", "pandas"}
