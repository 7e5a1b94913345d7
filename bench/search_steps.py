"""What a search step costs as a job's trials add up, and how many trials one job's steps can take in a
second: ktune's worker steps (`worker.search`) against a real Redis, no training (a made-up metric).

For each checkout (this one, and `--root`'s, an older commit, in the same run):
- steps: a job's search state is filled in memory with N finished trials (N = 10, 100, 1000; the seed's
  search space, random search, and Bayesian at 100/500/1000), stored as that checkout stores it, then
  trials are run through the worker's steps one after the other, for up to `--steps` trials or `--budget`
  seconds per size: a hand-out step when no trial is queued, then the take-in step (which, since one step
  a trial, also hands out the next). The first trial reads the stored state (a worker that has not kept
  the oracle); the rest are what a worker that keeps it pays. Prints p50/p99 per step and per trial.
- throughput: `--processes` processes take trials of one random-search job (8 in parallel) from a Redis
  list, "train" them (nothing), and hand in the result through the worker's `finish_trial`, which also
  hands out the next trial; prints the trials finished per second over `--seconds`.
Run: `PYTHONPATH=. .venv/bin/python bench/search_steps.py --root /path/to/old/checkout`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, private_redis, wait_for

SEED_BODY = json.loads((ROOT / "examples" / "xor-seed.json").read_text())
QUEUE = "bench:trials"


# --- in a child process, importing the measured checkout's code (PYTHONPATH) ------------------------------


def _context(redis_url: str, tmp: str) -> Any:
    from service.core.artifacts import ArtifactStore
    from service.core.settings import Settings
    from service.core.store import JobStore
    from worker.context import WorkerContext

    settings = Settings(redis_url=redis_url, artifact_dir=tmp, step_lock_seconds=30, step_wait_seconds=120)
    store = JobStore.from_url(redis_url, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    return WorkerContext(settings, store, ArtifactStore(tmp))


def _job(ctx: Any, algorithm: str, max_trials: int, parallel: int) -> tuple[str, Any]:
    from service.core import lifecycle
    from service.core.job_data import stored_inline
    from service.core.records import JobRecord, utcnow
    from service.core.spec import JobCreate, JobSpec
    from service.core.states import JobStatus

    body = json.loads(json.dumps(SEED_BODY))
    body["tuner"].update(algorithm=algorithm, max_trials=max_trials, max_parallel_trials=parallel, seed=1)
    spec = JobCreate.model_validate(body).resolved()
    record = JobRecord(
        id=str(uuid.uuid4()),
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json", exclude={"data"}),
        created_at=utcnow(),
    )
    ctx.store.create_job(record, stored_inline(spec)[1])
    assert lifecycle.start(ctx.store, record.id)
    return record.id, JobSpec.model_validate(record.spec)


def _fill(ctx: Any, job_id: str, spec: Any, finished: int) -> None:
    """Store the job's search state with `finished` trials done, as the checkout stores it."""
    from keras_tuner.src.engine.trial import TrialStatus as KtStatus  # older checkouts' oracles lack it

    from worker.oracles import dump_oracle, new_oracle

    oracle = new_oracle(spec)
    bayesian = hasattr(oracle, "num_initial_points")
    initial = getattr(oracle, "num_initial_points", None)
    if bayesian:
        oracle.num_initial_points = finished + 1  # fill with random trials, not a Gaussian-process fit each
    for slot in range(finished):
        trial = oracle.create_trial(f"fill-{slot}")
        oracle.update_trial(trial.trial_id, {spec.objective_name: random.random()}, step=0)
        trial.status = KtStatus.COMPLETED
        oracle.end_trial(trial)
    if bayesian:
        oracle.num_initial_points = initial
    state = dump_oracle(oracle)
    if hasattr(ctx.store, "search_log"):
        ctx.store.redis.rpush(f"{ctx.store.prefix}:job:{job_id}:search-log", json.dumps({"state": state}))
    else:
        ctx.store.redis.set(f"{ctx.store.prefix}:job:{job_id}:oracle", json.dumps(state))


OBJECTIVE = "val_mean_absolute_error"  # the seed's


def _outcome() -> Any:
    from service.core.states import TrialStatus
    from worker import search

    value = random.random()
    return search.TrialOutcome(TrialStatus.COMPLETED, {OBJECTIVE: value}, value, 0)


def _run_one(ctx: Any, job_id: str, created: list[str]) -> tuple[float, float]:
    """Run one trial through the worker's steps: hand out a trial if none is queued (a checkout whose take-in
    step does not also hand out the next one: two steps a trial), start it, take in its result. Returns the
    seconds of the hand-out step (0.0 when there was none) and of the take-in step."""
    from service.core import lifecycle
    from service.core.states import TrialStatus
    from worker import search

    def queued() -> Any:
        trials = ctx.store.get_trials(job_id, history=False)
        return next((t for t in trials if t.status is TrialStatus.QUEUED), None)

    record, hand = queued(), 0.0
    if record is None:
        started = time.perf_counter()
        search._advance(ctx, job_id)
        hand = time.perf_counter() - started
        record = queued()
    running = record.model_copy(update={"status": TrialStatus.RUNNING})
    assert lifecycle.start_trial(ctx.store, job_id, running)
    before = time.perf_counter()
    search._finish(ctx, job_id, running, _outcome())
    return hand, time.perf_counter() - before


