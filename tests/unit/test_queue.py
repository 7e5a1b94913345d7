"""What the API sends to the queue: a job's runs carry time limits of their own, not the trials'."""

from __future__ import annotations

from typing import Any

import pytest

from service.core import queue


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
