"""KTUNE_ARTIFACT_URL (service/core/artifact_url.py and its setting): which backend, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.core.artifact_url import S3Location, open_blobs, parse_artifact_url
from service.core.blobs import FilesystemBlobs
from service.core.settings import Settings


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("", None),
        ("  ", None),
        ("s3://ktune-artifacts", S3Location("ktune-artifacts", "")),
        ("s3://ktune-artifacts/", S3Location("ktune-artifacts", "")),
        ("s3://my.bucket-1/prod/ktune/", S3Location("my.bucket-1", "prod/ktune")),
    ],
)
def test_accepted(url: str, location: S3Location | None) -> None:
    assert parse_artifact_url(url) == location


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("/var/artifacts", "s3://bucket/prefix"),
        ("file:///var/artifacts", "s3://bucket/prefix"),
        ("gs://bucket/x", "s3://bucket/prefix"),
        ("s3://", "not an S3 bucket name"),
        ("s3://Upper/x", "not an S3 bucket name"),
        ("s3://a_b/x", "not an S3 bucket name"),
        ("s3://key:secret@bucket/x", "AWS_ACCESS_KEY_ID"),
        ("s3://bucket:9000/x", "AWS_ENDPOINT_URL"),
        ("s3://bucket/x?region=eu", "no query"),
        ("s3://bucket/a//b", "empty"),
        ("s3://bucket/a/../b", "'..'"),
    ],
)
def test_refused_with_the_fix(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("?", r"\?")):
        parse_artifact_url(url)


def test_the_setting_is_checked_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KTUNE_ARTIFACT_URL", "minio://bucket")
    with pytest.raises(ValidationError, match="artifact_url"):
        Settings()
    monkeypatch.setenv("KTUNE_ARTIFACT_URL", " s3://bucket/p ")
    assert Settings().artifact_url == "s3://bucket/p"
    monkeypatch.delenv("KTUNE_ARTIFACT_URL")
    assert Settings().artifact_url == ""


def test_the_filesystem_is_the_default(tmp_path: Path) -> None:
    blobs = open_blobs("", tmp_path)
    assert isinstance(blobs, FilesystemBlobs) and blobs.root == tmp_path
