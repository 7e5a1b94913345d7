"""Optuna's samplers as ktune search algorithms (`worker.optuna_search`, `worker.optuna_space`): real Optuna,
no Redis, no Celery.

A job's search state goes through its stored log between steps, and any worker may take any step, with or
without the study in memory: the trials handed out must not depend on which.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import ValidationError

from service.core.spec import JobCreate, SpecError
from worker import optuna_search
from worker.optuna_search import (
    OptunaOracle,
    Watch,
    log_entry,
    new_oracle,
    replay,
    startup_trials,
)
from worker.optuna_space import optuna_space
from worker.oracles import KtStatus


def spec_of(
    algorithm: str = "tpe", max_trials: int = 24, parallel: int = 1, maximise: bool = False, **model: Any
) -> JobCreate:
    """A small job: hidden layers 1-2 of 4-16 units (units_1 conditional), two activations, a log rate."""
    body_model = {
        "hidden_layers": {"min": 1, "max": 2},
        "units": {"min": 4, "max": 16, "step": 4},
        "activation": {"values": ["relu", "tanh"]} if algorithm == "tpe" else "relu",
        **model,
    }
    # Maximised: a classifier's val_accuracy (`finish` reports the made-up score negated).
    task, objective = ("binary_classification", "val_accuracy") if maximise else ("regression", "val_loss")
    return JobCreate.model_validate(
        {
            "task": task,
            "objective": {"name": objective},
            "data": {"train": {"x": [[0], [1], [2], [3], [4]], "y": [0, 1, 0, 1, 0]}},
            "model": body_model,
            "optimizer": {"learning_rate": {"min": 1e-4, "max": 1e-1, "sampling": "log"}},
            "training": {"epochs": 9},
            "tuner": {
                "algorithm": algorithm,
                "max_trials": max_trials,
                "max_parallel_trials": parallel,
                "seed": 7,
            },
        }
    )


def score_of(values: dict[str, Any]) -> float:
    """A made-up objective (val_loss, minimised): best at 20 units in all and a rate of 0.01."""
    units = sum(value for name, value in values.items() if name.startswith("units_"))
    return (
        abs(units - 20) / 10
        + abs(math.log10(values["learning_rate"]) + 2)
        + (0.1 if values.get("activation") == "tanh" else 0.0)
    )


def finish(oracle: OptunaOracle, trial_id: str) -> None:
    """Report a trial as a worker does (`worker.search._tell_oracle`)."""
    trial = oracle.trials[trial_id]
    score = score_of(trial.hyperparameters.values)
    objective = {"val_loss": score, "val_accuracy": -score}
    oracle.update_trial(trial_id, {oracle.objective: objective[oracle.objective]}, step=3)
    trial.status = KtStatus.COMPLETED
    oracle.end_trial(trial)


class Log:
    """A job's stored search log, as JSON, and steps that each take the oracle from it (`cached`: the
    oracle the last step left, brought up to date; else one replayed from the whole log)."""

    def __init__(self, spec: JobCreate) -> None:
        self.spec = spec
        self.entries: list[dict[str, Any]] = []
        self.kept: OptunaOracle | None = None
        self.kept_at = 0

    def step(self, cached: bool, action: Any) -> Any:
        if cached and self.kept is not None:
            oracle = replay(self.spec, self.entries[self.kept_at :], self.kept)
        else:
            oracle = replay(self.spec, [json.loads(json.dumps(e)) for e in self.entries])
        watch = Watch(oracle)
        result = action(oracle)
        entry = log_entry(watch, len(self.entries), tuple(oracle.trials)[-3:])
        if entry is not None:
            self.entries.append(json.loads(json.dumps(entry)))
        self.kept, self.kept_at = oracle, len(self.entries)
        return result


def run_search(spec: JobCreate, cached: list[bool]) -> list[dict[str, Any]]:
    """A search with `max_parallel_trials` trials out at once; each step hands out or takes in a trial,
    from a kept oracle or a replayed one as `cached` says. Returns the trials' values in order."""
    log = Log(spec)
    steps = iter(cached)
    running: list[str] = []
    while True:

        def hand_out(oracle: OptunaOracle) -> list[str]:
            created = []
            while len(oracle.ongoing_trials) < spec.tuner.max_parallel_trials:
                trial = oracle.create_trial(f"slot-{len(oracle.trials)}")
                if trial.status != KtStatus.RUNNING:
                    break
                created.append(trial.trial_id)
            return created

        running += log.step(next(steps, True), hand_out)
        if not running:
            break
        done = running.pop(0)
        log.step(next(steps, True), lambda oracle, done=done: finish(oracle, done))
    final = replay(spec, log.entries)
    assert all(t.status == KtStatus.COMPLETED for t in final.trials.values())
    return [t.hyperparameters.values for t in final.trials.values()]


