"""Does a job's 1,000th trial cost what its 10th did? One long random search end to end, through the API.

Starts a private stack (redis-server, one worker with `--processes` pool processes, the API), posts the
XOR classifier as a random search of `--trials` 1-epoch trials (`--parallel` at once), waits for it, then
compares the time between trial completions over the first 100 and the last 100 trials, and prints it
for every window of 100 (each pool process trains one trial at a time, so that gap is what a trial costs
the job: training plus the search steps around it). Issue 11's goal: the last 100 no slower per trial than
the first 100.
Run: `PYTHONPATH=. .venv/bin/python bench/long_job.py` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, ktune_stack, wait_for


def request(trials: int, parallel: int) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["training"].update(epochs=1)
    body["tuner"].update(algorithm="random", max_trials=trials, max_parallel_trials=parallel, seed=3)
    return body


def per_trial(finished: list[datetime]) -> float:
    """Mean seconds between consecutive completions."""
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(finished)]
    return statistics.mean(gaps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--window", type=int, default=100)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="ktune-long-job-") as tmp,
        ktune_stack("fast", Path(tmp), "long-job", {}, concurrency=args.processes) as stack,
    ):
        client = stack.client
        response = client.post("/v1/jobs", json=request(args.trials, args.parallel))
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        began = time.monotonic()

        def ended() -> dict[str, Any] | None:
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            return job if job["status"] in {"succeeded", "failed", "cancelled"} else None

        job = wait_for(ended, 4 * 3600, "the job")
        wall = time.monotonic() - began
        trials = client.get(f"/v1/jobs/{job_id}/trials", params={"history": "false"}).json()["items"]
    finished = sorted(datetime.fromisoformat(t["finished_at"]) for t in trials if t["finished_at"])
    window = args.window
    first, last = per_trial(finished[: window + 1]), per_trial(finished[-window - 1 :])
    print(f"job {job['status']}: {len(finished)} trials finished in {wall:.0f} s")
    ratio = last / first
    print(
        f"first {window}: {first:.3f} s per trial; last {window}: {last:.3f} s per trial; ratio {ratio:.2f}"
    )
    # Every window, so that a trend shows apart from one slow window at either end.
    windows = [per_trial(finished[i : i + window + 1]) for i in range(0, len(finished) - 1, window)]
    print(f"each {window}: " + " ".join(f"{w:.3f}" for w in windows) + " s per trial")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
