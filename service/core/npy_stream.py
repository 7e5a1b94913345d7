"""Arrays of an `.npz` upload read from the archive a block of rows at a time, never whole in memory.

`np.load` reads a whole array at once, so an `.npz` of a gigabyte would be a gigabyte (and more) in the
API process. This reads each member's `.npy` header (format versions 1.0 and 2.0, what `np.savez` writes)
and then its data in blocks of rows. An object array is refused from its header alone: nothing is ever
unpickled. An array stored in Fortran order (column after column, e.g. a transposed view) cannot be read
by rows without holding it: it is read whole, which bounds its memory by its own size, as `np.load` would.
"""

from __future__ import annotations

import zipfile
from typing import IO

import numpy as np


class NpyMember:
    """One `.npy` member of an archive: its shape and dtype from its header, then its rows on demand."""

    def __init__(self, archive: zipfile.ZipFile, name: str) -> None:
        self.name = name
        self._stream: IO[bytes] = archive.open(f"{name}.npy")
        version = np.lib.format.read_magic(self._stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(self._stream)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(self._stream)
        else:
            raise ValueError(
                f"array {name!r} is in .npy format {version[0]}.{version[1]}; formats 1.0 and 2.0 are read"
            )
        self.shape: tuple[int, ...] = tuple(header[0])
        self.fortran_order: bool = bool(header[1])
        self.dtype: np.dtype = np.dtype(header[2])
        self._whole: np.ndarray | None = None
        self._read_rows = 0

    def close(self) -> None:
        self._stream.close()

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    def next_rows(self, count: int) -> np.ndarray:
        """The next `count` rows (fewer at the end). Raises ValueError when the data stops short."""
        count = min(count, self.rows - self._read_rows)
        start, self._read_rows = self._read_rows, self._read_rows + count
        if self.fortran_order and len(self.shape) > 1:
            if self._whole is None:
                self._whole = self._array(self._read(int(np.prod(self.shape))), self.shape, "F")
            return self._whole[start : start + count]
        width = int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1
        return self._array(self._read(count * width), (count, *self.shape[1:]), "C")

    def _read(self, items: int) -> bytes:
        wanted = items * self.dtype.itemsize
        chunks, got = [], 0
        while got < wanted:
            chunk = self._stream.read(wanted - got)
            if not chunk:
                raise ValueError(f"array {self.name!r} ends before the {self.shape} its header promises")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _array(self, data: bytes, shape: tuple[int, ...], order: str) -> np.ndarray:
        flat: np.ndarray = np.frombuffer(data, dtype=self.dtype)
        return flat.reshape(shape, order="F" if order == "F" else "C")
