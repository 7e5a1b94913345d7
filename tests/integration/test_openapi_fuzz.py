"""Schemathesis against the live API: generated requests to every operation of its own /openapi.json.

No response is a 5xx, and every response is documented: its status code, content type, headers and body.
The API runs as users start it (`python -m service`), alone: jobs it accepts stay queued.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.errors import FailureGroup

from service.core import lifecycle
from service.core.artifacts import ArtifactStore
from service.core.records import BestTrial, ExecutionRecord, TrialRecord, utcnow
from service.core.states import TrialStatus
from service.core.store import JobStore
from tests.integration.conftest import ROOT, Deployment, service_env_for

pytestmark = pytest.mark.integration

# Keyed auth: KTUNE_AUTH=on, a key from `python -m service keys create`, sent as a Bearer token on every
# request (False runs the same requests with auth off, as the local tenant).
KEYED_AUTH = True

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
# /readyz answers 503 "not ready" by design while no worker consumes a queue, and none runs here, nor does
# a prediction (503 prediction_unavailable, after KTUNE_PREDICT_TIMEOUT_SECONDS); the other checks still
# hold those 503s to their documented status, content type and body.
EXPECTED_5XX = {"GET /readyz", "POST /v1/jobs/{job_id}/predict"}
# Per operation and generation mode, at most; an operation with nothing to vary (GET /healthz) stops at
# one. 17 runs have room for them all: 17 * 70 + 2 requests at most, at least 1,000 asserted.
EXAMPLES = 70
MIN_REQUESTS = 1_000
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same requests on every run
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failing request is reported as sent
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


@pytest.fixture(scope="module")
def fuzz_api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The API alone, on Redis database 2 and a key prefix of its own, emptied afterwards.

    No worker runs, so the jobs it accepts stay queued. On a database of its own their start messages wait
    in queues apart from the ones other tests' workers consume: none of them is ever trained.
    """
    url = redis_url.rsplit("/", 1)[0] + "/2"
    env = service_env_for(
        url,
        tmp_path_factory.mktemp("fuzz-artifacts"),
        KTUNE_KEY_PREFIX=f"fuzz-{uuid.uuid4().hex[:6]}",
        KTUNE_AUTH="on" if KEYED_AUTH else "off",
        KTUNE_PREDICT_TIMEOUT_SECONDS="0.1",  # no worker answers here: a 503 soon
    )
    try:
        with Deployment.api_only(env, tmp_path_factory.mktemp("fuzz-logs")) as deployment:
            yield deployment
    finally:
        redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="module")
def auth_headers(fuzz_api: Deployment) -> dict[str, str]:
    """What every generated request carries besides its own headers: a fresh tenant's key, with auth on."""
    if not KEYED_AUTH:
        return {}
    created = subprocess.run(
        [sys.executable, "-m", "service", "keys", "create", "fuzz"],
        cwd=ROOT,
        env=fuzz_api.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {"Authorization": f"Bearer {created.stdout.strip()}"}


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((ROOT / "examples" / name).read_text())
    return body


def finish_as_a_worker_would(env: dict[str, str], job_id: str) -> None:
    """Run a queued job's one trial to completion through the store, as a worker does, with a best model."""
    store = JobStore.from_url(env["KTUNE_REDIS_URL"], env["KTUNE_KEY_PREFIX"])
    trial = TrialRecord(id="00", status=TrialStatus.QUEUED, hyperparameters={"num_layers": 2, "units_0": 32})
    assert lifecycle.start(store, job_id) and lifecycle.queue_trial(store, job_id, trial)
    assert lifecycle.start_trial(store, job_id, trial.model_copy(update={"started_at": utcnow()}))
    done = trial.model_copy(
        update={
            "status": TrialStatus.COMPLETED,
            "objective_value": 0.12,
            "metrics": {"loss": 0.1, "val_loss": 0.12},
            "executions": [
                ExecutionRecord(history={"loss": [0.3, 0.1], "val_loss": [0.2, None]}, best_epoch=1)
            ],
            "finished_at": utcnow(),
            "duration_seconds": 1.5,
            "worker": "fuzz:1",
        }
    )
    assert lifecycle.end_trial(store, job_id, done)
    model = ArtifactStore(env["KTUNE_ARTIFACT_DIR"]).best_model_path(job_id)
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"PK\x03\x04 a .keras file is a zip archive")
    # As a finished POST .../finalize leaves them (worker.finalization).
    artifacts = ArtifactStore(env["KTUNE_ARTIFACT_DIR"])
    artifacts.local_path(artifacts.final_model_key(job_id)).write_bytes(model.read_bytes())
    artifacts.local_path(artifacts.final_model_card_key(job_id)).write_text(json.dumps({"job_id": job_id}))
    store.set_job_fields(
        job_id,
        best=BestTrial(
            trial_id="00", hyperparameters=done.hyperparameters, objective_value=0.12, metrics=done.metrics
        ),
    )
    assert lifecycle.succeed(store, job_id)


