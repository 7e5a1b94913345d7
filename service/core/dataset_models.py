"""What a stored data set is said to hold, and the error that refuses a file, with the words of its messages.

Apart from the code that reads files so that the API's schemas, the dataset store and the worker share
these models, and the readers, the writer and the built-ins fill and raise them, without importing each
other. `service.core.datasets` re-exports the public names; the API imports them from here, which loads no
pyarrow (see `service.core.lazy_imports`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from service.core.errors import shorten

if TYPE_CHECKING:
    import pyarrow as pa

ColumnType = Literal["numeric", "categorical", "text"]
Format = Literal["csv", "parquet", "npz", "builtin"]

MAX_TRACKED_VALUES = 1000  # distinct values tracked per column; a string column with more is text

# The sets that ship inside scikit-learn (`service.core.builtin_datasets` loads them), by name, with the
# task they are for.
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


@dataclass(frozen=True)
class DatasetSource:
    """A data set a job names: its id or built-in name, what its upload found, and its rows (on demand)."""

    ref: str
    builtin: bool
    info: DatasetInfo
    table: Callable[[], pa.Table]


class DatasetFileError(ValueError):
    """The file is not a data set this service reads; `message` says why, naming the file, column, line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def reason_of(error: Exception) -> str:
    """The first line of `error`'s text (its type's name if it has none), fit for a DatasetFileError."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return clean_text(text)


def clean_text(text: str, limit: int = 300) -> str:
    """`text` shortened and without control characters: pyarrow quotes the offending row, maybe binary."""
    return "".join(char if char.isprintable() else "?" for char in shorten(text, limit))
