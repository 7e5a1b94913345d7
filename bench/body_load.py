"""Does the API stay responsive while maximal job bodies arrive? /healthz latency and API memory under load.

Starts a private redis-server and the API (no worker: the jobs stay queued), then POSTs `--bodies`
maximal job bodies at once (each just under KTUNE_MAX_BODY_BYTES, valid, from separate processes) while
this process GETs /healthz every 20 ms on one keep-alive connection and samples the API's memory: its
own RSS and that of its children (the parse processes). Prints the latencies, the posts' statuses and
durations, the peaks, and the stored size of one job's data in Redis.
Run: `.venv/bin/python bench/body_load.py` (`--root DIR` serves the API from another checkout, to
compare with an older commit).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MB, ROOT, free_port, ktune_env, rss, stop, tail, wait_for

MAX_BODY_BYTES = 32 * 1024 * 1024
HEALTH_EVERY = 0.02
# A bare uvicorn app in its own process, polled like /healthz: how late any process answers on this machine
# under the same load (its spikes are the machine's, not the API's).
CONTROL_APP = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def maximal_body(limit: int = MAX_BODY_BYTES, features: int = 15) -> bytes:
    """A valid regression job of random data, as large as fits in `limit` bytes (and 100,000 rows)."""
    rng = np.random.default_rng(0)
    rows = 100_000
    while True:
        x = rng.random((rows, features)).tolist()
        body = {
            "name": "body-load",
            "task": "regression",
            "data": {"train": {"x": x, "y": rng.random(rows).tolist()}},
            "tuner": {"max_trials": 1},
        }
        raw = json.dumps(body).encode()
        if len(raw) <= limit:
            return raw
        rows = int(rows * limit / len(raw) * 0.999)


def post(url: str, path: str) -> tuple[int, float, str]:
    """POST the body in `path`; the status, seconds taken and the error code if any."""
    raw = Path(path).read_bytes()
    started = time.monotonic()
    response = httpx.post(url, content=raw, headers={"content-type": "application/json"}, timeout=600)
    code = "" if response.status_code == 202 else response.json().get("error", {}).get("code", "")
    return response.status_code, time.monotonic() - started, code


@contextlib.contextmanager
def service(
    root: Path, logs: Path, settings: dict[str, str]
) -> Iterator[tuple[str, psutil.Process, str, str]]:
    """redis-server and the API served from `root`, and a control server; yields the API's URL, its
    process, the Redis URL and the control's URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ktune-body-load-")))
        redis_port, api_port = free_port(), free_port()
        redis_url, url = f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{api_port}"

        def start(name: str, command: list[str], env: dict[str, str] | None) -> subprocess.Popen[bytes]:
            log = stack.enter_context(open(logs / f"body-load-{name}.log", "wb"))
            process = subprocess.Popen(
                command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            stack.callback(stop, process)
            return process

        start("redis", [server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""], None)
        wait_for(lambda: redis.Redis.from_url(redis_url).ping(), 15, "redis-server")
        env = ktune_env(redis_url, workdir / "artifacts", api_port, "fast", settings)
        api = start("api", [sys.executable, "-m", "service"], env)
        try:
            wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "the API")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{tail(logs / 'body-load-api.log')}") from None
        control_port = free_port()
        start("control", [sys.executable, "-c", CONTROL_APP, str(control_port)], None)
        control = f"http://127.0.0.1:{control_port}"
        wait_for(lambda: httpx.get(control).status_code == 200, 30, "the control server")
        yield url, psutil.Process(api.pid), redis_url, control


def summary(latencies: list[float]) -> str:
    """Median, 99th percentile and maximum in ms, and how many took over 100 ms."""
    ms = sorted(t * 1000 for t in latencies)
    p99, slow = ms[min(len(ms) - 1, int(0.99 * len(ms)))], sum(t > 100 for t in ms)
    return (
        f"{len(ms)} requests, median {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms, "
        + (f"over 100 ms: {slow}")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=10, help="maximal bodies posted at once (10)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose API is served")
    parser.add_argument("--setting", action="append", default=[], metavar="KTUNE_NAME=value")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.setting)

    with tempfile.TemporaryDirectory(prefix="ktune-body-load-") as tmp:
        logs = Path(tmp)
        body_path = logs / "body.json"
        body_path.write_bytes(maximal_body())
        body_size = body_path.stat().st_size
        print(f"body: {body_size / MB:.1f} MB, API from {args.root}", flush=True)
        with service(args.root.resolve(), logs, settings) as (url, api, redis_url, control_url):
            health = httpx.Client(base_url=url, timeout=60)
            control = httpx.Client(base_url=control_url, timeout=60)
            idle = []
            for _ in range(100):
                started = time.monotonic()
                health.get("/healthz").raise_for_status()
                idle.append(time.monotonic() - started)
                time.sleep(HEALTH_EVERY)
            idle_rss = rss(api)
            latencies: list[float] = []
            control_latencies: list[float] = []
            peak_api = peak_children = 0
            with concurrent.futures.ProcessPoolExecutor(args.bodies) as posters:
                list(posters.map(abs, range(args.bodies)))  # the posting processes are up before the clock
                started_all = time.monotonic()
                futures = [posters.submit(post, f"{url}/v1/jobs", str(body_path)) for _ in range(args.bodies)]
                while not all(f.done() for f in futures):
                    started = time.monotonic()
                    health.get("/healthz").raise_for_status()
                    latencies.append(time.monotonic() - started)
                    started = time.monotonic()
                    control.get("/").raise_for_status()
                    control_latencies.append(time.monotonic() - started)
                    children = api.children(recursive=True)
                    peak_api = max(peak_api, rss(api))
                    peak_children = max(peak_children, sum(rss(child) for child in children))
                    time.sleep(HEALTH_EVERY)
                results = [f.result() for f in futures]
                total = time.monotonic() - started_all
            time.sleep(5)
            after_api, after_children = rss(api), sum(rss(child) for child in api.children(recursive=True))
            store = redis.Redis.from_url(redis_url)
            data_keys = list(store.scan_iter("ktune:job:*:data"))
            stored = [int(store.strlen(key)) for key in data_keys]
            used = store.info("memory")["used_memory"]

    print(f"/healthz idle: {summary(idle)}")
    print(f"/healthz while {args.bodies} bodies were posted ({total:.1f} s): {summary(latencies)}")
    print(f"the control server meanwhile: {summary(control_latencies)}")
    statuses: dict[str, int] = {}
    for status, _, code in results:
        key = f"{status}{' ' + code if code else ''}"
        statuses[key] = statuses.get(key, 0) + 1
    print(f"posts: {statuses}; seconds each: {', '.join(f'{s:.1f}' for _, s, _ in results)}")
    print(
        f"API RSS: idle {idle_rss / MB:.0f} MB, peak {peak_api / MB:.0f} MB; its children (parse processes) "
        f"peak {peak_children / MB:.0f} MB in all; 5 s after: API {after_api / MB:.0f} MB, children "
        f"{after_children / MB:.0f} MB"
    )
    if stored:
        print(
            f"stored data: {len(stored)} jobs, {stored[0] / MB:.1f} MB each in Redis "
            f"({stored[0] / body_size:.2f}x the body); Redis used_memory {used / MB:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
