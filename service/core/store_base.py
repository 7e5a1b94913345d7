"""What every part of the job store shares: its Redis clients, its key names, and how it writes values.

The parts (`store_jobs`, `store_tenants`, `store_retention`, `store_trials`, `store_coordination`,
`store_workers`) are mixins of this class; `service.core.store.JobStore` is all of them together.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis

from service.core.store_keys import StoreKeys

cursor_pattern = re.compile(r"^\d{20}:[0-9a-f-]{36}$")


class InvalidCursor(ValueError):
    """A listing cursor that this store did not hand out."""


class StoreBase:
    """The clients and key names of a store; each part registers its own Lua scripts on `client`."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        # redis-py types every reply as "T | Awaitable[T]" (sync and async share stubs); this client is sync.
        self.redis: Any = client
        # Replies as bytes, for the job's data; made from `client`'s settings on first use when not given.
        self._binary: Any = binary
        self.prefix = prefix
        self.keys = StoreKeys(prefix)
        # The scripts reads call with EVALSHA on a pipeline (`read`), loaded again when Redis has lost them.
        self._read_scripts: list[Any] = []

    def read(self, queue: Callable[[Any], object]) -> list[Any]:
        """The replies of the reads `queue` puts on a pipeline, in one round trip. A read script that Redis
        has lost (a restart, SCRIPT FLUSH) is loaded again and the reads retried once."""
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            queue(pipe)
            try:
                replies: list[Any] = pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                for script in self._read_scripts:
                    self.redis.script_load(script.script)
            else:
                return replies
        raise AssertionError("unreachable")

    def script_calls(self, script: Any, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """`script` (a registered Script) run once per (keys, args) of `calls`, in one round trip: EVALSHA on
        a pipeline, without the SCRIPT EXISTS round trip redis-py sends before a pipeline holding scripts.
        A call of a script Redis lacks (after a restart or SCRIPT FLUSH) is refused without running; those
        calls alone are sent again once the script is loaded."""
        replies: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for index in pending:
                keys, args = calls[index]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            for index, reply in zip(pending, pipe.execute(raise_on_error=False), strict=True):
                replies[index] = reply
            pending = [i for i in pending if isinstance(replies[i], redis.exceptions.NoScriptError)]
            if not pending:
                break
            if attempt == 1:
                self.redis.script_load(script.script)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    @property
    def _bytes(self) -> Any:
        if self._binary is None:
            pool = self.redis.connection_pool
            kwargs = {**pool.connection_kwargs, "decode_responses": False}
            self._binary = redis.Redis(
                connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            )
        return self._binary

    def _member_of(self, job_id: str) -> str | None:
        created = self.redis.hget(self.keys.job(job_id), "created_at")
        if created is None:
            return None
        return index_member(datetime.fromisoformat(created), job_id)


def index_member(created_at: datetime, record_id: str) -> str:
    """A record's entry in a listing index: sorting entries sorts records by creation time."""
    return f"{int(created_at.timestamp() * 1_000_000):020d}:{record_id}"


def optional_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def encode_fields(fields: dict[str, Any]) -> dict[str, str]:
    encoded: dict[str, str] = {}
    for name, value in fields.items():
        if isinstance(value, datetime):
            encoded[name] = value.isoformat()
        elif hasattr(value, "model_dump_json"):
            encoded[name] = value.model_dump_json()
        else:
            encoded[name] = str(value)
    return encoded
