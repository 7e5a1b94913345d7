"""Idempotency keys in Redis, beside the job store (`store_keys` names every key).

- `{p}:idempotency:{scope}:{tenant}:{sha256 hex of the key}` what a tenant's `Idempotency-Key` names on one
  kind of request (`scope`, such as `jobs`), as JSON. While the first request with the key runs:
  `{"fingerprint", "claim"}` (a random token), gone after the claim's short expiry if the process running
  it dies. Once it succeeded: `{"fingerprint", "id"}`, the resource it created, for the configured time.

The client's key is hashed, so its text (any printable ASCII) never becomes part of a key name.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from service.core.store import JobStore

# Takes the key for a new request unless a record holds it; returns the record that does (nil when taken).
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# Records what the request holding the claim created; also when the claim lapsed meanwhile and no other
# request took the key, never over another request's claim or record.
_COMPLETE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class KeyRecord:
    """What a key names: the fingerprint of its request, and the id of what it created (None while the
    request holding the key still runs)."""

    fingerprint: str
    resource_id: str | None


@dataclass(frozen=True)
class Claim:
    """A request's hold on a key; only its holder can complete or release it."""

    key: str
    value: str


class IdempotencyStore:
    """Tenants' idempotency keys and what each one created."""

    def __init__(self, jobs: JobStore) -> None:
        self.redis: Any = jobs.redis
        self.prefix = jobs.prefix
        self.keys = jobs.keys
        self._claim = self.redis.register_script(_CLAIM)
        self._complete = self.redis.register_script(_COMPLETE)
        self._release = self.redis.register_script(_RELEASE)

    def key_name(self, scope: str, tenant: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.keys.idempotency(scope, tenant, digest)

    def claim(self, scope: str, tenant: str, key: str, fingerprint: str, seconds: float) -> Claim | KeyRecord:
        """Hold the key for a request with this fingerprint for up to `seconds`, or the record that holds
        it already (another request's claim, or what an earlier request created)."""
        name = self.key_name(scope, tenant, key)
        value = json.dumps({"fingerprint": fingerprint, "claim": secrets.token_hex(16)})
        current = self._claim(keys=[name], args=[value, max(1, round(seconds * 1000))])
        if current is None:
            return Claim(name, value)
        record = json.loads(current)
        return KeyRecord(record["fingerprint"], record.get("id"))

    def complete(self, claim: Claim, resource_id: str, seconds: float) -> bool:
        """Record what the claim's request created, kept `seconds`; False when another request holds the key
        (this one's claim lapsed before it finished)."""
        fingerprint = json.loads(claim.value)["fingerprint"]
        value = json.dumps({"fingerprint": fingerprint, "id": resource_id})
        done = self._complete(keys=[claim.key], args=[claim.value, value, max(1, round(seconds * 1000))])
        return bool(done)

    def release(self, claim: Claim) -> bool:
        """Give the key up (its request failed), so the next request with it runs afresh."""
        return bool(self._release(keys=[claim.key], args=[claim.value]))
