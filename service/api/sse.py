"""Server-Sent Events as text: an event's lines, and the keep-alive comment (the HTML Living Standard's
`text/event-stream`)."""

from __future__ import annotations

import re

MEDIA_TYPE = "text/event-stream"
KEEP_ALIVE = ": keep-alive\n\n"

# A Redis stream entry id: what an event's `id:` holds and a client sends back as Last-Event-ID.
EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}")


def format_event(event_id: str, event_type: str, data: str) -> str:
    """One event: its id, type and data lines, then the blank line that ends it."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"id: {event_id}\nevent: {event_type}\n{lines}\n"
