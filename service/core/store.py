"""The Redis job store: the only module that knows Redis key names.

Layout (prefix `ktune` by default):
- `{p}:job:{id}` hash: status, spec (JSON, without data), created_at, enqueued_at, start_sends, started_at,
  finished_at, error (JSON), best (JSON)
- `{p}:job:{id}:data` the data as compact arrays (`.npz` bytes, `service.core.data_codec`), read by workers
- `{p}:job:{id}:trials` hash trial id -> trial record (JSON); `{p}:job:{id}:trial-status` id -> status
- `{p}:job:{id}:oracle` the search algorithm's state (JSON)
- `{p}:job:{id}:lock` a lock around search-algorithm steps; `{p}:job:{id}:lease:{trial}` a trial's owner;
  `{p}:job:{id}:requeued:{trial}` marks a trial the sweeper has just sent again;
  `{p}:job:{id}:losses:{trial}` counts the workers a trial lost while running
- `{p}:worker:{node}:draining` marks a worker node in warm shutdown
- `{p}:worker:{node}:heartbeat` a worker node's latest heartbeat (JSON), gone unless renewed; `{p}:workers`
  the set of nodes that wrote one
- the broker's own lists (kombu's layout, read only): `{queue}` holds a Celery queue's waiting messages, and
  `{queue}\x06\x16{n}` those of priority step n
- `{p}:jobs` and `{p}:jobs:status:{status}` sorted sets of `{created_us:020d}:{id}`, for listing
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis
from kombu.transport.redis import Channel as BrokerChannel
from redis.lock import Lock

from service.core.heartbeats import WorkerHeartbeat
from service.core.records import BestTrial, ErrorInfo, JobRecord, TrialRecord
from service.core.states import JobStatus, TrialStatus

_CURSOR = re.compile(r"^\d{20}:[0-9a-f-]{36}$")

# Moves a job to a new status only when it is in one of the allowed ones, and keeps the indexes in step.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return -1 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. current .. ',', 1, true) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREM', ARGV[3] .. current, ARGV[4])
redis.call('ZADD', ARGV[3] .. ARGV[2], 0, ARGV[4])
return 1
"""

# Renews a lease only for its owner.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class InvalidCursor(ValueError):
    """A listing cursor that this store did not hand out."""


