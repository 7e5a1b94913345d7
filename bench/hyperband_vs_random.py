"""Hyperband against random search with the same epochs, on the checkout this is run from (issue 13's 2x).

bench/trial_overhead.py's two jobs (hyperband with `max_epochs` 27 over the digits search; random search
with 12 trials of 31 epochs, about the same total epochs) through the API and one worker with two pool
processes, printing one line: the checkout's commit and both wall times. The machine's speed drifts, so
compare checkouts by running it from each, alternately, in one session:

    git worktree add --detach ../BASE <rev> && ln -s "$PWD/.venv" ../BASE/.venv
    for round in 1 2; do for root in ../BASE .; do
        (cd "$root" && PYTHONPATH=. .venv/bin/python "$OLDPWD/bench/hyperband_vs_random.py"); done; done

It imports bench.run and bench.trial_overhead from the checkout it runs in (PYTHONPATH=.).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from bench.run import ktune_stack, run_ktune
from bench.trial_overhead import hyperband_request, random_request


def main() -> None:
    logs = Path(tempfile.mkdtemp(prefix="ktune-hyperband-vs-random-"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    walls: dict[str, float] = {}
    with ktune_stack("fast", logs, "hyperband-vs-random", {}) as stack:
        for label, request in (("hyperband", hyperband_request(27)), ("random-12", random_request(12, 31))):
            result = run_ktune(stack, request, "fast")
            if result.status != "succeeded":
                raise RuntimeError(f"{label}: job {result.job_id} ended {result.status}: {result.error}")
            walls[label] = round(result.wall_s, 1)
    ratio = walls["hyperband"] / walls["random-12"]
    print(json.dumps({"commit": commit.strip(), **walls, "ratio": round(ratio, 2), "logs": str(logs)}))


if __name__ == "__main__":
    main()