# --- the space ----------------------------------------------------------------------------------------


def test_space_maps_each_kind_of_hyperparameter_to_an_optuna_distribution() -> None:
    spec = spec_of(
        units={"values": [32, 8, 16]},
        dropout={"min": 0.0, "max": 0.5, "step": 0.25},
    )
    space = {param.name: param for param in optuna_space(spec)}
    assert space["hidden_layers"].distribution == IntDistribution(1, 2)
    units = space["units_1"]
    assert units.distribution == IntDistribution(0, 2) and units.listed == (8, 16, 32)
    assert [c.is_active({"hidden_layers": n}) for c in units.conditions for n in (1, 2)] == [False, True]
    assert space["activation"].distribution == CategoricalDistribution(("relu", "tanh"))
    assert space["learning_rate"].distribution == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["dropout"].listed == (0.0, 0.25, 0.5)
    assert "optimizer" not in space, "a constant is no hyperparameter (the trial's `constants` hold it)"


@pytest.mark.parametrize(
    ("units", "values"),
    [
        ({"min": 4, "max": 15, "step": 4}, {4, 8, 12}),
        ({"min": 1, "max": 16, "step": 2, "sampling": "log"}, {1, 2, 4, 8, 16}),
        ({"min": 1, "max": 10, "sampling": "reverse_log"}, set(range(1, 11))),
    ],
)
def test_sampled_units_stay_on_keras_tuners_values(units: dict[str, Any], values: set[int]) -> None:
    spec = spec_of(units=units, max_trials=40)
    trials = run_search(spec, [True] * 200)
    seen = {value for values_ in trials for name, value in values_.items() if name.startswith("units")}
    assert seen <= values and len(seen) > 1
    assert all(isinstance(v, int) for v in seen)


def test_reverse_log_samples_more_near_its_max() -> None:
    spec = spec_of(units={"min": 1, "max": 100, "sampling": "reverse_log"})
    space = {param.name: param for param in optuna_space(spec)}
    units = space["units_0"]
    assert units.value(1) == 100 and units.value(100) == 1  # a log range's dense end mirrored to the max


# --- stored state ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["tpe", "cmaes"])
@pytest.mark.parametrize("parallel", [1, 3])
def test_trials_are_the_same_whether_steps_keep_the_study_or_replay_the_log(
    algorithm: str, parallel: int
) -> None:
    spec = spec_of(algorithm, max_trials=20, parallel=parallel)
    kept = run_search(spec, [True] * 200)
    replayed = run_search(spec, [False] * 200)
    mixed = run_search(spec, [i % 3 == 0 for i in range(200)])
    assert len(kept) == 20
    assert kept == replayed == mixed
    assert len({json.dumps(v, sort_keys=True) for v in kept}) > 10, "the values vary"


def test_another_seed_gives_other_trials() -> None:
    spec = spec_of()
    other = spec.model_copy(update={"tuner": spec.tuner.model_copy(update={"seed": 8})})
    assert run_search(spec, [True] * 100) != run_search(other, [True] * 100)


def test_no_seed_draws_one_and_stores_it() -> None:
    spec = spec_of()
    spec = spec.model_copy(update={"tuner": spec.tuner.model_copy(update={"seed": None})})
    oracle = new_oracle(spec)
    oracle.create_trial("a")
    entry = log_entry(Watch(new_oracle(spec)), 0)
    assert entry is not None
    stored = log_entry(Watch(oracle), 0)
    assert stored is not None
    again = replay(spec, [json.loads(json.dumps(stored))])
    assert again.seed == oracle.seed
    assert again.trials["00"].hyperparameters.values == oracle.trials["00"].hyperparameters.values


def test_a_step_that_changes_nothing_logs_nothing() -> None:
    spec = spec_of()
    oracle = new_oracle(spec)
    oracle.create_trial("a")
    assert log_entry(Watch(oracle), 1) is None


def test_a_step_logs_only_the_trials_it_created_or_ended() -> None:
    spec = spec_of(parallel=2)
    oracle = new_oracle(spec)
    for slot in "ab":
        oracle.create_trial(slot)
    watch = Watch(oracle)
    finish(oracle, "00")
    oracle.create_trial("c")
    entry = log_entry(watch, 1, ("00",))
    assert entry is not None
    changes = entry["changes"]["optuna"]
    assert [t["id"] for t in changes["trials"]] == ["00", "02"]
    assert changes["end_order"] == ["00"] and set(changes["ongoing"]) == {"b", "c"}