class JobStore:
    """Jobs, trials and search state in Redis. Finished trials are never rewritten by the store's callers."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        # redis-py types every reply as "T | Awaitable[T]" (sync and async share stubs); this client is sync.
        self.redis: Any = client
        # Replies as bytes, for the job's data; made from `client`'s settings on first use when not given.
        self._binary: Any = binary
        self.prefix = prefix
        self._transition = client.register_script(_TRANSITION)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "ktune") -> JobStore:
        options: dict[str, Any] = {
            "health_check_interval": 15,
            "socket_connect_timeout": 5,
            # A Redis that hangs raises instead of freezing a worker (or its lease thread).
            "socket_timeout": 15,
            "retry_on_timeout": True,
        }
        client = redis.Redis.from_url(url, decode_responses=True, **options)
        return cls(client, prefix, redis.Redis.from_url(url, decode_responses=False, **options))

    @property
    def _bytes(self) -> Any:
        if self._binary is None:
            pool = self.redis.connection_pool
            kwargs = {**pool.connection_kwargs, "decode_responses": False}
            self._binary = redis.Redis(
                connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            )
        return self._binary

    # keys
    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _index(self, status: JobStatus | None = None) -> str:
        return f"{self.prefix}:jobs" if status is None else f"{self.prefix}:jobs:status:{status.value}"

    @staticmethod
    def _member(created_at: datetime, job_id: str) -> str:
        """A job's entry in the listing indexes: sorting it sorts jobs by creation time."""
        return f"{int(created_at.timestamp() * 1_000_000):020d}:{job_id}"

    # jobs
    def ping(self) -> bool:
        return bool(self.redis.ping())

    def create_job(self, record: JobRecord, data: bytes) -> None:
        """Store a new job and its data (`data_codec.encode`'s bytes) and index it; readers see it at once."""
        member = self._member(record.created_at, record.id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(f"{self._job(record.id)}:data", data)
        pipe.hset(self._job(record.id), mapping=_job_fields(record))
        pipe.zadd(self._index(), {member: 0})
        pipe.zadd(self._index(record.status), {member: 0})
        pipe.execute()

    def get_job(self, job_id: str) -> JobRecord | None:
        fields = self.redis.hgetall(self._job(job_id))
        if not fields:
            return None
        return JobRecord(
            id=job_id,
            status=JobStatus(fields["status"]),
            spec=json.loads(fields["spec"]),
            created_at=datetime.fromisoformat(fields["created_at"]),
            enqueued_at=_optional_time(fields.get("enqueued_at")),
            start_sends=int(fields.get("start_sends", 0)),
            started_at=_optional_time(fields.get("started_at")),
            finished_at=_optional_time(fields.get("finished_at")),
            error=ErrorInfo.model_validate_json(fields["error"]) if fields.get("error") else None,
            best=BestTrial.model_validate_json(fields["best"]) if fields.get("best") else None,
        )

    def get_status(self, job_id: str) -> JobStatus | None:
        value = self.redis.hget(self._job(job_id), "status")
        return JobStatus(value) if value else None

    def get_data(self, job_id: str) -> bytes:
        """The job's stored data (`data_codec.decode` reads it). Raises KeyError."""
        raw = self._bytes.get(f"{self._job(job_id)}:data")
        if raw is None:
            raise KeyError(job_id)
        return bytes(raw)

    def transition(
        self, job_id: str, allowed_from: Iterable[JobStatus], to: JobStatus, **fields: Any
    ) -> bool:
        """Set a job's status if it is in `allowed_from`; False otherwise. Only `lifecycle` calls this."""
        record_member = self._member_of(job_id)
        if record_member is None:
            return False
        args: list[str] = [
            ",".join(s.value for s in allowed_from),
            to.value,
            f"{self._index()}:status:",
            record_member,
        ]
        for name, value in _encode(fields).items():
            args += [name, value]
        return int(self._transition(keys=[self._job(job_id)], args=args)) == 1

    def _member_of(self, job_id: str) -> str | None:
        created = self.redis.hget(self._job(job_id), "created_at")
        if created is None:
            return None
        return self._member(datetime.fromisoformat(created), job_id)

    def set_job_fields(self, job_id: str, **fields: Any) -> None:
        """Update non-status fields (enqueued_at, best)."""
        self.redis.hset(self._job(job_id), mapping=_encode(fields))

    def list_jobs(
        self, status: JobStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[JobRecord], str | None]:
        """Jobs newest first; the cursor is the last member of the previous page."""
        if cursor is not None and not _CURSOR.match(cursor):
            raise InvalidCursor(cursor)
        upper = f"({cursor}" if cursor else "+"
        members = self.redis.zrevrangebylex(self._index(status), upper, "-", start=0, num=limit + 1)
        page = members[:limit]
        jobs = [job for job in (self.get_job(m.split(":", 1)[1]) for m in page) if job is not None]
        return jobs, (page[-1] if len(members) > limit else None)

    def jobs_with_status(self, status: JobStatus) -> list[str]:
        return [m.split(":", 1)[1] for m in self.redis.zrange(self._index(status), 0, -1)]

    # trials
    def put_trial(self, job_id: str, trial: TrialRecord) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(f"{self._job(job_id)}:trials", trial.id, trial.model_dump_json())
        pipe.hset(f"{self._job(job_id)}:trial-status", trial.id, trial.status.value)
        pipe.execute()

    def get_trial(self, job_id: str, trial_id: str) -> TrialRecord | None:
        raw = self.redis.hget(f"{self._job(job_id)}:trials", trial_id)
        return TrialRecord.model_validate_json(raw) if raw else None

    def get_trials(self, job_id: str) -> list[TrialRecord]:
        raw = self.redis.hgetall(f"{self._job(job_id)}:trials")
        return sorted((TrialRecord.model_validate_json(v) for v in raw.values()), key=lambda t: t.id)

    def trial_status_counts(self, job_id: str) -> Counter[TrialStatus]:
        return Counter(TrialStatus(s) for s in self.redis.hvals(f"{self._job(job_id)}:trial-status"))

    # search state
    def load_oracle_state(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.get(f"{self._job(job_id)}:oracle")
        return json.loads(raw) if raw else None

    def save_oracle_state(self, job_id: str, state: dict[str, Any]) -> None:
        self.redis.set(f"{self._job(job_id)}:oracle", json.dumps(state))

    def job_lock(self, job_id: str, timeout: float = 120.0) -> Lock:
        """A lock around one step of the job's search; expires on its own if its holder dies."""
        lock: Lock = self.redis.lock(f"{self._job(job_id)}:lock", timeout=timeout, blocking_timeout=timeout)
        return lock

    # leases
    def acquire_lease(self, job_id: str, trial_id: str, owner: str, seconds: float) -> bool:
        key = f"{self._job(job_id)}:lease:{trial_id}"
        return bool(self.redis.set(key, owner, nx=True, px=int(seconds * 1000)))

    def renew_lease(self, job_id: str, trial_id: str, owner: str, seconds: float) -> bool:
        key = f"{self._job(job_id)}:lease:{trial_id}"
        return int(self._renew(keys=[key], args=[owner, int(seconds * 1000)])) == 1

    def release_lease(self, job_id: str, trial_id: str, owner: str) -> None:
        self._release(keys=[f"{self._job(job_id)}:lease:{trial_id}"], args=[owner])

    def claim_requeue(self, job_id: str, trial_id: str, seconds: float) -> bool:
        """True at most once per `seconds` for a trial, so a sweep does not re-send it again and again."""
        key = f"{self._job(job_id)}:requeued:{trial_id}"
        return bool(self.redis.set(key, "1", nx=True, px=int(seconds * 1000)))

    def count_trial_loss(self, job_id: str, trial_id: str) -> int:
        """Note that a running trial's worker was lost; returns how many times that has happened."""
        return int(self.redis.incr(f"{self._job(job_id)}:losses:{trial_id}"))

    def trial_losses(self, job_id: str, trial_id: str) -> int:
        return int(self.redis.get(f"{self._job(job_id)}:losses:{trial_id}") or 0)

    # worker nodes
    def set_draining(self, node: str, draining: bool) -> None:
        """Mark a worker node as shutting down (its trials hand themselves back), or clear the mark."""
        key = f"{self.prefix}:worker:{node}:draining"
        if draining:
            self.redis.set(key, "1", ex=24 * 3600)
        else:
            self.redis.delete(key)

    def is_draining(self, node: str) -> bool:
        return bool(self.redis.exists(f"{self.prefix}:worker:{node}:draining"))

    def put_worker_heartbeat(self, node: str, heartbeat: WorkerHeartbeat, ttl: float) -> None:
        """Store a node's latest heartbeat; it disappears after `ttl` seconds unless written again."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(f"{self.prefix}:worker:{node}:heartbeat", heartbeat.model_dump_json(), px=int(ttl * 1000))
        pipe.sadd(f"{self.prefix}:workers", node)
        pipe.execute()

    def worker_heartbeats(self) -> dict[str, WorkerHeartbeat]:
        """The latest heartbeat of every node whose heartbeat has not expired, by node name."""
        nodes = sorted(self.redis.smembers(f"{self.prefix}:workers"))
        if not nodes:
            return {}
        values = self.redis.mget([f"{self.prefix}:worker:{node}:heartbeat" for node in nodes])
        gone = [node for node, value in zip(nodes, values, strict=True) if value is None]
        if gone:
            # A node whose heartbeat expired is gone; it is added again by its next heartbeat.
            self.redis.srem(f"{self.prefix}:workers", *gone)
        return {
            node: WorkerHeartbeat.model_validate_json(value)
            for node, value in zip(nodes, values, strict=True)
            if value is not None
        }

    def queue_lengths(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in the broker in each of these Celery queues, all priorities counted."""
        lists = {queue: _broker_lists(queue) for queue in queues}
        pipe = self.redis.pipeline(transaction=False)
        for keys in lists.values():
            for key in keys:
                pipe.llen(key)
        lengths = iter(pipe.execute())
        return {queue: sum(next(lengths) for _ in keys) for queue, keys in lists.items()}

    def lease_holder(self, job_id: str, trial_id: str) -> str | None:
        value = self.redis.get(f"{self._job(job_id)}:lease:{trial_id}")
        return str(value) if value is not None else None


def _broker_lists(queue: str) -> list[str]:
    """kombu's Redis lists of a Celery queue, one per priority step; the first is named after the queue."""
    return [f"{queue}{BrokerChannel.sep}{step}" if step else queue for step in BrokerChannel.priority_steps]


def _optional_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    encoded: dict[str, str] = {}
    for name, value in fields.items():
        if isinstance(value, datetime):
            encoded[name] = value.isoformat()
        elif hasattr(value, "model_dump_json"):
            encoded[name] = value.model_dump_json()
        else:
            encoded[name] = str(value)
    return encoded


def _job_fields(record: JobRecord) -> dict[str, str]:
    fields = {"status": record.status.value, "spec": json.dumps(record.spec), "created_at": record.created_at}
    return _encode(fields)
