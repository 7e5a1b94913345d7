"""`python -m service keys ...`: API keys and tenants' quotas, in the Redis the API reads (KTUNE_REDIS_URL,
KTUNE_KEY_PREFIX). The API reads keys on every request, so what this changes applies at once, no restart.

    keys create TENANT      prints a new key on stdout (only once: only its hash is stored)
    keys list [--tenant T]  key ids, tenants, creation and last use; never a secret
    keys revoke KEY_ID      the key is refused from the next request on
    keys quota TENANT [--running-jobs N] [--queued-jobs N] [--trials-per-day N] [--artifact-bytes N] [--reset]
                            sets the tenant's overrides; with no option, prints its quotas
    keys webhook-secret TENANT [--drop]
                            prints a new key for the tenant's webhook signatures (replacing any; only once);
                            --drop: KTUNE_WEBHOOK_SECRET signs them again
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import redis

from service.core.api_keys import ApiKey, ApiKeyStore, InvalidQuota, InvalidTenant
from service.core.quotas import QUOTA_NAMES
from service.core.settings import get_settings
from service.core.store import JobStore


def add_parser(commands: Any) -> None:
    """Add `keys` and its subcommands to the subparsers `commands` of `python -m service`."""
    keys = commands.add_parser(
        "keys",
        help="create, list and revoke API keys; set tenants' quotas",
        description="API keys and tenants' quotas in the Redis of KTUNE_REDIS_URL; changes apply at once.",
    )
    actions = keys.add_subparsers(
        dest="action", required=True, metavar="{create,list,revoke,quota,webhook-secret}"
    )
    create = actions.add_parser("create", help="make a key for a tenant; prints it (only this once)")
    create.add_argument("tenant", help="lowercase letters, digits, '_', '.' and '-', up to 63")
    listing = actions.add_parser("list", help="key ids, tenants, creation and last use")
    listing.add_argument("--tenant", help="only this tenant's keys")
    revoke = actions.add_parser("revoke", help="refuse a key from the next request on")
    revoke.add_argument("key_id", help="the id `keys list` shows (the 12 hex digits after ktk_)")
    quota = actions.add_parser("quota", help="set a tenant's quotas; with no option, print them")
    quota.add_argument("tenant")
    for name in QUOTA_NAMES:
        flag = f"--{name.replace('_', '-')}"
        quota.add_argument(flag, type=_count, metavar="N", dest=name, help=f"over KTUNE_QUOTA_{name.upper()}")
    quota.add_argument("--reset", action="store_true", help="drop the tenant's overrides first")
    secret = actions.add_parser(
        "webhook-secret",
        help="make (or replace) the key that signs a tenant's webhooks; prints it (only this once)",
    )
    secret.add_argument("tenant")
    secret.add_argument("--drop", action="store_true", help="sign them with KTUNE_WEBHOOK_SECRET again")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return value


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed `keys` command; the exit status (messages for people go to stderr)."""
    settings = get_settings()
    store = ApiKeyStore(JobStore.from_url(settings.redis_url, settings.key_prefix))
    try:
        if args.action == "create":
            token, key = store.create(args.tenant)
            print(token)  # alone on stdout: KEY=$(python -m service keys create acme)
            note = f"created key {key.key_id} for tenant {key.tenant}; it is shown only this once"
            print(note, file=sys.stderr)
        elif args.action == "list":
            print(format_keys(store.list_keys(args.tenant)))
        elif args.action == "revoke":
            revoked = store.revoke(args.key_id)
            if revoked is None:
                print(f"no key with id {args.key_id!r} (see `keys list`)", file=sys.stderr)
                return 1
            print(f"revoked key {revoked.key_id} of tenant {revoked.tenant}", file=sys.stderr)
        elif args.action == "webhook-secret":
            _webhook_secret(store, args)
        else:
            return _quota(store, args)
    except (InvalidTenant, InvalidQuota) as exc:
        print(exc, file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        # Not the URL itself: it may hold a password.
        print(f"cannot reach Redis at KTUNE_REDIS_URL: {exc}", file=sys.stderr)
        return 1
    return 0


def _webhook_secret(store: ApiKeyStore, args: argparse.Namespace) -> None:
    if args.drop:
        store.drop_webhook_secret(args.tenant)
        print(f"tenant {args.tenant}'s webhooks are signed with KTUNE_WEBHOOK_SECRET again", file=sys.stderr)
        return
    print(store.new_webhook_secret(args.tenant))  # alone on stdout, like a new key
    print(
        f"tenant {args.tenant}'s webhooks are signed with this secret from now on; it is shown only once",
        file=sys.stderr,
    )


def _quota(store: ApiKeyStore, args: argparse.Namespace) -> int:
    values = {name: getattr(args, name) for name in QUOTA_NAMES if getattr(args, name) is not None}
    if args.reset:
        store.clear_quota_overrides(args.tenant)
    if values:
        store.set_quota_overrides(args.tenant, values)
    if args.reset or values:
        print(f"set the quotas of tenant {args.tenant}", file=sys.stderr)
    defaults = get_settings().quotas.model_dump()
    print(format_quotas(args.tenant, store.quota_overrides(args.tenant), defaults))
    return 0


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "never"


def format_keys(keys: list[ApiKey]) -> str:
    """A table of keys: id, tenant, created, last used (to the minute or so: uses are noted that often)."""
    rows = [("KEY_ID", "TENANT", "CREATED", "LAST_USED")]
    rows += [(k.key_id, k.tenant, _time(k.created_at), _time(k.last_used_at)) for k in keys]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def format_quotas(tenant: str, overrides: Mapping[str, int], defaults: Mapping[str, int]) -> str:
    """A tenant's effective quotas, one a line, each saying whether it is the tenant's own."""
    lines = [f"quotas of tenant {tenant}:"]
    for name in QUOTA_NAMES:
        setting = f"KTUNE_QUOTA_{name.upper()}"
        if name in overrides:
            lines.append(f"  {name:<15} {overrides[name]}  (this tenant's)")
        elif name in defaults:
            lines.append(f"  {name:<15} {defaults[name]}  (service-wide, {setting})")
        else:
            lines.append(f"  {name:<15} service-wide ({setting})")
    return "\n".join(lines)
