"""The search state a job keeps in the store (`worker.oracles`): real keras-tuner oracles, no Redis.

Every step of a job's search loads its oracle from the stored state and stores it again, so a search whose
state goes through JSON before each step must hand out the same trials as one oracle kept in memory, and
the state must grow by each trial's values, not by a copy of the search space per trial.
"""

from __future__ import annotations

import json
from typing import Any

import keras_tuner as kt
import pytest
from keras_tuner.src.engine.oracle import Oracle as KerasTunerOracle
from keras_tuner.src.engine.trial import TrialStatus as KtStatus

from service.core.spec import JobCreate
from worker import constants
from worker.oracles import Watch, as_reloaded, dump_oracle, load_oracle, log_entry, new_oracle, replay

ALGORITHMS = ["random", "grid", "bayesian", "hyperband"]


def spec_of(algorithm: str, learning_rates: list[float] | None = None, max_trials: int = 0) -> JobCreate:
    """A small job: hidden layers 1-2 of 4-16 units (units_1 conditional), two activations, a rate."""
    learning_rate: Any = (
        {"values": learning_rates} if learning_rates else {"min": 1e-4, "max": 1e-1, "sampling": "log"}
    )
    if algorithm == "grid" and not learning_rates:
        learning_rate = {"values": [0.01, 0.001]}
    return JobCreate.model_validate(
        {
            "task": "regression",
            "data": {"train": {"x": [[0], [1], [2], [3], [4]], "y": [0, 1, 2, 3, 4]}},
            "model": {
                "hidden_layers": {"min": 1, "max": 2},
                "units": {"min": 4, "max": 16, "step": 4},
                "activation": {"values": ["relu", "tanh"]},
            },
            "optimizer": {"learning_rate": learning_rate},
            "training": {"epochs": 9},
            # Bayesian's first 3 x 5 trials are random: 20 reach its Gaussian process.
            "tuner": {
                "algorithm": algorithm,
                "max_trials": max_trials or (20 if algorithm == "bayesian" else 12),
                "seed": 7,
                "factor": 3,
                **({"num_initial_points": 15} if algorithm == "bayesian" else {}),
            },
        }
    )


def score_of(values: dict[str, Any]) -> float:
    """A made-up, deterministic objective (val_loss, minimised) of a trial's hyperparameters."""
    units = sum(value for name, value in values.items() if name.startswith("units_"))
    rate = next(value for name, value in values.items() if name == "learning_rate")
    return abs(units - 20) / 10 + abs(rate - 0.01) * 10 + (0.1 if values.get("activation") == "tanh" else 0.0)


def round_trip(oracle: Any, spec: JobCreate) -> Any:
    """The oracle as the next step of the search sees it: stored as JSON, then loaded."""
    return load_oracle(spec, json.loads(json.dumps(dump_oracle(oracle))))


class LoggedSearch:
    """A search kept as a log that workers take turns at, as in the store: each worker brings the oracle it
    kept up to date with the entries logged since it last stepped (`replay`); the third always starts from
    nothing. Entries go through JSON."""

    def __init__(self, spec: JobCreate, workers: int = 3) -> None:
        self.spec = spec
        self.log: list[str] = []
        self.kept: list[tuple[Any, int] | None] = [None] * workers
        self.turn = 0
        self.watch: Watch | None = None

    def begin(self) -> Any:
        self.worker = self.turn % len(self.kept)
        self.turn += 1
        kept = self.kept[self.worker] if self.worker != len(self.kept) - 1 else None
        oracle, position = kept or (None, 0)
        oracle = replay(self.spec, [json.loads(entry) for entry in self.log[position:]], oracle)
        self.watch = Watch(oracle)
        return oracle

    def commit(self, touched: tuple[str, ...] = ()) -> None:
        assert self.watch is not None
        entry = log_entry(self.watch, len(self.log), touched)
        if entry is not None:
            self.log.append(json.dumps(entry))
        self.kept[self.worker] = (self.watch.oracle, len(self.log))


