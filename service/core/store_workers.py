"""Worker nodes' records in the store: heartbeats, draining marks, and the Celery queues they serve."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from service.core.heartbeats import WorkerHeartbeat
from service.core.records import utcnow
from service.core.store_base import StoreBase, optional_time
from service.core.store_keys import broker_lists


class WorkerRecords(StoreBase):
    """What worker nodes tell the API and each other: heartbeats, draining, queues served, their lengths."""

    def set_draining(self, node: str, draining: bool) -> None:
        """Mark a worker node as shutting down (its trials hand themselves back), or clear the mark."""
        key = self.keys.worker_draining(node)
        if draining:
            self.redis.set(key, "1", ex=24 * 3600)
        else:
            self.redis.delete(key)

    def is_draining(self, node: str) -> bool:
        return bool(self.redis.exists(self.keys.worker_draining(node)))

    def put_worker_heartbeat(self, node: str, heartbeat: WorkerHeartbeat, ttl: float) -> None:
        """Store a node's latest heartbeat; it disappears after `ttl` seconds unless written again."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.worker_heartbeat(node), heartbeat.model_dump_json(), px=int(ttl * 1000))
        pipe.sadd(self.keys.workers, node)
        pipe.execute()

    def worker_heartbeats(self) -> dict[str, WorkerHeartbeat]:
        """The latest heartbeat of every node whose heartbeat has not expired, by node name."""
        nodes = sorted(self.redis.smembers(self.keys.workers))
        if not nodes:
            return {}
        values = self.redis.mget([self.keys.worker_heartbeat(node) for node in nodes])
        gone = [node for node, value in zip(nodes, values, strict=True) if value is None]
        if gone:
            # A node whose heartbeat expired is gone; it is added again by its next heartbeat.
            self.redis.srem(self.keys.workers, *gone)
        return {
            node: WorkerHeartbeat.model_validate_json(value)
            for node, value in zip(nodes, values, strict=True)
            if value is not None
        }

    def queue_lengths(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in the broker in each of these Celery queues, all priorities counted."""
        lists = {queue: broker_lists(queue) for queue in queues}
        pipe = self.redis.pipeline(transaction=False)
        for keys in lists.values():
            for key in keys:
                pipe.llen(key)
        lengths = iter(pipe.execute())
        return {queue: sum(next(lengths) for _ in keys) for queue, keys in lists.items()}

    def mark_queues_served(self, queues: Iterable[str]) -> None:
        """Note that a worker consumes each of these queues now."""
        now = utcnow().isoformat()
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.set(self.keys.queue_served_at(queue), now)
        pipe.execute()

    def queue_served_at(self, queue: str) -> datetime | None:
        """When a worker was last seen consuming `queue`; None if never."""
        return optional_time(self.redis.get(self.keys.queue_served_at(queue)))
