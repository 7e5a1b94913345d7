"""Server-Sent Events read from a byte stream, as the HTML standard's event-stream parser reads them.

GET /v1/jobs/{id}/events answers `text/event-stream`: `id:`, `event:` and `data:` lines, a blank line ending
each event, `:` comment lines (keep-alives) ignored. Pure functions, so they are tested on canned bytes.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Event:
    """One event: its type (`message` when the stream names none), its data, and the last event id seen."""

    type: str
    data: str
    id: str | None

    def payload(self) -> dict[str, Any]:
        """The data as a JSON object. Raises ValueError when it is not one."""
        value = json.loads(self.data)
        if not isinstance(value, dict):
            raise ValueError(f"event {self.type!r} carries {type(value).__name__}, not a JSON object")
        return value


def lines_of(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of a UTF-8 byte stream cut anywhere, ended by CRLF, LF or CR (a CRLF split across two
    chunks is one line end); an unfinished last line is dropped, as the standard drops it."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        # A CR at the end may be the first half of a CRLF: keep it until the next chunk says.
        cut = len(pending) - 1 if pending.endswith("\r") else len(pending)
        start = 0
        for match in _LINE_END.finditer(pending, 0, cut):
            yield pending[start : match.start()]
            start = match.end()
        pending = pending[start:]
    pending += decoder.decode(b"", final=True)
    for match in _LINE_END.finditer(pending):
        yield pending[: match.start()]
        pending = pending[match.end() :]


def events_of(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a stream's lines: a blank line dispatches the event read so far, if it had data."""
    event_type, last_id = "", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Event(event_type or "message", "\n".join(data), last_id)
            event_type, data = "", []
            continue
        if line.startswith(":"):
            continue  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event_type = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
        # `retry` and unknown fields are ignored: the client decides when to reconnect.
