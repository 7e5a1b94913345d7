"""The S3 backend of the artifact store: objects in a bucket under a key prefix, on AWS or any server that
speaks the S3 protocol (MinIO, Ceph, moto).

Endpoint, region and credentials come from boto3's usual sources (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role). Imported only when
KTUNE_ARTIFACT_URL names S3, so the filesystem default never loads boto3.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.core.blobs import CHUNK_BYTES, BlobInfo, BlobNotFound, BlobStoreError, BlobStream

_MISSING = {"404", "NoSuchKey", "NotFound"}
# S3's DeleteObjects takes at most this many keys per request.
_DELETE_BATCH = 1000


def _client() -> Any:
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 5, "mode": "standard"},
        # Most self-hosted S3 servers (MinIO, moto, Ceph) are reached by address, where virtual-hosted
        # bucket names do not resolve; AWS itself answers path-style requests too.
        s3={"addressing_style": "path" if os.environ.get("AWS_ENDPOINT_URL") else "auto"},
    )
    return boto3.session.Session().client("s3", config=config)


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING


def _failure(action: str, key: str, exc: Exception) -> BlobStoreError:
    # The message names the action and key; boto's own text (endpoint, request ids) goes to the log only.
    return BlobStoreError(f"S3 {action} of {key!r} failed: {type(exc).__name__}")


class S3Blobs:
    """Objects `s3://{bucket}/{prefix}{key}`. The boto3 client is made on first use, in the process that
    uses it (a Celery pool process, not the parent it was forked from)."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._lock = threading.Lock()
        self._made: Any = None

    @property
    def client(self) -> Any:
        with self._lock:
            if self._made is None:
                self._made = _client()
            return self._made

    def _name(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"not a relative artifact key: {key!r}")
        return self.prefix + key

    def local_path(self, key: str) -> Path | None:
        return None

    def put_file(self, key: str, path: Path) -> None:
        try:
            # Multipart above boto3's threshold, so a large model is never read whole into memory.
            self.client.upload_file(str(path), self.bucket, self._name(key))
        except (BotoCoreError, ClientError) as exc:
            raise _failure("upload", key, exc) from exc

    def move_file(self, key: str, path: Path) -> None:
        self.put_file(key, path)
        path.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise _failure("upload", key, exc) from exc

    def open(self, key: str) -> BlobStream:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if _missing(exc):
                raise BlobNotFound(key) from exc
            raise _failure("download", key, exc) from exc
        except BotoCoreError as exc:
            raise _failure("download", key, exc) from exc
        body = response["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK_BYTES)
            except (BotoCoreError, ClientError) as exc:
                raise _failure("download", key, exc) from exc

        return BlobStream(int(response["ContentLength"]), chunks(), body)

    def download(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        try:
            self.client.download_file(self.bucket, self._name(key), str(partial))
        except ClientError as exc:
            partial.unlink(missing_ok=True)
            if _missing(exc):
                raise BlobNotFound(key) from exc
            raise _failure("download", key, exc) from exc
        except BotoCoreError as exc:
            partial.unlink(missing_ok=True)
            raise _failure("download", key, exc) from exc
        os.replace(partial, path)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
            return head
        except ClientError as exc:
            if _missing(exc):
                return None
            raise _failure("lookup", key, exc) from exc
        except BotoCoreError as exc:
            raise _failure("lookup", key, exc) from exc

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise BlobNotFound(key)
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except (BotoCoreError, ClientError) as exc:
            raise _failure("delete", key, exc) from exc

    def delete_prefix(self, prefix: str) -> None:
        names = [self.prefix + info.key for info in self.list(prefix)]
        for start in range(0, len(names), _DELETE_BATCH):
            batch = [{"Key": name} for name in names[start : start + _DELETE_BATCH]]
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (BotoCoreError, ClientError) as exc:
                raise _failure("delete", prefix, exc) from exc
            if response.get("Errors"):
                first = response["Errors"][0]
                raise BlobStoreError(f"S3 delete under {prefix!r} failed: {first.get('Code')}")

    def list(self, prefix: str) -> list[BlobInfo]:
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = str(item["Key"])[len(self.prefix) :]
                    found.append(BlobInfo(key, int(item["Size"]), item["LastModified"].timestamp()))
        except (BotoCoreError, ClientError) as exc:
            raise _failure("listing", prefix, exc) from exc
        return sorted(found, key=lambda info: info.key)
