"""Idempotency-Key on POST /v1/jobs against a real Redis and the API as users start it (no worker: jobs
stay queued, which is all these tests need)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.api.idempotency import HEADER, REPLAYED_HEADER, Keyed
from service.api.job_parsing import parse_job
from service.core.errors import Conflict, InvalidRequest
from service.core.idempotency import Claim, IdempotencyStore, KeyRecord
from service.core.settings import Limits
from service.core.store import JobStore, broker_lists
from tests.integration.conftest import ROOT, TEST_TENANT, Deployment, service_env_for

pytestmark = pytest.mark.integration

SHORT_TTL_SECONDS = 3


@dataclass
class Api:
    """An API process with its own Redis key prefix and broker key prefix (so a test can block its queue)."""

    client: httpx.Client
    prefix: str
    broker_prefix: str
    deployment: Deployment


@contextlib.contextmanager
def api_process(redis_url: str, tmp_path: Path, **overrides: str) -> Iterator[Api]:
    name = f"idem-{uuid.uuid4().hex[:8]}"
    broker_prefix = f"{name}-broker:"
    env = service_env_for(
        redis_url,
        tmp_path / name,
        KTUNE_KEY_PREFIX=name,
        KTUNE_BROKER_TRANSPORT_OPTIONS=json.dumps({"global_keyprefix": broker_prefix}),
        **overrides,
    )
    logs = tmp_path / f"{name}-logs"
    logs.mkdir()
    with Deployment.api_only(env, logs) as deployment:
        yield Api(deployment.client, name, broker_prefix, deployment)


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with api_process(redis_url, tmp_path_factory.mktemp("idempotency")) as api:
        yield api


def seed(name: str) -> dict[str, Any]:
    """The seed example, named for one test so its jobs can be counted."""
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-seed.json").read_text())
    body["name"] = name
    return body


def post(client: httpx.Client, body: bytes | dict[str, Any], key: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/v1/jobs", content=content, headers={"Content-Type": "application/json", HEADER: key})


def jobs_named(client: httpx.Client, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
    return [job for job in items if job["name"] == name]


def new_name() -> str:
    return f"idem-{uuid.uuid4().hex[:8]}"


def test_a_retry_with_the_same_key_and_body_gets_the_first_job(api: Api) -> None:
    name, key = new_name(), str(uuid.uuid4())
    first = post(api.client, seed(name), key)
    assert first.status_code == 202, first.text
    assert REPLAYED_HEADER not in first.headers
    job = first.json()

    # The same job in other words: key order, whitespace, 1.0 for 1.
    again = seed(name)
    again["tuner"] = dict(reversed(list(again["tuner"].items())))
    again["data"]["train"]["x"] = [[float(v) for v in row] for row in again["data"]["train"]["x"]]
    retry = post(api.client, json.dumps(again, indent=2).encode(), key)
    assert retry.status_code == 200, retry.text
    assert retry.headers[REPLAYED_HEADER] == "true"
    assert retry.headers["location"] == first.headers["location"] == f"/v1/jobs/{job['id']}"
    assert retry.json()["id"] == job["id"] and retry.json()["status"] == "queued"
    assert [j["id"] for j in jobs_named(api.client, name)] == [job["id"]]


def test_the_same_key_with_another_body_is_a_422_naming_the_mismatch(api: Api) -> None:
    name, key = new_name(), str(uuid.uuid4())
    first = post(api.client, seed(name), key)
    assert first.status_code == 202, first.text
    other = seed(name)
    other["training"]["epochs"] = 50

    response = post(api.client, other, key)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    [problem] = error["fields"]
    assert problem["field"] == HEADER and "another body" in problem["message"]
    # The key still names the first job.
    assert post(api.client, seed(name), key).json()["id"] == first.json()["id"]
    assert len(jobs_named(api.client, name)) == 1


def test_different_keys_submit_different_jobs(api: Api) -> None:
    name = new_name()
    one, two = (post(api.client, seed(name), str(uuid.uuid4())) for _ in range(2))
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] != two.json()["id"]


def test_a_submit_that_failed_runs_again_on_retry(api: Api, redis_url: str) -> None:
    name, key = new_name(), str(uuid.uuid4())
    blocker = redis.Redis.from_url(redis_url)
    # kombu's list of each priority step of the queue (fair_share picks the step)
    lists = [f"{api.broker_prefix}{key}" for key in broker_lists("cpu")]
    for queue_key in lists:
        blocker.set(queue_key, "not a list: the broker's send fails")  # as a broker refusing the message
    try:
        failed = post(api.client, seed(name), key)
    finally:
        blocker.delete(*lists)
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "unavailable"
    [stored] = jobs_named(api.client, name)  # the job was stored, then failed: its start was never sent
    assert stored["status"] == "failed" and stored["error"]["code"] == "enqueue_failed"

    retry = post(api.client, seed(name), key)
    assert retry.status_code == 202, retry.text  # a new submit, not a replay of the failed job
    job = retry.json()
    assert job["id"] != stored["id"] and job["status"] == "queued"
    assert sum(blocker.llen(queue_key) for queue_key in lists) == 1  # its start message is queued

    replay = post(api.client, seed(name), key)
    assert replay.status_code == 200 and replay.json()["id"] == job["id"]
    assert sorted(j["status"] for j in jobs_named(api.client, name)) == ["failed", "queued"]


def test_concurrent_requests_with_one_key_create_one_job(api: Api) -> None:
    name, key = new_name(), str(uuid.uuid4())
    body = json.dumps(seed(name)).encode()
    senders = 8
    start = threading.Barrier(senders)
    base_url = str(api.client.base_url)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=30, headers=api.client.headers) as client:
            start.wait()
            return post(client, body, key)

    with ThreadPoolExecutor(senders) as pool:
        responses = list(pool.map(send, range(senders)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(202) == 1 and set(statuses) <= {200, 202, 409}, [r.text for r in responses]
    [created] = [r.json()["id"] for r in responses if r.status_code == 202]
    assert all(r.json()["id"] == created for r in responses if r.status_code == 200)
    for busy in (r for r in responses if r.status_code == 409):
        assert busy.json()["error"]["code"] == "idempotency_in_progress"
        assert busy.headers["retry-after"] == "1"
    assert [j["id"] for j in jobs_named(api.client, name)] == [created]


def test_a_request_while_the_first_is_under_way_is_a_409_with_retry_after(api: Api, redis_url: str) -> None:
    name, key = new_name(), str(uuid.uuid4())
    body = json.dumps(seed(name)).encode()
    fingerprint = parse_job(body, Limits(), fingerprint=True).fingerprint
    assert fingerprint is not None
    keys = IdempotencyStore(JobStore.from_url(redis_url, api.prefix))
    # A request that holds the key in another API process, still submitting.
    claim = keys.claim("jobs", TEST_TENANT, key, fingerprint, 60)
    assert isinstance(claim, Claim)

    response = post(api.client, body, key)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "idempotency_in_progress"
    assert response.headers["retry-after"] == "1"
    other = seed(name)
    other["tuner"]["max_trials"] = 3
    assert post(api.client, other, key).json()["error"]["code"] == "idempotency_key_reused"
    assert jobs_named(api.client, name) == []

    keys.release(claim)  # that request failed: this one runs now
    assert post(api.client, body, key).status_code == 202


def test_a_retry_after_its_job_was_deleted_is_a_409(api: Api) -> None:
    name, key = new_name(), str(uuid.uuid4())
    job = post(api.client, seed(name), key).json()
    assert api.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert api.client.delete(f"/v1/jobs/{job['id']}").status_code == 204

    response = post(api.client, seed(name), key)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "idempotency_original_deleted" and job["id"] in error["message"]
    assert jobs_named(api.client, name) == []


def test_a_key_expires_after_the_configured_time(redis_url: str, tmp_path: Path) -> None:
    # Every body parsed in a parse process here: the fingerprint made there is the one compared.
    overrides = {"KTUNE_IDEMPOTENCY_SECONDS": str(SHORT_TTL_SECONDS), "KTUNE_LARGE_BODY_BYTES": "0"}
    with api_process(redis_url, tmp_path, **overrides) as api:
        name, key = new_name(), str(uuid.uuid4())
        first = post(api.client, seed(name), key)
        submitted = time.monotonic()
        assert first.status_code == 202, first.text
        replay = post(api.client, seed(name), key)
        assert time.monotonic() - submitted < SHORT_TTL_SECONDS, "too slow to see the key before it expires"
        assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]

        time.sleep(max(0.0, submitted + SHORT_TTL_SECONDS + 0.5 - time.monotonic()))
        later = post(api.client, seed(name), key)
        assert later.status_code == 202, later.text
        assert later.json()["id"] != first.json()["id"]
        assert len(jobs_named(api.client, name)) == 2


# --- the key store and `Keyed.run` in this process ----------------------------------------------------


@pytest.fixture
def keys(redis_url: str) -> IdempotencyStore:
    return IdempotencyStore(JobStore.from_url(redis_url, prefix=f"scratch-{uuid.uuid4().hex[:8]}"))


def keyed(keys: IdempotencyStore, tenant: str, fingerprint: str, key: str = "k") -> Keyed:
    return Keyed(keys, "jobs", "job", tenant, key, fingerprint, seconds=60)


def run(request: Keyed, created: str, known: set[str]) -> tuple[str, bool]:
    """`request.run` of a create that makes the job `created` (here a job is its id); `known` the jobs."""

    def create() -> str:
        known.add(created)
        return created

    return request.run(create, lambda job_id: job_id, lambda job_id: job_id if job_id in known else None)


def test_tenants_have_keys_of_their_own(keys: IdempotencyStore) -> None:
    known: set[str] = set()
    assert run(keyed(keys, "acme", "fp-1"), "job-a", known) == ("job-a", False)
    # Another tenant's same key with another body: a key of its own, not a mismatch.
    assert run(keyed(keys, "globex", "fp-2"), "job-b", known) == ("job-b", False)
    assert run(keyed(keys, "acme", "fp-1"), "unused", known) == ("job-a", True)
    assert run(keyed(keys, "globex", "fp-2"), "unused", known) == ("job-b", True)
    with pytest.raises(InvalidRequest):
        run(keyed(keys, "acme", "fp-2"), "unused", known)


def test_a_failed_create_gives_its_key_up(keys: IdempotencyStore) -> None:
    request = keyed(keys, "acme", "fp")

    def fail() -> str:
        raise RuntimeError("the queue is down")

    with pytest.raises(RuntimeError):
        request.run(fail, str, lambda job_id: None)
    assert run(request, "job-a", set()) == ("job-a", False)


def test_a_claim_lapses_when_its_request_never_ends(keys: IdempotencyStore) -> None:
    held = keys.claim("jobs", "acme", "k", "fp", seconds=0.3)
    assert isinstance(held, Claim)
    assert keys.claim("jobs", "acme", "k", "fp", seconds=0.3) == KeyRecord("fp", None)
    with pytest.raises(Conflict) as raised:
        run(keyed(keys, "acme", "fp"), "job-b", set())
    assert raised.value.code == "idempotency_in_progress"
    time.sleep(0.4)
    taken = keys.claim("jobs", "acme", "k", "fp", seconds=60)
    assert isinstance(taken, Claim)
    # The first request, finishing late, neither overwrites nor frees the key the second one holds.
    assert not keys.complete(held, "job-a", 60) and not keys.release(held)
    assert keys.complete(taken, "job-b", 60)
    assert keys.claim("jobs", "acme", "k", "fp", seconds=60) == KeyRecord("fp", "job-b")


def test_a_record_lives_for_the_configured_time(keys: IdempotencyStore) -> None:
    held = keys.claim("jobs", "acme", "k", "fp", seconds=60)
    assert isinstance(held, Claim) and keys.complete(held, "job-a", seconds=0.3)
    assert 0 < keys.redis.pttl(held.key) <= 300
    time.sleep(0.4)
    assert isinstance(keys.claim("jobs", "acme", "k", "fp", seconds=60), Claim)


def test_two_tenants_may_use_one_key_over_http(api: Api) -> None:
    other = api.deployment.client_for("idem-other")
    key, mine, theirs = str(uuid.uuid4()), seed(new_name()), seed(new_name())
    first, second = post(api.client, mine, key), post(other, theirs, key)
    assert (first.status_code, second.status_code) == (202, 202), "another tenant's key is not this one's"
    assert first.json()["id"] != second.json()["id"]
    again_mine, again_theirs = post(api.client, mine, key), post(other, theirs, key)
    assert (again_mine.status_code, again_mine.json()["id"]) == (200, first.json()["id"])
    assert (again_theirs.status_code, again_theirs.json()["id"]) == (200, second.json()["id"])
