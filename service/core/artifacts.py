"""The artifact store: best models, trial checkpoints and uploaded data sets, kept by a backend
(`service.core.blobs`: files under KTUNE_ARTIFACT_DIR by default, or S3), plus each process's local
working copies.

Keys: `jobs/{job_id}/best-model.keras`, `jobs/{job_id}/checkpoints/{trial}.weights.h5` (hyperband),
`jobs/{job_id}/checkpoints/{trial}.resume.npz` (epoch checkpoints), `datasets/{id}/table.arrow`.

Keras, numpy and Arrow read and write local files, so a process works on a local copy at
`{artifact_dir}/{key}`: it writes there, then publishes; it fetches before it reads. With the filesystem
backend that copy is the stored file itself, and publishing and fetching do nothing. With S3 the local
directory is scratch and cache: candidate models (promoted or dropped by the worker that trained them) and
upload parts never leave it, and a worker keeps a data set's table there, keyed by its id, once fetched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from service.core.artifact_url import open_blobs
from service.core.blobs import BlobInfo, BlobNotFound, BlobStore, BlobStream, FilesystemBlobs
from service.core.settings import Settings

# A job's scratch: what its trials need only while it runs (epoch checkpoints and hyperband weights under
# checkpoints/, models saved by trials that turned out not to be the best under candidates/).
_SCRATCH_DIRS = ("checkpoints", "candidates")


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store KTUNE_ARTIFACT_URL and KTUNE_ARTIFACT_DIR configure."""
    return ArtifactStore(settings.artifact_dir, open_blobs(settings.artifact_url, settings.artifact_dir))


