"""A worker node's heartbeat: what it consumes, holds and sees waiting, and when it is not consuming.

Worker nodes write one every KTUNE_WORKER_HEARTBEAT_SECONDS (`worker.consumption`); /readyz reads them.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class WorkerHeartbeat(BaseModel):
    """What a worker node last reported about its task queues and its pool."""

    queues: list[str] = Field(description="the queues the node is meant to consume, as started (-Q) or added")
    concurrency: int = Field(description="pool processes")
    busy: int = Field(description="task messages the node holds: running, or fetched and about to run")
    waiting: dict[str, int] = Field(description="messages waiting in the broker, per queue of the node")
    stalled_since: datetime | None = Field(
        description="since when messages have waited while a pool process was idle; null when they have not"
    )
    updated_at: datetime

    def stalled_seconds(self) -> float:
        """How long the node had been starved while idle when it wrote this heartbeat; 0 if it was not."""
        # Both times come from the worker's clock, so a skewed clock where this is read does not matter.
        if self.stalled_since is None:
            return 0.0
        return (self.updated_at - self.stalled_since).total_seconds()

    def not_consuming(self, stalled_seconds: float) -> str | None:
        """Why the node counts as not consuming, in a sentence for people; None while it consumes.

        It does not consume when it has been starved while idle for at least `stalled_seconds`.
        """
        stalled = self.stalled_seconds()
        if self.stalled_since is None or stalled < stalled_seconds:
            return None
        queues = [q for q in self.queues if self.waiting.get(q)]
        subject = f"queue {queues[0]} has" if len(queues) == 1 else f"queues {', '.join(queues)} have"
        messages = sum(self.waiting.values())
        idle = self.concurrency - self.busy
        return (
            f"{subject} had {messages} message{'' if messages == 1 else 's'} waiting for {stalled:.0f} s"
            f" while {idle} of {self.concurrency} pool process{'' if self.concurrency == 1 else 'es'}"
            f" {'is' if idle == 1 else 'are'} idle"
        )
