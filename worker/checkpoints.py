"""Epoch checkpoints of a running trial, so that a trial whose worker died or shut down continues elsewhere.

One file per trial in the artifact store, replaced atomically: the executions the trial has finished (their
histories and best-epoch weights), the state of the execution under way (`ExecutionState`), and the trial
record's executions as users saw them. A checkpoint is written after a chunk of epochs once
`KTUNE_CHECKPOINT_SECONDS` have passed since the last one, and at once when the worker hands the trial back.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.core.records import ExecutionRecord
from worker.training import ExecutionResult, ExecutionState

log = logging.getLogger(__name__)

_VERSION = 2  # 2: a fast execution's variables include its elastic model's Dropout layers


@dataclass
class TrialCheckpoint:
    """Where a trial stood: finished executions, the one under way, and the record's executions."""

    finished: list[ExecutionResult]
    current: ExecutionState | None
    executions: list[ExecutionRecord] = field(default_factory=list)
    elapsed_seconds: float = 0.0  # the trial's running time so far, counted against its time limit


def save_checkpoint(path: Path, checkpoint: TrialCheckpoint) -> None:
    """Write the checkpoint next to `path`, then rename it over `path`, so a reader never sees half."""
    arrays: list[np.ndarray] = []
    finished = []
    for result in checkpoint.finished:
        weights = result.best_weights or []
        arrays.extend(weights)
        finished.append(
            {
                "history": result.history,
                "best_epoch": result.best_epoch,
                "best_value": result.best_value,
                "stopped_early": result.stopped_early,
                "weights": len(weights),
            }
        )
    current = checkpoint.current
    if current is not None:
        arrays.extend(current.variables)
    meta = {
        "version": _VERSION,
        "finished": finished,
        "current": None
        if current is None
        else {
            "loop": current.loop,
            "next_epoch": current.next_epoch,
            "tracker": current.tracker,
            "variables": len(current.variables),
        },
        "executions": [e.model_dump() for e in checkpoint.executions],
        "elapsed_seconds": checkpoint.elapsed_seconds,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as handle:
        named: dict[str, Any] = {f"a{i}": a for i, a in enumerate(arrays)}
        np.savez(handle, meta=np.array(json.dumps(meta)), **named)
    os.replace(partial, path)


def load_checkpoint(path: Path) -> TrialCheckpoint | None:
    """The trial's checkpoint; None when there is none or it cannot be read (the trial then starts over)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            arrays = [saved[f"a{i}"] for i in range(len(saved.files) - 1)]
        return _from_meta(meta, arrays)
    except Exception:  # a corrupt or foreign file: losing progress beats failing the trial
        log.exception("ignoring the unreadable checkpoint %s", path)
        return None


def _from_meta(meta: dict[str, Any], arrays: list[np.ndarray]) -> TrialCheckpoint:
    if meta["version"] != _VERSION:
        raise ValueError(f"checkpoint version {meta['version']}")
    position = 0

    def take(count: int) -> list[np.ndarray]:
        nonlocal position
        position += count
        return arrays[position - count : position]

    finished = []
    for item in meta["finished"]:
        weights = take(item["weights"])
        finished.append(
            ExecutionResult(
                history=item["history"],
                best_epoch=item["best_epoch"],
                best_value=item["best_value"],
                best_weights=weights or None,
                stopped_early=item["stopped_early"],
            )
        )
    current_meta = meta["current"]
    current = None
    if current_meta is not None:
        current = ExecutionState(
            loop=current_meta["loop"],
            next_epoch=current_meta["next_epoch"],
            tracker=current_meta["tracker"],
            variables=take(current_meta["variables"]),
        )
    executions = [ExecutionRecord.model_validate(e) for e in meta["executions"]]
    return TrialCheckpoint(finished, current, executions, float(meta["elapsed_seconds"]))


class Checkpointer:
    """The trainers' checkpoint hook for one trial: writes when due, or at once when `urgent()` says so.

    `finished` is the trial's list of finished executions and `executions` its record's, both kept
    up to date by the trial runner; `allowed()` is false once the trial belongs to another worker;
    `elapsed()` is how long the trial has run, all workers together; `publish()` stores the file just
    written in the artifact store (a no-op when that is the local directory).
    """

    def __init__(
        self,
        path: Path,
        every_seconds: float,
        finished: list[ExecutionResult],
        executions: list[ExecutionRecord],
        urgent: Callable[[], bool],
        allowed: Callable[[], bool],
        elapsed: Callable[[], float] = lambda: 0.0,
        publish: Callable[[], None] = lambda: None,
    ) -> None:
        self.path = path
        self.every_seconds = every_seconds
        self.finished = finished
        self.executions = executions
        self.urgent = urgent
        self.allowed = allowed
        self.elapsed = elapsed
        self.publish = publish
        self._last = time.monotonic()
        self.saved = 0

    def __call__(self, capture: Callable[[], ExecutionState]) -> None:
        if self._wanted():
            self._write(capture())

    def between_executions(self) -> None:
        """After an execution finished and before the next: a checkpoint with none under way, if wanted."""
        if self._wanted():
            self._write(None)

    def _wanted(self) -> bool:
        due = self.urgent() or time.monotonic() - self._last >= self.every_seconds
        return due and self.allowed()

    def _write(self, current: ExecutionState | None) -> None:
        try:
            save_checkpoint(
                self.path, TrialCheckpoint(self.finished, current, self.executions, self.elapsed())
            )
            self.publish()
        except OSError:
            # A full or unwritable disk, or an unreachable artifact store (BlobStoreError is an OSError),
            # costs the trial its checkpoint, not its training.
            log.exception("could not write the checkpoint %s", self.path)
        else:
            self.saved += 1
        self._last = time.monotonic()