@pytest.fixture(scope="module")
def known_ids(fuzz_api: Deployment, auth_headers: dict[str, str]) -> dict[str, list[str]]:
    """Path parameters that name real resources, so generated requests reach past the 404s of random ids:
    a queued job, a job that succeeded (trials, best model), an uploaded data set and a built-in one."""
    client = fuzz_api.client
    jobs = []
    for name in ("xor-seed.json", "xor-classifier.json"):
        response = client.post("/v1/jobs", json=example(name), headers=auth_headers)
        assert response.status_code == 202, response.text
        jobs.append(response.json()["id"])
    finish_as_a_worker_would(fuzz_api.env, jobs[1])
    csv = "x1,x2,y\n" + "".join(f"{i % 2},{i // 2 % 2},{(i % 2) ^ (i // 2 % 2)}\n" for i in range(20))
    response = client.post("/v1/datasets", files={"file": ("xor.csv", csv.encode())}, headers=auth_headers)
    assert response.status_code == 201, response.text
    return {"job_id": jobs, "dataset_id": [response.json()["id"], "iris"]}


def strategy(
    operation: schemathesis.APIOperation, mode: GenerationMode, known: dict[str, list[str]]
) -> st.SearchStrategy[schemathesis.Case]:
    """Requests of one operation: generated ones and, as often, ones naming a known resource."""
    generated = operation.as_strategy(generation_mode=mode)
    named = [
        operation.as_strategy(generation_mode=mode, path_parameters={p.name: value})
        for p in operation.path_parameters
        for value in known.get(p.name, [])
        # The events of the queued job never end (no worker runs here): only the finished job's there.
        if not (operation.label == "GET /v1/jobs/{job_id}/events" and value == known["job_id"][0])
    ]
    if operation.label in ("POST /v1/jobs", "POST /v1/jobs/validate"):
        # Bodies generated from the schema are practically never a valid job: send the tutorial's too.
        named = (
            [
                operation.as_strategy(generation_mode=mode, body=example(name), media_type="application/json")
                for name in ("xor-seed.json", "xor-classifier.json")
            ]
            if mode is GenerationMode.POSITIVE
            else []
        )
    if not named:
        return generated
    return st.one_of(generated, st.one_of(*named))


def fuzz(
    operation: schemathesis.APIOperation,
    strategy: st.SearchStrategy[schemathesis.Case],
    base_url: str,
    headers: dict[str, str],
    answered: Counter[int],
) -> None:
    """Send up to EXAMPLES requests of `strategy` to one operation, checking every answer and counting its
    status in `answered`. Raises the failures of the first answer that fails a check."""
    applied = [c for c in CHECKS if not (c is checks.not_a_server_error and operation.label in EXPECTED_5XX)]

    @SETTINGS
    @hypothesis.given(case=strategy)
    def call(case: schemathesis.Case) -> None:
        response = case.call_and_validate(base_url=base_url, headers=headers, checks=applied, timeout=60)
        answered[response.status_code] += 1

    call()


def test_every_operation_answers_as_documented(
    fuzz_api: Deployment, auth_headers: dict[str, str], known_ids: dict[str, list[str]]
) -> None:
    # The schema comes from the live app, so it is what clients read. (Schemathesis' own pytest
    # integration cannot be used: a schema loaded at import needs the API up at collection, and its
    # fixture-based loader fails on pytest 9.2, which dropped the Function._nodeid it sets.)
    base_url = str(fuzz_api.client.base_url)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=dict(auth_headers))
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deletions last, so the known resources are there for the other operations first.
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
    answered: dict[str, Counter[int]] = {operation.label: Counter() for operation in operations}
    failures: list[str] = []
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                requests = strategy(operation, mode, known_ids)
                fuzz(operation, requests, base_url, auth_headers, answered[operation.label])
            except Unsatisfiable:
                # No invalid request exists for it: no parameters, or only free-text path parameters.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, FailureGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    total = sum(counts.total() for counts in answered.values())
    print(f"\n{total} requests in {time.monotonic() - started:.0f} s")
    for label, counts in answered.items():
        print(f"  {label}: {dict(sorted(counts.items()))}")
    assert not failures, "\n\n".join(failures)
    assert total >= MIN_REQUESTS, answered
    # Every operation got past its errors at least once (with a known resource, where it names one).
    never_succeeded = [
        label
        for label, counts in answered.items()
        if label not in EXPECTED_5XX and not any(200 <= status < 300 for status in counts)
    ]
    assert never_succeeded == []
