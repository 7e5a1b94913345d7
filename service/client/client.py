"""A Python client of the ktune API on httpx: submit a job, follow it to its end, read its trials, download
its best model; finalize it or recheck its winner and follow that run. Results are the service's own
response models; errors are raised (`service.client.errors`).

Imports no TensorFlow: a notebook or another service can use it with only this distribution's light part.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from service.api.schemas import DatasetPublic, JobPublic, TrialPublic
from service.client.errors import KtuneError, Unreachable, WaitTimeout, error_from
from service.client.event_stream import Event, events_of, lines_of
from service.core.finalization import Finalization
from service.core.job_runs import JobRun
from service.core.predictions import PredictionList
from service.core.recheck import Recheck
from service.core.spec import JobCreate

DEFAULT_URL = "http://127.0.0.1:8000"

# Events after which the job resource has changed in a way worth showing (not every epoch's metrics).
_REFRESHING_EVENTS = frozenset({"job.status", "trial.started", "trial.finished", "job.best"})
# How long a read of the event stream may wait before the client reconnects (after the last event id) and
# checks the job itself: bounds how late `wait` notices its timeout, or an end whose event it missed.
_EVENT_READ_SECONDS = 5.0

JobCallback = Callable[[JobPublic], None]


class _NoEvents(Exception):
    """The service has no event stream for this job (no such route, or not an event stream): poll instead."""


class Client:
    """A ktune service at `url`, with an API key when it asks for one. Use it as a context manager, or
    `close()` it, to release its connections.

    Every method raises `KtuneError` for an error answer (its `status_code`, `code`, `message` and `fields`
    as the service sent them) and `Unreachable` when no answer came."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`timeout`: seconds to connect, and to wait for each read of an answer."""
        headers = {"User-Agent": "ktune-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # --- jobs ------------------------------------------------------------------------------------------

    def submit(self, spec: Mapping[str, Any] | JobCreate, *, idempotency_key: str | None = None) -> JobPublic:
        """Queue a tuning job (a request body as a mapping, or a `JobCreate`); the job as queued.

        `idempotency_key` makes the call safe to retry: the same key and body return the same job."""
        body = spec.model_dump(mode="json", exclude_unset=True) if isinstance(spec, JobCreate) else dict(spec)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._request("POST", "/v1/jobs", json=body, headers=headers)
        return JobPublic.model_validate(response.json())

    def get(self, job_id: str) -> JobPublic:
        """The job now: status, progress, best trial so far."""
        return JobPublic.model_validate(self._request("GET", _job_path(job_id)).json())

    def trials(self, job_id: str, *, history: bool = True) -> list[TrialPublic]:
        """Every trial of the job (`history=False` leaves out per-epoch histories)."""
        params = {"history": "true" if history else "false"}
        body = self._request("GET", _job_path(job_id, "/trials"), params=params).json()
        return [TrialPublic.model_validate(item) for item in body["items"]]

    def cancel(self, job_id: str) -> JobPublic:
        """Cancel a queued or running job (a 409 KtuneError for one that already succeeded or failed)."""
        return JobPublic.model_validate(self._request("POST", _job_path(job_id, "/cancel")).json())

    def download_best_model(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Write the best model's `.keras` file to `path`, a chunk at a time; the path.

        The file appears whole or not at all (written beside it, then renamed). A 409 KtuneError while no
        trial has completed."""
        return self._download(_job_path(job_id, "/artifacts/best-model"), Path(path))

    def predict(self, job_id: str, rows: Sequence[Any]) -> PredictionList:
        """The best model's predictions for `rows` (lists of feature values, or objects keyed by column
        name for data sets), one per row: a label and probabilities for classifiers, a value for
        regression."""
        response = self._request("POST", _job_path(job_id, "/predict"), json={"rows": list(rows)})
        return PredictionList.model_validate_json(response.content)

    # --- after the search: finalize, recheck --------------------------------------------------------

    def finalize(
        self, job_id: str, *, test: Mapping[str, Any] | None = None, test_dataset: str | None = None
    ) -> Finalization:
        """Retrain the best hyperparameters on training + validation rows, evaluated on a held-out `test`
        set (`{"x": rows, "y": targets}`) or data set `test_dataset` if given; the run as queued. Follow it
        with `wait_run`. A 409 KtuneError for a job that has not succeeded or is finalizing already."""
        body: dict[str, Any] = {}
        if test is not None:
            body["test"] = dict(test)
        if test_dataset is not None:
            body["test_dataset"] = test_dataset
        response = self._request("POST", _job_path(job_id, "/finalize"), json=body)
        return Finalization.model_validate(response.json())

    def recheck(self, job_id: str, *, top_k: int = 3, seeds: int = 3) -> Recheck:
        """Retrain the job's `top_k` best trials `seeds` times each with other seeds; the run as queued.
        Follow it with `wait_run`: its result says whether the winner holds."""
        response = self._request("POST", _job_path(job_id, "/recheck"), json={"top_k": top_k, "seeds": seeds})
        return Recheck.model_validate(response.json())

    def wait_run(
        self, job_id: str, run: JobRun, timeout: float | None = None, *, poll_interval: float = 1.0
    ) -> JobPublic:
        """Block until `run` (what `finalize` or `recheck` returned) has succeeded or failed; the job then,
        whose `finalization` or `recheck` is the ended run. Raises WaitTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            now = run_of(job, run)
            # Another run id: ours ended, since a run is only replaced once it has.
            if now is None or now.run_id != run.run_id or now.status.is_final():
                return job
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(job, timeout or 0.0, now)
            time.sleep(poll_interval if remaining is None else min(poll_interval, remaining))

    def download_final_model(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Write the finalized model's `.keras` file to `path`, as `download_best_model` does; a 409
        KtuneError (`no_final_model`) until a finalization succeeded."""
        return self._download(_job_path(job_id, "/artifacts/final-model"), Path(path))

    def final_model_card(self, job_id: str) -> dict[str, Any]:
        """The finalized model's card: data checksum and split, hyperparameters, metrics, versions, seed."""
        card: dict[str, Any] = self._request("GET", _job_path(job_id, "/artifacts/final-model-card")).json()
        return card

    # --- following a job -------------------------------------------------------------------------------

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        *,
        on_update: JobCallback | None = None,
        poll_interval: float = 1.0,
    ) -> JobPublic:
        """Block until the job has succeeded, failed or been cancelled; the job then.

        Follows the job's events (GET /v1/jobs/{id}/events), or polls every `poll_interval` seconds where
        the service has none. `on_update` is called with the job whenever it changed (status, progress,
        best trial). Raises WaitTimeout (a TimeoutError) after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = _Changes(on_update)
        job = seen.update(self.get(job_id))
        if not job.status.is_final():
            with contextlib.suppress(_NoEvents):  # the service has none: poll
                job = self._wait_on_events(job, deadline, timeout, seen)
        return self._poll(job, deadline, timeout, seen, poll_interval)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's events: the stored ones (after `last_event_id`), then live ones until the job ends.

        Raises KtuneError for an error answer (404 for a service without events), Unreachable when the
        connection fails or the answer is not an event stream."""
        try:
            yield from self._event_stream(job_id, last_event_id, read_timeout=None)
        except httpx.TransportError as exc:
            raise Unreachable(f"lost the event stream of {self.url}: {exc}") from exc
        except _NoEvents as exc:
            raise Unreachable(str(exc)) from exc

    def _wait_on_events(
        self, job: JobPublic, deadline: float | None, timeout: float | None, seen: _Changes
    ) -> JobPublic:
        """The job once an event says it ended (or once it is seen ended). Raises _NoEvents when the service
        has no events to follow, WaitTimeout at the deadline."""
        last_id: str | None = None
        while True:
            _check(deadline, timeout, job)
            remaining = _remaining(deadline)
            read = _EVENT_READ_SECONDS if remaining is None else max(min(remaining, _EVENT_READ_SECONDS), 0.1)
            received = False
            try:
                for event in self._event_stream(
                    job.id, last_id, read, lambda: _check(deadline, timeout, seen.last)
                ):
                    received = True
                    last_id = event.id or last_id
                    if event.type in _REFRESHING_EVENTS:
                        job = seen.update(self.get(job.id))
                        if job.status.is_final() or _ended(event):
                            return job  # an end the job does not show yet: polling sees it shortly
            except httpx.ReadTimeout:
                # Quiet for a while: look at the job itself (an end whose event was lost), then reconnect.
                job = seen.update(self.get(job.id))
                if job.status.is_final():
                    return job
                continue
            except httpx.TransportError as exc:
                raise _NoEvents(f"the event stream failed: {exc}") from exc
            except KtuneError as exc:
                if exc.status_code in (404, 405):
                    raise _NoEvents(exc.message) from exc
                raise
            if not received:
                raise _NoEvents("the event stream closed without an event")
            # Closed after some events without the end (a replica going away): resume after the last one.

    def _poll(
        self, job: JobPublic, deadline: float | None, timeout: float | None, seen: _Changes, interval: float
    ) -> JobPublic:
        while not job.status.is_final():
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(job, timeout or 0.0)
            time.sleep(interval if remaining is None else min(interval, remaining))
            job = seen.update(self.get(job.id))
        return job

    def _event_stream(
        self,
        job_id: str,
        last_id: str | None,
        read_timeout: float | None,
        on_line: Callable[[], None] | None = None,
    ) -> Iterator[Event]:
        """One connection's events; `on_line` is called for each line read, keep-alives included. Raises
        httpx's errors as they come, _NoEvents for an answer that is not an event stream, KtuneError for an
        error answer."""
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
        with self._http.stream(
            "GET", _job_path(job_id, "/events"), headers=headers, timeout=timeout
        ) as response:
            if not response.is_success:
                response.read()
                raise error_from(response)
            kind = response.headers.get("content-type", "")
            if not kind.startswith("text/event-stream"):
                raise _NoEvents(f"GET {response.url.path} answered {kind or 'no content type'}, not events")
            lines = lines_of(response.iter_bytes())
            yield from events_of(lines if on_line is None else _calling(on_line, lines))

    # --- data sets -------------------------------------------------------------------------------------

    def upload_dataset(self, path: str | os.PathLike[str], name: str | None = None) -> DatasetPublic:
        """Upload a CSV (with a header row), Parquet or .npz file; the data set, with its id for jobs'
        `data.dataset`. A 422 KtuneError says what is wrong with the file."""
        source = Path(path)
        with source.open("rb") as handle:
            data = {"name": name} if name is not None else None
            response = self._request("POST", "/v1/datasets", files={"file": (source.name, handle)}, data=data)
        return DatasetPublic.model_validate(response.json())

    # --- HTTP ------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **options)
        except httpx.TransportError as exc:
            raise Unreachable(f"no answer from {self.url}: {exc}") from exc
        if not response.is_success:
            raise error_from(response)
        return response

    def _download(self, path: str, target: Path) -> Path:
        """Write the body of GET `path` to `target` a chunk at a time, whole or not at all (written beside
        it, then renamed); the target."""
        with self._stream("GET", path) as response:
            handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            try:
                with os.fdopen(handle, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                os.replace(partial, target)
            except BaseException:
                os.unlink(partial)
                raise
        return target

    @contextlib.contextmanager
    def _stream(self, method: str, path: str) -> Iterator[httpx.Response]:
        """A successful answer, its body not yet read; Unreachable also when the connection fails while
        the caller reads it."""
        try:
            with self._http.stream(method, path) as response:
                if not response.is_success:
                    response.read()
                    raise error_from(response)
                yield response
        except httpx.TransportError as exc:
            raise Unreachable(f"no answer from {self.url}: {exc}") from exc


class _Changes:
    """Passes a job to the caller's callback when it differs from the one passed last."""

    def __init__(self, callback: JobCallback | None) -> None:
        self._callback = callback
        self._last: JobPublic | None = None

    @property
    def last(self) -> JobPublic:
        assert self._last is not None, "update() is called first"
        return self._last

    def update(self, job: JobPublic) -> JobPublic:
        if self._callback is not None and job != self._last:
            self._callback(job)
        self._last = job
        return job


def _calling(function: Callable[[], None], lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        function()
        yield line


def run_of(job: JobPublic, run: JobRun) -> Finalization | Recheck | None:
    """The job's latest run of `run`'s kind (its `finalization` or its `recheck`)."""
    return job.finalization if isinstance(run, Finalization) else job.recheck


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def _ended(event: Event) -> bool:
    if event.type != "job.status":
        return False
    try:
        status = event.payload().get("status")
    except ValueError:
        return False
    return status in ("succeeded", "failed", "cancelled")


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _check(deadline: float | None, timeout: float | None, job: JobPublic) -> None:
    remaining = _remaining(deadline)
    if remaining is not None and remaining <= 0:
        raise WaitTimeout(job, timeout or 0.0)
