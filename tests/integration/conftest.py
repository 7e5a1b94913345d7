"""Real parts for integration tests: a redis-server on a free port, Celery worker processes, the API.

Everything runs as separate processes started the way users start them (`python -m service`,
`python -m worker`), configured only through KTUNE_* environment variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.core import lifecycle, queue
from service.core.api_keys import ApiKeyStore
from service.core.artifacts import ArtifactStore
from service.core.job_data import stored_inline
from service.core.records import JobRecord, utcnow
from service.core.settings import Settings
from service.core.spec import JobCreate
from service.core.states import JobStatus
from service.core.store import JobStore
from worker.context import WorkerContext

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            raise
        except Exception as exc:  # the thing polled may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


def _stop(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed; `make test` installs it (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: redis.Redis.from_url(url).ping(), 15, "redis-server")
    yield url
    _stop(process)


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    """A real S3-protocol server (moto's standalone server, its own process on a free port), and the AWS_*
    settings that reach it. Each test makes its own bucket (`new_bucket`)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "ktune-test",
        "AWS_SECRET_ACCESS_KEY": "ktune-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    wait_for(lambda: httpx.get(env["AWS_ENDPOINT_URL"], timeout=2).status_code < 500, 30, "moto's S3 server")
    yield env
    _stop(process, grace=5)


@pytest.fixture
def s3_settings(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The S3 server's AWS_* settings in this process's environment too (boto3 reads them from there)."""
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    return s3_env


def new_bucket(s3_env: dict[str, str]) -> str:
    """A new, empty bucket on the test S3 server."""
    import boto3

    name = f"ktune-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        region_name=s3_env["AWS_DEFAULT_REGION"],
    )
    client.create_bucket(Bucket=name)
    return name


def service_env_for(redis_url: str, artifacts: Path, **overrides: str) -> dict[str, str]:
    """The environment of one ktune deployment: its own Redis key prefix, artifacts and API port."""
    # The suite sets its own KTUNE_* values; only the choice of training loop may come from outside.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTUNE_") or k == "KTUNE_TRAINING_LOOP"}
    env.update(
        {
            "KTUNE_REDIS_URL": redis_url,
            "KTUNE_ARTIFACT_DIR": str(artifacts),
            "KTUNE_HOST": "127.0.0.1",
            "KTUNE_PORT": str(free_port()),
            "KTUNE_STALE_QUEUED_SECONDS": "30",
            # The suite posts dozens of jobs a minute as one tenant; test_rate_limit.py tests the limit.
            "KTUNE_JOB_RATE_LIMIT": "600/minute",
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **overrides,
        }
    )
    return env


TEST_TENANT = "tests"


def key_store(env: dict[str, str]) -> ApiKeyStore:
    """The API keys of the deployment `env` configures (the store `python -m service keys` uses)."""
    return ApiKeyStore(JobStore.from_url(env["KTUNE_REDIS_URL"], env.get("KTUNE_KEY_PREFIX", "ktune")))


class Deployment:
    """Worker processes and an API started like users start them, stopped by `stop()`.

    Its `client` sends an API key of the tenant TEST_TENANT (`api_key`) with every request.
    """

    def __init__(
        self, env: dict[str, str], logs: Path, python: str = sys.executable, cwd: Path = ROOT
    ) -> None:
        """`python`, `cwd`: the interpreter its processes run and where (another environment's, outside the
        source tree, for the API as its image installs it)."""
        self.env = env
        self.logs = logs
        self.python, self.cwd = python, cwd
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.api_process: subprocess.Popen[bytes] | None = None
        self.api_key, _ = key_store(env).create(TEST_TENANT)
        self._clients: list[httpx.Client] = []
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{env['KTUNE_PORT']}",
            timeout=30,
            headers={"Authorization": f"Bearer {self.api_key}"},
        )

    def client_for(self, tenant: str) -> httpx.Client:
        """A client of this deployment's API with a new key of `tenant` (closed by `stop()`)."""
        key, _ = key_store(self.env).create(tenant)
        client = httpx.Client(
            base_url=str(self.client.base_url), timeout=30, headers={"Authorization": f"Bearer {key}"}
        )
        self._clients.append(client)
        return client

    def _start(
        self, args: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.logs / log_name, "ab")  # noqa: SIM115 - closed with the process; a restart appends
        return subprocess.Popen(
            [self.python, *args],
            cwd=self.cwd,
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self, name: str, **overrides: str) -> None:
        """A worker node with one pool process on the cpu queue (`overrides`: settings of its own, such as
        a KTUNE_ARTIFACT_DIR that stands for another machine's disk)."""
        self.workers[name] = self._start(
            ["-m", "worker", "-c", "1", "-n", name, "-Q", "cpu"],
            f"{name.split('@')[0]}.log",
            {**self.env, **overrides},
        )

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker node and its pool process at once, as when a machine dies."""
        os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers.pop(name).wait(10)

    def terminate_worker(self, name: str, timeout: float = 60) -> None:
        """SIGTERM a worker node (warm shutdown, as `docker stop` does) and wait for it to exit."""
        process = self.workers.pop(name)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout)

    def start_api(self) -> None:
        self.api_process = self._start(["-m", "service"], "api.log")

    def wait_ready(self, workers: int) -> None:
        def ready() -> bool:
            response = self.client.get("/readyz")
            return (
                response.status_code == 200
                and len(response.json()["checks"]["queues"].get("cpu", [])) == workers
            )

        wait_for(ready, 90, f"the API and {workers} workers")

    @classmethod
    @contextlib.contextmanager
    def running(cls, env: dict[str, str], logs: Path, worker_names: list[str]) -> Iterator[Deployment]:
        """Workers with these names and the API, once all are ready; stopped on leaving."""
        deployment = cls(env, logs)
        try:
            for name in worker_names:
                deployment.start_worker(name)
            deployment.start_api()
            deployment.wait_ready(workers=len(worker_names))
            yield deployment
        finally:
            deployment.stop()

    @classmethod
    @contextlib.contextmanager
    def api_only(cls, env: dict[str, str], logs: Path, **where: Any) -> Iterator[Deployment]:
        """The API alone, no worker, once it answers (`where`: `python` and `cwd`, as for the constructor);
        stopped on leaving."""
        deployment = cls(env, logs, **where)
        try:
            deployment.start_api()
            wait_for(lambda: deployment.client.get("/healthz").status_code == 200, 60, "the API")
            yield deployment
        finally:
            deployment.stop()

    def stop(self) -> None:
        self.client.close()
        for client in self._clients:
            client.close()
        for process in [*self.workers.values(), *([self.api_process] if self.api_process else [])]:
            _stop(process)


@pytest.fixture(scope="session")
def service_env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return service_env_for(redis_url, tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def deployment(service_env: dict[str, str], logs_dir: Path) -> Iterator[Deployment]:
    """Two worker nodes with one pool process each, and the API, once all are ready."""
    with Deployment.running(service_env, logs_dir, ["w1@ktune-test", "w2@ktune-test"]) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def workers(deployment: Deployment) -> list[str]:
    return list(deployment.workers)


@pytest.fixture(scope="session")
def api(deployment: Deployment) -> httpx.Client:
    return deployment.client


def wait_job(client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 300) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until the job reaches one of `statuses`."""

    def reached() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            raise AssertionError(f"job ended {job['status']}, expected {statuses}: {job.get('error')}")
        return None

    result: dict[str, Any] = wait_for(reached, timeout, f"job {job_id} to reach {statuses}", interval=0.5)
    return result


def ended_run(client: httpx.Client, job_id: str, field: str, timeout: float = 300) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until the job's run `field` (finalization, recheck) has succeeded or failed."""

    def ended() -> dict[str, Any] | None:
        run: dict[str, Any] | None = client.get(f"/v1/jobs/{job_id}").json()[field]
        return run if run is not None and run["status"] in ("succeeded", "failed") else None

    result: dict[str, Any] = wait_for(ended, timeout, f"job {job_id}'s {field}", interval=0.5)
    return result


def long_job(
    api: httpx.Client,
    max_trials: int,
    batch_size: int = 4,
    max_parallel_trials: int = 1,
    epochs: int = 10_000,
    algorithm: str = "random",
) -> str:
    """Post an xor-classifier search (random unless told) whose trials train for `epochs` (10,000: several
    seconds)."""
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["training"].update(epochs=epochs, batch_size=batch_size)
    body["tuner"].update(algorithm=algorithm, max_trials=max_trials, max_parallel_trials=max_parallel_trials)
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def tiny_xor(labels: list[Any], epochs: int = 30) -> dict[str, Any]:
    """The README's classifier example made small: XOR with `labels` as targets, one layer of 8 or 16 units,
    2 random trials of `epochs` epochs at once (seed 3)."""
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["data"]["train"]["y"] = labels
    body["data"]["validation"]["y"] = labels
    body["model"] = {"hidden_layers": 1, "units": {"values": [8, 16]}, "activation": "tanh"}
    body["optimizer"] = {"learning_rate": 0.05}
    body["training"] = {"epochs": epochs, "batch_size": 4}
    body["tuner"] = {"algorithm": "random", "max_trials": 2, "max_parallel_trials": 2, "seed": 3}
    return body


# --- the store and search steps in the test process --------------------------------------------------


@pytest.fixture
def scratch_store(redis_url: str) -> JobStore:
    """A job store on a key prefix of its own."""
    return JobStore.from_url(redis_url, prefix=f"scratch-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def scratch_job(scratch_store: JobStore) -> str:
    """A running job in `scratch_store` with no trial, no search state and placeholder data."""
    spec = {"task": "regression", "resources": {"accelerator": "cpu"}, "tuner": {"max_trials": 1}}
    record = JobRecord(id=str(uuid.uuid4()), status=JobStatus.RUNNING, spec=spec, created_at=utcnow())
    scratch_store.create_job(record, b"npz bytes")
    return record.id


IN_PROCESS_LOCK_SECONDS = 1.5


@pytest.fixture
def worker_ctx(redis_url: str, tmp_path: Path) -> WorkerContext:
    """A worker's context in this process, on its own key prefix, with a short step lock."""
    settings = Settings(
        redis_url=redis_url,
        artifact_dir=str(tmp_path),
        step_lock_seconds=IN_PROCESS_LOCK_SECONDS,
        step_wait_seconds=10,
    )
    store = JobStore.from_url(redis_url, prefix=f"in-process-{uuid.uuid4().hex[:8]}")
    return WorkerContext(settings, store, ArtifactStore(tmp_path))


@pytest.fixture
def sent_trials(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Trial ids whose run message was sent, recorded instead of queued (no worker runs them)."""
    calls: list[str] = []
    monkeypatch.setattr(queue, "send_run_trial", lambda job_id, trial_id, *_: calls.append(trial_id))
    return calls


def running_job(ctx: WorkerContext, algorithm: str = "random", max_trials: int = 4, **tuner: Any) -> str:
    """The README's classifier example as a search of 2 parallel trials (random unless told, and `tuner`'s
    other settings), stored and running."""
    body = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["tuner"].update(algorithm=algorithm, max_trials=max_trials)
    body["tuner"].update(tuner)
    return running_job_of(ctx, body)


def running_job_of(ctx: WorkerContext, body: dict[str, Any]) -> str:
    """The job `body` asks for, stored and running."""
    spec = JobCreate.model_validate(body).resolved()
    record = JobRecord(
        id=str(uuid.uuid4()),
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json", exclude={"data"}),
        created_at=utcnow(),
    )
    ctx.store.create_job(record, stored_inline(spec)[1])
    assert lifecycle.start(ctx.store, record.id)
    return record.id
