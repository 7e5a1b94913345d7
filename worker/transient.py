"""Errors that are no fault of the job: a task or search step meeting one is tried again later.

Free of TensorFlow imports, so Celery's parent process can name them in the tasks' retry rules.
"""

from __future__ import annotations

import redis
from kombu.exceptions import OperationalError

from service.core.blobs import BlobStoreError
from service.core.queue import QueueUnreachable


class SearchBusy(Exception):
    """Another step of the job's search held its lock for longer than a step may wait; try again later."""


class StepLockLost(Exception):
    """The job's step lock lapsed before this step stored its result; the step is taken again."""


# An artifact store that cannot be reached (S3 down, say) is no fault of the job either.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.RedisError,
    OperationalError,
    QueueUnreachable,  # a send through service.core.queue
    BlobStoreError,
    SearchBusy,
    StepLockLost,
)
