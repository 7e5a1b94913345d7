"""How much Redis memory one finished job holds, by kind of key: the figures behind the README's sizing of
Redis' --maxmemory (docker-compose.yml).

Runs each search of bench/run.py through a private stack, then sums `MEMORY USAGE` of every key whose name
contains the job's id, grouped by the key's suffix (the job hash, :data, :trials, :oracle ...), and prints
them with the request's JSON size and its number of trials and epochs.
Run: `.venv/bin/python bench/redis_footprint.py --search seed,digits`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import POLL_SECONDS, REQUESTS, SEARCHES, TERMINAL, ktune_stack

KB = 1024


def family(key: str, job_id: str) -> str:
    """A key's kind: its part after the job id, trial ids replaced (`:lease:{trial}` -> `:lease:*`)."""
    suffix = key.split(job_id, 1)[1]
    return re.sub(r"^(:[a-z-]+):.+$", r"\1:*", suffix) or "(hash)"


def footprint(redis_url: str, job_id: str) -> Counter[str]:
    """Bytes of Redis memory per key family of the job (MEMORY USAGE, all samples)."""
    client: Any = redis.Redis.from_url(redis_url, decode_responses=True)  # sync; redis-py's stubs say both
    sizes: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        if job_id in key:
            sizes[family(key, job_id)] += int(client.memory_usage(key, samples=0) or 0)
    return sizes


def run(search: str, logs: Path) -> dict[str, Any]:
    request = REQUESTS[search]()
    with ktune_stack("fast", logs, search, {}) as stack:
        job_id = stack.client.post("/v1/jobs", json=request).json()["id"]
        while (job := stack.client.get(f"/v1/jobs/{job_id}").json())["status"] not in TERMINAL:
            time.sleep(POLL_SECONDS)
        trials = stack.client.get(f"/v1/jobs/{job_id}/trials").json()["items"]
        sizes = footprint(stack.redis_url, job_id)
    epochs = sum(len(next(iter(e["history"].values()), [])) for t in trials for e in t["executions"])
    return {
        "search": search,
        "status": job["status"],
        "request_kb": round(len(json.dumps(request)) / KB, 1),
        "trials": len(trials),
        "epochs_recorded": epochs,
        "redis_kb": {name: round(size / KB, 1) for name, size in sorted(sizes.items())},
        "redis_total_kb": round(sum(sizes.values()) / KB, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", default=",".join(SEARCHES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ktune-footprint-") as logs:
        for search in args.search.split(","):
            print(json.dumps(run(search, Path(logs)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
