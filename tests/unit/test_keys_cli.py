"""`python -m service keys ...`: its arguments and what it prints (the commands against Redis:
tests/integration/test_api_keys.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.__main__ import build_parser
from service.core.api_keys import QUOTA_NAMES, ApiKey, InvalidTenant, check_tenant
from service.keys_cli import format_keys, format_quotas


def test_no_command_serves_the_api() -> None:
    assert build_parser().parse_args([]).command is None


def test_quota_options_are_the_four_quotas_by_name() -> None:
    args = build_parser().parse_args(
        ["keys", "quota", "acme", "--running-jobs", "2", "--queued-jobs", "0", "--artifact-bytes", "1024"]
    )
    assert (args.command, args.action, args.tenant) == ("keys", "quota", "acme")
    assert {name: getattr(args, name) for name in QUOTA_NAMES} == {
        "running_jobs": 2,
        "queued_jobs": 0,
        "trials_per_day": None,
        "artifact_bytes": 1024,
    }


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_quota_is_a_whole_number_of_at_least_0(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["keys", "quota", "acme", "--trials-per-day", value])
    assert exited.value.code == 2
    assert "--trials-per-day" in capsys.readouterr().err


def test_webhook_secret_takes_a_tenant_and_drop() -> None:
    args = build_parser().parse_args(["keys", "webhook-secret", "acme"])
    assert (args.action, args.tenant, args.drop) == ("webhook-secret", "acme", False)
    assert build_parser().parse_args(["keys", "webhook-secret", "acme", "--drop"]).drop


@pytest.mark.parametrize(
    "argv", [["keys"], ["keys", "create"], ["keys", "revoke"], ["keys", "webhook-secret"], ["serve"]]
)
def test_incomplete_or_unknown_commands_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2


@pytest.mark.parametrize("tenant", ["acme", "a", "local", "team-7.eu_west", "0" * 63])
def test_tenant_names(tenant: str) -> None:
    assert check_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", "Acme", "-acme", "acme corp", "a:b", "a/b", "0" * 64, "ünï"])
def test_tenant_names_that_are_refused(tenant: str) -> None:
    with pytest.raises(InvalidTenant, match="invalid tenant name"):
        check_tenant(tenant)


def test_the_key_list_is_a_table_with_last_use() -> None:
    created = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    table = format_keys(
        [
            ApiKey("0123456789ab", "acme", created, None),
            ApiKey("ba9876543210", "team-7", created, datetime(2026, 11, 2, 8, 0, 5, tzinfo=UTC)),
        ]
    ).splitlines()
    assert table[0].split() == ["KEY_ID", "TENANT", "CREATED", "LAST_USED"]
    assert table[1].split() == ["0123456789ab", "acme", "2026-11-01T09:30:00Z", "never"]
    assert table[2].split() == ["ba9876543210", "team-7", "2026-11-01T09:30:00Z", "2026-11-02T08:00:05Z"]
    assert table[1].index("acme") == table[2].index("team-7") == table[0].index("TENANT"), "aligned columns"


def test_quotas_say_which_are_the_tenants_own() -> None:
    lines = format_quotas("acme", {"running_jobs": 3}, {"running_jobs": 10, "queued_jobs": 50}).splitlines()
    assert lines[0] == "quotas of tenant acme:"
    assert lines[1].split(maxsplit=2) == ["running_jobs", "3", "(this tenant's)"]
    assert lines[2].split(maxsplit=2) == ["queued_jobs", "50", "(service-wide, KTUNE_QUOTA_QUEUED_JOBS)"]
    assert lines[3].split(maxsplit=1) == ["trials_per_day", "service-wide (KTUNE_QUOTA_TRIALS_PER_DAY)"]
    assert len(lines) == 1 + len(QUOTA_NAMES)
