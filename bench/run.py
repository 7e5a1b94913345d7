"""Benchmarks ktune against bare keras-tuner doing the same search: wall time, best objective, peak memory.

Per search: the baseline runs bench/baseline.py in a fresh process; ktune runs as users run it (a private
redis-server, one worker `-c 2`, the API), started fresh for each search and torn down after it.
Usage: scripts/run-bench [--search seed,digits] [--loop fast|fit] [--skip-baseline] [--trials N]
                         [--setting KTUNE_NAME=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
POLL_SECONDS = 0.2
READY_TIMEOUT = 180.0
JOB_TIMEOUT = 6 * 3600.0
TERMINAL = {"succeeded", "failed", "cancelled"}
SEARCHES = ("seed", "digits")
MB = 1024 * 1024


# ---- the searches -------------------------------------------------------------------------------------


def seed_request() -> dict[str, Any]:
    """The seed tutorial's search as ktune runs it: examples/xor-seed.json, verbatim."""
    request: dict[str, Any] = json.loads((ROOT / "examples" / "xor-seed.json").read_text())
    return request


def digits_request() -> dict[str, Any]:
    """scikit-learn's digits (1347 train / 450 validation rows), multiclass, 20 random trials of 30 epochs."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=450, random_state=0, stratify=y)
    return {
        "name": "digits",
        "task": "multiclass_classification",
        "data": {
            "train": {"x": x_train.tolist(), "y": y_train.tolist()},
            "validation": {"x": x_val.tolist(), "y": y_val.tolist()},
        },
        "model": {
            "architecture": "mlp",
            "hidden_layers": {"min": 1, "max": 3},
            "units": {"min": 32, "max": 256, "step": 32},
            "activation": {"values": ["relu", "tanh"]},
            "dropout": {"min": 0.0, "max": 0.5, "step": 0.1},
        },
        "optimizer": {"name": "adam", "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"}},
        "training": {"epochs": 30, "batch_size": 32},
        "objective": {"name": "val_accuracy", "direction": "max"},
        "tuner": {"algorithm": "random", "max_trials": 20, "seed": 1},
    }


REQUESTS: dict[str, Callable[[], dict[str, Any]]] = {"seed": seed_request, "digits": digits_request}


def describe(request: dict[str, Any]) -> str:
    """One line: trials x executions x epochs and the objective."""
    tuner, objective = request["tuner"], request["objective"]
    return (
        f"{tuner['max_trials']} trials x {tuner.get('executions_per_trial', 1)} executions x "
        f"{request['training']['epochs']} epochs, {objective['name']} ({objective['direction']})"
    )


# ---- processes ----------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something truthy; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing polled may not be up yet
            last_error = exc
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})")


def stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process; once it exits (or after `grace`) SIGKILL its process group, children too."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


@contextlib.contextmanager
def started(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run argv in its own session with output to `log`; stop it (and its children) on leaving."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            stop(process)


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of this run's own on a free port, keeping nothing on disk; yields its URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: redis.Redis.from_url(url).ping(), 15, "redis-server")
        yield url
    finally:
        stop(process)


def rss(process: psutil.Process) -> int:
    """Resident set size in bytes; 0 once the process is gone."""
    try:
        return int(process.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


@dataclass
class MemorySampler:
    """Peaks of a process tree's summed RSS and of its largest single child, sampled on demand."""

    root: psutil.Process
    peak_tree: int = 0
    peak_child: int = 0

    def sample(self) -> None:
        """Take one sample of the root and all its descendants."""
        try:
            children = self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        child_rss = [rss(child) for child in children]
        self.peak_tree = max(self.peak_tree, rss(self.root) + sum(child_rss))
        self.peak_child = max(self.peak_child, *child_rss, 0)


