"""The `ktune` command line without a service: its entry point, its help, its exit codes."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from service.api.schemas import JobPublic
from service.cli import commands
from service.cli.commands import ExitCode, cli, exit_code_of, exit_code_of_error
from service.client import KtuneError, Unreachable, WaitTimeout
from service.client.errors import error_from

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = (
    "submit",
    "wait",
    "status",
    "trials",
    "cancel",
    "download",
    "finalize",
    "recheck",
    "serve",
    "worker",
)


def a_job(status: str) -> JobPublic:
    moment = datetime(2026, 12, 4, tzinfo=UTC)
    return JobPublic.model_validate(
        {
            "id": "j1",
            "name": None,
            "status": status,
            "task": "regression",
            "algorithm": "random",
            "objective": {"name": "val_loss", "direction": "min"},
            "progress": {
                "trials_total": 1,
                "completed": 0,
                "running": 1,
                "queued": 0,
                "failed": 0,
                "cancelled": 0,
            },
            "best_trial": None,
            "error": None,
            "created_at": moment,
            "started_at": None,
            "finished_at": None,
            "spec": {},
        }
    )


def test_the_console_script_is_the_command_lines_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["ktune"].partition(":")
    assert getattr(importlib.import_module(module), function) is commands.main


def test_python_m_service_cli_lists_every_command_and_the_exit_codes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    listed = done.stdout.split("Commands:")[1]
    assert all(f"  {name} " in listed for name in COMMANDS)
    assert "Exit codes: 0 ok" in done.stdout and "7 --timeout" in done.stdout


@pytest.mark.parametrize(
    ("status", "code"),
    [("succeeded", ExitCode.OK), ("failed", ExitCode.FAILED), ("cancelled", ExitCode.CANCELLED)],
)
def test_how_a_job_ended_is_its_exit_code(status: str, code: ExitCode) -> None:
    assert exit_code_of(a_job(status)) is code


def test_the_exit_codes_are_distinct() -> None:
    assert len({int(code) for code in ExitCode}) == len(ExitCode)
    assert 1 not in {int(code) for code in ExitCode}  # left to crashes and Ctrl-C


def test_what_the_client_raises_maps_to_an_exit_code() -> None:
    invalid = error_from(httpx.Response(422, json={"error": {"code": "invalid_request", "message": "m"}}))
    down = error_from(httpx.Response(503, json={"error": {"code": "unavailable", "message": "m"}}))
    assert exit_code_of_error(invalid) is ExitCode.REFUSED
    assert exit_code_of_error(down) is ExitCode.UNAVAILABLE
    assert exit_code_of_error(Unreachable("refused")) is ExitCode.UNAVAILABLE
    assert exit_code_of_error(WaitTimeout(a_job("running"), 1)) is ExitCode.TIMEOUT
    assert isinstance(invalid, KtuneError)


@pytest.mark.parametrize(("text", "said"), [("{", "is not JSON"), ("[1]", "holds list, not a JSON object")])
def test_a_job_file_that_is_no_json_object_is_refused_before_any_request(text: str, said: str) -> None:
    # The URL answers nothing: the file is refused before a request would fail with exit code 6.
    result = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:9", "submit", "-"], input=text)
    assert result.exit_code == ExitCode.REFUSED
    assert said in result.output


def test_a_missing_job_file_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["submit", "/nonexistent/job.json"])
    assert result.exit_code == ExitCode.USAGE
