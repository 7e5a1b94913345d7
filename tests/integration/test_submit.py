"""Submitting against a real Redis job store when the queue refuses the message."""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu.exceptions import OperationalError

from service.api import job_service
from service.api.job_parsing import parse_job
from service.core import queue
from service.core.api_keys import ApiKeyStore
from service.core.artifacts import ArtifactStore
from service.core.dataset_store import DatasetStore
from service.core.errors import Unavailable
from service.core.quotas import Quotas
from service.core.records import LEGACY_TENANT
from service.core.settings import Limits
from service.core.states import JobStatus
from service.core.store import JobStore
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def test_a_job_that_cannot_be_queued_is_failed_not_left_queued(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class RefusingBroker:
        """Celery's send_task as it fails when the broker cannot take the message."""

        def send_task(self, *args: object, **kwargs: object) -> None:
            raise OperationalError("broker unreachable")

    # queue.send_start_job itself runs: it turns kombu's error into QueueUnreachable, which submit catches.
    monkeypatch.setattr(queue, "get_celery", RefusingBroker)
    store = JobStore.from_url(redis_url, prefix="ktune-submit-test")
    job = parse_job((ROOT / "examples" / "xor-seed.json").read_bytes(), Limits())

    with pytest.raises(Unavailable) as raised:
        job_service.submit(
            store,
            DatasetStore(store),
            ArtifactStore(tmp_path),
            job,
            Limits(),
            LEGACY_TENANT,
            ApiKeyStore(store),
            Quotas(),
        )
    assert raised.value.status_code == 503
    assert "broker unreachable" not in raised.value.message, "the broker's own message is for the log"

    [job_id] = store.jobs_with_status(JobStatus.FAILED)
    job = store.get_job(job_id)
    assert job is not None and job.error is not None and job.error.code == "enqueue_failed"
    assert "could not be sent to the queue" in job.error.message
    assert "broker unreachable" not in job.error.message, "a client reads the job's error"
    assert store.jobs_with_status(JobStatus.QUEUED) == []
