"""Helpers for the data-set tests: write an upload, ingest it as the API does, or collect ingest's refusal.

The readers and the writer are driven through `datasets.ingest`, their one caller, so that each test also
sees what the caller guarantees: nothing left behind where a refused file would have been stored.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
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


def rows_csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()
