"""Leases renewed by the process's one renewing thread: each at its own period, never after its release,
and no more once lost. (tests/integration/test_lease.py runs them against Redis.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

from worker.lease import Keeper


class Lease:
    """A lease's calls, in order, with a renewal that may be made slow or fail."""

    def __init__(self, answers: list[bool | Exception] | None = None, renew_seconds: float = 0.0) -> None:
        self.calls: list[str] = []
        self.answers = list(answers or [])
        self.renew_seconds = renew_seconds
        self.renewing = threading.Event()

    def renew(self) -> bool:
        self.renewing.set()
        time.sleep(self.renew_seconds)
        self.calls.append("renew")
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer

    def release(self) -> None:
        self.calls.append("release")

    def keeper(self, seconds: float) -> Keeper:
        return Keeper(self.renew, self.release, "me", seconds, "a test lease")


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_every_held_lease_is_renewed_and_released_once_closed() -> None:
    short, long = Lease(), Lease()
    with short.keeper(0.15), long.keeper(0.6):
        wait_until(lambda: short.calls.count("renew") >= 6 and long.calls.count("renew") >= 1)
    assert short.calls[-1] == "release" and long.calls[-1] == "release"
    # The short lease (every 0.05 s) is renewed several times for each renewal of the long one (0.2 s).
    assert short.calls.count("renew") > long.calls.count("renew")
    renewed = len(short.calls)
    time.sleep(0.2)
    assert len(short.calls) == renewed, "a closed lease is renewed no more"


def test_closing_waits_for_a_renewal_under_way_so_none_follows_the_release() -> None:
    slow = Lease(renew_seconds=0.3)
    with slow.keeper(0.03):
        assert slow.renewing.wait(5)
    assert slow.calls == ["renew", "release"]


def test_a_lease_that_cannot_be_renewed_is_lost_and_renewed_no_more() -> None:
    lease = Lease(answers=[True, False])
    with lease.keeper(0.06) as keeper:
        wait_until(lambda: keeper.lost)
        time.sleep(0.1)
    assert lease.calls == ["renew", "renew", "release"]


def test_a_redis_error_is_retried_at_the_next_renewal() -> None:
    lease = Lease(answers=[redis.ConnectionError("restarting"), True])
    with lease.keeper(0.06) as keeper:
        wait_until(lambda: lease.calls.count("renew") >= 3)
        assert not keeper.lost


def test_an_unexpected_error_in_one_renewal_stops_no_lease() -> None:
    broken, other = Lease(answers=[ValueError("a bug"), True]), Lease()
    with broken.keeper(0.06) as keeper, other.keeper(0.06):
        wait_until(lambda: broken.calls.count("renew") >= 2 and other.calls.count("renew") >= 3)
        assert not keeper.lost