def warn_if_busy(what: str) -> None:
    """Say so when other work is loading the machine: the timings then are noisy."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        print(
            f"   note: load average {load:.1f} on {cores} cores before {what}; timings will be noisy",
            flush=True,
        )


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, for error messages."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# ---- baseline: bare keras-tuner -----------------------------------------------------------------------


@dataclass
class BaselineResult:
    """One baseline search; memory is the polled peak RSS of its process (ru_maxrss as a cross-check)."""

    wall_s: float
    best_objective: float
    peak_rss_mb: float
    ru_maxrss_mb: float
    process_wall_s: float
    trials_completed: int
    tuner_class: str
    best_hyperparameters: dict[str, Any] = field(default_factory=dict)


def run_baseline(search: str, request_path: Path, logs: Path) -> BaselineResult:
    """Run bench/baseline.py in a fresh process, polling its RSS every POLL_SECONDS."""
    result_path = logs / f"{search}-baseline.json"
    log = logs / f"{search}-baseline.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, str(BENCH / "baseline.py"), search, str(request_path), str(result_path)]
    begun = time.perf_counter()
    with started(argv, log, env) as process:
        sampler = MemorySampler(psutil.Process(process.pid))
        while process.poll() is None:
            sampler.sample()
            time.sleep(POLL_SECONDS)
    if process.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"baseline {search} exited with {process.returncode}; {log}:\n{tail(log)}")
    child = json.loads(result_path.read_text())
    wall = time.perf_counter() - begun
    return BaselineResult(peak_rss_mb=sampler.peak_tree / MB, process_wall_s=wall, **child)


# ---- ktune: redis-server, one worker, the API ---------------------------------------------------------


@dataclass
class KtuneResult:
    """One ktune job: POST to terminal status; memory over the worker's process tree."""

    wall_s: float
    status: str
    best_objective: float | None
    peak_worker_tree_rss_mb: float
    peak_pool_process_rss_mb: float
    trials_completed: int
    job_id: str
    loop: str
    error: dict[str, Any] | None = None
    best_hyperparameters: dict[str, Any] = field(default_factory=dict)
    trial_durations_s: list[float | None] = field(default_factory=list)


@dataclass
class Stack:
    """A running ktune: the API client, the worker's main process and the API's process."""

    client: httpx.Client
    worker: subprocess.Popen[bytes]
    logs: Path
    redis_url: str = ""
    api: subprocess.Popen[bytes] | None = None


def ktune_env(
    redis_url: str, artifacts: Path, port: int, loop: str, settings: dict[str, str]
) -> dict[str, str]:
    """The environment of the worker and the API: only our KTUNE_* settings, and those asked for."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTUNE_")}
    env.update(
        {
            "KTUNE_REDIS_URL": redis_url,
            "KTUNE_ARTIFACT_DIR": str(artifacts),
            "KTUNE_HOST": "127.0.0.1",
            "KTUNE_PORT": str(port),
            "KTUNE_AUTH": "off",  # on loopback; the benchmarks' clients send no API key
            "KTUNE_TRAINING_LOOP": loop,
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **settings,
        }
    )
    return env


@contextlib.contextmanager
def ktune_stack(
    loop: str, logs: Path, name: str, settings: dict[str, str], concurrency: int = 2
) -> Iterator[Stack]:
    """Start redis-server, the worker (`concurrency` pool processes) and the API; wait for /readyz and
    for every pool process to import TensorFlow; tear all down on leaving."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed (scripts/run-bench installs it)")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ktune-bench-")))
        redis_port, api_port = free_port(), free_port()
        stack.enter_context(
            started(
                [
                    server,
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ],
                logs / f"{name}-redis.log",
            )
        )
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        wait_for(lambda: redis.Redis.from_url(redis_url).ping(), 15, "redis-server")
        env = ktune_env(redis_url, workdir / "artifacts", api_port, loop, settings)
        worker_log = logs / f"{name}-worker.log"
        worker = stack.enter_context(
            started(
                [sys.executable, "-m", "worker", "-c", str(concurrency), "-n", "bench@%h", "-Q", "cpu"],
                worker_log,
                env,
            )
        )
        api_log = logs / f"{name}-api.log"
        api = stack.enter_context(started([sys.executable, "-m", "service"], api_log, env))
        client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30))

        def ready() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}:\n{tail(worker_log)}")
            response = client.get("/readyz")
            return response.status_code == 200 and bool(response.json()["checks"]["queues"].get("cpu"))

        try:
            wait_for(ready, READY_TIMEOUT, "the API and the worker (/readyz)")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{api_log}:\n{tail(api_log)}") from None
        # A service's workers start once and then serve many jobs: time the search, not the start-up
        # imports (the baseline's clock also starts after TensorFlow is imported).
        wait_for(
            lambda: pool_is_warm(worker.pid, concurrency),
            READY_TIMEOUT,
            "every pool process to load TensorFlow",
        )
        yield Stack(client, worker, logs, redis_url, api)