def test_max_trials_then_stopped() -> None:
    spec = spec_of(max_trials=2, parallel=3)
    oracle = new_oracle(spec)
    statuses = [oracle.create_trial(slot).status for slot in "abc"]
    assert statuses == [KtStatus.RUNNING, KtStatus.RUNNING, KtStatus.STOPPED]
    assert len(oracle.trials) == 2


def test_a_nan_objective_fails_the_trial_and_three_failures_in_a_row_raise() -> None:
    spec = spec_of(parallel=3)
    oracle = new_oracle(spec)
    for slot in "abc":
        oracle.create_trial(slot)
    for index, trial_id in enumerate(["00", "01", "02"]):
        trial = oracle.trials[trial_id]
        oracle.update_trial(trial_id, {"val_loss": math.nan})
        trial.status = KtStatus.COMPLETED
        if index < 2:
            oracle.end_trial(trial)
            assert trial.status == KtStatus.FAILED and trial.score is None
        else:
            with pytest.raises(RuntimeError, match="consecutive failures exceeded the limit of 3"):
                oracle.end_trial(trial)
    assert not oracle.ongoing_trials


def test_a_job_with_its_own_failure_limit_has_no_consecutive_rule() -> None:
    body = spec_of(parallel=3).model_dump(mode="json")
    body["limits"] = {"max_failed_trials": 5}
    oracle = new_oracle(JobCreate.model_validate(body))
    for slot in "abc":
        oracle.create_trial(slot)
    for trial_id in ["00", "01", "02"]:
        trial = oracle.trials[trial_id]
        trial.status, trial.message = KtStatus.FAILED, "out of memory"
        oracle.end_trial(trial)
    assert [t.status for t in oracle.trials.values()] == [KtStatus.FAILED] * 3


# --- the samplers ---------------------------------------------------------------------------------------


def _best_scores(seeds: range, maximise: bool) -> list[float]:
    scores = []
    for seed in seeds:
        spec = spec_of(max_trials=30, maximise=maximise)
        spec = spec.model_copy(update={"tuner": spec.tuner.model_copy(update={"seed": seed})})
        scores.append(min(score_of(values) for values in run_search(spec, [True] * 200)))
    return scores


@pytest.mark.parametrize("maximise", [False, True])
def test_tpe_finds_better_values_than_random_sampling_for_the_same_budget(
    monkeypatch: pytest.MonkeyPatch, maximise: bool
) -> None:
    tpe = _best_scores(range(5), maximise)
    # Random sampling: TPE that never leaves its startup trials, on the same space, seeds and budget.
    monkeypatch.setattr(optuna_search, "startup_trials", lambda max_trials: 10**6)
    random = _best_scores(range(5), maximise)
    assert statistics.median(tpe) < statistics.median(random), (tpe, random)


def test_tpe_uses_its_model_after_a_quarter_of_a_small_budget() -> None:
    assert startup_trials(12) == 3 and startup_trials(4) == 2 and startup_trials(1000) == 10


# --- the spec -------------------------------------------------------------------------------------------


def test_cmaes_refuses_a_list_of_names_naming_the_field_and_the_fix() -> None:
    with pytest.raises(ValidationError) as caught:
        spec_of("cmaes", activation={"values": ["relu", "tanh"]})
    (error,) = caught.value.errors()
    cause = error["ctx"]["error"]
    assert isinstance(cause, SpecError) and cause.field == "tuner.algorithm"
    assert "model.activation lists names" in cause.message and "use tpe" in cause.message


def test_cmaes_takes_numeric_lists() -> None:
    assert spec_of("cmaes", units={"values": [4, 8, 16]}).tuner.algorithm == "cmaes"


# --- tuner.enqueue and ktune's own state ------------------------------------------------------------------

ENQUEUED = [
    {"hidden_layers": 2, "units_0": 16, "units_1": 4, "learning_rate": 0.01},
    {"hidden_layers": 1},  # the rest drawn by the sampler
]


def enqueued_spec(algorithm: str) -> JobCreate:
    body = spec_of(algorithm, max_trials=6).model_dump(mode="json")
    body["tuner"]["enqueue"] = ENQUEUED
    return JobCreate.model_validate(body)


