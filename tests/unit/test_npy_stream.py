"""`.npz` members read a block of rows at a time: what np.load gives, in either order, never unpickled."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from service.core.npy_stream import NpyMember


def archive(**arrays: np.ndarray) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return zipfile.ZipFile(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("order", ["C", "F"])
def test_rows_come_in_blocks_equal_to_the_whole_array(order: str) -> None:
    x = np.asarray(np.arange(35.0).reshape(7, 5), order=order)  # type: ignore[call-overload]
    member = NpyMember(archive(x=x), "x")
    assert member.shape == (7, 5) and member.fortran_order == (order == "F")
    blocks = [member.next_rows(3) for _ in range(3)]
    assert [len(b) for b in blocks] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(blocks), x)


def test_strings_and_version_2_headers_are_read() -> None:
    y = np.array(["setosa", "virginica"] * 3)
    member = NpyMember(archive(y=y), "y")
    np.testing.assert_array_equal(member.next_rows(10), y)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.arange(4.0), version=(2, 0))
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as writer:
        writer.writestr("v.npy", buffer.getvalue())
    assert NpyMember(zipfile.ZipFile(packed), "v").next_rows(4).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_an_object_array_is_known_from_its_header_alone() -> None:
    member = NpyMember(archive(y=np.array([object()], dtype=object)), "y")
    assert member.dtype.hasobject  # the caller refuses it; no data was read, nothing unpickled


def test_data_shorter_than_its_header_is_an_error() -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.arange(100.0))
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as writer:
        writer.writestr("x.npy", buffer.getvalue()[:-80])
    member = NpyMember(zipfile.ZipFile(packed), "x")
    with pytest.raises(ValueError, match="ends before"):
        member.next_rows(100)
