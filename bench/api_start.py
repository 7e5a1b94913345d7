"""How fast an API replica starts and how small it stays: the figures issue 11 asks of the API image.

Per round, in fresh processes: the wall time of `python -c "import service.api.app"`; then
`python -m service` against a private redis-server, timed from its launch to the first 200 of /healthz
(polled every 10 ms), with the CPU time the process had used by then (less bound to the machine's load than
the wall time) and its RSS; then the first POST /v1/jobs (examples/xor-seed.json, left queued: no worker
runs; it loads what the API defers to the first job: numpy, pyarrow, Celery), and the time and RSS after the
first GET /v1/datasets (the built-in sets' listing, which imports scikit-learn: the sets ship inside it).
Usage: PYTHONPATH=. python bench/api_start.py [--rounds 5] [--python PATH]   (PATH: another environment's)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from run import MB, ROOT, free_port, ktune_env, private_redis, rss, stop, tail

POLL_SECONDS = 0.01
SEED_JOB = (ROOT / "examples" / "xor-seed.json").read_bytes()


def import_seconds(python: str) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-c", "import service.api.app"], cwd=ROOT, check=True)
    return time.perf_counter() - started


def start_once(python: str, redis_url: str, workdir: Path) -> dict[str, float]:
    """One API process: seconds to /healthz and to the first listing, and its RSS (MB) at each."""
    env = ktune_env(redis_url, workdir / "artifacts", free_port(), "fast", {})
    log = workdir / "api.log"
    with open(log, "ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [python, "-m", "service"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{env['KTUNE_PORT']}"
        with httpx.Client(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not start:\n{tail(log)}")
                time.sleep(POLL_SECONDS)
            healthz = time.perf_counter() - started
            api = psutil.Process(process.pid)
            cpu_healthz = sum(api.cpu_times()[:2])  # user + system
            rss_healthz = rss(api) / MB
            posted = time.perf_counter()
            job = client.post("/v1/jobs", content=SEED_JOB, headers={"Content-Type": "application/json"})
            assert job.status_code == 202, job.text
            post = time.perf_counter() - posted
            listed = time.perf_counter()
            assert client.get("/v1/datasets").status_code == 200
            listing = time.perf_counter() - listed
            rss_listed = rss(psutil.Process(process.pid)) / MB
        return {
            "healthz_s": healthz,
            "cpu_healthz_s": cpu_healthz,
            "rss_healthz_mb": rss_healthz,
            "post_s": post,
            "listing_s": listing,
            "rss_listed_mb": rss_listed,
        }
    finally:
        stop(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the environment to time")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ktune-api-start-") as scratch, private_redis() as redis_url:
        workdir = Path(scratch)
        imports = [import_seconds(args.python) for _ in range(args.rounds)]
        starts = [start_once(args.python, redis_url, workdir) for _ in range(args.rounds)]
    print(f"{args.rounds} rounds, median (min-max)")
    figures = {"import service.api.app (s)": imports}
    for key, label in [
        ("healthz_s", "launch to /healthz 200 (s)"),
        ("cpu_healthz_s", "CPU time by then (s)"),
        ("rss_healthz_mb", "RSS then (MB)"),
        ("post_s", "first POST /v1/jobs (s)"),
        ("listing_s", "first GET /v1/datasets (s)"),
        ("rss_listed_mb", "RSS after it (MB)"),
    ]:
        figures[label] = [start[key] for start in starts]
    for label, values in figures.items():
        print(f"{label:32} {statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
