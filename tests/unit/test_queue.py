"""What the API sends to the queue, and how workers run it: a job's runs carry time limits of their own, not
the trials', and a pool process is replaced by its memory."""

from __future__ import annotations

from typing import Any

import pytest

from service.core import queue
from service.core.settings import Settings


class _App:
    """Celery's app as far as the send functions use it: records each task sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append((name, options))


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> _App:
    recording = _App()
    monkeypatch.setattr(queue, "get_celery", lambda: recording)
    return recording


def test_a_finalization_is_limited_by_its_own_timeout(app: _App) -> None:
    queue.send_finalize("job", "run", None, "cpu", seconds=7200)
    [(name, options)] = app.sent
    assert name == queue.FINALIZE and options["args"] == ["job", "run", None] and options["queue"] == "cpu"
    # A minute past the run's own deadline (`timed_out`), whatever KTUNE_TRIAL_TIME_LIMIT_SECONDS says.
    assert (options["soft_time_limit"], options["time_limit"]) == (7260, 7320)


def test_a_recheck_is_limited_by_its_own_timeout(app: _App) -> None:
    queue.send_recheck("job", "run", "gpu", seconds=100)
    [(name, options)] = app.sent
    assert name == queue.RECHECK and options["queue"] == "gpu"
    assert (options["soft_time_limit"], options["time_limit"]) == (160, 220)


def test_a_pool_process_is_replaced_by_its_memory_with_a_task_count_as_backstop() -> None:
    conf = queue.make_celery(Settings(redis_url="redis://127.0.0.1:1/0")).conf
    assert conf.worker_max_memory_per_child == 1200 * 1024  # Celery counts KiB of resident memory
    assert conf.worker_max_tasks_per_child == 200
    off = Settings(
        redis_url="redis://127.0.0.1:1/0", worker_max_memory_per_child_mb=0, worker_max_tasks_per_child=0
    )
    assert queue.make_celery(off).conf.worker_max_memory_per_child == 0  # Celery's "no limit"
    assert queue.make_celery(off).conf.worker_max_tasks_per_child == 0
