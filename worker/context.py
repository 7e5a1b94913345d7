"""Worker-wide resources, created once per process, and per-job specs cached in it."""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

from service.core.artifacts import ArtifactStore, artifact_store
from service.core.settings import Settings, get_settings
from service.core.spec import JobSpec
from service.core.store import JobStore


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    store: JobStore
    artifacts: ArtifactStore

    @property
    def worker_name(self) -> str:
        """host:pid of this process, as trials record it."""
        return f"{socket.gethostname()}:{os.getpid()}"


@lru_cache(maxsize=1)
def get_context() -> WorkerContext:
    settings = get_settings()
    return WorkerContext(
        settings=settings,
        store=JobStore.from_url(settings.redis_url, settings.key_prefix),
        artifacts=artifact_store(settings),
    )


_SPECS: OrderedDict[str, JobSpec] = OrderedDict()


def load_spec(store: JobStore, job_id: str) -> JobSpec:
    """The job's spec (without its data: `worker.data` loads that), validated once per process.

    Raises KeyError.
    """
    if job_id in _SPECS:
        _SPECS.move_to_end(job_id)
        return _SPECS[job_id]
    record = store.get_job(job_id)
    if record is None:
        raise KeyError(job_id)
    spec = JobSpec.model_validate(record.spec)
    _SPECS[job_id] = spec
    while len(_SPECS) > 8:
        _SPECS.popitem(last=False)
    return spec