def search(spec: JobCreate, parallel: int, mode: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Drive the oracle as the worker does (create up to `parallel` trials, finish the oldest, repeat);
    every fifth trial fails. `mode`: one oracle in memory, or reloaded from its JSON state before every
    step, or kept as a log (`LoggedSearch`). Returns (trial id, status, values) of each trial in the order
    they ended."""
    oracle = new_oracle(spec)
    logged = LoggedSearch(spec)

    def begin() -> Any:
        if mode == "reload":
            return round_trip(oracle, spec)
        # A worker that kept the oracle resets what keras-tuner keeps outside its state, as at each step.
        return logged.begin() if mode == "log" else as_reloaded(oracle)

    def commit(touched: tuple[str, ...] = ()) -> None:
        if mode == "log":
            logged.commit(touched)

    ended: list[tuple[str, str, dict[str, Any]]] = []
    running: list[str] = []
    slot = 0
    for _ in range(100):
        stopped = False
        while len(oracle.ongoing_trials) < parallel:
            oracle = begin()
            slot += 1
            trial = oracle.create_trial(f"slot-{slot}")
            commit()
            if trial.status != KtStatus.RUNNING:
                stopped = trial.status == KtStatus.STOPPED
                break
            running.append(trial.trial_id)
        if not running:
            assert stopped, "the oracle neither stopped nor handed out a trial"
            return ended
        oracle = begin()
        trial = oracle.trials[running.pop(0)]
        if len(ended) % 5 == 4:
            trial.status, trial.message = KtStatus.FAILED, "made to fail"
        else:
            oracle.update_trial(trial.trial_id, {"val_loss": score_of(trial.hyperparameters.values)}, step=2)
            trial.status = KtStatus.COMPLETED
        oracle.end_trial(trial)
        commit((trial.trial_id,))
        ended.append((trial.trial_id, trial.status, dict(trial.hyperparameters.values)))
    raise AssertionError("the search did not end")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("parallel", [1, 2])
def test_a_search_reloaded_before_every_step_hands_out_the_same_trials(algorithm: str, parallel: int) -> None:
    if algorithm == "bayesian" and parallel > 1:
        pytest.skip(
            "bayesian with parallel trials guesses their scores from its last fit, kept in memory only"
        )
    spec = spec_of(algorithm)
    in_memory = search(spec, parallel, "memory")
    reloaded = search(spec, parallel, "reload")
    assert len(in_memory) >= 4, in_memory
    assert reloaded == in_memory
    if algorithm == "hyperband":
        assert any(values.get("tuner/round", 0) > 0 for _, _, values in in_memory), "no successive halving"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("parallel", [1, 2])
def test_a_search_kept_as_a_log_hands_out_the_same_trials_on_every_worker(
    algorithm: str, parallel: int
) -> None:
    """Workers that kept the oracle, caught up on others' steps, or started from nothing: one search."""
    spec = spec_of(algorithm)
    reloaded = search(spec, parallel, "reload")
    assert len(reloaded) >= 4, reloaded
    assert search(spec, parallel, "log") == reloaded


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_step_logs_only_what_it_changed(algorithm: str) -> None:
    spec = spec_of(algorithm, max_trials=30)
    logged = LoggedSearch(spec, workers=1)
    sizes = []
    for slot in range(12):
        oracle = logged.begin()
        trial = oracle.create_trial(f"slot-{slot}")
        logged.commit()
        if trial.status != KtStatus.RUNNING:
            break
        oracle = logged.begin()
        oracle.update_trial(trial.trial_id, {"val_loss": score_of(trial.hyperparameters.values)}, step=1)
        trial.status = KtStatus.COMPLETED
        oracle.end_trial(trial)
        logged.commit((trial.trial_id,))
        sizes.append(len(logged.log[-2]) + len(logged.log[-1]))
    assert "state" in json.loads(logged.log[0]) and all("changes" in json.loads(e) for e in logged.log[1:])
    assert len(sizes) >= 6
    if algorithm != "grid":  # the grid's walk is logged whole when it changes (a list of ids)
        assert max(sizes[3:]) < 2 * min(sizes[3:]) + 200, sizes
    oracle = logged.begin()
    assert logged.commit() is None and len(logged.log) == 2 * len(sizes), (
        "a step that changes nothing logs nothing"
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_reloaded_oracle_keeps_every_trial(algorithm: str) -> None:
    spec = spec_of(algorithm)
    oracle = new_oracle(spec)
    first = oracle.create_trial("a")
    second = oracle.create_trial("b")
    oracle.update_trial(first.trial_id, {"val_loss": 0.5}, step=3)
    first.status = KtStatus.COMPLETED
    oracle.end_trial(first)

    loaded = round_trip(oracle, spec)

    assert loaded.trials.keys() == oracle.trials.keys()
    for trial_id, trial in oracle.trials.items():
        again = loaded.trials[trial_id]
        assert again.hyperparameters.values == trial.hyperparameters.values
        assert again.hyperparameters.get_config()["space"] == oracle.hyperparameters.get_config()["space"]
        assert (again.status, again.score, again.best_step, again.message) == (
            trial.status,
            trial.score,
            trial.best_step,
            trial.message,
        )
        assert again.metrics.get_config() == trial.metrics.get_config()
    assert {t.trial_id for t in loaded.ongoing_trials.values()} == {second.trial_id}
    assert loaded.get_best_trials(1)[0].trial_id == first.trial_id
    # Each trial has its own copy of the space: a value set in one does not show in another.
    loaded.trials[first.trial_id].hyperparameters.values["activation"] = "changed"
    assert loaded.trials[second.trial_id].hyperparameters.values.get("activation") != "changed"


def stored_sizes(spec: JobCreate, trials: int) -> tuple[int, int]:
    """(bytes of the whole stored state, bytes per trial) after `trials` trials, the last one running."""
    oracle = new_oracle(spec)
    for slot in range(trials):
        trial = oracle.create_trial(f"slot-{slot}")
        assert trial.status == KtStatus.RUNNING
        if slot < trials - 1:
            oracle.update_trial(trial.trial_id, {"val_loss": score_of(trial.hyperparameters.values)}, step=1)
            trial.status = KtStatus.COMPLETED
            oracle.end_trial(trial)
    state = dump_oracle(oracle)
    assert len(state["trials"]) == trials
    return len(json.dumps(state)), len(json.dumps(state["trials"])) // trials


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_stored_state_per_trial_does_not_grow_with_the_space(algorithm: str) -> None:
    small_rates = [0.01, 0.001]
    large_rates = [round(0.0001 * (i + 1), 6) for i in range(500)]
    small = spec_of(algorithm, small_rates, max_trials=20)
    large = spec_of(algorithm, large_rates, max_trials=20)
    space_bytes = len(json.dumps(new_oracle(large).hyperparameters.get_config()))
    assert space_bytes > 4000  # the large space is many times the size of a trial's values

    small_total, small_per_trial = stored_sizes(small, 3)
    large_total, large_per_trial = stored_sizes(large, 3)

    assert large_per_trial < small_per_trial + 100, (small_per_trial, large_per_trial)
    assert large_per_trial < space_bytes / 4
    # The space itself is stored once per job, whatever the number of trials.
    assert large_total - small_total < 1.5 * space_bytes
    # Each trial adds its entry and a few ids and hashes to the oracle's own state, nothing more.
    assert stored_sizes(large, 6)[0] - large_total < 3 * (large_per_trial + 200)


def test_a_state_stored_by_an_older_version_is_refused_clearly() -> None:
    spec = spec_of("random")
    oracle = new_oracle(spec)
    trial = oracle.create_trial("a")
    state = dump_oracle(oracle)
    state["trials"] = {trial.trial_id: trial.get_state()}  # the old layout: keras-tuner's Trial.get_state
    with pytest.raises(ValueError, match="older ktune version"):
        load_oracle(spec, state)


@pytest.mark.parametrize("algorithm", ["random", "bayesian", "hyperband"])
def test_values_are_drawn_as_keras_tuner_draws_them(algorithm: str) -> None:
    """ktune samples into a space that shares its definitions; the draws are keras-tuner's own."""
    spec = spec_of(algorithm)
    ours, theirs = new_oracle(spec), new_oracle(spec)
    for _ in range(30):
        drawn = ours._random_values()
        assert drawn == KerasTunerOracle._random_values(theirs)
        assert drawn is not None and ours._seed_state == theirs._seed_state
        # What a trial made of them holds, so later draws avoid them, as create_trial does.
        for oracle in (ours, theirs):
            oracle._tried_so_far.add(oracle._compute_values_hash(drawn))
    assert {name.split("_")[0] for name in drawn} >= {"units", "learning"}


# --- tuner.enqueue -----------------------------------------------------------------------------------------

ENQUEUED = [
    {
        "hidden_layers": 2,
        "units_0": 16,
        "units_1": 4,
        "activation": "relu",
        "learning_rate": 0.01,
    },  # the best
    {"hidden_layers": 1, "activation": "tanh"},  # units_0 and learning_rate drawn
]


def enqueued_spec(algorithm: str, max_trials: int = 0) -> JobCreate:
    spec = spec_of(algorithm, max_trials=max_trials)
    body = spec.model_dump(mode="json")
    body["tuner"]["enqueue"] = ENQUEUED
    return JobCreate.model_validate(body)


def first_trials(spec: JobCreate, count: int) -> list[dict[str, Any]]:
    oracle = new_oracle(spec)
    return [dict(oracle.create_trial(f"slot-{slot}").hyperparameters.values) for slot in range(count)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("mode", ["memory", "reload", "log"])
def test_enqueued_values_are_the_first_trials_and_used_once(algorithm: str, mode: str) -> None:
    spec = enqueued_spec(algorithm)
    ended = search(spec, 2, mode)
    first, second = (values for _, _, values in sorted(ended)[:2])
    assert first.items() >= ENQUEUED[0].items()
    assert second.items() >= ENQUEUED[1].items()
    assert {"units_0", "learning_rate"} <= second.keys() and "units_1" not in second, "drawn, if active"
    later = [values for _, _, values in sorted(ended)[2:]]
    assert len(later) >= 2
    if algorithm != "grid":  # the grid's walk may come to an entry's values again (documented)
        assert first not in later and second not in later, "each entry is one trial, and searches go on"
    assert len(ended) <= spec.tuner.max_trials, "enqueued trials count toward max_trials"
    assert search(spec, 2, mode) == ended, "the same search every time"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_search_resumed_from_its_log_neither_repeats_nor_skips_an_entry(algorithm: str) -> None:
    spec = enqueued_spec(algorithm)
    logged = LoggedSearch(spec)
    made = []
    for slot in range(3):
        oracle = logged.begin()
        made.append(dict(oracle.create_trial(f"slot-{slot}").hyperparameters.values))
        logged.commit()
    # Every worker lost: a new one replays the whole log.
    oracle = replay(spec, [json.loads(entry) for entry in logged.log])
    fourth = dict(oracle.create_trial("slot-3").hyperparameters.values)
    assert made[0].items() >= ENQUEUED[0].items() and made[1].items() >= ENQUEUED[1].items()
    # (The second entry fixes two values only: a draw may match it by chance; the count says it was used.)
    for values in [made[2], fourth]:
        assert not values.items() >= ENQUEUED[0].items()
    assert oracle.ktune == {"enqueued": 2}


def test_the_values_drawn_for_an_entry_follow_the_seed() -> None:
    spec = enqueued_spec("random")
    assert first_trials(spec, 3) == first_trials(spec, 3)
    other = JobCreate.model_validate(
        {**spec.model_dump(mode="json"), "tuner": {**spec.tuner.model_dump(), "seed": 8}}
    )
    assert first_trials(other, 2)[0] == first_trials(spec, 2)[0], "a whole entry needs no draw"
    assert first_trials(other, 2)[1] != first_trials(spec, 2)[1]


def test_a_grid_walks_its_whole_grid_after_the_enqueued_trials() -> None:
    grid = spec_of("grid", max_trials=200)
    walked = {json.dumps(values, sort_keys=True) for _, status, values in search(grid, 2, "log")}
    body = grid.model_dump(mode="json")
    body["tuner"]["enqueue"] = [{"hidden_layers": 1, "units_0": 8, "learning_rate": 0.01}]
    with_entry = JobCreate.model_validate(body)
    ended = search(with_entry, 2, "log")
    assert ended[0][2].items() >= {"hidden_layers": 1, "units_0": 8, "learning_rate": 0.01}.items()
    # Every fifth trial is made to fail: which ones moves by one, so compare what was tried.
    tried = [json.dumps(values, sort_keys=True) for _, _, values in ended]
    assert set(tried) == walked and len(tried) == len(walked) + 1, "the whole grid, and the entry once more"


def test_hyperband_runs_enqueued_values_in_round_0_of_its_first_bracket() -> None:
    spec = enqueued_spec("hyperband", max_trials=40)
    oracle = new_oracle(spec)
    first = [oracle.create_trial(f"slot-{slot}").hyperparameters.values for slot in range(3)]
    bracket = first[2]["tuner/bracket"]
    assert [values["tuner/bracket"] for values in first] == [bracket] * 3
    assert [values["tuner/round"] for values in first] == [0, 0, 0]
    assert first[0]["tuner/epochs"] == first[2]["tuner/epochs"] < spec.training.epochs
    assert first[0].items() >= ENQUEUED[0].items() and first[1].items() >= ENQUEUED[1].items()
    ended = search(spec, 1, "log")
    promoted = [values for _, _, values in ended if values.get("tuner/trial_id") == "00"]
    assert promoted, "a good enqueued trial goes on to the next round like any other"


def test_a_search_stored_with_constants_as_fixed_hyperparameters_goes_on_as_it_began() -> None:
    """Searches stored before constants left the space keep their space, their trials' values and
    keras-tuner's count of initial points; a trial's configuration is the same either way."""
    spec = spec_of("bayesian")
    oracle = new_oracle(spec)
    older = kt.HyperParameters.from_config(oracle.hyperparameters.get_config())
    for name, value in (("dropout", 0.0), ("optimizer", "adam"), ("batch_size", 32)):
        older.Fixed(name, value)
    oracle.hyperparameters, oracle.num_initial_points = older, None
    first = oracle.create_trial("a")
    assert first.hyperparameters.values["optimizer"] == "adam"

    loaded = round_trip(oracle, spec)
    assert loaded.num_initial_points is None, "keras-tuner's 3 x dimensions, as the search began"
    assert len(loaded.hyperparameters.space) == 8
    values = dict(loaded.create_trial("b").hyperparameters.values)
    assert (values["optimizer"], values["batch_size"]) == ("adam", 32)
    tuned, fixed = constants.split(spec, values)
    assert not {"dropout", "optimizer", "batch_size"} & tuned.keys()
    assert fixed == {"dropout": 0.0, "optimizer": "adam", "batch_size": 32}
    assert constants.configuration(spec, tuned) == constants.configuration(spec, values) == values


# --- tuner.warm_start ---------------------------------------------------------------------------------------


def seeds_for(count: int) -> list[dict[str, Any]]:
    """`count` completed trials of an earlier job on `spec_of`'s space (as `service.core.warm_start` resolves
    them: values with the job's constants, scored by `score_of`)."""
    seeds = []
    for index in range(count):
        values: dict[str, Any] = {
            "hidden_layers": 1 + index % 2,
            "units_0": 4 * (1 + index % 4),
            "activation": ["relu", "tanh"][index // 2 % 2],
            "learning_rate": 10 ** (-4 + 3 * index / max(1, count - 1)),
            "optimizer": "adam",  # a constant of the job: not in keras-tuner's space
        }
        if values["hidden_layers"] == 2:
            values["units_1"] = 4 * (1 + index // 4 % 4)
        seeds.append(
            {
                "job_id": "earlier",
                "trial_id": f"{index:02d}",
                "values": values,
                "objective_value": score_of(values),
            }
        )
    return seeds


def warm_spec(algorithm: str, seeds: int, max_trials: int = 0) -> JobCreate:
    body = spec_of(algorithm, max_trials=max_trials).model_dump(mode="json")
    body["tuner"]["warm_start"] = {"jobs": ["earlier"], "trials": seeds_for(seeds)}
    return JobCreate.model_validate(body)


def test_seeded_trials_are_completed_with_their_scores_and_the_spaces_names_only() -> None:
    oracle = new_oracle(warm_spec("random", 3))
    seeded = [oracle.trials[f"warm-{index}"] for index in range(3)]
    assert [trial.status for trial in seeded] == [KtStatus.COMPLETED] * 3
    assert [trial.score for trial in seeded] == [seed["objective_value"] for seed in seeds_for(3)]
    assert "optimizer" not in seeded[0].hyperparameters.values
    assert not oracle.ongoing_trials and oracle.ktune == {"warm_start": 3}


def test_bayesian_seeded_with_its_initial_points_uses_its_model_for_the_first_trial() -> None:
    def first(seeds: int) -> dict[str, Any]:
        oracle = new_oracle(warm_spec("bayesian", seeds))
        return dict(oracle.create_trial("slot-0").hyperparameters.values)

    unseeded = first(0)
    # Fewer seeds than num_initial_points (15): the first trial is still drawn at random, as unseeded.
    assert first(3) == unseeded
    # 16 seeds: the Gaussian process, fitted on them, suggests it.
    assert first(16) != unseeded


@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
@pytest.mark.parametrize("mode", ["memory", "reload", "log"])
def test_seeded_trials_take_nothing_from_the_budget_and_are_seeded_once(algorithm: str, mode: str) -> None:
    spec = warm_spec(algorithm, 16, max_trials=6)
    ended = search(spec, 1, mode)
    assert len(ended) == 6 and not any(trial_id.startswith("warm-") for trial_id, _, _ in ended)
    seeded_values = [{n: v for n, v in s["values"].items() if n != "optimizer"} for s in seeds_for(16)]
    assert not any(values in seeded_values for _, _, values in ended), "a seeded trial was tried again"
    if algorithm == "random":
        unseeded = search(spec_of("random", max_trials=6), 1, mode)
        assert len(unseeded) == len(ended)


def test_a_replayed_warm_started_search_holds_each_seeded_trial_once() -> None:
    spec = warm_spec("bayesian", 16, max_trials=4)
    logged = LoggedSearch(spec, workers=1)
    oracle = logged.begin()
    oracle.create_trial("slot-0")
    logged.commit()
    oracle = replay(spec, [json.loads(entry) for entry in logged.log])
    assert len(oracle.trials) == 17 and oracle.ktune == {"warm_start": 16}
    assert len(round_trip(oracle, spec).trials) == 17
