"""Logging of the API and the workers: lines for people, or one JSON object per line (KTUNE_LOG_FORMAT).

Every record carries the job and trial it is about when known: a worker task sets them for its duration
(`log_context`), and a JSON line holds them as `job_id` and `trial_id`; a text line ends with them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("ktune_log_context", default={})  # noqa: B039

# Attributes every LogRecord has; anything else on a record came from `extra=` and goes into a JSON line.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "job_id",
    "trial_id",
    "color_message",  # uvicorn's message with terminal colours
}
CONTEXT_FIELDS = ("job_id", "trial_id")


def enter_context(**values: str | None) -> contextvars.Token[dict[str, str]]:
    """From now on records carry these values (job_id, trial_id) too, until `exit_context(token)`."""
    return _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in values.items() if v is not None}})


def exit_context(token: contextvars.Token[dict[str, str]]) -> None:
    _CONTEXT.reset(token)


@contextlib.contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Records logged inside carry these values (job_id, trial_id), besides those of an outer context."""
    token = enter_context(**values)
    try:
        yield
    finally:
        exit_context(token)


class ContextFilter(logging.Filter):
    """Puts the current `log_context` on each record (None where a value is not known)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get()
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, context.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 UTC), level, logger, message, job_id, trial_id, then any
    `extra=` values, and the traceback as `exc_info` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job_id": getattr(record, "job_id", None),
            "trial_id": getattr(record, "trial_id", None),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, then `[job=... trial=...]` when the record is about one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{name[:-3]}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None)
        ]
        if not ids:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{' '.join(ids)}]{newline}{rest}"


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(log_format: str, level: int | str = logging.INFO) -> None:
    """The root logger writes to stderr in `log_format` ('text' or 'json'); other handlers are removed, so
    every library's records (uvicorn's, Celery's) come out the same way."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