def child_steps(args: argparse.Namespace) -> None:
    from service.core import queue

    queue.send_run_trial = lambda *a, **k: None  # type: ignore[assignment]
    sizes = {"random": [10, 100, 1000], "bayesian": [100, 500, 1000]}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = _context(args.redis_url, tmp)
        for algorithm in args.algorithms.split(","):
            for finished in sizes[algorithm]:
                job_id, spec = _job(ctx, algorithm, finished + args.steps + 10, 1)
                _fill(ctx, job_id, spec, finished)
                times: list[tuple[float, float]] = []
                deadline = time.monotonic() + args.budget
                while len(times) < args.steps and time.monotonic() < deadline:
                    times.append(_run_one(ctx, job_id, []))
                print(json.dumps({"algorithm": algorithm, "finished": finished, "times": times}), flush=True)
                ctx.store.redis.delete(*ctx.store.redis.keys(f"{ctx.store.prefix}:job:{job_id}*"))


def _drive(redis_url: str, prefix: str, job_id: str) -> None:
    from service.core import lifecycle, queue
    from service.core.artifacts import ArtifactStore
    from service.core.settings import Settings
    from service.core.states import TrialStatus
    from service.core.store import JobStore
    from worker import search
    from worker.context import WorkerContext

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    queue.send_run_trial = lambda job, trial, *a, **k: client.rpush(QUEUE, trial)  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            redis_url=redis_url, artifact_dir=tmp, step_lock_seconds=30, step_wait_seconds=120
        )
        ctx = WorkerContext(settings, JobStore.from_url(redis_url, prefix=prefix), ArtifactStore(tmp))
        client.incr("bench:ready")  # TensorFlow and keras-tuner are imported: the clock may start
        while not client.exists("bench:until"):
            time.sleep(0.01)
        until = float(client.get("bench:until"))
        while time.time() < until:
            popped = client.blpop([QUEUE], timeout=1)
            if popped is None:
                continue
            record = ctx.store.get_trial(job_id, popped[1])
            running = record.model_copy(update={"status": TrialStatus.RUNNING})
            if not lifecycle.start_trial(ctx.store, job_id, running):
                continue
            search.finish_trial(ctx, job_id, running, _outcome())
            client.rpush("bench:finished", f"{time.time()}")


def child_throughput(args: argparse.Namespace) -> None:
    from service.core import queue
    from worker import search

    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    client.delete(QUEUE, "bench:finished", "bench:ready", "bench:until")
    queue.send_run_trial = lambda job, trial, *a, **k: client.rpush(QUEUE, trial)  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        ctx = _context(args.redis_url, tmp)
        job_id, _ = _job(ctx, "random", 1_000_000, 8)
        processes = [
            multiprocessing.get_context("spawn").Process(
                target=_drive, args=(args.redis_url, ctx.store.prefix, job_id)
            )
            for _ in range(args.processes)
        ]
        for process in processes:
            process.start()
        wait_for(lambda: int(client.get("bench:ready") or 0) == args.processes, 300, "the processes")
        search.advance(ctx, job_id)  # the first 8 trials
        client.set("bench:until", time.time() + args.seconds)
        for process in processes:
            process.join()
        done = sorted(float(t) for t in client.lrange("bench:finished", 0, -1))
        warm = [t for t in done if t >= done[0] + 3] if done else []  # past the processes' start
        rate = (len(warm) - 1) / (warm[-1] - warm[0]) if len(warm) > 1 else 0.0
        print(json.dumps({"finished": len(done), "per_second": rate}), flush=True)


# --- the parent: Redis, children per checkout, the report --------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_child(root: Path, mode: str, redis_url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, __file__, "--child", mode, "--redis-url", redis_url]
    command += ["--steps", str(args.steps), "--budget", str(args.budget), "--algorithms", args.algorithms]
    command += ["--processes", str(args.processes), "--seconds", str(args.seconds)]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} in {root} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def report_steps(rows: list[dict[str, Any]]) -> None:
    print("  algorithm  finished  trials  first trial ms  steps a trial  step p50/p99 ms  trial p50/p99 ms")
    for row in rows:
        times = row["times"]
        first = sum(times[0]) * 1000 if times else float("nan")
        warm = times[1:] or times
        steps = [t * 1000 for pair in warm for t in pair if t > 0]
        trials = [sum(pair) * 1000 for pair in warm]
        print(
            f"  {row['algorithm']:9s}  {row['finished']:8d}  {len(times):6d}  {first:14.1f}  "
            f"{len(steps) / len(warm):13.1f}  "
            f"{statistics.median(steps):6.1f} / {percentile(steps, 0.99):6.1f}  "
            f"{statistics.median(trials):7.1f} / {percentile(trials, 0.99):6.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="an older checkout, measured in the same run")
    parser.add_argument("--steps", type=int, default=100, help="trials timed per size (100)")
    parser.add_argument("--budget", type=float, default=60, help="seconds per size at most (60)")
    parser.add_argument("--algorithms", default="random,bayesian")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30, help="of the throughput run (30)")
    parser.add_argument("--child", choices=["steps", "throughput"], help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "steps":
        child_steps(args)
        return 0
    if args.child == "throughput":
        child_throughput(args)
        return 0

    with private_redis() as redis_url:
        print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        roots = {"this checkout": ROOT, **({"--root": args.root.resolve()} if args.root else {})}
        for name, root in roots.items():
            print(f"{name} ({root}):", flush=True)
            report_steps(run_child(root, "steps", redis_url, args))
            [rate] = run_child(root, "throughput", redis_url, args)
            print(
                f"  throughput: {args.processes} processes, one job, 8 trials in parallel: "
                f"{rate['per_second']:.0f} trials/s ({rate['finished']} in {args.seconds:.0f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
