"""The `ktune` command line against a real deployment, run as a process (`python -m service.cli`, what the
console script calls), pointed at the service by KTUNE_URL and KTUNE_API_KEY; its exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from service.cli.commands import ExitCode
from tests.integration.conftest import ROOT, Deployment, free_port, service_env_for, wait_job
from tests.integration.test_client import long_job, small_job

pytestmark = pytest.mark.integration

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def cli_env(deployment: Deployment) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTUNE_")}
    return {**env, "KTUNE_URL": str(deployment.client.base_url), "KTUNE_API_KEY": deployment.api_key}


def ktune(deployment: Deployment, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `ktune ARGS` to its end (`env`: variables to set over the deployment's)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**cli_env(deployment), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def job_file(tmp_path: Path, body: dict[str, Any]) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(body))
    return str(path)


def test_submit_wait_prints_the_id_and_progress_and_exits_0(deployment: Deployment, tmp_path: Path) -> None:
    done = ktune(deployment, "submit", job_file(tmp_path, small_job()), "--wait")

    assert done.returncode == ExitCode.OK, done.stderr
    job_id = done.stdout.strip()
    assert UUID.match(job_id), done.stdout  # stdout is the id alone: JOB=$(ktune submit ...)
    progress = done.stderr.splitlines()
    assert progress[0].startswith("queued") or progress[0].startswith("running"), done.stderr
    assert any(line.startswith("succeeded") and "2/2 trials" in line for line in progress), done.stderr
    assert re.search(r"best val_accuracy: [0-9.]+ \(trial \w+\)", done.stderr), done.stderr
    assert f"job {job_id} succeeded" in progress[-1]

    status = ktune(deployment, "status", job_id)
    assert status.returncode == ExitCode.OK and re.search(r"^status\s+succeeded$", status.stdout, re.M)
    as_json = json.loads(ktune(deployment, "status", job_id, "--json").stdout)
    assert as_json["id"] == job_id and as_json["progress"]["completed"] == 2

    table = ktune(deployment, "trials", job_id)
    assert table.returncode == ExitCode.OK, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["TRIAL", "STATUS", "VAL_ACCURACY", "SECONDS"]
    values = [float(row.split()[2]) for row in rows]
    assert len(values) == 2 and values == sorted(values, reverse=True)  # val_accuracy: higher first

    model = tmp_path / "model.keras"
    download = ktune(deployment, "download", job_id, "-o", str(model))
    assert download.returncode == ExitCode.OK, download.stderr
    assert zipfile.is_zipfile(model)

    refused = ktune(deployment, "cancel", job_id)  # it has succeeded: a 409
    assert refused.returncode == ExitCode.REFUSED and "409 job_finished" in refused.stderr


def test_an_invalid_job_exits_5_with_the_servers_message(deployment: Deployment, tmp_path: Path) -> None:
    body = small_job()
    body["objective"] = {"name": "val_nonsense"}
    done = ktune(deployment, "submit", job_file(tmp_path, body), "--wait")
    assert done.returncode == ExitCode.REFUSED
    assert done.stdout == ""
    assert "objective.name" in done.stderr and "val_nonsense" in done.stderr and "422" in done.stderr

    not_json = tmp_path / "broken.json"
    not_json.write_text("{")
    broken = ktune(deployment, "submit", str(not_json))
    assert broken.returncode == ExitCode.REFUSED and "is not JSON" in broken.stderr


def test_a_cancelled_job_exits_4_and_a_timeout_exits_7(deployment: Deployment, tmp_path: Path) -> None:
    submitted = ktune(deployment, "submit", job_file(tmp_path, long_job()))
    assert submitted.returncode == ExitCode.OK, submitted.stderr
    job_id = submitted.stdout.strip()
    wait_job(deployment.client, job_id, {"running"}, timeout=120)

    timed_out = ktune(deployment, "wait", job_id, "--timeout", "1")
    assert timed_out.returncode == ExitCode.TIMEOUT, timed_out.stderr
    assert "still running" in timed_out.stderr

    with subprocess.Popen(
        [sys.executable, "-m", "service.cli", "wait", job_id],
        env=cli_env(deployment),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as waiting:
        assert waiting.stderr is not None
        first = waiting.stderr.readline()  # it is following the job now
        assert first.startswith("running"), first
        cancelled = ktune(deployment, "cancel", job_id)
        assert cancelled.returncode == ExitCode.OK, cancelled.stderr
        _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == ExitCode.CANCELLED, first + stderr
    assert f"job {job_id} cancelled" in stderr


def test_no_key_unknown_job_and_no_service(deployment: Deployment) -> None:
    unknown = ktune(deployment, "status", "no-such-job")
    assert unknown.returncode == ExitCode.REFUSED and "404" in unknown.stderr

    anonymous = ktune(deployment, "status", "x", KTUNE_API_KEY="")
    assert anonymous.returncode == ExitCode.REFUSED and "401" in anonymous.stderr

    nobody = ktune(deployment, "--url", f"http://127.0.0.1:{free_port()}", "status", "x")
    assert nobody.returncode == ExitCode.UNAVAILABLE and "no answer from" in nobody.stderr


def test_serve_and_worker_run_the_api_and_a_worker(redis_url: str, tmp_path: Path) -> None:
    """`ktune serve` and `ktune worker -c 1 -n NAME` (options passed through to celery), on a Redis
    database of their own so that this worker takes none of the other tests' trials."""
    own_db = redis_url.rsplit("/", 1)[0] + "/11"
    env = service_env_for(own_db, tmp_path / "artifacts", KTUNE_KEY_PREFIX=f"cli-{uuid.uuid4().hex[:8]}")
    deployment = Deployment(env, tmp_path)
    try:
        name = "cli@ktune-test"
        deployment.workers[name] = deployment._start(
            ["-m", "service.cli", "worker", "-c", "1", "-n", name], "cli-worker.log"
        )
        deployment.api_process = deployment._start(["-m", "service.cli", "serve"], "cli-api.log")
        deployment.wait_ready(workers=1)
        ready = deployment.client.get("/readyz").json()
        assert ready["checks"]["queues"]["cpu"] == [name]
    finally:
        deployment.stop()


