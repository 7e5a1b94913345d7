"""The API key store on a real Redis: only a hash is kept, checks read Redis every time (so revocation is
immediate), last use is written at most once a minute, and tenants' quota overrides."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from service.core import api_keys
from service.core.api_keys import ApiKeyStore, InvalidQuota, InvalidTenant
from service.core.store import JobStore

pytestmark = pytest.mark.integration


@pytest.fixture
def keys(redis_url: str) -> Iterator[ApiKeyStore]:
    jobs = JobStore.from_url(redis_url, prefix=f"keys-{uuid.uuid4().hex[:8]}")
    yield ApiKeyStore(jobs)
    stored = list(jobs.redis.scan_iter(match=f"{jobs.prefix}:*"))
    if stored:
        jobs.redis.delete(*stored)


def test_a_new_key_is_returned_once_and_only_its_hash_is_stored(keys: ApiKeyStore) -> None:
    token, key = keys.create("acme")
    assert re.fullmatch(r"ktk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    assert token.split("_")[1] == key.key_id and key.tenant == "acme" and key.last_used_at is None
    secret = token[len("ktk_") + 13 :]
    for name in keys.redis.scan_iter(match=f"{keys.prefix}:*"):
        kind = keys.redis.type(name)
        stored = keys.redis.hgetall(name) if kind == "hash" else keys.redis.zrange(name, 0, -1)
        assert kind in ("hash", "zset") and secret not in repr(stored), f"{name} holds the secret"
    assert set(keys.redis.hgetall(f"{keys.prefix}:apikey:{key.key_id}")) == {"tenant", "sha256", "created_at"}


def test_only_the_exact_key_verifies(keys: ApiKeyStore) -> None:
    token, key = keys.create("acme")
    other, _ = keys.create("acme")
    verified = keys.verify(token)
    assert verified is not None and verified.key_id == key.key_id and verified.tenant == "acme"
    wrong_secret = token[:-1] + ("A" if token[-1] != "A" else "B")
    unknown_id = "ktk_" + ("0" * 12 if key.key_id != "0" * 12 else "1" * 12) + token[16:]
    spliced = other[:17] + token[17:]  # another key's id with this one's secret
    for bad in [wrong_secret, unknown_id, spliced, token[:-1], token + "A", "", "ktk_", token.upper()]:
        assert keys.verify(bad) is None, bad


def test_last_use_is_noted_at_most_once_a_minute(keys: ApiKeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    token, key = keys.create("acme")
    hash_key = f"{keys.prefix}:apikey:{key.key_id}"
    assert keys.verify(token) is not None
    first = keys.redis.hget(hash_key, "last_used_at")
    stored = keys.get(key.key_id)
    assert first is not None and stored is not None and stored.last_used_at is not None
    for _ in range(5):
        assert keys.verify(token) is not None
    assert keys.redis.hget(hash_key, "last_used_at") == first, "a busy key writes once a minute, not per use"
    monkeypatch.setattr(api_keys, "LAST_USE_INTERVAL_SECONDS", 0.0)
    assert keys.verify(token) is not None
    assert keys.redis.hget(hash_key, "last_used_at") > first


def test_a_revoked_key_is_refused_at_once_and_leaves_nothing(keys: ApiKeyStore) -> None:
    token, key = keys.create("acme")
    kept, kept_key = keys.create("acme")
    assert keys.verify(token) is not None
    revoked = keys.revoke(key.key_id)
    assert revoked is not None and revoked.tenant == "acme"
    assert keys.verify(token) is None
    assert keys.revoke(key.key_id) is None, "already gone"
    assert keys.revoke("not-an-id") is None
    assert [k.key_id for k in keys.list_keys()] == [kept_key.key_id]
    assert keys.verify(kept) is not None, "other keys are untouched"
    # A request that read the key just before it was revoked notes its use afterwards: no half record.
    keys._touch(keys=[f"{keys.prefix}:apikey:{key.key_id}"], args=["2026-01-01T00:00:00+00:00"])
    assert not keys.redis.exists(f"{keys.prefix}:apikey:{key.key_id}")


def test_keys_are_listed_oldest_first_and_by_tenant(keys: ApiKeyStore) -> None:
    made = [keys.create(tenant)[1] for tenant in ["acme", "beta", "acme"]]
    assert keys.list_keys() == made
    assert [k.key_id for k in keys.list_keys("acme")] == [made[0].key_id, made[2].key_id]
    assert keys.list_keys("nobody") == []


def test_a_bad_tenant_name_stores_nothing(keys: ApiKeyStore) -> None:
    with pytest.raises(InvalidTenant):
        keys.create("Acme Corp")
    assert keys.list_keys() == []
    with pytest.raises(InvalidTenant):
        keys.quota_overrides("a:b")


def test_quota_overrides_are_kept_per_tenant(keys: ApiKeyStore) -> None:
    assert keys.quota_overrides("acme") == {}
    keys.set_quota_overrides("acme", {"running_jobs": 2, "trials_per_day": 500})
    keys.set_quota_overrides("acme", {"running_jobs": 3})
    keys.set_quota_overrides("beta", {"artifact_bytes": 0})
    assert keys.quota_overrides("acme") == {"running_jobs": 3, "trials_per_day": 500}
    assert keys.quota_overrides("beta") == {"artifact_bytes": 0}
    with pytest.raises(InvalidQuota, match="unknown quota"):
        keys.set_quota_overrides("acme", {"queued_jobs": 1, "gpus": 1})
    with pytest.raises(InvalidQuota, match="0 or more"):
        keys.set_quota_overrides("acme", {"queued_jobs": -1})
    assert keys.quota_overrides("acme") == {"running_jobs": 3, "trials_per_day": 500}, "none of a refused set"
    keys.clear_quota_overrides("acme")
    assert keys.quota_overrides("acme") == {}
    assert keys.quota_overrides("beta") == {"artifact_bytes": 0}


def test_reads_share_the_round_trip_of_the_check_and_a_revoked_key_gets_none(keys: ApiKeyStore) -> None:
    token, key = keys.create("acme")
    keys.redis.set(f"{keys.prefix}:probe", "value")
    queued = []

    def reads(pipe: object) -> None:
        queued.append(pipe)
        pipe.get(f"{keys.prefix}:probe")  # type: ignore[attr-defined]

    verified, replies = keys.verify_with(token, reads)
    assert verified is not None and verified.key_id == key.key_id and replies == ["value"]
    assert keys.tenant_seen(token) == "acme", "remembered once verified"
    keys.revoke(key.key_id)
    verified, replies = keys.verify_with(token, reads)
    assert verified is None, "the check decides, whatever the reads returned"
    assert keys.verify_with("not-a-key", reads) == (None, []) and len(queued) == 2, "nothing read for it"


def test_a_tenant_is_remembered_only_for_keys_that_verified(keys: ApiKeyStore) -> None:
    token, _ = keys.create("acme")
    assert keys.tenant_seen(token) is None, "not verified yet in this process"
    forged = token[:17] + "A" * 43
    assert keys.verify(forged) is None and keys.tenant_seen(forged) is None
    assert keys.verify(token) is not None and keys.tenant_seen(token) == "acme"
