"""Per-tenant quotas: defaults from KTUNE_QUOTA_* settings, overridden per tenant by the keys command.

What each bounds, and where it is enforced:
- `queued_jobs`: a tenant's jobs waiting to start; a submit over it is refused (429) - `JobStore.create_job`.
- `running_jobs`: a tenant's jobs running at once; more stay queued until one ends - `lifecycle.start`.
- `trials_per_day`: trials a tenant's jobs may start per UTC day. A job reserves its `max_trials` when it is
  submitted (a submit over it is refused, 429) and gives back those it never started when it ends.
- `artifact_bytes`: bytes of models, checkpoints and data sets a tenant stores; a submit or upload while
  the tenant stores this much is refused (429) until it deletes jobs or data sets (or retention does).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:  # settings import this module, and the key store imports settings through the spec
    from service.core.api_keys import ApiKeyStore

QUOTA_NAMES = ("running_jobs", "queued_jobs", "trials_per_day", "artifact_bytes")


class Quotas(BaseSettings):
    """A tenant's quotas; the defaults apply to every tenant without an override (KTUNE_QUOTA_*)."""

    model_config = SettingsConfigDict(env_prefix="KTUNE_QUOTA_", extra="ignore")

    running_jobs: int = Field(8, ge=1, description="jobs of a tenant running at once; more stay queued")
    queued_jobs: int = Field(100, ge=1, description="jobs of a tenant waiting to start; more are refused")
    trials_per_day: int = Field(
        20_000, ge=1, description="trials a tenant's jobs may start per UTC day (reserved at submit)"
    )
    artifact_bytes: int = Field(
        50 * 1024**3, ge=1, description="bytes of models, checkpoints and data sets a tenant may store"
    )

    def overridden(self, overrides: Mapping[str, int]) -> Quotas:
        """These quotas with a tenant's overrides (unknown names are ignored)."""
        known = {name: int(value) for name, value in overrides.items() if name in QUOTA_NAMES}
        return self.model_copy(update=known)


def seconds_to_next_day(now: datetime | None = None) -> int:
    """Seconds until the next UTC day begins (when a day's trial quota is new)."""
    now = now or datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - now).total_seconds()) + 1)


def tenant_quotas(keys: ApiKeyStore, defaults: Quotas, tenant: str) -> Quotas:
    """The quotas of one tenant: the defaults with the overrides the keys command stored for it."""
    return defaults.overridden(keys.quota_overrides(tenant))
