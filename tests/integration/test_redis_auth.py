"""ktune against a Redis that requires a password, as docker-compose.yml runs it: the API, the job store,
the broker and the workers all authenticate from the password in KTUNE_REDIS_URL, and it never shows in a
response or a log line."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.settings import Settings
from tests.integration.conftest import ROOT, Deployment, _stop, free_port, service_env_for, wait_for, wait_job

pytestmark = pytest.mark.integration

PASSWORD = secrets.token_hex(16)


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL (without the password) of a redis-server that requires PASSWORD."""
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is not installed"
    port = free_port()
    workdir = tmp_path_factory.mktemp("locked-redis")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD, "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: redis.Redis.from_url(url, password=PASSWORD).ping(), 15, "redis-server")
    yield url
    _stop(process)


def with_password(url: str, password: str) -> str:
    return url.replace("redis://", f"redis://:{password}@", 1)


def test_the_redis_refuses_clients_without_the_password(locked_redis: str) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(locked_redis).set("x", "1")


def test_api_and_workers_run_jobs_through_a_password_protected_redis(
    locked_redis: str, tmp_path: Path
) -> None:
    env = service_env_for(with_password(locked_redis, PASSWORD), tmp_path / "artifacts")
    logs = tmp_path / "logs"
    logs.mkdir()
    with Deployment.running(env, logs, ["locked@ktune-test"]) as deployment:
        api = deployment.client
        ready = api.get("/readyz")  # the store's ping and the workers' answer through the broker
        assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"

        body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-seed.json").read_text())
        body["model"].update(hidden_layers=1, units=8)
        body["training"]["epochs"] = 3
        body["tuner"].update(max_trials=1, executions_per_trial=1)
        response = api.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        done = wait_job(api, response.json()["id"], {"succeeded"}, timeout=240)
        assert done["progress"]["completed"] == 1
        texts = [ready.text, response.text, api.get(f"/v1/jobs/{done['id']}/trials").text]
    logged = {path.name: path.read_text(errors="replace") for path in logs.iterdir()}
    assert "redis://:**@" in logged["locked.log"], "Celery's banner shows the broker with the password masked"
    for name, text in [*logged.items(), *(("response", t) for t in texts)]:
        assert PASSWORD not in text, f"the password is in {name}"


def test_a_wrong_password_is_a_503_that_says_nothing_of_redis(locked_redis: str, tmp_path: Path) -> None:
    settings = Settings(
        redis_url=with_password(locked_redis, "not-the-password"),
        artifact_dir=str(tmp_path),
        trusted_hosts=["testserver"],
        auth="off",  # with auth on, the 503 comes from reading the key (the same fixed answer)
    )
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    address = locked_redis.split("//")[1].split("/")[0]
    for response in (client.get("/v1/jobs"), client.get("/readyz")):
        assert response.status_code == 503, response.text
        for leak in ("not-the-password", "WRONGPASS", "invalid username-password", address):
            assert leak not in response.text
