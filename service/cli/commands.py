"""The `ktune` commands: HTTP through `service.client`, text from `render`, outcomes as exit codes."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import IO, Any, NoReturn, TextIO

import click

from service.api.schemas import JobPublic
from service.cli import render
from service.client import DEFAULT_URL, Client, KtuneError, Unreachable, WaitTimeout
from service.client.client import run_of
from service.core.finalization import Finalization
from service.core.job_runs import JobRun, RunStatus
from service.core.states import JobStatus


class ExitCode(IntEnum):
    """What scripts can rely on (1 is left to crashes and Ctrl-C, 2 is click's for a bad command line)."""

    OK = 0  # the command did what it was asked; with --wait: the job (or the finalize or recheck) succeeded
    USAGE = 2  # an unknown option, a missing argument, a file that cannot be opened
    FAILED = 3  # the job failed (or, with --wait, the finalize or recheck did)
    CANCELLED = 4  # the job was cancelled
    REFUSED = 5  # the service refused the request (4xx: invalid job, unknown job, wrong state, no key, quota)
    UNAVAILABLE = 6  # no answer from the service, or a server error (5xx)
    TIMEOUT = 7  # --timeout passed before the job (or the run) ended


EXIT_CODES_HELP = (
    "Exit codes: 0 ok (with --wait: the job, or the finalize or recheck, succeeded), 2 bad command line, 3 "
    "the job (or the finalize or recheck) failed, 4 the job was cancelled, 5 the service refused the "
    "request (invalid job, unknown job, no API key ...), 6 the service is unreachable or answered a server "
    "error, 7 --timeout passed."
)

_OUTCOMES = {
    JobStatus.SUCCEEDED: ExitCode.OK,
    JobStatus.FAILED: ExitCode.FAILED,
    JobStatus.CANCELLED: ExitCode.CANCELLED,
}


def exit_code_of(job: JobPublic) -> ExitCode:
    """How a job that ended ended, as an exit code."""
    return _OUTCOMES[job.status]


def exit_code_of_error(error: Exception) -> ExitCode:
    """The exit code of what the client raised."""
    if isinstance(error, WaitTimeout):
        return ExitCode.TIMEOUT
    if isinstance(error, KtuneError) and error.status_code < 500:
        return ExitCode.REFUSED
    return ExitCode.UNAVAILABLE


@dataclass
class _Target:
    """The service the command line points at; its client is made on first use, closed on exit."""

    url: str
    api_key: str | None
    _client: Client | None = field(default=None, init=False)

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, self.api_key)
            click.get_current_context().call_on_close(self._client.close)
        return self._client


class _Group(click.Group):
    """Turns what the client raises into a message on stderr and the exit code of `ExitCode`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KtuneError as exc:
            click.echo(f"ktune: {exc.message} ({exc.status_code} {exc.code})", err=True)
            raise click.exceptions.Exit(exit_code_of_error(exc)) from None
        except (Unreachable, WaitTimeout) as exc:
            click.echo(f"ktune: {exc}", err=True)
            raise click.exceptions.Exit(exit_code_of_error(exc)) from None


@click.group(cls=_Group, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="KTUNE_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="the ktune service (env KTUNE_URL)",
)
@click.option("--api-key", envvar="KTUNE_API_KEY", help="sent as a Bearer token (env KTUNE_API_KEY)")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Submit, follow and inspect ktune tuning jobs; run the service."""
    ctx.obj = _Target(url, api_key or None)


def _client() -> Client:
    target: _Target = click.get_current_context().find_object(_Target)  # type: ignore[assignment]
    return target.client()


@cli.command()
@click.argument("job_file", type=click.File("rb"))
@click.option(
    "--wait", "follow", is_flag=True, help="follow the job to its end; the exit code says how it ended"
)
@click.option("--timeout", type=click.FloatRange(min=0), help="with --wait: give up after this many seconds")
@click.option("--idempotency-key", help="makes the submit safe to retry: the same key returns the same job")
def submit(job_file: IO[bytes], follow: bool, timeout: float | None, idempotency_key: str | None) -> None:
    """Queue the job in JOB_FILE (JSON; - reads stdin) and print its id on stdout."""
    spec = _read_job(job_file)
    client = _client()
    job = client.submit(spec, idempotency_key=idempotency_key)
    click.echo(job.id)
    if follow:
        _finish(_follow(client, job.id, timeout))


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=click.FloatRange(min=0), help="give up after this many seconds")
def wait(job_id: str, timeout: float | None) -> None:
    """Follow a job to its end, showing its progress; the exit code says how it ended."""
    _finish(_follow(_client(), job_id, timeout))


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="the job resource as JSON")
def status(job_id: str, as_json: bool) -> None:
    """A job's status, progress, best trial so far and error."""
    job = _client().get(job_id)
    click.echo(job.model_dump_json(indent=2) if as_json else render.job_summary(job))


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="the trials as JSON (with per-epoch histories)")
def trials(job_id: str, as_json: bool) -> None:
    """A job's trials, best objective first."""
    client = _client()
    if as_json:
        items = client.trials(job_id)
        click.echo(json.dumps([t.model_dump(mode="json") for t in items], indent=2))
        return
    job = client.get(job_id)
    items = client.trials(job_id, history=False)
    click.echo(render.trials_table(items, job.objective.direction, job.objective.name))


