"""Webhooks against the real service: a signed POST of the ended job to a receiver on loopback (allowed by
KTUNE_WEBHOOK_ALLOWED_HOSTS in this deployment), retried until it gets a 2xx, each attempt on the job;
non-public receivers refused. This deployment logs JSON: its worker's lines name their job and trial."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.core.webhooks import SIGNATURE_HEADER, verify
from tests.integration.conftest import ROOT, Deployment, service_env_for, wait_for, wait_job

pytestmark = pytest.mark.integration

SECRET = "whsec-test-0123456789"
WORKER = "hooks@ktune-test"


class Receiver:
    """An HTTP server on 127.0.0.1 that notes each POST and answers from a script per path (then 200)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[dict[str, str], bytes]]] = {}
        self.script: dict[str, list[int]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.calls.setdefault(self.path, []).append((dict(self.headers), body))
                answers = receiver.script.get(self.path, [])
                self.send_response(answers.pop(0) if answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()


@pytest.fixture(scope="module")
def hooked(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment of its own (Redis database 12) that signs webhooks, allows loopback receivers, retries
    after 1 s, 3 s ..., and logs JSON."""
    env = service_env_for(
        redis_url.rsplit("/", 1)[0] + "/12",
        tmp_path_factory.mktemp("hooks-artifacts"),
        KTUNE_WEBHOOK_SECRET=SECRET,
        KTUNE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        KTUNE_WEBHOOK_RETRY_SECONDS="1",
        KTUNE_LOG_FORMAT="json",
    )
    with Deployment.running(env, tmp_path_factory.mktemp("hooks-logs"), [WORKER]) as deployment:
        yield deployment


def tiny_body(callback_url: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["training"].update(epochs=3)
    body["tuner"].update(algorithm="random", max_trials=2, max_parallel_trials=2)
    return {**body, "callback_url": callback_url}


@pytest.fixture(scope="module")
def jobs(hooked: Deployment, receiver: Receiver) -> dict[str, str]:
    """Two finished jobs: one whose receiver answers 200, one whose receiver answers 500 twice first."""
    receiver.script["/flaky"] = [500, 500]
    ids = {}
    for path in ("/ok", "/flaky"):
        response = hooked.client.post("/v1/jobs", json=tiny_body(receiver.url(path)))
        assert response.status_code == 202, response.text
        ids[path] = response.json()["id"]
    for job_id in ids.values():
        wait_job(hooked.client, job_id, {"succeeded"}, timeout=300)
    return ids


def delivered(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        webhook: dict[str, Any] | None = client.get(f"/v1/jobs/{job_id}").json()["webhook"]
        return webhook if webhook and webhook["delivered"] else None

    result: dict[str, Any] = wait_for(done, 60, f"the webhook of job {job_id}", interval=0.5)
    return result


def test_the_ended_job_is_posted_signed(hooked: Deployment, receiver: Receiver, jobs: dict[str, str]) -> None:
    job_id = jobs["/ok"]
    webhook = delivered(hooked.client, job_id)
    assert webhook["url"] == receiver.url("/ok")
    [attempt] = webhook["attempts"]
    assert (attempt["status_code"], attempt["error"], attempt["event"]) == (200, None, "succeeded")
    [(headers, body)] = receiver.calls["/ok"]
    assert headers["Content-Type"] == "application/json"
    assert verify(SECRET, headers[SIGNATURE_HEADER], body, now=int(time.time()))
    assert not verify(
        SECRET, headers[SIGNATURE_HEADER], body.replace(b"succeeded", b"failed"), int(time.time())
    )
    assert not verify("another-secret", headers[SIGNATURE_HEADER], body, now=int(time.time()))
    sent = json.loads(body)
    shown = hooked.client.get(f"/v1/jobs/{job_id}").json()
    assert sent.keys() == shown.keys()
    # The job as GET shows it, but for the deliveries noted since.
    assert {**sent, "webhook": None} == {**shown, "webhook": None}


def test_a_failing_receiver_is_retried_until_it_answers_2xx(
    hooked: Deployment, receiver: Receiver, jobs: dict[str, str]
) -> None:
    webhook = delivered(hooked.client, jobs["/flaky"])
    codes = [a["status_code"] for a in webhook["attempts"]]
    assert codes == [500, 500, 200]
    assert [a["error"] for a in webhook["attempts"]] == ["answered 500", "answered 500", None]
    assert len(receiver.calls["/flaky"]) == 3
    times = [a["at"] for a in webhook["attempts"]]
    assert times == sorted(times)


@pytest.mark.parametrize("host", ["10.0.0.7", "localhost", "169.254.169.254", "[::1]"])
def test_a_non_public_receiver_is_refused_unless_allowed(hooked: Deployment, host: str) -> None:
    response = hooked.client.post("/v1/jobs", json=tiny_body(f"http://{host}:8080/hook"))
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["fields"]
    assert problem["field"] == "callback_url"
    assert "KTUNE_WEBHOOK_ALLOWED_HOSTS" in problem["message"]


def test_worker_logs_are_json_naming_job_and_trial(hooked: Deployment, jobs: dict[str, str]) -> None:
    lines = (Path(hooked.logs) / f"{WORKER.split('@')[0]}.log").read_text().splitlines()
    entries = []
    for line in lines:
        if line.startswith("{"):
            entries.append(json.loads(line))
    assert entries and all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    about_trials = [e for e in entries if e["job_id"] == jobs["/ok"] and e["trial_id"]]
    assert about_trials, "no worker line named a trial of the job"


def test_a_tenants_own_secret_signs_its_webhooks(hooked: Deployment, receiver: Receiver) -> None:
    tenant = f"own-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(
        [sys.executable, "-m", "service", "keys", "webhook-secret", tenant],
        cwd=ROOT,
        env=hooked.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    secret = made.stdout.strip()
    assert secret.startswith("whsec_") and "shown only once" in made.stderr
    client = hooked.client_for(tenant)
    response = client.post("/v1/jobs", json=tiny_body(receiver.url("/own")))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    wait_job(client, job_id, {"succeeded"}, timeout=300)
    delivered(client, job_id)
    [(headers, body)] = receiver.calls["/own"]
    now = int(time.time())
    assert verify(secret, headers[SIGNATURE_HEADER], body, now)
    assert not verify(SECRET, headers[SIGNATURE_HEADER], body, now)  # not the service-wide one
