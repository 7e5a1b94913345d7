"""One short job per search algorithm against ktune as installed: `scripts/check-install` runs this with the
Python of an environment that has the package without its [dev] extra (as the Docker image has it).

A redis-server on a free port, `python -m worker` and `python -m service` of that environment, started in a
scratch directory (not the source tree, so the installed packages are imported); tiny XOR data, a few
trials of a few epochs. Every job must end `succeeded` and its best model must download and load.
Standard library only: this runs with what the shipped install has, and nothing from [dev].
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

XOR = {"x": [[0, 0], [0, 1], [1, 0], [1, 1]], "y": [0, 1, 1, 0]}
# Per algorithm: its tuner settings and the trials it must complete. Units 4-16 in steps of 4 and a
# continuous learning rate; the grid searches the 4 units (a fixed rate) and ends by exhausting them. The
# Bayesian search samples 3 x 7 hyperparameters (the fixed ones count) at random before its Gaussian
# process (scipy, scikit-learn) proposes the last 3. Hyperband: 2 brackets, 3 + 1 and 2 trials.
TUNERS: dict[str, dict[str, Any]] = {
    "random": {"max_trials": 3},
    "grid": {"max_trials": 10},
    "bayesian": {"max_trials": 24, "max_parallel_trials": 2},
    "hyperband": {"max_trials": 10, "max_epochs": 3, "factor": 3},
}
COMPLETED = {"random": 3, "grid": 4, "bayesian": 24, "hyperband": 6}
FINAL = {"succeeded", "failed", "cancelled"}
JOB_TIMEOUT = 600.0  # seconds for all four jobs: a hang, not a slow machine, should fail the check


def job_body(algorithm: str) -> dict[str, Any]:
    return {
        "name": f"check-install-{algorithm}",
        "task": "binary_classification",
        "data": {"train": XOR, "validation": XOR},
        "model": {"hidden_layers": 1, "units": {"min": 4, "max": 16, "step": 4}},
        "optimizer": {
            "learning_rate": 0.05 if algorithm == "grid" else {"min": 0.01, "max": 0.1, "sampling": "log"}
        },
        "training": {"epochs": 1, "batch_size": 4},
        "tuner": {"algorithm": algorithm, "seed": 1, **TUNERS[algorithm]},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, urllib.error.URLError):
            pass  # not up yet
        time.sleep(0.5)
    raise SystemExit(f"check-install: timed out after {timeout:.0f} s waiting for {what}")


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def json(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, content = self.request(method, path, body)
        if status != expect:
            raise SystemExit(f"check-install: {method} {path} answered {status}: {content[:2000]!r}")
        return json.loads(content)


class Stack:
    """redis-server, one worker and the API, each a process group of its own, logging to `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        redis_port, api_port = free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KTUNE_")}
        self.env.update(
            KTUNE_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            KTUNE_ARTIFACT_DIR=str(workdir / "artifacts"),
            KTUNE_HOST="127.0.0.1",
            KTUNE_PORT=str(api_port),
            PYTHONUNBUFFERED="1",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        self.redis_port = redis_port
        self.api = Api(api_port)

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.processes[name] = subprocess.Popen(
            argv, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def up(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("check-install: redis-server is not installed")
        redis_dir = self.workdir / "redis"
        redis_dir.mkdir()
        self.start(
            "redis",
            [
                server,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(redis_dir),
            ],
        )
        self.start("worker", [sys.executable, "-m", "worker", "-c", "2", "-n", "check-install@%h"])
        self.start("api", [sys.executable, "-m", "service"])
        wait_for(self._ready, 180, "/readyz (the API up and a worker consuming)")

    def _ready(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                self.show_logs()
                raise SystemExit(f"check-install: {name} exited with {process.returncode}")
        return self.api.request("GET", "/readyz")[0] == 200

    def show_logs(self, lines: int = 40) -> None:
        for name in self.processes:
            text = (self.workdir / f"{name}.log").read_text(errors="replace").splitlines()
            print(f"--- last {lines} lines of the {name} log ---", *text[-lines:], sep="\n", file=sys.stderr)

    def down(self) -> None:
        for name in ("api", "worker", "redis"):  # the worker's warm shutdown needs Redis
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def check_installed_packages(workdir: Path) -> None:
    """The processes must run the installed distribution, not a source tree on the path."""
    probe = "import service, worker; print(service.__file__); print(worker.__file__)"
    files = subprocess.run(
        [sys.executable, "-c", probe], cwd=workdir, check=True, capture_output=True, text=True
    ).stdout.split()
    outside = [f for f in files if not Path(f).resolve().is_relative_to(Path(sys.prefix).resolve())]
    if outside:
        raise SystemExit(f"check-install: ktune is imported from {outside}, not from {sys.prefix}")


def run_jobs(stack: Stack) -> dict[str, Path]:
    """Submit one job per algorithm, wait for all; returns each best model's downloaded file."""
    api = stack.api
    jobs = {alg: api.json("POST", "/v1/jobs", job_body(alg), expect=202)["id"] for alg in TUNERS}
    started = time.monotonic()
    finished: dict[str, dict[str, Any]] = {}
    while len(finished) < len(jobs):
        if time.monotonic() - started > JOB_TIMEOUT:
            stack.show_logs()
            pending = {
                alg: api.json("GET", f"/v1/jobs/{jobs[alg]}")["status"] for alg in jobs if alg not in finished
            }
            raise SystemExit(f"check-install: jobs not finished after {JOB_TIMEOUT:.0f} s: {pending}")
        for algorithm, job_id in jobs.items():
            if algorithm not in finished:
                job = api.json("GET", f"/v1/jobs/{job_id}")
                if job["status"] in FINAL:
                    finished[algorithm] = job
                    took = time.monotonic() - started
                    print(f"  {algorithm}: {job['status']} after {took:.0f} s, {job['progress']}")
        time.sleep(1)
    failed = {
        alg: (job["status"], job["error"]) for alg, job in finished.items() if job["status"] != "succeeded"
    }
    if failed:
        stack.show_logs()
        raise SystemExit(f"check-install: jobs did not succeed with {COMPLETED} trials: {failed}")
    models = {}
    for algorithm, job_id in jobs.items():
        status, content = api.request("GET", f"/v1/jobs/{job_id}/artifacts/best-model")
        if status != 200 or not content.startswith(b"PK"):  # a .keras file is a zip archive
            raise SystemExit(f"check-install: {algorithm}'s best model: {status}, {content[:200]!r}")
        models[algorithm] = stack.workdir / f"{algorithm}.keras"
        models[algorithm].write_bytes(content)
    return models


def check_models_load(models: dict[str, Path], workdir: Path) -> None:
    """Each best model opens with keras.models.load_model (safe mode) and predicts one value per row."""
    probe = (
        "import json, sys, keras, numpy as np\n"
        "rows = np.array(json.loads(sys.argv[1]), dtype='float32')\n"
        "for path in sys.argv[2:]:\n"
        "    out = keras.models.load_model(path).predict(rows, verbose=0)\n"
        "    assert out.shape == (len(rows), 1), (path, out.shape)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    argv = [sys.executable, "-c", probe, json.dumps(XOR["x"]), *map(str, models.values())]
    subprocess.run(argv, cwd=workdir, env=env, check=True)


def main() -> None:
    begun = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ktune-check-install-"))
    stack = Stack(workdir)
    try:
        check_installed_packages(workdir)
        stack.up()
        print(
            f"check-install: API and worker ready in {time.monotonic() - begun:.0f} s; one job per algorithm"
        )
        models = run_jobs(stack)
        check_models_load(models, workdir)
    finally:
        stack.down()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"check-install: {', '.join(TUNERS)} succeeded; best models load ({time.monotonic() - begun:.0f} s)"
    )


if __name__ == "__main__":
    main()
