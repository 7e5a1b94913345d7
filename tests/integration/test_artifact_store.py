"""One contract for every artifact backend (service/core/blobs.py, blobs_s3.py) and for the artifact store
over each (service/core/artifacts.py): the filesystem, and S3 on a real S3-protocol server (moto's
standalone server, started by the suite)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service.core.artifacts import ArtifactStore, artifact_store
from service.core.blobs import CHUNK_BYTES, BlobNotFound, BlobStore, FilesystemBlobs
from service.core.blobs_s3 import S3Blobs
from service.core.settings import Settings
from tests.integration.conftest import new_bucket

pytestmark = pytest.mark.integration

JOB, OTHER_JOB = "0b7e1f0c-5d1e-4b8a-9c61-2f1f4b5f7d11", "0b7e1f0c-5d1e-4b8a-9c61-2f1f4b5f7d1"
DATASET = "7d3a9c1e-2b4f-4e6a-8d0c-1a2b3c4d5e6f"


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "s3":
        request.getfixturevalue("s3_settings")
    return str(request.param)


@pytest.fixture
def blobs(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> BlobStore:
    if backend == "s3":
        return S3Blobs(new_bucket(request.getfixturevalue("s3_env")), "deployment/a")
    return FilesystemBlobs(tmp_path / "store")


# A machine of the deployment: its own local directory, the deployment's one backend.
Machine = Callable[[str], ArtifactStore]


@pytest.fixture
def machine(blobs: BlobStore, backend: str, tmp_path: Path) -> Machine:
    def on(name: str) -> ArtifactStore:
        if backend == "filesystem":  # the default: the stored files are everyone's local files
            assert isinstance(blobs, FilesystemBlobs)
            return ArtifactStore(blobs.root)
        return ArtifactStore(tmp_path / name, blobs)

    return on


# --- the backend interface ---------------------------------------------------------------------------


def test_put_and_read_back(blobs: BlobStore, tmp_path: Path) -> None:
    blobs.put_bytes("jobs/a/x.bin", b"first")
    blobs.put_bytes("jobs/a/x.bin", b"second")  # replaced whole
    assert blobs.exists("jobs/a/x.bin") and blobs.size("jobs/a/x.bin") == 6
    stream = blobs.open("jobs/a/x.bin")
    assert stream.size == 6 and stream.read() == b"second"
    target = tmp_path / "down" / "x.bin"
    blobs.download("jobs/a/x.bin", target)
    assert target.read_bytes() == b"second"


def test_a_large_object_streams_in_bounded_chunks(blobs: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 7)  # just over two chunks
    source = tmp_path / "model.keras"
    source.write_bytes(data)
    blobs.put_file("jobs/a/model.keras", source)
    assert source.exists(), "put_file copies"
    stream = blobs.open("jobs/a/model.keras")
    assert stream.size == len(data)
    chunks = list(stream)
    assert len(chunks) >= 3 and max(len(c) for c in chunks) <= CHUNK_BYTES
    assert b"".join(chunks) == data


def test_move_file_removes_the_local_file(blobs: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "candidate.keras"
    source.write_bytes(b"candidate")
    blobs.move_file("jobs/a/best.keras", source)
    assert not source.exists()
    assert blobs.open("jobs/a/best.keras").read() == b"candidate"


def test_missing_objects(blobs: BlobStore, tmp_path: Path) -> None:
    assert not blobs.exists("jobs/none/x")
    with pytest.raises(BlobNotFound):
        blobs.open("jobs/none/x")
    with pytest.raises(BlobNotFound):
        blobs.size("jobs/none/x")
    with pytest.raises(BlobNotFound):
        blobs.download("jobs/none/x", tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*")), "no partial file left"
    blobs.delete("jobs/none/x")  # harmless
    blobs.delete_prefix("jobs/none/")


def test_list_and_delete_by_prefix(blobs: BlobStore) -> None:
    before = time.time() - 5
    for key in ("jobs/a/best.keras", "jobs/a/checkpoints/t1.h5", "jobs/ab/best.keras", "datasets/a/t"):
        blobs.put_bytes(key, key.encode())
    listed = blobs.list("jobs/a/")
    assert [info.key for info in listed] == ["jobs/a/best.keras", "jobs/a/checkpoints/t1.h5"]
    assert [info.size for info in listed] == [len(b"jobs/a/best.keras"), len(b"jobs/a/checkpoints/t1.h5")]
    assert all(before <= info.modified <= time.time() + 5 for info in listed)
    assert [info.key for info in blobs.list("jobs/")][-1] == "jobs/ab/best.keras"
    blobs.delete_prefix("jobs/a/checkpoints/")
    assert [info.key for info in blobs.list("jobs/a/")] == ["jobs/a/best.keras"]
    blobs.delete_prefix("jobs/a/")
    assert [info.key for info in blobs.list("jobs/")] == ["jobs/ab/best.keras"], "jobs/ab/ is another job"
    blobs.delete("jobs/ab/best.keras")
    assert blobs.list("jobs/") == [] and blobs.exists("datasets/a/t")


def test_keys_stay_inside_the_store(blobs: BlobStore) -> None:
    for key in ("../escape", "/abs", "jobs/../../x", ""):
        with pytest.raises(ValueError):
            blobs.put_bytes(key, b"x")


def test_s3_prefixes_keep_deployments_apart(s3_settings: dict[str, str]) -> None:
    bucket = new_bucket(s3_settings)
    one, two = S3Blobs(bucket, "one"), S3Blobs(bucket, "/two/")
    one.put_bytes("jobs/a/x", b"1")
    two.put_bytes("jobs/a/x", b"2")
    assert [i.key for i in one.list("")] == ["jobs/a/x"] and one.open("jobs/a/x").read() == b"1"
    one.delete_prefix("jobs/")
    assert two.open("jobs/a/x").read() == b"2"


# --- the artifact store over each backend -------------------------------------------------------------


def test_best_model_promoted_and_counted(machine: Machine) -> None:
    worker = machine("worker")
    candidate = worker.candidate_model_path(JOB, "t1")
    candidate.write_bytes(b"model bytes")
    weights = worker.checkpoint_path(JOB, "t1")
    weights.write_bytes(b"hyperband weights")
    worker.publish(worker.checkpoint_key(JOB, "t1"))
    worker.promote(JOB, candidate)
    assert not candidate.exists()
    api = machine("api")
    assert api.open_best_model(JOB).read() == b"model bytes"
    assert api.job_bytes(JOB) == len(b"model bytes") + len(b"hyperband weights")
    assert api.job_ids() == [JOB] and api.has_scratch(JOB)
    assert api.last_modified(JOB) is not None
    with pytest.raises(BlobNotFound):
        api.open_best_model(OTHER_JOB)


def test_checkpoints_reach_another_worker(machine: Machine, backend: str) -> None:
    first, second = machine("first"), machine("second")
    path = first.resume_path(JOB, "t1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"epoch 5")
    first.publish(first.resume_key(JOB, "t1"))
    path.write_bytes(b"epoch 9")
    first.publish(first.resume_key(JOB, "t1"))
    with second.fetched(second.resume_key(JOB, "t1")) as fetched:
        assert fetched.read_bytes() == b"epoch 9", "the latest checkpoint, not a cached one"
    assert fetched.exists() is (backend == "filesystem"), "a downloaded copy goes after use"
    second.discard_resume(JOB, "t1")
    with first.fetched(first.resume_key(JOB, "t1")) as fetched:
        assert not fetched.exists()


def test_scratch_goes_and_the_best_model_stays(machine: Machine) -> None:
    worker = machine("worker")
    for trial in ("t1", "t2"):
        worker.checkpoint_path(JOB, trial).write_bytes(b"weights")
        worker.publish(worker.checkpoint_key(JOB, trial))
    best = worker.candidate_model_path(JOB, "t1")
    best.write_bytes(b"best")
    worker.promote(JOB, best)
    worker.candidate_model_path(JOB, "t2").write_bytes(b"not the best")
    api = machine("api")
    assert api.has_scratch(JOB)
    api.discard_scratch(JOB)
    assert not api.has_scratch(JOB)
    assert api.open_best_model(JOB).read() == b"best"
    assert api.job_bytes(JOB) == len(b"best")


def test_deleting_a_job_deletes_its_objects_only(machine: Machine) -> None:
    worker = machine("worker")
    for job in (JOB, OTHER_JOB):
        candidate = worker.candidate_model_path(job, "t1")
        candidate.write_bytes(b"model")
        worker.promote(job, candidate)
    api = machine("api")
    assert api.job_ids() == sorted([JOB, OTHER_JOB])
    api.delete_job(JOB)
    assert api.job_ids() == [OTHER_JOB]
    assert api.job_bytes(JOB) == 0 and api.last_modified(JOB) is None
    assert api.open_best_model(OTHER_JOB).read() == b"model"
    api.delete_job(JOB)  # twice is harmless


def test_a_data_set_table_is_fetched_once_and_deleted_everywhere(machine: Machine, backend: str) -> None:
    api = machine("api")
    api.upload_path(DATASET).write_bytes(b"a,b\n1,2\n")
    api.dataset_table_path(DATASET).write_bytes(b"arrow table")
    api.publish(api.dataset_table_key(DATASET), keep=True)
    api.upload_path(DATASET).unlink()
    assert api.local_dataset_table(DATASET).read_bytes() == b"arrow table", "the API keeps its copy"
    worker = machine("worker")
    local = worker.local_dataset_table(DATASET)
    assert local.read_bytes() == b"arrow table"
    assert worker.local_dataset_table(DATASET) == local
    assert worker.dataset_ids() == [DATASET] and worker.dataset_last_modified(DATASET) is not None
    api.delete_dataset(DATASET)
    assert api.dataset_ids() == [] and api.dataset_last_modified(DATASET) is None
    if backend == "s3":
        # The worker's cached copy outlives the data set (documented), but a fresh machine finds nothing.
        assert not machine("fresh").local_dataset_table(DATASET).exists()


def test_the_settings_choose_the_backend(s3_settings: dict[str, str], tmp_path: Path) -> None:
    bucket = new_bucket(s3_settings)
    on_s3 = artifact_store(Settings(artifact_dir=str(tmp_path / "a"), artifact_url=f"s3://{bucket}/ktune"))
    assert on_s3.remote and isinstance(on_s3.blobs, S3Blobs) and on_s3.blobs.prefix == "ktune/"
    on_disk = artifact_store(Settings(artifact_dir=str(tmp_path / "b")))
    assert not on_disk.remote and isinstance(on_disk.blobs, FilesystemBlobs)
    candidate = on_s3.candidate_model_path(JOB, "t1")
    candidate.write_bytes(b"model")
    on_s3.promote(JOB, candidate)
    assert S3Blobs(bucket).open(f"ktune/jobs/{JOB}/best-model.keras").read() == b"model"
