"""The scikit-learn data sets offered as built-ins: each loads, is described like an upload, is cached."""

from __future__ import annotations

import pyarrow as pa
import pytest

from service.core import builtin_datasets


def test_every_builtin_loads_and_is_described() -> None:
    assert set(builtin_datasets.BUILTINS) == {"iris", "wine", "breast_cancer", "digits", "diabetes"}
    for name in builtin_datasets.BUILTINS:
        table, info = builtin_datasets.builtin_table(name), builtin_datasets.builtin_info(name)
        assert info.format == "builtin" and info.size == 0 and len(info.sha256) == 64
        assert info.rows == table.num_rows > 0 and table.column_names[-1] == "target"
        assert [c.name for c in info.columns] == table.column_names
        assert all(c.type == "numeric" for c in info.columns)
        assert set(table.schema.types) == {pa.float64()}
    assert builtin_datasets.builtin_info("iris") is builtin_datasets.builtin_info("iris")  # cached


def test_iris_and_diabetes() -> None:
    iris = builtin_datasets.builtin_info("iris")
    assert iris.rows == 150 and len(iris.columns) == 5
    assert iris.column("target") == iris.columns[-1] and iris.columns[-1].values == [0.0, 1.0, 2.0]
    assert builtin_datasets.BUILTINS["iris"] == "classification"
    assert builtin_datasets.BUILTINS["diabetes"] == "regression"
    target = builtin_datasets.builtin_info("diabetes").column("target")
    assert target is not None and target.type == "numeric" and target.min is not None and target.min > 0


def test_an_unknown_builtin_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        builtin_datasets.builtin_table("mnist")
