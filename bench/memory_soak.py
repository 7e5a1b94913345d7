"""Memory across many consecutive trials: does a pool process grow from trial to trial?

Runs one job of `--trials` small XOR trials on a worker with two pool processes and samples each pool
process's RSS about once a second. Prints, per pool process (they are replaced every
KTUNE_WORKER_MAX_TASKS_PER_CHILD tasks), how long it lived and its peak RSS.
Run: `.venv/bin/python bench/memory_soak.py --trials 200`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MB, POLL_SECONDS, TERMINAL, ktune_stack


def soak_request(trials: int) -> dict[str, Any]:
    xor = {"x": [[0, 0], [0, 1], [1, 0], [1, 1]], "y": [0, 1, 1, 0]}
    return {
        "name": "memory-soak",
        "task": "binary_classification",
        "data": {"train": xor, "validation": xor},
        "model": {
            "hidden_layers": {"min": 1, "max": 3},
            "units": {"min": 8, "max": 256, "step": 8},
            "activation": {"values": ["relu", "tanh"]},
            "dropout": {"min": 0.0, "max": 0.3, "step": 0.1},
        },
        "optimizer": {
            "name": {"values": ["adam", "rmsprop"]},
            "learning_rate": {"min": 1e-4, "max": 5e-2, "sampling": "log"},
        },
        "training": {"epochs": 20, "batch_size": 4},
        "tuner": {"algorithm": "random", "max_trials": trials, "max_parallel_trials": 2, "seed": 3},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs, ktune_stack("fast", Path(logs), "soak", {}) as stack:
        job = stack.client.post("/v1/jobs", json=soak_request(args.trials)).json()
        samples: dict[int, list[tuple[int, float]]] = {}  # pid -> (trials completed by the job, RSS MB)
        started = time.monotonic()
        while True:
            status = stack.client.get(f"/v1/jobs/{job['id']}").json()
            done = status["progress"]["completed"] + status["progress"]["failed"]
            for child in psutil.Process(stack.worker.pid).children(recursive=True):
                samples.setdefault(child.pid, []).append((done, child.memory_info().rss / MB))
            if status["status"] in TERMINAL:
                break
            time.sleep(POLL_SECONDS * 5)
        elapsed = time.monotonic() - started
    print(f"{args.trials} trials ({status['status']}) in {elapsed:.0f} s; pool processes in order of start:")
    report = {}
    for pid, series in samples.items():
        live = [(done, rss) for done, rss in series if rss > 0]
        if not live:
            continue
        peak = max(rss for _, rss in live)
        report[pid] = {
            "job_trials_seen": [live[0][0], live[-1][0]],
            "first_rss_mb": live[0][1],
            "peak_rss_mb": peak,
        }
        print(
            f"  pid {pid}: alive while the job went from {live[0][0]} to {live[-1][0]} trials done; "
            f"RSS first seen {live[0][1]:.0f} MB, peak {peak:.0f} MB"
        )
    print(f"peak RSS of any pool process: {max(r['peak_rss_mb'] for r in report.values()):.0f} MB")
    print(json.dumps(report))
    return 0 if status["status"] == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
