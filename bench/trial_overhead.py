"""Per-trial overhead of short trials, and hyperband's many short trials against random's few long ones.

Everything runs through the real service (bench/run.py's stack: a private redis-server, the API, one worker
with two pool processes, the fast loop), on bench/run.py's digits search:

1. random search, the same seed (so the same architectures), with 1-, 3- and 10-epoch trials: each trial's
   `duration_seconds` is fitted as `overhead + epochs x epoch_time`; the overhead is the time a trial spends
   outside its training steps (building and tracing its model, saving it, reading its data). Bare
   keras-tuner runs the same three searches in the same run (bench/baseline.py) for the ratio.
2. hyperband (`max_epochs`, factor 3), then random search with 12 trials and the same total epochs:
   the goal (issue 13) is hyperband's wall time within 2x of random's.

Usage: scripts/run-bench is for bench/run.py; run this one with
    PYTHONPATH=. .venv/bin/python bench/trial_overhead.py [--trials 12] [--max-epochs 27] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run import (
    Stack,
    digits_request,
    ktune_stack,
    run_baseline,
    run_ktune,
    warn_if_busy,
)

EPOCHS = (1, 3, 10)
GOAL_RATIO = 2.0


@dataclass
class Line:
    """A least-squares line `intercept + slope x`."""

    intercept: float
    slope: float


def fit_line(xs: list[float], ys: list[float]) -> Line:
    """The least-squares line through the points; needs two distinct xs."""
    slope, intercept = statistics.linear_regression(xs, ys)
    return Line(intercept, slope)


def epochs_trained(trial: dict[str, Any]) -> int:
    """Epochs a trial trained, over its executions (a hyperband continuation counts only its own)."""
    total = 0
    for execution in trial.get("executions", []):
        history = execution.get("history", {})
        total += max((len(values) for values in history.values()), default=0)
    return total


@dataclass
class JobRun:
    """One job: wall time, its trials' durations and the epochs they trained."""

    label: str
    wall_s: float
    durations_s: list[float]
    epochs: list[int]

    @property
    def total_epochs(self) -> int:
        return sum(self.epochs)


def run_job(stack: Stack, label: str, request: dict[str, Any]) -> JobRun:
    warn_if_busy(label)
    result = run_ktune(stack, request, "fast")
    if result.status != "succeeded":
        raise RuntimeError(f"{label}: job {result.job_id} ended {result.status}: {result.error}")
    trials = stack.client.get(f"/v1/jobs/{result.job_id}/trials", params={"limit": 1000}).json()["items"]
    durations = [float(t["duration_seconds"]) for t in trials if t.get("duration_seconds") is not None]
    run = JobRun(label, result.wall_s, durations, [epochs_trained(t) for t in trials])
    print(
        f"   {label}: {len(trials)} trials, {run.total_epochs} epochs, {run.wall_s:.1f} s "
        f"(trial median {statistics.median(durations):.2f} s)",
        flush=True,
    )
    return run


def random_request(trials: int, epochs: int) -> dict[str, Any]:
    request = digits_request()
    request["training"]["epochs"] = epochs
    request["tuner"].update({"algorithm": "random", "max_trials": trials, "seed": 1})
    return request


def hyperband_request(max_epochs: int) -> dict[str, Any]:
    request = digits_request()
    request["training"]["epochs"] = max_epochs
    # max_trials high enough that hyperband runs its whole iteration (ktune defaults to 10 trials).
    request["tuner"] = {
        "algorithm": "hyperband",
        "factor": 3,
        "max_epochs": max_epochs,
        "max_trials": 1000,
        "seed": 1,
    }
    return request


def baseline_wall(request: dict[str, Any], logs: Path, label: str) -> float:
    path = logs / f"{label}-request.json"
    path.write_text(json.dumps(request))
    warn_if_busy(f"the baseline {label}")
    result = run_baseline("digits", path, logs)
    print(f"   bare keras-tuner {label}: {result.wall_s:.1f} s", flush=True)
    return float(result.wall_s)


def overhead_table(runs: list[JobRun], baselines: dict[int, float]) -> str:
    """Per epoch count: wall time and per-trial figures; the fitted overhead and epoch time."""
    xs = [float(e) for run in runs for e in run.epochs]
    ys = [d for run in runs for d in run.durations_s]
    line = fit_line(xs, ys)
    rows = [
        "| epochs per trial | trials | job wall (s) | trial median (s) | of it outside training steps "
        "| bare keras-tuner wall (s) | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for epochs, run in zip(EPOCHS, runs, strict=True):
        median = statistics.median(run.durations_s)
        share = line.intercept / median if median else 0.0
        bare = baselines.get(epochs)
        bare_text, ratio = (f"{bare:.1f}", f"{bare / run.wall_s:.1f}x") if bare else ("-", "-")
        rows.append(
            f"| {epochs} | {len(run.durations_s)} | {run.wall_s:.1f} | {median:.2f} | {share:.0%} "
            f"| {bare_text} | {ratio} |"
        )
    rows.append("")
    rows.append(
        f"Fitted over every trial: a trial takes {line.intercept:.2f} s outside its training steps "
        f"+ {line.slope * 1000:.0f} ms per epoch."
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=12, help="trials of each random job")
    parser.add_argument("--max-epochs", type=int, default=27, help="hyperband's max_epochs")
    parser.add_argument("--skip-baseline", action="store_true", help="no bare keras-tuner runs")
    args = parser.parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="ktune-overhead-"))
    print(f"logs: {logs}", flush=True)
    baselines: dict[int, float] = {}
    if not args.skip_baseline:
        for epochs in EPOCHS:
            baselines[epochs] = baseline_wall(random_request(args.trials, epochs), logs, f"random-{epochs}")
    with ktune_stack("fast", logs, "overhead", {}) as stack:
        runs = [run_job(stack, f"random-{e}", random_request(args.trials, e)) for e in EPOCHS]
        hyperband = run_job(stack, "hyperband", hyperband_request(args.max_epochs))
        per_trial = max(1, round(hyperband.total_epochs / 12))
        random = run_job(stack, "random-12", random_request(12, per_trial))
    print()
    print(overhead_table(runs, baselines))
    ratio = hyperband.wall_s / random.wall_s
    print()
    print("| job | trials | epochs trained | wall (s) |")
    print("|---|---:|---:|---:|")
    for run in (hyperband, random):
        print(f"| {run.label} | {len(run.epochs)} | {run.total_epochs} | {run.wall_s:.1f} |")
    verdict = "met" if ratio <= GOAL_RATIO else "not met"
    print(f"\nhyperband / random wall time: {ratio:.2f}x (goal <= {GOAL_RATIO:.0f}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
