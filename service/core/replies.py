"""Answers from workers to an API request that waits for them: a Redis list per request.

The API makes a reply id, sends a task carrying it and waits (BLPOP) on the reply's key; the worker pushes
its JSON answer there. The key expires, so an answer no one waited for does not stay.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from service.core.store import JobStore

# BLPOP blocks at most this long per call: below the store client's socket timeout (15 s), which would
# otherwise end a longer wait with a TimeoutError.
_BLOCK_SECONDS = 10


class Replies:
    """Replies under the store's key prefix."""

    def __init__(self, store: JobStore) -> None:
        self.redis: Any = store.redis
        self.keys = store.keys

    def _key(self, reply_id: str) -> str:
        return self.keys.reply(reply_id)

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def send(self, reply_id: str, answer: dict[str, Any], keep_seconds: float) -> None:
        """Hand `answer` (JSON-able) to whoever waits for `reply_id`; kept `keep_seconds` for a late one."""
        key = self._key(reply_id)
        pipe = self.redis.pipeline()
        pipe.rpush(key, json.dumps(answer))
        pipe.pexpire(key, max(1, int(keep_seconds * 1000)))
        pipe.execute()

    def wait(self, reply_id: str, seconds: float) -> dict[str, Any] | None:
        """The answer sent for `reply_id`, waiting up to `seconds`; None when none came. Raises RedisError."""
        key, deadline = self._key(reply_id), time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            # BLPOP takes whole or fractional seconds; 0 would block forever.
            popped = self.redis.blpop([key], timeout=max(0.01, min(left, _BLOCK_SECONDS)))
            if popped is not None:
                answer: dict[str, Any] = json.loads(popped[1])
                return answer
        return None