def test_finalize_and_recheck_follow_their_run_and_the_final_model_downloads(
    deployment: Deployment, tmp_path: Path
) -> None:
    job_id = ktune(deployment, "submit", job_file(tmp_path, small_job()), "--wait").stdout.strip()
    final = tmp_path / "final.keras"
    early = ktune(deployment, "download", job_id, "--final", "-o", str(final))
    assert early.returncode == ExitCode.REFUSED and "409 no_final_model" in early.stderr
    assert not final.exists()

    finalized = ktune(deployment, "finalize", job_id, "--wait", "--timeout", "300")
    assert finalized.returncode == ExitCode.OK, finalized.stderr
    assert re.search(r"^finalization \S+ of job \S+ is queued$", finalized.stderr, re.M), finalized.stderr
    assert f"finalization of job {job_id}: succeeded" in finalized.stderr
    download = ktune(deployment, "download", job_id, "--final", "-o", str(final))
    assert download.returncode == ExitCode.OK and "finalized model" in download.stderr, download.stderr
    assert zipfile.is_zipfile(final)

    rechecked = ktune(deployment, "recheck", job_id, "--top-k", "1", "--seeds", "2", "--wait")
    assert rechecked.returncode == ExitCode.OK, rechecked.stderr
    assert re.search(rf"recheck of job {job_id}: succeeded, winner \w+ holds", rechecked.stderr), (
        rechecked.stderr
    )
    status = ktune(deployment, "status", job_id).stdout
    assert re.search(r"^finalized\s+succeeded$", status, re.M) and re.search(
        r"^rechecked\s+succeeded", status, re.M
    )

    # Finalizing an unknown job is refused: exit 5, the server's message.
    unknown = ktune(deployment, "finalize", str(uuid.uuid4()))
    assert unknown.returncode == ExitCode.REFUSED and "404 job_not_found" in unknown.stderr
