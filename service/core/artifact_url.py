"""KTUNE_ARTIFACT_URL: which backend keeps artifacts. Empty means files under KTUNE_ARTIFACT_DIR (shared by
the API and every worker); `s3://bucket/prefix` means objects in an S3 bucket, KTUNE_ARTIFACT_DIR then
being each process's local scratch and cache."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from service.core.blobs import BlobStore, FilesystemBlobs

# S3's rule for bucket names (3-63 of lowercase letters, digits, dots and hyphens, a letter or digit at each
# end); stricter servers refuse more, none accepts less.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or without leading and trailing slashes


def parse_artifact_url(url: str) -> S3Location | None:
    """None for "" (the local filesystem); the bucket and prefix of `s3://bucket[/prefix]`.

    Raises ValueError with a sentence saying what to write instead.
    """
    text = url.strip()
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme != "s3":
        raise ValueError(
            f"{text!r}: give s3://bucket/prefix for S3, or leave it empty for files under KTUNE_ARTIFACT_DIR"
        )
    if "@" in parts.netloc or parts.port is not None:
        raise ValueError(
            "s3:// names only a bucket: give the endpoint in AWS_ENDPOINT_URL and credentials in "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: an artifact URL takes no query or fragment (s3://bucket/prefix)")
    bucket = parts.hostname or ""
    if not _BUCKET.match(parts.netloc):
        raise ValueError(
            f"{bucket or parts.netloc!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots and "
            "hyphens): s3://bucket/prefix"
        )
    prefix = parts.path.strip("/")
    if any(segment in ("", ".", "..") for segment in prefix.split("/")) and prefix:
        raise ValueError(f"{parts.path!r}: the prefix may not have empty, '.' or '..' parts")
    return S3Location(parts.netloc, prefix)


def open_blobs(url: str, artifact_dir: str | Path) -> BlobStore:
    """The backend KTUNE_ARTIFACT_URL names. Raises ValueError for a URL `parse_artifact_url` refuses."""
    location = parse_artifact_url(url)
    if location is None:
        return FilesystemBlobs(artifact_dir)
    from service.core.blobs_s3 import S3Blobs  # boto3 is loaded only by deployments that use it

    return S3Blobs(location.bucket, location.prefix)