@pytest.mark.parametrize("algorithm", ["tpe", "cmaes"])
@pytest.mark.parametrize("cached", [True, False])
def test_enqueued_values_are_the_first_trials_then_the_sampler_goes_on(algorithm: str, cached: bool) -> None:
    values = run_search(enqueued_spec(algorithm), [cached] * 40)
    first, second, *later = values
    assert first.items() >= ENQUEUED[0].items()
    assert second["hidden_layers"] == 1 and "units_1" not in second and "learning_rate" in second
    assert len(values) == 6, "the entries count toward max_trials"
    assert first not in later
    assert run_search(enqueued_spec(algorithm), [not cached] * 40) == values, "kept or replayed, the same"


def test_a_replayed_search_has_ktunes_state_and_uses_no_entry_twice() -> None:
    spec = enqueued_spec("tpe")
    log = Log(spec)
    log.step(True, lambda oracle: oracle.create_trial("slot-0"))
    oracle = replay(spec, [json.loads(json.dumps(e)) for e in log.entries])
    assert oracle.ktune == {"enqueued": 1}
    second = log.step(False, lambda oracle: oracle.create_trial("slot-1"))
    assert second.hyperparameters.values["hidden_layers"] == 1
    third = log.step(False, lambda oracle: oracle.create_trial("slot-2"))
    oracle = replay(spec, [json.loads(json.dumps(e)) for e in log.entries])
    assert oracle.ktune == {"enqueued": 2}
    assert not third.hyperparameters.values.items() >= ENQUEUED[0].items()


def test_a_step_that_only_changes_ktunes_state_logs_it() -> None:
    spec = spec_of()
    oracle = new_oracle(spec)
    entry = log_entry(Watch(oracle), 0)
    assert entry is not None and entry["state"]["optuna"]["ktune"] == {}
    watch = Watch(oracle)
    oracle.ktune["completion"] = {"best": 1.0}
    changes = log_entry(watch, 1)
    assert changes is not None and changes["changes"]["optuna"]["ktune"] == {"completion": {"best": 1.0}}
    replayed = replay(spec, [entry, changes])
    assert replayed.ktune == {"completion": {"best": 1.0}}


# --- tuner.warm_start ---------------------------------------------------------------------------------------


def warm_spec(algorithm: str, seeds: int, max_trials: int = 6) -> JobCreate:
    """`spec_of`'s job seeded with `seeds` earlier trials (as `service.core.warm_start` resolves them)."""
    trials = []
    for index in range(seeds):
        values: dict[str, Any] = {
            "hidden_layers": 1,
            "units_0": 4 * (1 + index % 4),
            "learning_rate": 10 ** (-4 + 3 * index / max(1, seeds - 1)),
            "activation": "relu",
        }
        trials.append(
            {
                "job_id": "earlier",
                "trial_id": str(index),
                "values": values,
                "objective_value": score_of(values),
            }
        )
    body = spec_of(algorithm, max_trials=max_trials).model_dump(mode="json")
    body["tuner"]["warm_start"] = {"jobs": ["earlier"], "trials": trials}
    return JobCreate.model_validate(body)


def test_seeded_trials_are_the_studys_first_and_not_the_jobs() -> None:
    oracle = new_oracle(warm_spec("tpe", 4))
    completed = oracle.study.get_trials(deepcopy=False)
    assert len(completed) == 4 and all(t.value is not None for t in completed)
    assert not oracle.trials
    trial = oracle.create_trial("slot-0")
    assert trial.trial_id == "0" and trial.number == 4


@pytest.mark.parametrize("algorithm", ["tpe", "cmaes"])
@pytest.mark.parametrize("cached", [True, False])
def test_a_seeded_search_runs_max_trials_of_its_own_kept_or_replayed(algorithm: str, cached: bool) -> None:
    values = run_search(warm_spec(algorithm, 8), [cached] * 40)
    assert len(values) == 6
    assert run_search(warm_spec(algorithm, 8), [not cached] * 40) == values


def test_tpe_seeded_past_its_startup_trials_models_its_first_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    def first() -> dict[str, Any]:
        oracle = new_oracle(warm_spec("tpe", 8, max_trials=12))
        return dict(oracle.create_trial("slot-0").hyperparameters.values)

    # startup_trials(12) is 3: with 8 seeds TPE's model picks the first trial, not its random start (the
    # same trial, the same sampler seed, with a startup that never ends).
    modelled = first()
    monkeypatch.setattr(optuna_search, "startup_trials", lambda max_trials: 10**6)
    assert modelled != first()
