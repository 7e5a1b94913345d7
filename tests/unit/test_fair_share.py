"""Message priorities from the work a tenant has in flight (kombu's Redis steps: 0 is taken first)."""

from __future__ import annotations

from service.core.fair_share import priority


def test_work_with_nothing_of_its_tenant_ahead_goes_first() -> None:
    assert priority(0) == 0


def test_priority_falls_with_the_work_ahead_and_stays_within_kombus_steps() -> None:
    ranks = range(0, 40)
    priorities = [priority(rank) for rank in ranks]
    assert priorities == sorted(priorities), "more work ahead never means an earlier turn"
    assert set(priorities) == {0, 3, 6, 9}
    assert priority(1) > priority(0) and priority(1000) == 9
