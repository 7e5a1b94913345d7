"""Where artifact bytes live: one small interface (put, read as chunks, exists, size, delete, list) with a
local-filesystem backend here and an S3 one in `blobs_s3`.

Keys are relative `/`-separated paths (`jobs/{id}/best-model.keras`); `service.core.artifacts` decides
them. A stored object is replaced whole: a reader sees the old bytes or the new, never half.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

CHUNK_BYTES = 1 << 20


class BlobNotFound(KeyError):
    """No object under that key."""


class BlobStoreError(OSError):
    """The backend failed (unreachable, refused, misconfigured). An OSError, so that code which already
    survives a full disk (checkpoints) survives an unreachable store the same way."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch


class BlobStream:
    """An opened object: its size, known before the first byte, and its bytes a chunk at a time."""

    def __init__(self, size: int, chunks: Iterator[bytes], close: IO[bytes] | None = None) -> None:
        self.size = size
        self._chunks = chunks
        self._handle = close

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        finally:
            self.close()

    def read(self) -> bytes:
        """All of it (for small objects and tests; models go through iteration)."""
        return b"".join(self)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class BlobStore(Protocol):
    """What the artifact store needs of a backend. Every method may raise BlobStoreError."""

    def put_file(self, key: str, path: Path) -> None:
        """Store a copy of a local file under `key`, replacing what was there."""

    def move_file(self, key: str, path: Path) -> None:
        """Store a local file under `key` and remove the local file (a rename where the backend can)."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing what was there."""

    def open(self, key: str) -> BlobStream:
        """The object opened for reading. Raises BlobNotFound."""

    def download(self, key: str, path: Path) -> None:
        """Write the object to a local file, atomically (a reader of `path` never sees half). Raises
        BlobNotFound."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """Bytes of the object. Raises BlobNotFound."""

    def delete(self, key: str) -> None:
        """Delete the object; deleting one that is not there does nothing."""

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object whose key starts with `prefix` (give it a trailing `/` for a folder)."""

    def list(self, prefix: str) -> list[BlobInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""

    def local_path(self, key: str) -> Path | None:
        """The local file that holds the object when the backend keeps objects as local files; else None."""


def replace_atomically(source: Path, target: Path) -> None:
    """Move `source` over `target`: a rename when on one filesystem, else a copy beside `target` renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        partial = _partial_beside(target)
        shutil.copyfile(source, partial)
        os.replace(partial, target)
        source.unlink(missing_ok=True)


def _partial_beside(target: Path) -> Path:
    # Hidden, and unique per writer: two processes writing one key never share a partial file.
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial")


class FilesystemBlobs:
    """Objects as files under `root` (the key is the relative path); the default backend."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"not a relative artifact key: {key!r}")
        return self.root / key

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        if path.resolve() == target.resolve():
            return  # written in place already
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = _partial_beside(target)
        shutil.copyfile(path, partial)
        os.replace(partial, target)

    def move_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        if path.resolve() != target.resolve():
            replace_atomically(path, target)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = _partial_beside(target)
        partial.write_bytes(data)
        os.replace(partial, target)

    def open(self, key: str) -> BlobStream:
        try:
            handle = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFound(key) from exc
        size = os.fstat(handle.fileno()).st_size
        return BlobStream(size, iter(lambda: handle.read(CHUNK_BYTES), b""), handle)

    def download(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise BlobNotFound(key)
        if path.resolve() == source.resolve():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = _partial_beside(path)
        shutil.copyfile(source, partial)
        os.replace(partial, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            path = self._path(key)
            if not path.is_file():
                raise BlobNotFound(key)
            return path.stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            self._path(key).unlink()

    def delete_prefix(self, prefix: str) -> None:
        folder, _, start = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        if not start:  # a whole folder
            shutil.rmtree(base, ignore_errors=True)
            return
        for info in self.list(prefix):
            self.delete(info.key)

    def list(self, prefix: str) -> list[BlobInfo]:
        folder = prefix.rpartition("/")[0]
        base = self.root / folder if folder else self.root
        found = []
        for dirpath, _, filenames in os.walk(base):
            for name in filenames:
                if name.endswith(".partial"):
                    continue  # a write under way
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    stat = path.stat()
                    found.append(BlobInfo(key, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda info: info.key)
