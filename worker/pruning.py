"""`tuner.pruning`: the rules that stop a trial while it trains once it cannot win, as Optuna words them.

The rules are pure functions of values (`median_reason`, `rung_epoch`, `promotable`); `Pruner` asks them at
each epoch of a trial's first execution, with its peers' values read from the store. Epochs count from 1.

- median (Optuna's MedianPruner, SageMaker's and Katib's median stopping): once `min_trials` trials have
  trained to their end, a trial past its `warmup_epochs` whose best value so far is worse than the median
  of those trials' values at the same epoch is stopped. Trials stopped early are not among those trials.
- asha (Optuna's SuccessiveHalvingPruner): rung k is at `min_epochs * reduction_factor **
  (min_early_stopping_rate + k)` epochs. A trial that reaches a rung adds its value there and goes on only
  if that value is among the best 1/reduction_factor of the rung's values (the best one while the rung holds
  fewer than reduction_factor values); a NaN value at a rung stops it.

A trial with several executions is judged during its first one only; the others of a trial that passed it
train in full. A completed trial's curve is its first execution's.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from service.core.pruning_spec import PruningSpec
from service.core.records import EarlyStop, TrialRecord
from service.core.spec import JobSpec
from service.core.store import JobStore

Direction = Literal["min", "max"]

# The median rule reads completed trials' values for this many epochs ahead in one round trip, and reads
# again after this long: a trial that completed meanwhile counts from the next read on (a trial that runs
# alone, max_parallel_trials 1, always sees every trial before it).
_READ_AHEAD_EPOCHS = 64
_READ_AGAIN_SECONDS = 0.5


def better(value: float, than: float, direction: Direction) -> bool:
    return value < than if direction == "min" else value > than


def median_reason(
    best: float,
    epoch: int,
    completed: int,
    peers: Sequence[float],
    direction: Direction,
    warmup_epochs: int,
    min_trials: int,
    objective: str = "the objective",
) -> str | None:
    """Why the median rule stops a trial whose best value so far is `best` (NaN: none finite) at `epoch`,
    given how many trials `completed` and their finite values at that epoch (`peers`); None: it goes on."""
    if completed == 0 or completed < min_trials or epoch <= warmup_epochs:
        return None
    if math.isnan(best):
        return f"{objective} was NaN or infinite in each of its {epoch} epochs"
    if not peers:
        return None  # no completed trial trained this long: nothing to compare with
    median = statistics.median(peers)
    if not better(median, best, direction):
        return None
    return (
        f"its best {objective} so far, {best:.6g}, is worse than {median:.6g}, the median of "
        f"{_trials(len(peers))} that trained to their end, at epoch {epoch}"
    )


def _trials(count: int) -> str:
    return f"{count} trial" if count == 1 else f"{count} trials"


def rung_epoch(rung: int, min_epochs: int, reduction_factor: int, min_early_stopping_rate: int) -> int:
    """The epoch of ASHA's rung `rung` (from 0)."""
    return int(min_epochs * reduction_factor ** (min_early_stopping_rate + rung))


def promotion_mark(competing: Sequence[float], reduction_factor: int, direction: Direction) -> float:
    """The value a trial must reach at a rung to go on: the worst of the best 1/reduction_factor of the
    rung's values (the trial's own included), or their best while there are fewer than reduction_factor."""
    index = max(len(competing) // reduction_factor - 1, 0)
    ordered = sorted(competing, reverse=direction == "max")
    return ordered[index]


def promotable(value: float, competing: Sequence[float], reduction_factor: int, direction: Direction) -> bool:
    """Whether a trial with `value` at a rung goes on (`competing`: the rung's values, its own included)."""
    mark = promotion_mark(competing, reduction_factor, direction)
    return value <= mark if direction == "min" else value >= mark


@dataclass(frozen=True)
class Verdict:
    """A rule's decision to stop a trial."""

    rule: str
    reason: str

    def at(self, epoch: int) -> EarlyStop:
        return EarlyStop(epoch=epoch, rule=self.rule, reason=self.reason)


class Pruner:
    """Asks the job's pruning rule about each epoch of a trial's first execution.

    `history` is what that execution trained before (a checkpoint's epochs), so a continued trial is
    judged on all its epochs and does not pass its rungs again.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        trial_id: str,
        spec: JobSpec,
        history: Sequence[float | None] = (),
    ) -> None:
        if spec.tuner.pruning is None:
            raise ValueError("the job has no tuner.pruning")
        self.store, self.job_id, self.trial_id = store, job_id, trial_id
        self.rules: PruningSpec = spec.tuner.pruning
        self.objective = spec.objective_name
        self.direction: Direction = spec.objective_direction
        self.best = math.nan
        self._completed = 0
        self._peers: dict[int, list[float]] = {}  # completed trials' values by epoch, as last read
        self._read_at = -math.inf
        for value in history:
            self._note(value)
        self._rung = 0
        while self.rules.rule == "asha" and self._rung_epoch(self._rung) <= len(history):
            self._rung += 1  # it went on past this rung before its checkpoint

    def _note(self, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            return
        if math.isnan(self.best) or better(value, self.best, self.direction):
            self.best = value

    def _rung_epoch(self, rung: int) -> int:
        knob = self.rules.knob
        return rung_epoch(rung, knob("min_epochs"), knob("reduction_factor"), knob("min_early_stopping_rate"))

    def observe(self, epoch: int, value: float | None) -> Verdict | None:
        """Take the objective's value at `epoch` (from 1; None: not finite); a verdict when it must stop."""
        self._note(value)
        if self.rules.rule == "median":
            return self._median(epoch)
        return self._asha(epoch, math.nan if value is None else value)

    def _median(self, epoch: int) -> Verdict | None:
        warmup = self.rules.knob("warmup_epochs")
        if epoch <= warmup:
            return None  # no read: nothing can stop it yet
        if epoch not in self._peers or time.monotonic() - self._read_at > _READ_AGAIN_SECONDS:
            last = epoch + _READ_AHEAD_EPOCHS - 1
            self._completed, self._peers = self.store.completed_at_epochs(self.job_id, epoch, last)
            self._read_at = time.monotonic()
        reason = median_reason(
            self.best,
            epoch,
            self._completed,
            self._peers[epoch],
            self.direction,
            warmup,
            self.rules.knob("min_trials"),
            self.objective,
        )
        return Verdict("median", reason) if reason else None

    def _asha(self, epoch: int, value: float) -> Verdict | None:
        factor = self.rules.knob("reduction_factor")
        while epoch >= self._rung_epoch(self._rung):
            if not math.isfinite(value):
                return Verdict("asha", f"{self.objective} was NaN or infinite at epoch {epoch}, a rung")
            own, competing = self.store.record_rung(self.job_id, self.trial_id, self._rung, value)
            if not promotable(own, competing, factor, self.direction):
                mark = promotion_mark(competing, factor, self.direction)
                return Verdict(
                    "asha",
                    f"{self.objective} {own:.6g} at epoch {epoch} (rung {self._rung}) is not among the "
                    f"best 1/{factor} of {_trials(len(competing))} that reached that rung (the mark: "
                    f"{mark:.6g})",
                )
            self._rung += 1
        return None


def record_completed(store: JobStore, job_id: str, spec: JobSpec, record: TrialRecord) -> None:
    """Keep the curve of a trial that trained to its end for the median rule (only it reads them)."""
    pruning = spec.tuner.pruning
    if pruning is None or pruning.rule != "median" or not record.executions:
        return
    store.record_completed_curve(job_id, record.id, record.executions[0].history.get(spec.objective_name, []))