def pool_is_warm(worker_pid: int, processes: int = 2) -> bool:
    """Whether all `processes` pool processes of the worker have TensorFlow's library mapped (their
    start-up import done)."""
    children = psutil.Process(worker_pid).children(recursive=True)
    if len(children) < processes:
        return False
    return all(any("libtensorflow" in m.path for m in child.memory_maps()) for child in children)


def run_ktune(stack: Stack, request: dict[str, Any], loop: str) -> KtuneResult:
    """POST the job and poll it every POLL_SECONDS to a terminal status, sampling the worker's memory."""
    sampler = MemorySampler(psutil.Process(stack.worker.pid))
    sampler.sample()
    begun = time.perf_counter()
    response = stack.client.post("/v1/jobs", json=request)
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs answered {response.status_code}: {response.text[:2000]}")
    job_id = response.json()["id"]
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        sampler.sample()
        job = stack.client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            break
        if stack.worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {stack.worker.returncode} during job {job_id}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {job['status']} after {JOB_TIMEOUT:.0f} s")
        time.sleep(POLL_SECONDS)
    wall = time.perf_counter() - begun
    best = job.get("best_trial") or {}
    trials = stack.client.get(f"/v1/jobs/{job_id}/trials").json()["items"]
    return KtuneResult(
        wall_s=wall,
        status=job["status"],
        best_objective=best.get("objective_value"),
        peak_worker_tree_rss_mb=sampler.peak_tree / MB,
        peak_pool_process_rss_mb=sampler.peak_child / MB,
        trials_completed=job["progress"]["completed"],
        job_id=job_id,
        loop=loop,
        error=job.get("error"),
        best_hyperparameters=best.get("hyperparameters", {}),
        trial_durations_s=[trial.get("duration_seconds") for trial in trials],
    )


# ---- one search, the table, the run -------------------------------------------------------------------


@dataclass
class SearchResult:
    """Both sides of one search."""

    search: str
    description: str
    baseline: BaselineResult | None
    ktune: KtuneResult

    @property
    def speedup(self) -> float | None:
        """Baseline wall time over ktune's."""
        return self.baseline.wall_s / self.ktune.wall_s if self.baseline else None


def run_search(
    search: str, loop: str, trials: int | None, skip_baseline: bool, logs: Path, settings: dict[str, str]
) -> SearchResult:
    """The baseline, then ktune, on the same request."""
    request = REQUESTS[search]()
    if trials is not None:
        request["tuner"]["max_trials"] = trials
    request_path = logs / f"{search}-request.json"
    request_path.write_text(json.dumps(request))
    print(f"\n== {search}: {describe(request)}", flush=True)
    baseline = None
    if not skip_baseline:
        print("   baseline (bare keras-tuner) ...", flush=True)
        warn_if_busy("the baseline")
        baseline = run_baseline(search, request_path, logs)
        print(f"   baseline: {baseline.wall_s:.1f} s, best {baseline.best_objective:.4f}", flush=True)
    print(f"   ktune (loop {loop}): starting redis-server, worker, API ...", flush=True)
    with ktune_stack(loop, logs, search, settings) as stack:
        warn_if_busy("the ktune job")
        print("   ktune: ready; posting the job", flush=True)
        ktune = run_ktune(stack, request, loop)
    print(f"   ktune: {ktune.status} in {ktune.wall_s:.1f} s", flush=True)
    return SearchResult(search, describe(request), baseline, ktune)


