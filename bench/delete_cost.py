"""What deleting a job costs as Redis fills up: `JobStore.delete_job`, and one pass of the cleanup's search
for leftover keys of deleted jobs (`JobStore.delete_leftover_keys`).

Starts a private redis-server, fills it with 10,000, 100,000 and 1,000,000 keys of other jobs (10 keys
each), and times five deletes of a small cancelled job and one leftover pass at each size.
Run: `PYTHONPATH=. .venv/bin/python bench/delete_cost.py`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from service.core import lifecycle
from service.core.records import JobRecord, TrialRecord, utcnow
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobDeletion, JobStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import free_port, wait_for

_SUFFIXES = ("", ":data", ":trials", ":trial-status", ":oracle", ":losses:a", ":losses:b", ":history:a")
_SUFFIXES += (":history:b", ":history:c")


def fill(client: redis.Redis, jobs: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(jobs):
        job_id = uuid.uuid4()
        for suffix in _SUFFIXES:
            pipe.set(f"ktune:job:{job_id}{suffix}", "1")
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def cancelled_job(store: JobStore) -> str:
    record = JobRecord(id=str(uuid.uuid4()), status=JobStatus.QUEUED, spec={}, created_at=utcnow())
    store.create_job(record, b"npz bytes")
    trial = TrialRecord(id="t1", status=TrialStatus.QUEUED, hyperparameters={})
    lifecycle.queue_trial(store, record.id, trial)
    lifecycle.cancel(store, record.id)
    lifecycle.cancel_queued_trial(store, record.id, trial)
    return record.id


def main() -> int:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ktune-delete-cost-") as workdir:
        process = subprocess.Popen(
            [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port, decode_responses=True)
            wait_for(client.ping, 15, "redis-server")
            store = JobStore(client)
            for jobs in (1_000, 10_000, 100_000):
                client.flushall()
                fill(client, jobs)
                times = []
                for _ in range(5):
                    job_id = cancelled_job(store)
                    begun = time.perf_counter()
                    assert store.delete_job(job_id) is JobDeletion.DELETED
                    times.append(time.perf_counter() - begun)
                begun = time.perf_counter()
                store.delete_leftover_keys(5_000)
                sweep = time.perf_counter() - begun
                fastest, slowest = min(times) * 1000, max(times) * 1000
                print(
                    f"{client.dbsize():>9} keys: delete_job {fastest:.1f}-{slowest:.1f} ms, "
                    f"a leftover pass over 5,000 keys {sweep * 1000:.0f} ms"
                )
        finally:
            process.terminate()
            process.wait(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
