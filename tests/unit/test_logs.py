"""Log lines: JSON objects with the job and trial a record is about, or text for people."""

from __future__ import annotations

import json
import logging

import pytest

from service.core.logs import ContextFilter, JsonFormatter, TextFormatter, log_context


def record(message: str = "trial %s done", *args: object, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "worker.runner", "levelno": logging.INFO, "levelname": "INFO", "msg": message, "args": args}
    )
    made.__dict__.update(extra)
    ContextFilter().filter(made)
    return made


def test_a_json_line_has_time_level_logger_message_and_the_ids() -> None:
    with log_context(job_id="job-1", trial_id="03"):
        line = JsonFormatter().format(record("trial %s done", "03"))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "INFO" and entry["logger"] == "worker.runner"
    assert entry["message"] == "trial 03 done"
    assert (entry["job_id"], entry["trial_id"]) == ("job-1", "03")
    assert entry["time"].endswith("+00:00")


def test_ids_are_null_outside_a_context_and_contexts_nest() -> None:
    assert json.loads(JsonFormatter().format(record()))["job_id"] is None
    with log_context(job_id="job-1"), log_context(trial_id="07"):
        entry = json.loads(JsonFormatter().format(record()))
    assert (entry["job_id"], entry["trial_id"]) == ("job-1", "07")
    assert json.loads(JsonFormatter().format(record()))["trial_id"] is None


def test_extra_values_and_tracebacks_are_kept() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = record("failed", queue="cpu", exc_info=sys.exc_info())
    entry = json.loads(JsonFormatter().format(failed))
    assert entry["queue"] == "cpu"
    assert "ValueError: boom" in entry["exc_info"]


@pytest.mark.parametrize("ids", [True, False])
def test_a_text_line_names_the_job_and_trial_when_known(ids: bool) -> None:
    if ids:
        with log_context(job_id="job-1", trial_id="03"):
            line = TextFormatter().format(record())
        assert line.endswith("worker.runner: trial %s done [job=job-1 trial=03]")
    else:
        assert "[job=" not in TextFormatter().format(record())
