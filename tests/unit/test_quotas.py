"""Quota settings: defaults, per-tenant overrides, and when a day's trial quota is new."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from service.core.quotas import Quotas, seconds_to_next_day


def test_overrides_replace_only_the_quotas_they_name() -> None:
    defaults = Quotas(running_jobs=3, queued_jobs=10)
    mine = defaults.overridden({"running_jobs": 1, "unknown": 5})
    assert (mine.running_jobs, mine.queued_jobs) == (1, 10)
    assert defaults.running_jobs == 3, "the defaults are not changed"


def test_quotas_read_their_defaults_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KTUNE_QUOTA_TRIALS_PER_DAY", "77")
    assert Quotas().trials_per_day == 77


def test_a_quota_below_one_is_refused() -> None:
    with pytest.raises(ValidationError):
        Quotas(running_jobs=0)


def test_a_days_trials_come_back_at_the_next_utc_midnight() -> None:
    assert seconds_to_next_day(datetime(2026, 11, 27, 23, 59, 30, tzinfo=UTC)) == 31
    assert seconds_to_next_day(datetime(2026, 11, 27, 0, 0, 0, tzinfo=UTC)) == 24 * 3600 + 1
