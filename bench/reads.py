"""Do reads keep up? Requests per second of a job GET and a page of 20 jobs, against /healthz, under wrk.

Starts a private redis-server and the API with keys on (no worker), stores `--jobs` finished jobs of
`--trials` trials each for one tenant, then runs wrk (`--connections` connections, `--seconds` each) on
/healthz, GET /v1/jobs/{id} and GET /v1/jobs?limit=20, `--rounds` times in turn, and prints each one's median
requests per second and its ratio to /healthz's, and the API process's CPU time per request (user + system,
median over the rounds: less moved by other load on a shared machine than requests per second). Goal
(issue 11): a job GET >= 0.8x and a page >= 0.5x.
`--root DIR` also serves the API from another checkout (an older commit) in the same run, on the same data;
both APIs run at once and each round measures both in turn, so a change in the machine's load falls on both.
Run: `PYTHONPATH=. .venv/bin/python bench/reads.py [--root /path/to/old/checkout]` (needs wrk:
`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, free_port, ktune_env, private_redis, stop, tail, wait_for

from service.core import lifecycle
from service.core.api_keys import ApiKeyStore
from service.core.records import JobRecord, TrialRecord, utcnow
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobStore

TENANT = "bench"
PAGE = "/v1/jobs?limit=20"


def store_jobs(store: JobStore, jobs: int, trials: int) -> list[str]:
    """`jobs` succeeded jobs of the tenant, each with `trials` completed trials; their ids."""
    spec = {
        "task": "regression",
        "objective": {"name": "val_loss", "direction": "min"},
        "resources": {"accelerator": "cpu"},
        "tuner": {"algorithm": "random", "max_trials": trials},
    }
    ids = []
    for _ in range(jobs):
        record = JobRecord(
            id=str(uuid.uuid4()), tenant=TENANT, status=JobStatus.QUEUED, spec=spec, created_at=utcnow()
        )
        store.create_job(record, b"npz bytes")
        assert lifecycle.start(store, record.id)
        for i in range(trials):
            trial = TrialRecord(id=f"{i:04d}", status=TrialStatus.QUEUED, hyperparameters={"units_0": 8})
            lifecycle.queue_trial(store, record.id, trial)
            lifecycle.start_trial(store, record.id, trial)
            done = trial.model_copy(update={"status": TrialStatus.COMPLETED, "objective_value": i / trials})
            store.transition_trial(record.id, done, [TrialStatus.RUNNING])
        lifecycle.succeed(store, record.id)
        ids.append(record.id)
    return ids


@contextlib.contextmanager
def api(root: Path, redis_url: str, logs: Path, name: str) -> Iterator[tuple[str, psutil.Process]]:
    """The API served from the checkout `root` on this Redis, with keys on; its URL and its process."""
    port = free_port()
    env = ktune_env(redis_url, logs / f"{name}-artifacts", port, "fast", {"KTUNE_AUTH": "on"})
    with open(logs / f"{name}-api.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, f"the API ({name})")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{tail(logs / f'{name}-api.log')}") from None
            yield url, psutil.Process(process.pid)
        finally:
            stop(process)


@dataclass(frozen=True)
class Rate:
    """One wrk run: requests per second, and the API process's CPU seconds per request."""

    per_second: float
    cpu_per_request: float


def wrk(url: str, key: str, connections: int, seconds: int, server: psutil.Process) -> Rate:
    """What wrk measured, with the CPU time `server` spent meanwhile; raises if any answer was not a 2xx."""
    before = server.cpu_times()
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-H", f"Authorization: Bearer {key}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    after = server.cpu_times()
    if "Non-2xx" in done.stdout:
        raise RuntimeError(f"wrk saw errors on {url}:\n{done.stdout}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    requests = re.search(r"(\d+) requests in", done.stdout)
    assert match and requests, done.stdout
    cpu = (after.user + after.system) - (before.user + before.system)
    return Rate(float(match.group(1)), cpu / max(1, int(requests.group(1))))


def measure(
    servers: dict[str, tuple[str, psutil.Process]], key: str, job_id: str, args: argparse.Namespace
) -> dict[str, dict[str, Rate]]:
    """For each server, the median rate of each path over the rounds; each round takes every server and
    path in turn."""
    paths = {"/healthz": "/healthz", "job GET": f"/v1/jobs/{job_id}", "page of 20": PAGE}
    rates: dict[str, dict[str, list[Rate]]] = {name: {path: [] for path in paths} for name in servers}
    for _ in range(args.rounds):
        for name, (url, process) in servers.items():
            for path_name, path in paths.items():
                rate = wrk(url + path, key, args.connections, args.seconds, process)
                rates[name][path_name].append(rate)
    return {
        name: {
            path: Rate(
                statistics.median(r.per_second for r in runs),
                statistics.median(r.cpu_per_request for r in runs),
            )
            for path, runs in by_path.items()
        }
        for name, by_path in rates.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, help="another checkout to measure in the same run")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install wrk)")

    with tempfile.TemporaryDirectory(prefix="ktune-reads-") as tmp, private_redis() as redis_url:
        logs = Path(tmp)
        store = JobStore.from_url(redis_url)
        job_ids = store_jobs(store, args.jobs, args.trials)
        key, _ = ApiKeyStore(store).create(TENANT)
        print(
            f"{args.jobs} jobs of {args.trials} trials, wrk -c{args.connections} {args.seconds} s x "
            f"{args.rounds} rounds",
            flush=True,
        )
        roots = {"this checkout": ROOT, **({"--root": args.root.resolve()} if args.root else {})}
        with contextlib.ExitStack() as running:
            servers = {
                name: running.enter_context(api(root, redis_url, logs, name.strip("-").replace(" ", "-")))
                for name, root in roots.items()
            }
            measured = measure(servers, key, job_ids[len(job_ids) // 2], args)
        for name, root in roots.items():
            rates = measured[name]
            health = rates["/healthz"].per_second
            print(f"{name} ({root}):")
            for path, rate in rates.items():
                ratio = rate.per_second / health
                print(
                    f"  {path:12s} {rate.per_second:8.0f} req/s  {ratio:5.2f}x of /healthz  "
                    f"{rate.cpu_per_request * 1000:6.2f} ms API CPU a request"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
