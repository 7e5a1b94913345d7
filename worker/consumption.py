"""Whether this worker node still consumes its queues: a heartbeat thread in Celery's main process.

After a broker reconnect a worker can stay alive and answer remote control (through its pidbox) yet never
fetch from its task queues again, a known Celery failure. From outside that shows as messages waiting in
the node's queues while its pool has a free process, so every KTUNE_WORKER_HEARTBEAT_SECONDS the node
writes what it is meant to consume, what it holds and what waits (`WorkerHeartbeat`); /readyz reads them.

This runs in the prefork parent, which must never import TensorFlow.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

from celery.worker import state

from service.core.heartbeats import WorkerHeartbeat
from service.core.records import utcnow
from service.core.settings import Settings
from service.core.store import JobStore

log = logging.getLogger(__name__)


def next_stalled_since(
    stalled_since: datetime | None, now: datetime, waiting: int, busy: int, concurrency: int
) -> datetime | None:
    """Since when the node has been starved while idle (messages wait, a pool process is free); else None."""
    if waiting > 0 and busy < concurrency:
        return stalled_since or now
    return None


class ConsumptionMonitor(threading.Thread):
    """Writes the node's heartbeat every interval, and logs an error once when the node stops consuming."""

    def __init__(self, consumer: Any, store: JobStore, settings: Settings) -> None:
        super().__init__(name="ktune-consumption", daemon=True)
        self.consumer = consumer
        self.store = store
        self.interval = settings.worker_heartbeat_seconds
        self.stalled_after = settings.stalled_seconds
        # Cancelling a consumer also deselects its queue, so the queues chosen at start are kept: a node
        # whose consumer was cancelled still has those messages waiting for it.
        self.queues = set(self._selected_queues())
        self.stalled_since: datetime | None = None
        self.reported = False

    def _selected_queues(self) -> list[str]:
        return list(self.consumer.app.amqp.queues.consume_from)

    def run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as exc:  # Redis may be restarting: the next beat tries again
                log.warning("could not write this worker's heartbeat: %s", exc)
            time.sleep(self.interval)

    def beat(self) -> WorkerHeartbeat:
        """Measure the node once, note a stall or its end, and store the heartbeat."""
        node: str = self.consumer.hostname
        self.queues.update(self._selected_queues())  # and those added since (`add_consumer`)
        queues = sorted(self.queues)
        waiting = self.store.queue_lengths(queues)
        # A request stays reserved until it is done, so this counts the running ones too.
        busy = len(state.reserved_requests)
        concurrency: int = self.consumer.pool.num_processes
        now = utcnow()
        if self.store.is_draining(node):
            self.stalled_since = None  # in a warm shutdown the node stops consuming on purpose
        else:
            self.stalled_since = next_stalled_since(
                self.stalled_since, now, sum(waiting.values()), busy, concurrency
            )
        heartbeat = WorkerHeartbeat(
            queues=queues,
            concurrency=concurrency,
            busy=busy,
            waiting=waiting,
            stalled_since=self.stalled_since,
            updated_at=now,
        )
        reason = heartbeat.not_consuming(self.stalled_after)
        if reason is not None and not self.reported:
            log.error("worker %s is not consuming its queues: %s", node, reason)
        elif reason is None and self.reported:
            log.info("worker %s is consuming its queues again", node)
        self.reported = reason is not None
        # Three intervals: a dead node's heartbeat is soon gone, a slow Redis call does not drop a live one.
        self.store.put_worker_heartbeat(node, heartbeat, ttl=3 * self.interval)
        return heartbeat