@cli.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a queued or running job (finished trials and the best model are kept)."""
    job = _client().cancel(job_id)
    click.echo(f"job {job.id} is {job.status.value}", err=True)


@cli.command()
@click.argument("job_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="where to write it [default: JOB_ID.keras, or JOB_ID-final.keras with --final]",
)
@click.option("--final", is_flag=True, help="the model `ktune finalize` trained, not the search's best")
def download(job_id: str, output: Path | None, final: bool) -> None:
    """Download a job's best model (or with --final its finalized model) as a .keras file."""
    client = _client()
    if final:
        path = client.download_final_model(job_id, output or Path(f"{job_id}-final.keras"))
    else:
        path = client.download_best_model(job_id, output or Path(f"{job_id}.keras"))
    what = "finalized model" if final else "best model"
    click.echo(f"wrote the {what} of job {job_id} to {path} ({path.stat().st_size} bytes)", err=True)


_RUN_TIMEOUT = click.option(
    "--timeout", type=click.FloatRange(min=0), help="with --wait: give up after this many seconds"
)
_RUN_WAIT = click.option(
    "--wait", "follow", is_flag=True, help="follow the run to its end; the exit code says how it ended"
)


@cli.command()
@click.argument("job_id")
@click.option(
    "--test-dataset", help="a data set (an upload's id or a built-in name) to evaluate the final model on"
)
@_RUN_WAIT
@_RUN_TIMEOUT
def finalize(job_id: str, test_dataset: str | None, follow: bool, timeout: float | None) -> None:
    """Retrain a succeeded job's best hyperparameters on all its training and validation rows; `ktune
    download --final` then fetches the model."""
    client = _client()
    run = client.finalize(job_id, test_dataset=test_dataset)
    _run_started(client, job_id, run, follow, timeout)


@cli.command()
@click.argument("job_id")
@click.option(
    "--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="the best trials to retrain"
)
@click.option("--seeds", type=click.IntRange(min=2), default=3, show_default=True, help="trainings of each")
@_RUN_WAIT
@_RUN_TIMEOUT
def recheck(job_id: str, top_k: int, seeds: int, follow: bool, timeout: float | None) -> None:
    """Retrain a succeeded job's best trials with other seeds: does its winner hold?"""
    client = _client()
    run = client.recheck(job_id, top_k=top_k, seeds=seeds)
    _run_started(client, job_id, run, follow, timeout)


def _run_started(client: Client, job_id: str, run: JobRun, follow: bool, timeout: float | None) -> None:
    """Say that the run is queued; with `follow`, wait for its end, say how it ended and exit with its code
    (0 succeeded, 3 failed)."""
    click.echo(f"{run.noun} {run.run_id} of job {job_id} is {run.status.value}", err=True)
    if not follow:
        return
    job = client.wait_run(job_id, run, timeout)
    ended = run_of(job, run)
    assert ended is not None, "a job keeps its latest run"
    text = render.finalization(ended) if isinstance(ended, Finalization) else render.recheck(ended)
    click.echo(f"{run.noun} of job {job_id}: {text}", err=True)
    if ended.status is not RunStatus.SUCCEEDED:
        raise click.exceptions.Exit(ExitCode.FAILED)


@cli.command()
def serve() -> None:
    """Run the API, as `python -m service` does (configured by KTUNE_* variables)."""
    from service.__main__ import serve as run_api

    run_api()


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a worker, as `python -m worker` does; options go to `celery worker` (-c 2, -Q cpu,gpu ...)."""
    from worker.__main__ import main as run_worker

    run_worker(list(celery_args))


def _read_job(source: IO[bytes]) -> dict[str, Any]:
    """The job request in a file: a JSON object, else a message and exit code 5 (an invalid request)."""
    name = getattr(source, "name", "the job file")
    try:
        body = json.loads(source.read())
    except (ValueError, UnicodeDecodeError) as exc:
        _stop(f"{name} is not JSON: {exc}", ExitCode.REFUSED)
    if not isinstance(body, dict):
        _stop(f"{name} holds {type(body).__name__}, not a JSON object (a job request)", ExitCode.REFUSED)
    return body


def _follow(client: Client, job_id: str, timeout: float | None) -> JobPublic:
    line = _ProgressLine(sys.stderr)
    try:
        return client.wait(job_id, timeout, on_update=line.show)
    finally:
        line.close()


def _finish(job: JobPublic) -> None:
    """Say how a job ended, and exit with its code."""
    message = f"job {job.id} {job.status.value}"
    if job.best_trial is not None:
        message += f": best {job.objective.name} {render.number(job.best_trial.objective_value)}"
        message += f" (trial {job.best_trial.id})"
    if job.error is not None:
        message += f": {job.error.code}: {job.error.message}"
    click.echo(message, err=True)
    code = exit_code_of(job)
    if code is not ExitCode.OK:
        raise click.exceptions.Exit(code)


def _stop(message: str, code: ExitCode) -> NoReturn:
    click.echo(f"ktune: {message}", err=True)
    raise click.exceptions.Exit(code)


class _ProgressLine:
    """A job's progress on one line, rewritten in place on a terminal; a line per change elsewhere (logs)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._live = stream.isatty()
        self._shown = ""

    def show(self, job: JobPublic) -> None:
        text = render.progress_line(job)
        if text == self._shown:
            return
        if self._live:
            self._stream.write(f"\r{text}\x1b[K")
        else:
            self._stream.write(f"{text}\n")
        self._stream.flush()
        self._shown = text

    def close(self) -> None:
        if self._live and self._shown:
            self._stream.write("\n")
            self._stream.flush()


def main(argv: list[str] | None = None) -> None:
    """The `ktune` console script."""
    cli.main(args=argv, prog_name="ktune")