class ArtifactStore:
    """A job's and a data set's objects by key, and this process's local copies of them under `root`."""

    def __init__(self, root: str | Path, blobs: BlobStore | None = None) -> None:
        self.root = Path(root)
        self.blobs: BlobStore = blobs if blobs is not None else FilesystemBlobs(self.root)
        # Whether objects live elsewhere than the local copies (then copies are published and fetched).
        self.remote = self.blobs.local_path("jobs") != self.root / "jobs"

    # --- local copies -------------------------------------------------------------------------------

    def local_path(self, key: str) -> Path:
        """Where this process reads and writes the object `key` (its parent directory exists)."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, key: str, keep: bool = False) -> None:
        """Store the file written at `local_path(key)` as `key`. With a remote backend the local file then
        goes, unless `keep` (a cached copy of an object that never changes). Raises BlobStoreError."""
        if not self.remote:
            return
        if keep:
            self.blobs.put_file(key, self.root / key)
        else:
            self.blobs.move_file(key, self.root / key)

    def fetch(self, key: str, reuse: bool = False) -> Path:
        """The local copy of `key`, downloaded first (unless `reuse` and one is here already: for objects
        that never change). When there is no such object the path does not exist. Raises BlobStoreError."""
        if not self.remote:
            return self.root / key
        path = self.local_path(key)
        if reuse and path.exists():
            return path
        try:
            self.blobs.download(key, path)
        except BlobNotFound:
            path.unlink(missing_ok=True)  # a stale copy of a deleted object is no copy
        return path

    @contextlib.contextmanager
    def fetched(self, key: str) -> Iterator[Path]:
        """The object `key` as a local file while the block runs (with a remote backend a fresh download,
        removed afterwards). The path does not exist when there is no such object. Raises BlobStoreError."""
        path = self.fetch(key)
        try:
            yield path
        finally:
            if self.remote:
                path.unlink(missing_ok=True)

    # --- jobs ---------------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        """The job's local directory (its stored files too, with the filesystem backend)."""
        return self.root / "jobs" / job_id

    @staticmethod
    def best_model_key(job_id: str) -> str:
        return f"jobs/{job_id}/best-model.keras"

    def best_model_path(self, job_id: str) -> Path:
        """The best model's local copy (the stored file, with the filesystem backend)."""
        return self.root / self.best_model_key(job_id)

    def open_best_model(self, job_id: str) -> BlobStream:
        """The job's best model for reading a chunk at a time. Raises BlobNotFound, BlobStoreError."""
        return self.blobs.open(self.best_model_key(job_id))

    @staticmethod
    def final_model_key(job_id: str) -> str:
        """The model POST /v1/jobs/{id}/finalize trains (`worker.finalization`)."""
        return f"jobs/{job_id}/final-model.keras"

    @staticmethod
    def final_model_card_key(job_id: str) -> str:
        return f"jobs/{job_id}/final-model-card.json"

    def open(self, key: str) -> BlobStream:
        """The object `key` for reading a chunk at a time. Raises BlobNotFound, BlobStoreError."""
        return self.blobs.open(key)

    def candidate_model_path(self, job_id: str, trial_id: str) -> Path:
        """Where a trial writes its model before it is known to be the best (always local)."""
        return self.local_path(f"jobs/{job_id}/candidates/{trial_id}.keras")

    def promote(self, job_id: str, candidate: Path) -> None:
        """Make a candidate the job's best model; readers see the old one or the new, never half."""
        self.blobs.move_file(self.best_model_key(job_id), candidate)

    @staticmethod
    def checkpoint_key(job_id: str, trial_id: str) -> str:
        """Best-epoch weights of a trial, for algorithms that continue a trial (hyperband)."""
        return f"jobs/{job_id}/checkpoints/{trial_id}.weights.h5"

    def checkpoint_path(self, job_id: str, trial_id: str) -> Path:
        """Where a trial writes its hyperband weights; `publish(checkpoint_key(...))` stores them and
        `fetched(checkpoint_key(...))` brings them back to load."""
        return self.local_path(self.checkpoint_key(job_id, trial_id))

    @staticmethod
    def resume_key(job_id: str, trial_id: str) -> str:
        """A running trial's latest epoch checkpoint, for continuing it on another worker."""
        return f"jobs/{job_id}/checkpoints/{trial_id}.resume.npz"

    def resume_path(self, job_id: str, trial_id: str) -> Path:
        """Where a running trial writes its epoch checkpoint; `publish(resume_key(...))` stores it and
        `fetched(resume_key(...))` brings the latest back."""
        return self.root / self.resume_key(job_id, trial_id)  # its writer makes the directory

    def discard_resume(self, job_id: str, trial_id: str) -> None:
        """Delete a trial's epoch checkpoint once the trial has ended."""
        key = self.resume_key(job_id, trial_id)
        self.blobs.delete(key)
        if self.remote:
            (self.root / key).unlink(missing_ok=True)

    def _job_dirs(self) -> set[str]:
        stored = {info.key.split("/")[1] for info in self.blobs.list("jobs/")}
        try:
            local = {entry.name for entry in os.scandir(self.root / "jobs") if entry.is_dir()}
        except FileNotFoundError:
            local = set()
        return stored | local

    def job_ids(self) -> list[str]:
        """The ids of every job that has objects stored, or a local directory here."""
        return sorted(self._job_dirs())

    def has_scratch(self, job_id: str) -> bool:
        """Whether the job still has files only its running trials need (checkpoints, candidates)."""
        return any(
            self.blobs.list(f"jobs/{job_id}/{name}/") or (self.job_dir(job_id) / name).exists()
            for name in _SCRATCH_DIRS
        )

    def discard_scratch(self, job_id: str) -> None:
        """Delete the job's checkpoints, hyperband weights and candidate models; its best model stays."""
        for name in _SCRATCH_DIRS:
            shutil.rmtree(self.job_dir(job_id) / name, ignore_errors=True)
            self.blobs.delete_prefix(f"jobs/{job_id}/{name}/")

    def delete_job(self, job_id: str) -> None:
        """Delete every object and local file of the job; deleting a job that has none does nothing."""
        # Local files first: an unreachable store then leaves only objects, which the cleanup finds.
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        self.blobs.delete_prefix(f"jobs/{job_id}/")

    def job_bytes(self, job_id: str) -> int:
        """Bytes of the job's stored objects (best model, checkpoints; candidates with the filesystem
        backend, where they are stored files too)."""
        return sum(info.size for info in self.blobs.list(f"jobs/{job_id}/"))

    def last_modified(self, job_id: str) -> float | None:
        """When the job's objects or local directory last changed (seconds since the epoch); None when
        it has neither."""
        return _latest(self.blobs.list(f"jobs/{job_id}/"), self.job_dir(job_id), entries=False)

    # --- data sets ----------------------------------------------------------------------------------

    def dataset_dir(self, dataset_id: str) -> Path:
        """The data set's local directory (its stored table too, with the filesystem backend)."""
        return self.root / "datasets" / dataset_id

    @staticmethod
    def dataset_table_key(dataset_id: str) -> str:
        return f"datasets/{dataset_id}/table.arrow"

    def dataset_table_path(self, dataset_id: str) -> Path:
        """An uploaded data set's table (an Arrow file workers memory-map), as written before publishing."""
        return self.local_path(self.dataset_table_key(dataset_id))

    def local_dataset_table(self, dataset_id: str) -> Path:
        """The data set's table as a local file to memory-map, fetched once per machine: a table never
        changes, and a new upload gets a new id. The path does not exist when the data set is gone."""
        return self.fetch(self.dataset_table_key(dataset_id), reuse=True)

    def upload_path(self, dataset_id: str) -> Path:
        """Where an upload is copied while it is read; gone once the data set is stored (always local)."""
        return self.local_path(f"datasets/{dataset_id}/upload.part")

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete the data set's objects and this machine's copies (other machines' cached tables stay,
        unused: nothing names a deleted data set's id again)."""
        shutil.rmtree(self.dataset_dir(dataset_id), ignore_errors=True)
        self.blobs.delete_prefix(f"datasets/{dataset_id}/")

    def dataset_ids(self) -> list[str]:
        """The ids of every data set with objects stored, or a local directory here (stored, being
        uploaded, or cached)."""
        stored = {info.key.split("/")[1] for info in self.blobs.list("datasets/")}
        try:
            local = {entry.name for entry in os.scandir(self.root / "datasets") if entry.is_dir()}
        except FileNotFoundError:
            local = set()
        return sorted(stored | local)

    def dataset_last_modified(self, dataset_id: str) -> float | None:
        """When the data set's objects, its local directory or a file in it last changed (an upload
        writes its files)."""
        return _latest(self.blobs.list(f"datasets/{dataset_id}/"), self.dataset_dir(dataset_id), entries=True)


def _latest(objects: list[BlobInfo], folder: Path, entries: bool) -> float | None:
    """The newest of the objects' and the local folder's modification times (with its entries')."""
    times = [info.modified for info in objects]
    with contextlib.suppress(FileNotFoundError):
        times.append(folder.stat().st_mtime)
        if entries:
            with os.scandir(folder) as found:
                times.extend(entry.stat().st_mtime for entry in found)
    return max(times, default=None)
