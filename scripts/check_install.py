"""One short job per search algorithm against ktune as installed: `scripts/check-install` runs this with the
Python of an environment that has the package without its [dev] extra (as the Docker image has it).

A redis-server on a free port, `python -m worker` and `python -m service` of that environment, started in a
scratch directory (not the source tree, so the installed packages are imported); tiny XOR data, a few
trials of a few epochs. Every job must end `succeeded` and its best model must download and load. Then data
sets: a CSV with a categorical column uploaded (pyarrow, python-multipart) and a built-in set (scikit-learn),
each tuned, its best model called on raw rows. Every request sends an API key made with
`python -m service keys create` (auth is on, as it is by default), and one without it must be a 401.
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
# Bayesian search samples its default 3 initial points at random before its Gaussian process (scipy,
# scikit-learn) proposes the last 3. Hyperband: 2 brackets, 3 + 1 and 2 trials.
TUNERS: dict[str, dict[str, Any]] = {
    "random": {"max_trials": 3},
    "grid": {"max_trials": 10},
    "bayesian": {"max_trials": 6, "max_parallel_trials": 2},
    "hyperband": {"max_trials": 10, "max_epochs": 3, "factor": 3},
    # Optuna (and cmaes, which CMA-ES imports): 2 random trials, then 4 of TPE's, 2 at a time.
    "tpe": {"max_trials": 6, "max_parallel_trials": 2},
    "cmaes": {"max_trials": 4, "max_parallel_trials": 2},
}
COMPLETED = {"random": 3, "grid": 4, "bayesian": 6, "hyperband": 6, "tpe": 6, "cmaes": 4}
FINAL = {"succeeded", "failed", "cancelled"}
JOB_TIMEOUT = 600.0  # seconds for all the jobs: a hang, not a slow machine, should fail the check


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
        self.key: str | None = None  # sent as `Authorization: Bearer` once set

    def request(
        self, method: str, path: str, body: Any = None, raw: tuple[bytes, str] | None = None
    ) -> tuple[int, bytes]:
        """`body` is sent as JSON; `raw` as (bytes, content type)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data or (raw and raw[0]), method=method)
        if self.key is not None:
            request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        elif raw is not None:
            request.add_header("Content-Type", raw[1])
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
        self.use_api_key()

    def use_api_key(self) -> None:
        """Make a key with `python -m service keys create` (a running API reads it at once) and send it."""
        status, _ = self.api.request("GET", "/v1/jobs")
        if status != 401:
            raise SystemExit(f"check-install: GET /v1/jobs without an API key answered {status}, not 401")
        made = subprocess.run(
            [sys.executable, "-m", "service", "keys", "create", "check-install"],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            raise SystemExit(f"check-install: `keys create` failed ({made.returncode}): {made.stderr}")
        self.api.key = made.stdout.strip()
        self.api.json("GET", "/v1/jobs")

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


def run_jobs(stack: Stack) -> tuple[dict[str, Path], dict[str, str]]:
    """Submit one job per algorithm, wait for all; returns each best model's downloaded file, and the jobs'
    ids by algorithm."""
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
    return models, jobs


def check_finalize_and_recheck(api: Api, job_id: str) -> None:
    """The job's finalize and recheck (`ktune.finalize`, `ktune.recheck` on the worker) both succeed."""
    api.json("POST", f"/v1/jobs/{job_id}/finalize", {}, expect=202)
    api.json("POST", f"/v1/jobs/{job_id}/recheck", {"top_k": 1, "seeds": 2}, expect=202)
    job = wait_for(lambda: _runs_ended(api, job_id), JOB_TIMEOUT, "the job's finalize and recheck")
    runs = {name: job[name]["status"] for name in ("finalization", "recheck")}
    if runs != {"finalization": "succeeded", "recheck": "succeeded"}:
        raise SystemExit(
            f"check-install: finalize and recheck: {runs}: "
            f"{job['finalization'].get('error')}, {job['recheck'].get('error')}"
        )
    values = job["recheck"]["result"]["trials"][0]["values"]
    print(f"  finalize: final model stored; recheck: the winner's objective over 2 seeds {values}")


# Two features on different scales and a categorical colour; the class follows the colour and the size.
FLOWERS = "size,weight,colour,kind\n" + "".join(
    f"{1 + i % 5},{1000 + 100 * (i % 3)},{'red' if i % 2 else 'blue'},{'rose' if i % 2 else 'iris'}\n"
    for i in range(40)
)


def multipart(name: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field `file` (what `curl -F file=@...` sends)."""
    boundary = "ktune-check-install-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def dataset_job(data: dict[str, Any], task: str) -> dict[str, Any]:
    return {
        "name": f"check-install-{data['dataset'][:8]}",
        "task": task,
        "data": data,
        "model": {"hidden_layers": 1, "units": {"values": [4, 8]}},
        "training": {"epochs": 2, "batch_size": 8},
        "tuner": {"algorithm": "random", "max_trials": 2, "seed": 1},
    }


def run_dataset_jobs(stack: Stack) -> None:
    """An uploaded CSV and a built-in set, each tuned; the best models take raw rows."""
    api = stack.api
    status, content = api.request("POST", "/v1/datasets", raw=multipart("flowers.csv", FLOWERS.encode()))
    if status != 201:
        raise SystemExit(f"check-install: the upload answered {status}: {content[:2000]!r}")
    uploaded = json.loads(content)["id"]
    bodies = {
        "upload": dataset_job({"dataset": uploaded, "target": "kind"}, "binary_classification"),
        "iris": dataset_job({"dataset": "iris"}, "multiclass_classification"),
    }
    jobs = {name: api.json("POST", "/v1/jobs", body, expect=202)["id"] for name, body in bodies.items()}
    ended = {
        name: wait_for(lambda j=job_id: _final(api, j), JOB_TIMEOUT, f"the {name} job")
        for name, job_id in jobs.items()
    }
    failed = {name: job["error"] for name, job in ended.items() if job["status"] != "succeeded"}
    if failed:
        stack.show_logs()
        raise SystemExit(f"check-install: data-set jobs did not succeed: {failed}")
    rows = {
        "upload": "{'size': np.array([1.0, 2.0]), 'weight': np.array([1000.0, 1100.0]), "
        "'colour': np.array(['blue', 'red'], dtype=object)}",
        "iris": "np.array([[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]], dtype='float32')",
    }
    for name, job_id in jobs.items():
        status, content = api.request("GET", f"/v1/jobs/{job_id}/artifacts/best-model")
        if status != 200:
            raise SystemExit(f"check-install: the {name} job's best model: {status}, {content[:200]!r}")
        path = stack.workdir / f"{name}.keras"
        path.write_bytes(content)
        probe = (
            "import keras, numpy as np\n"
            f"print(keras.models.load_model({str(path)!r}).predict({rows[name]}, verbose=0).shape)"
        )
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        shape = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=stack.workdir,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        expected = "(2, 1)" if name == "upload" else "(2, 3)"
        if shape != expected:
            raise SystemExit(f"check-install: the {name} model predicted shape {shape}, expected {expected}")
        print(f"  data set {name}: succeeded; its model takes raw rows")


def _runs_ended(api: Api, job_id: str) -> dict[str, Any] | None:
    """The job once its finalization and its recheck have both ended."""
    job: dict[str, Any] = api.json("GET", f"/v1/jobs/{job_id}")
    ended = all((job.get(name) or {}).get("status") in FINAL for name in ("finalization", "recheck"))
    return job if ended else None


def _final(api: Api, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] = api.json("GET", f"/v1/jobs/{job_id}")
    return job if job["status"] in FINAL else None


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
        models, jobs = run_jobs(stack)
        check_models_load(models, workdir)
        check_finalize_and_recheck(stack.api, jobs["random"])
        run_dataset_jobs(stack)
    finally:
        stack.down()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"check-install: {', '.join(TUNERS)} and data-set jobs succeeded; best models load; finalize and "
        "recheck succeed "
        f"({time.monotonic() - begun:.0f} s)"
    )


if __name__ == "__main__":
    main()
