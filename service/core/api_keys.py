"""API keys and tenants' quota overrides in Redis, beside the job store (`store_keys` names every
key and documents the whole layout).

- `{p}:apikey:{key_id}` hash: tenant, sha256 (hex digest of the whole key), created_at, last_used_at
- `{p}:apikeys` sorted set of key ids, scored by creation time, for listing
- `{p}:tenant:{tenant}:quotas` hash quota name -> the tenant's override of the service-wide value
- `{p}:tenant:{tenant}:webhook-secret` the key that signs the tenant's webhooks instead of
  KTUNE_WEBHOOK_SECRET (kept as is: signing needs it)

A key reads `ktk_<key_id>_<secret>`: the id names it in `keys list` and `keys revoke`, the secret is 256
random bits from `secrets`. Only its SHA-256 is stored; a key that long needs no slow, salted hash. Every
check reads Redis, so a revoked key is refused from the next request on, by every API replica.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.core.quotas import QUOTA_NAMES
from service.core.records import utcnow
from service.core.store import JobStore

KEY_PREFIX = "ktk_"
_TOKEN = re.compile(r"ktk_(?P<key_id>[0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_KEY_ID = re.compile(r"[0-9a-f]{12}")
_TENANT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")

LAST_USE_INTERVAL_SECONDS = 60.0
"""A key's last use is written at most this often, so a busy key does not write Redis on every request."""


# Stores a new key's record unless its id is taken (48 random bits: a clash is rare, never silent).
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'sha256', ARGV[2], 'created_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return 1
"""

# Notes a key's use only while it exists: a revocation racing a request must not leave half a record.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1])
return 1
"""


class InvalidTenant(ValueError):
    """A tenant name that is not 1-63 lowercase letters, digits, '_', '.' or '-'."""


class InvalidQuota(ValueError):
    """A quota name this service does not know, or a value below 0."""


@dataclass(frozen=True)
class ApiKey:
    """A key's stored facts; never its secret."""

    key_id: str
    tenant: str
    created_at: datetime
    last_used_at: datetime | None


