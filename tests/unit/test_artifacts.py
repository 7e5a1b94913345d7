"""The artifact store's file layout and deletion (service/core/artifacts.py), on a temporary directory."""

from __future__ import annotations

from pathlib import Path

from service.core.artifacts import ArtifactStore

JOB = "0b7e1f0c-5d1e-4b8a-9c61-2f1f4b5f7d11"
OTHER = "7d3a9c1e-2b4f-4e6a-8d0c-1a2b3c4d5e6f"


def _job_with_files(store: ArtifactStore, job_id: str) -> None:
    store.best_model_path(job_id).parent.mkdir(parents=True, exist_ok=True)
    store.best_model_path(job_id).write_bytes(b"best")
    store.candidate_model_path(job_id, "t1").write_bytes(b"candidate")
    store.checkpoint_path(job_id, "t1").write_bytes(b"hyperband weights")
    store.resume_path(job_id, "t2").write_bytes(b"epoch checkpoint")


def test_job_ids_lists_job_directories(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert store.job_ids() == [], "no jobs directory yet"
    _job_with_files(store, JOB)
    _job_with_files(store, OTHER)
    assert store.job_ids() == sorted([JOB, OTHER])


def test_discard_scratch_keeps_the_best_model(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    _job_with_files(store, JOB)
    assert store.has_scratch(JOB)
    store.discard_scratch(JOB)
    assert not store.has_scratch(JOB)
    assert [p.relative_to(store.job_dir(JOB)) for p in store.job_dir(JOB).rglob("*")] == [
        Path("best-model.keras")
    ]
    store.discard_scratch(JOB)  # twice is harmless


def test_delete_job_removes_its_directory_only(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    _job_with_files(store, JOB)
    _job_with_files(store, OTHER)
    store.delete_job(JOB)
    assert not store.job_dir(JOB).exists()
    assert store.last_modified(JOB) is None
    assert store.best_model_path(OTHER).read_bytes() == b"best"
    assert store.has_scratch(OTHER)
    store.delete_job(JOB)  # twice is harmless