def number(value: float | None, spec: str) -> str:
    """A formatted number, or a dash when missing."""
    return "-" if value is None else format(value, spec)


def table(result: SearchResult) -> str:
    """The printed comparison of one search."""
    kt = result.ktune

    def base(name: str, spec: str) -> str:
        return number(getattr(result.baseline, name), spec) if result.baseline else "-"

    speedup = number(result.speedup, ".2f") + ("x" if result.speedup else "")
    rows = [
        ("wall time (s)", base("wall_s", ".1f"), number(kt.wall_s, ".1f")),
        ("speed-up (baseline/ktune)", "", speedup),
        ("best objective", base("best_objective", ".4f"), number(kt.best_objective, ".4f")),
        ("peak memory (MB)", base("peak_rss_mb", ".0f"), number(kt.peak_worker_tree_rss_mb, ".0f")),
        ("  max single pool process (MB)", "", number(kt.peak_pool_process_rss_mb, ".0f")),
        ("trials completed", base("trials_completed", "d"), str(kt.trials_completed)),
    ]
    lines = [
        f"{result.search}: {result.description}; ktune loop {kt.loop}, job {kt.status}",
        f"{'':32}{'keras-tuner':>12}{'ktune':>12}",
    ]
    lines += [f"{label:32}{left:>12}{right:>12}" for label, left, right in rows]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    from importlib.metadata import version

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
        "keras_tuner": version("keras-tuner"),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "git_commit": commit.stdout.strip() or None,
        "load_average_1m_at_end": os.getloadavg()[0],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--search",
        default=",".join(SEARCHES),
        help=f"comma-separated searches to run, of {', '.join(SEARCHES)} (default: all)",
    )
    parser.add_argument("--loop", choices=["fast", "fit"], default="fast", help="ktune's KTUNE_TRAINING_LOOP")
    parser.add_argument("--skip-baseline", action="store_true", help="run only the ktune side")
    parser.add_argument("--trials", type=int, help="override max_trials on both sides (quick runs)")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KTUNE_NAME=value",
        help="a ktune setting for the worker and the API, e.g. KTUNE_CHECKPOINT_SECONDS=0",
    )
    args = parser.parse_args(argv)
    args.settings = dict(item.split("=", 1) for item in args.setting if "=" in item)
    if len(args.settings) != len(args.setting) or not all(k.startswith("KTUNE_") for k in args.settings):
        parser.error("--setting takes KTUNE_NAME=value")
    args.searches = [s.strip() for s in args.search.split(",") if s.strip()]
    unknown = set(args.searches) - set(SEARCHES)
    if unknown or not args.searches:
        parser.error(f"--search takes a comma-separated list of {', '.join(SEARCHES)}; got {args.search!r}")
    if args.trials is not None and args.trials < 1:
        parser.error("--trials must be at least 1")
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the selected searches, print a table for each and write bench/results/<date>-<time>.json."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # tear down like Ctrl-C
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    logs = RESULTS / f"{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"logs and requests in {logs.relative_to(ROOT)}", flush=True)
    results = []
    try:
        for search in args.searches:
            results.append(
                run_search(search, args.loop, args.trials, args.skip_baseline, logs, args.settings)
            )
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    out = RESULTS / f"{stamp}.json"
    report = {
        "started": stamp,
        "options": {
            "search": args.searches,
            "loop": args.loop,
            "trials": args.trials,
            "skip_baseline": args.skip_baseline,
            "settings": args.settings,
        },
        "environment": environment(),
        "searches": [{**asdict(r), "speedup": r.speedup} for r in results],
    }
    out.write_text(json.dumps(report, indent=2))
    print()
    for result in results:
        print(table(result), end="\n\n")
    print(f"results: {out.relative_to(ROOT)}")
    return 0 if all(r.ktune.status == "succeeded" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
