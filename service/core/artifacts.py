"""The artifact store: best models, trial checkpoints and uploaded data sets in a directory shared by the API
and workers."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

# A job's scratch: what its trials need only while it runs (epoch checkpoints and hyperband weights under
# checkpoints/, models saved by trials that turned out not to be the best under candidates/).
_SCRATCH_DIRS = ("checkpoints", "candidates")


class ArtifactStore:
    """Files under `root/jobs/{job_id}/`; a best model is replaced atomically so readers never see half."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def best_model_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "best-model.keras"

    def candidate_model_path(self, job_id: str, trial_id: str) -> Path:
        """Where a trial writes its model before it is known to be the best."""
        path = self.job_dir(job_id) / "candidates" / f"{trial_id}.keras"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint_path(self, job_id: str, trial_id: str) -> Path:
        """Best-epoch weights of a trial, for algorithms that continue a trial (hyperband)."""
        path = self.job_dir(job_id) / "checkpoints" / f"{trial_id}.weights.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def resume_path(self, job_id: str, trial_id: str) -> Path:
        """A running trial's latest epoch checkpoint, for continuing it on another worker."""
        return self.job_dir(job_id) / "checkpoints" / f"{trial_id}.resume.npz"

    def discard_resume(self, job_id: str, trial_id: str) -> None:
        """Delete a trial's epoch checkpoint once the trial has ended."""
        self.resume_path(job_id, trial_id).unlink(missing_ok=True)

    def promote(self, job_id: str, candidate: Path) -> Path:
        """Make a candidate the job's best model (an atomic rename on the same filesystem)."""
        target = self.best_model_path(job_id)
        os.replace(candidate, target)
        return target

    def job_ids(self) -> list[str]:
        """The ids of every job that has a directory here."""
        try:
            return sorted(entry.name for entry in os.scandir(self.root / "jobs") if entry.is_dir())
        except FileNotFoundError:
            return []

    def has_scratch(self, job_id: str) -> bool:
        """Whether the job still has files only its running trials need (checkpoints, candidates)."""
        return any((self.job_dir(job_id) / name).exists() for name in _SCRATCH_DIRS)

    def discard_scratch(self, job_id: str) -> None:
        """Delete the job's checkpoints, hyperband weights and candidate models; its best model stays."""
        for name in _SCRATCH_DIRS:
            shutil.rmtree(self.job_dir(job_id) / name, ignore_errors=True)

    def delete_job(self, job_id: str) -> None:
        """Delete every file of the job; deleting a job that has none does nothing."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def job_bytes(self, job_id: str) -> int:
        """Bytes of the job's files (models, candidates, checkpoints); a file gone meanwhile counts 0."""
        total = 0
        for path in self.job_dir(job_id).rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file():
                    total += path.stat().st_size
        return total

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.root / "datasets" / dataset_id

    def dataset_table_path(self, dataset_id: str) -> Path:
        """An uploaded data set in its stored form (an Arrow file workers memory-map)."""
        return self.dataset_dir(dataset_id) / "table.arrow"

    def upload_path(self, dataset_id: str) -> Path:
        """Where an upload is copied while it is read; gone once the data set is stored."""
        path = self.dataset_dir(dataset_id) / "upload.part"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def delete_dataset(self, dataset_id: str) -> None:
        shutil.rmtree(self.dataset_dir(dataset_id), ignore_errors=True)

    def dataset_ids(self) -> list[str]:
        """The ids of every data set that has a directory here (stored, or being uploaded)."""
        try:
            return sorted(entry.name for entry in os.scandir(self.root / "datasets") if entry.is_dir())
        except FileNotFoundError:
            return []

    def dataset_last_modified(self, dataset_id: str) -> float | None:
        """When the data set's directory or a file in it last changed (an upload writes its files)."""
        try:
            with os.scandir(self.dataset_dir(dataset_id)) as entries:
                times = [entry.stat().st_mtime for entry in entries]
            return max([self.dataset_dir(dataset_id).stat().st_mtime, *times])
        except FileNotFoundError:
            return None

    def last_modified(self, job_id: str) -> float | None:
        """The job directory's modification time (seconds since the epoch); None when there is none."""
        try:
            return self.job_dir(job_id).stat().st_mtime
        except FileNotFoundError:
            return None
