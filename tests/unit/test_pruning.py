"""`worker.pruning`'s rules against Optuna's documented behaviour (MedianPruner, SuccessiveHalvingPruner):
fixed cases worked out from the documentation, and, where Optuna is installed, the same decisions as
Optuna's own pruners on random curves."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any

import pytest

from service.core.spec import JobSpec
from worker.pruning import Pruner, median_reason, promotable, promotion_mark, rung_epoch


def spec(pruning: dict[str, Any], direction: str = "min", epochs: int = 20) -> JobSpec:
    return JobSpec.model_validate(
        {
            "task": "regression",
            "training": {"epochs": epochs},
            "objective": {"name": "val_loss", "direction": direction},
            "tuner": {"pruning": pruning},
        }
    )


class MemoryPeers:
    """What `Pruner` reads and writes of the store, in memory, with the store's rules (a trial's value at a
    rung is kept once; completed curves once per trial)."""

    def __init__(self) -> None:
        self.curves: dict[str, list[float | None]] = {}
        self.rungs: dict[int, dict[str, float]] = defaultdict(dict)

    def record_completed_curve(self, job_id: str, trial_id: str, values: list[float | None]) -> bool:
        if trial_id in self.curves:
            return False
        self.curves[trial_id] = list(values)
        return True

    def completed_at_epochs(self, job_id: str, first: int, last: int) -> tuple[int, dict[int, list[float]]]:
        by_epoch = {}
        for epoch in range(first, last + 1):
            at = [c[epoch - 1] for c in self.curves.values() if len(c) >= epoch]
            by_epoch[epoch] = [v for v in at if v is not None and math.isfinite(v)]
        return len(self.curves), by_epoch

    def record_rung(self, job_id: str, trial_id: str, rung: int, value: float) -> tuple[float, list[float]]:
        self.rungs[rung].setdefault(trial_id, value)
        return self.rungs[rung][trial_id], list(self.rungs[rung].values())


def pruner(peers: MemoryPeers, trial: str, job: JobSpec, history: list[float | None] | None = None) -> Pruner:
    return Pruner(peers, "job", trial, job, history or [])  # type: ignore[arg-type]


# --- median: fixed cases -------------------------------------------------------------------------------


def test_median_stops_a_trial_whose_best_so_far_is_worse_than_the_median_at_that_epoch() -> None:
    # Completed trials at epoch 3: 0.2, 0.3, 0.9: the median is 0.3 (min objective).
    assert median_reason(0.35, 3, 3, [0.2, 0.3, 0.9], "min", 0, 3) is not None
    assert median_reason(0.3, 3, 3, [0.2, 0.3, 0.9], "min", 0, 3) is None, "equal to the median goes on"
    assert median_reason(0.25, 3, 3, [0.2, 0.3, 0.9], "min", 0, 3) is None
    # max: the same numbers, the other way round
    assert median_reason(0.25, 3, 3, [0.2, 0.3, 0.9], "max", 0, 3) is not None
    assert median_reason(0.35, 3, 3, [0.2, 0.3, 0.9], "max", 0, 3) is None
    # an even count: the median is the mean of the middle two (numpy's 50th percentile, as Optuna's)
    assert median_reason(0.45, 2, 4, [0.1, 0.4, 0.6, 0.9], "min", 0, 3) is None
    assert median_reason(0.51, 2, 4, [0.1, 0.4, 0.6, 0.9], "min", 0, 3) is not None


def test_median_waits_for_min_trials_and_the_warmup() -> None:
    worse = 5.0
    assert median_reason(worse, 3, 2, [0.2, 0.3], "min", 0, 3) is None, "two completed of min_trials 3"
    assert median_reason(worse, 3, 0, [], "min", 0, 1) is None, "no completed trial"
    assert median_reason(worse, 2, 3, [0.1, 0.2, 0.3], "min", 2, 3) is None, "epochs 1..2 are the warmup"
    assert median_reason(worse, 3, 3, [0.1, 0.2, 0.3], "min", 2, 3) is not None
    assert median_reason(worse, 7, 3, [], "min", 0, 3) is None, "no completed trial trained 7 epochs"


def test_median_stops_a_trial_with_no_finite_value_and_says_why() -> None:
    reason = median_reason(math.nan, 2, 3, [0.1, 0.2, 0.3], "min", 0, 3, "val_loss")
    assert reason == "val_loss was NaN or infinite in each of its 2 epochs"
    reason = median_reason(0.5, 3, 3, [0.1, 0.2, 0.3], "min", 0, 3, "val_loss")
    assert reason == (
        "its best val_loss so far, 0.5, is worse than 0.2, the median of 3 trials that trained to their end, "
        "at epoch 3"
    )


def test_the_median_pruner_compares_the_best_value_so_far_not_the_latest() -> None:
    peers = MemoryPeers()
    for index, curve in enumerate([[1.0, 0.5, 0.4], [1.0, 0.6, 0.5], [1.0, 0.7, 0.6]]):
        peers.record_completed_curve("job", f"c{index}", curve)
    judge = pruner(peers, "t", spec({"rule": "median"}))
    assert judge.observe(1, 0.9) is None, "0.9 beats the median 1.0 at epoch 1"
    assert judge.observe(2, 0.55) is None, "0.55 beats 0.6"
    verdict = judge.observe(3, 2.0)  # its best so far is 0.55, worse than the median 0.5 at epoch 3
    assert verdict is not None and verdict.rule == "median" and "0.55" in verdict.reason
    assert verdict.at(3).epoch == 3


def test_a_continued_trial_is_judged_on_its_epochs_before_the_checkpoint_too() -> None:
    peers = MemoryPeers()
    for index in range(3):
        peers.record_completed_curve("job", f"c{index}", [1.0, 0.5, 0.5])
    judge = pruner(peers, "t", spec({"rule": "median"}), history=[0.9, 0.3])
    assert judge.observe(3, 0.8) is None, "its best so far, 0.3 at epoch 2, beats the median"


# --- asha: fixed cases ---------------------------------------------------------------------------------


def test_rungs_are_at_min_epochs_times_powers_of_the_reduction_factor() -> None:
    assert [rung_epoch(k, 1, 3, 0) for k in range(4)] == [1, 3, 9, 27]
    assert [rung_epoch(k, 2, 2, 1) for k in range(3)] == [4, 8, 16]


def test_a_rung_promotes_the_best_one_in_reduction_factor() -> None:
    # Fewer values than the factor: only the best one goes on (Optuna's rule for the first eta - 1 trials).
    assert promotable(0.5, [0.5], 3, "min")
    assert not promotable(0.6, [0.5, 0.6], 3, "min")
    assert promotable(0.4, [0.5, 0.4], 3, "min")
    # Six values, factor 3: the best two go on.
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert promotion_mark(values, 3, "min") == 0.2
    assert [promotable(v, values, 3, "min") for v in values] == [True, True, False, False, False, False]
    assert promotion_mark(values, 3, "max") == 0.5
    assert [promotable(v, values, 3, "max") for v in values] == [False, False, False, False, True, True]


def test_asha_records_each_rung_once_and_stops_a_trial_outside_the_top() -> None:
    peers = MemoryPeers()
    job = spec({"rule": "asha", "min_epochs": 1, "reduction_factor": 2})
    first = pruner(peers, "a", job)
    assert [first.observe(e, 1.0 / e) for e in range(1, 5)] == [None] * 4  # alone at rungs 1, 2, 4
    assert dict(peers.rungs) == {0: {"a": 1.0}, 1: {"a": 0.5}, 2: {"a": 0.25}}
    second = pruner(peers, "b", job)
    assert second.observe(1, 0.9) is None, "0.9 of [1.0, 0.9]: the best one of two goes on"
    verdict = second.observe(2, 0.8)  # 0.8 of [0.5, 0.8] at rung 1
    assert verdict is not None and verdict.rule == "asha"
    assert verdict.reason == (
        "val_loss 0.8 at epoch 2 (rung 1) is not among the best 1/2 of 2 trials that reached that rung "
        "(the mark: 0.5)"
    )


def test_asha_judges_a_trial_run_again_by_its_first_value_at_a_rung() -> None:
    peers = MemoryPeers()
    job = spec({"rule": "asha", "min_epochs": 2, "reduction_factor": 3})
    assert pruner(peers, "a", job).observe(2, 0.5) is None
    again = pruner(peers, "a", job)  # the same trial on another worker, from its start
    assert again.observe(1, 9.0) is None, "no rung at epoch 1"
    assert again.observe(2, 0.7) is None, "its value at the rung stays 0.5, the only one there"
    assert peers.rungs[0] == {"a": 0.5}, "not added twice"


def test_a_continued_trial_does_not_pass_its_rungs_again() -> None:
    peers = MemoryPeers()
    job = spec({"rule": "asha", "min_epochs": 1, "reduction_factor": 3})
    peers.rungs[0].update({"x": 0.1, "y": 0.2})
    judge = pruner(peers, "t", job, history=[0.5, 0.4])  # went on past rung 0 (epoch 1) before
    assert judge.observe(3, 0.3) is None and peers.rungs[1] == {"t": 0.3}
    assert "t" not in peers.rungs[0]


def test_asha_stops_a_trial_whose_value_at_a_rung_is_not_finite() -> None:
    judge = pruner(MemoryPeers(), "t", spec({"rule": "asha", "min_epochs": 2}))
    assert judge.observe(1, None) is None, "no rung at epoch 1"
    verdict = judge.observe(2, None)
    assert verdict is not None and "NaN or infinite" in verdict.reason


# --- the same decisions as Optuna's pruners ------------------------------------------------------------


def _optuna_decisions(
    optuna: Any, pruner_obj: Any, direction: str, curves: list[list[float]], step_offset: int
) -> list[int | None]:
    """Run trials one after another under an Optuna pruner: the epoch (from 1) each was pruned at."""
    study = optuna.create_study(direction="minimize" if direction == "min" else "maximize", pruner=pruner_obj)
    pruned_at: list[int | None] = []
    for curve in curves:
        trial = study.ask()
        stopped = None
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch - step_offset)
            if trial.should_prune():
                stopped = epoch
                break
        pruned_at.append(stopped)
        if stopped is None:
            study.tell(trial, min(curve) if direction == "min" else max(curve))
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return pruned_at


def _ktune_decisions(job: JobSpec, curves: list[list[float]]) -> list[int | None]:
    peers = MemoryPeers()
    pruned_at: list[int | None] = []
    for index, curve in enumerate(curves):
        judge = pruner(peers, str(index), job)
        stopped = next((e for e, v in enumerate(curve, start=1) if judge.observe(e, v)), None)
        pruned_at.append(stopped)
        if stopped is None:
            peers.record_completed_curve("job", str(index), list(curve))
    return pruned_at


def _curves(rng: random.Random, trials: int, epochs: int, direction: str) -> list[list[float]]:
    # Noisy learning curves with a level per trial, so that some trials are clearly worse than others:
    # falling losses to minimise, or rising scores to maximise.
    sign = 1 if direction == "min" else -1
    curves = []
    for _ in range(trials):
        level, rate = rng.uniform(0.1, 1.0), rng.uniform(0.05, 0.5)
        curves.append([sign * (level + math.exp(-rate * e) + rng.gauss(0, 0.05)) for e in range(epochs)])
    return curves


@pytest.mark.parametrize("direction", ["min", "max"])
@pytest.mark.parametrize(("warmup", "min_trials"), [(0, 1), (0, 3), (2, 3), (4, 5)])
def test_median_decides_as_optunas_median_pruner(direction: str, warmup: int, min_trials: int) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruned = 0
    for seed in range(5):
        curves = _curves(random.Random(seed), 12, 10, direction)
        # Optuna's steps are epoch indices from 0: n_warmup_steps w spares the first w epochs.
        expected = _optuna_decisions(
            optuna, optuna.pruners.MedianPruner(min_trials, warmup), direction, curves, step_offset=1
        )
        job = spec({"rule": "median", "warmup_epochs": warmup, "min_trials": min_trials}, direction)
        assert _ktune_decisions(job, curves) == expected, f"seed {seed}"
        pruned += sum(1 for epoch in expected if epoch is not None)
    assert pruned, "the case prunes something"


@pytest.mark.parametrize("direction", ["min", "max"])
@pytest.mark.parametrize(("min_epochs", "factor", "rate"), [(1, 3, 0), (1, 2, 0), (2, 3, 0), (1, 3, 1)])
def test_asha_decides_as_optunas_successive_halving_pruner(
    direction: str, min_epochs: int, factor: int, rate: int
) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruned = 0
    for seed in range(5):
        curves = _curves(random.Random(100 + seed), 12, 12, direction)
        # Optuna's resource is the step reported: here the epochs trained, from 1.
        halving = optuna.pruners.SuccessiveHalvingPruner(min_epochs, factor, rate)
        expected = _optuna_decisions(optuna, halving, direction, curves, step_offset=0)
        knobs = {"min_epochs": min_epochs, "reduction_factor": factor, "min_early_stopping_rate": rate}
        job = spec({"rule": "asha", **knobs}, direction)
        assert _ktune_decisions(job, curves) == expected, f"seed {seed}"
        pruned += sum(1 for epoch in expected if epoch is not None)
    assert pruned, "the case prunes something"