def check_tenant(tenant: str) -> str:
    """`tenant`, if it is a valid tenant name; raises InvalidTenant."""
    if not _TENANT.fullmatch(tenant):
        raise InvalidTenant(
            f"invalid tenant name {tenant[:80]!r}: use 1-63 characters, lowercase letters, digits, '_', '.' "
            "and '-', starting with a letter or digit"
        )
    return tenant


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeyStore:
    """Tenants' API keys (create, verify, list, revoke) and their quota overrides."""

    def __init__(self, jobs: JobStore) -> None:
        self.redis: Any = jobs.redis
        self.prefix = jobs.prefix
        self.keys = jobs.keys
        self._jobs = jobs
        # The tenant of each key this process has verified: a key's tenant never changes, so a read of the
        # tenant's data can go in the same round trip as the check of the key (which still decides).
        self._tenants: dict[str, str] = {}
        self._create = self.redis.register_script(_CREATE)
        self._touch = self.redis.register_script(_TOUCH)

    def create(self, tenant: str) -> tuple[str, ApiKey]:
        """A new key for `tenant`: the key itself (shown once, never stored) and its record.

        Raises InvalidTenant.
        """
        check_tenant(tenant)
        while True:
            key_id = secrets.token_hex(6)
            token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            created_at = utcnow()
            stored = self._create(
                keys=[self.keys.api_key(key_id), self.keys.api_keys],
                args=[tenant, _digest(token), created_at.isoformat(), created_at.timestamp(), key_id],
            )
            if stored:
                return token, ApiKey(key_id, tenant, created_at, None)

    def verify(self, token: str) -> ApiKey | None:
        """The key `token` is, or None when it is malformed, unknown or revoked; notes its use."""
        key, _ = self.verify_with(token, lambda pipe: None)
        return key

    def verify_with(self, token: str, reads: Callable[[Any], object]) -> tuple[ApiKey | None, list[Any]]:
        """`verify`, in the same round trip as the reads `reads` queues on a pipeline, and their replies (none
        for a malformed token: nothing is read for it). The replies are the caller's to drop when the key is
        None."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None, []
        key_id = match["key_id"]
        fields, *replies = self._jobs.read(
            lambda pipe: (pipe.hgetall(self.keys.api_key(key_id)), reads(pipe))
        )
        return self._checked(token, key_id, fields), replies

    def tenant_seen(self, token: str) -> str | None:
        """The tenant `token`'s key had when this process last verified it, if it did: a guess to read with,
        which only `verify` confirms."""
        match = _TOKEN.fullmatch(token)
        return None if match is None else self._tenants.get(match["key_id"])

    def _checked(self, token: str, key_id: str, fields: dict[str, str]) -> ApiKey | None:
        key = self._matched(token, key_id, fields)
        now = None if key is None else self._use_to_note(key)
        if key is not None and now is not None:
            self._touch(keys=[self.keys.api_key(key_id)], args=[now])
        return key

    def _matched(self, token: str, key_id: str, fields: dict[str, str]) -> ApiKey | None:
        """The key whose stored record is `fields`, if `token` is that key."""
        stored = fields.get("sha256")
        if stored is None or not hmac.compare_digest(stored, _digest(token)):
            return None
        key = _api_key(key_id, fields)
        self._tenants[key_id] = key.tenant
        return key

    @staticmethod
    def _use_to_note(key: ApiKey) -> str | None:
        """The time to write as the key's last use, when it is due (`LAST_USE_INTERVAL_SECONDS`)."""
        now = utcnow()
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= LAST_USE_INTERVAL_SECONDS:
            return now.isoformat()
        return None

    def get(self, key_id: str) -> ApiKey | None:
        if not _KEY_ID.fullmatch(key_id):
            return None
        fields: dict[str, str] = self.redis.hgetall(self.keys.api_key(key_id))
        return _api_key(key_id, fields) if fields.get("sha256") else None

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (or every key of `tenant`), oldest first."""
        key_ids: list[str] = self.redis.zrange(self.keys.api_keys, 0, -1)
        pipe = self.redis.pipeline(transaction=False)
        for key_id in key_ids:
            pipe.hgetall(self.keys.api_key(key_id))
        keys = [
            _api_key(key_id, fields)
            for key_id, fields in zip(key_ids, pipe.execute(), strict=True)
            if fields.get("sha256")
        ]
        return [key for key in keys if tenant is None or key.tenant == tenant]

    def revoke(self, key_id: str) -> ApiKey | None:
        """Delete a key: refused from the next request on. Returns what it was, None when there was none."""
        key = self.get(key_id)
        if key is None:
            return None
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.api_key(key_id))
        pipe.zrem(self.keys.api_keys, key_id)
        deleted, _ = pipe.execute()
        return key if deleted else None

    def quota_overrides(self, tenant: str) -> dict[str, int]:
        """The quotas set for `tenant` alone (by QUOTA_NAMES); the service-wide values apply to the rest."""
        stored: dict[str, str] = self.redis.hgetall(self.keys.tenant_quotas(check_tenant(tenant)))
        return {name: int(stored[name]) for name in QUOTA_NAMES if name in stored}

    def set_quota_overrides(self, tenant: str, values: Mapping[str, int]) -> None:
        """Set some of `tenant`'s quotas; raises InvalidTenant or InvalidQuota (and then sets none)."""
        for name, value in values.items():
            if name not in QUOTA_NAMES:
                raise InvalidQuota(f"unknown quota {name!r}; quotas are {', '.join(QUOTA_NAMES)}")
            if value < 0:
                raise InvalidQuota(f"quota {name} must be 0 or more, not {value}")
        if values:
            self.redis.hset(self.keys.tenant_quotas(check_tenant(tenant)), mapping=dict(values))

    def clear_quota_overrides(self, tenant: str) -> None:
        """Drop every override of `tenant`: the service-wide quotas apply again."""
        self.redis.delete(self.keys.tenant_quotas(check_tenant(tenant)))

    def webhook_secret(self, tenant: str) -> str | None:
        """The key of the tenant's own webhook signatures; None: KTUNE_WEBHOOK_SECRET signs them."""
        value = self.redis.get(self.keys.tenant_webhook_secret(check_tenant(tenant)))
        return str(value) if value else None

    def new_webhook_secret(self, tenant: str) -> str:
        """Make (or replace) the tenant's webhook secret and return it. Raises InvalidTenant."""
        secret = f"whsec_{secrets.token_urlsafe(32)}"
        self.redis.set(self.keys.tenant_webhook_secret(check_tenant(tenant)), secret)
        return secret

    def drop_webhook_secret(self, tenant: str) -> None:
        """Sign the tenant's webhooks with KTUNE_WEBHOOK_SECRET again."""
        self.redis.delete(self.keys.tenant_webhook_secret(check_tenant(tenant)))


def _api_key(key_id: str, fields: dict[str, str]) -> ApiKey:
    last_used = fields.get("last_used_at")
    return ApiKey(
        key_id=key_id,
        tenant=fields["tenant"],
        created_at=datetime.fromisoformat(fields["created_at"]),
        last_used_at=datetime.fromisoformat(last_used) if last_used else None,
    )
