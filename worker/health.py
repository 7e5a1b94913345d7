"""`python -m worker.health [node]`: a worker container's health check, from the node's own heartbeat.

Exits 0 while the node consumes its queues and 1 when it does not: no heartbeat (its main process is gone
or hung) or stalled (`WorkerHeartbeat.not_consuming`). `node` defaults to Celery's default name on this
host, `celery@<hostname>`; pass the `-n` name the worker was started with otherwise. Imports no TensorFlow.
"""

from __future__ import annotations

import socket
import sys

from service.core.heartbeats import WorkerHeartbeat
from service.core.settings import get_settings
from service.core.store import JobStore


def problem(node: str, heartbeat: WorkerHeartbeat | None, stalled_seconds: float) -> str | None:
    """What is wrong with the node, in a sentence; None when it is healthy."""
    if heartbeat is None:
        return f"{node} has written no heartbeat lately: it is not running, still starting, or hung"
    reason = heartbeat.not_consuming(stalled_seconds)
    return None if reason is None else f"{node} is not consuming: {reason}"


def main(argv: list[str]) -> int:
    settings = get_settings()
    node = argv[0] if argv else f"celery@{socket.gethostname()}"
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    found = problem(node, store.worker_heartbeats().get(node), settings.stalled_seconds)
    print(found or f"{node} is consuming its queues")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
