"""A redis-server restart (append-only file on) in the middle of a job loses no job and no finished trial."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.conftest import Deployment, free_port, long_job, service_env_for, wait_for, wait_job

pytestmark = pytest.mark.integration


class RedisServer:
    """A redis-server with an append-only file, as docker-compose runs it, that can be restarted."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None
        self.process = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--maxmemory-policy",
                "noeviction",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: redis.Redis.from_url(self.url).ping(), 15, "redis-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            redis.Redis.from_url(self.url).shutdown()  # writes and syncs the append-only file first
            self.process.wait(15)


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Deployment]]:
    server = RedisServer(tmp_path_factory.mktemp("aof"))
    server.start()
    env = service_env_for(
        server.url,
        tmp_path_factory.mktemp("restart-artifacts"),
        KTUNE_LEASE_SECONDS="10",
        KTUNE_STALE_QUEUED_SECONDS="8",
    )
    try:
        with Deployment.running(
            env, tmp_path_factory.mktemp("restart-logs"), ["x1@ktune-test"]
        ) as deployment:
            yield server, deployment
    finally:
        server.stop()


def test_a_redis_restart_mid_job_loses_nothing(restartable: tuple[RedisServer, Deployment]) -> None:
    server, deployment = restartable
    api = deployment.client
    job_id = long_job(api, max_trials=3, epochs=5_000)

    def one_done_one_training() -> dict[str, Any] | None:
        trials = api.get(f"/v1/jobs/{job_id}/trials").json()["items"]
        done = [t for t in trials if t["status"] == "completed"]
        training = [t for t in trials if t["status"] == "running" and t["executions"]]
        return done[0] if done and training else None

    first = wait_for(one_done_one_training, 120, "one trial done and the next training")
    time.sleep(1.5)  # let appendfsync everysec write the latest changes
    server.stop()
    time.sleep(3)
    server.start()

    done = wait_job(api, job_id, {"succeeded"}, timeout=240)
    trials = {t["id"]: t for t in api.get(f"/v1/jobs/{job_id}/trials").json()["items"]}
    assert done["progress"]["completed"] == 3 and len(trials) == 3
    assert trials[first["id"]]["finished_at"] == first["finished_at"], (
        "the finished trial was kept, not rerun"
    )
    assert api.get(f"/v1/jobs/{job_id}/artifacts/best-model").status_code == 200
