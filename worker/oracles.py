"""keras-tuner's search algorithms with their state kept in the job store instead of files.

Any worker can take any step of a search: it loads the oracle from its stored state, asks it for a
trial or tells it a result, and stores the state again, all under the job's lock.
"""

from __future__ import annotations

import copy
from typing import Any

import keras_tuner as kt
from keras_tuner.src.engine import trial as trial_module
from keras_tuner.src.engine.metrics_tracking import MetricsTracker
from keras_tuner.src.tuners.gridsearch import LinkedList

from service.core.spec import JobSpec
from worker.space import search_space


class _NoFiles:
    """keras-tuner oracles write JSON files on every change; the job store keeps their state instead."""

    def save(self) -> None:
        pass

    def _save_trial(self, trial: Any) -> None:
        pass


class RandomOracle(_NoFiles, kt.oracles.RandomSearchOracle):  # type: ignore[misc]
    pass


class GridOracle(_NoFiles, kt.oracles.GridSearchOracle):  # type: ignore[misc]
    pass


class BayesianOracle(_NoFiles, kt.oracles.BayesianOptimizationOracle):  # type: ignore[misc]
    pass


class HyperbandOracle(_NoFiles, kt.oracles.HyperbandOracle):  # type: ignore[misc]
    pass


def new_oracle(spec: JobSpec) -> Any:
    """A fresh oracle for the job's algorithm, objective, space, budget and seed."""
    common: dict[str, Any] = {
        "objective": kt.Objective(spec.objective_name, spec.objective_direction),
        "hyperparameters": search_space(spec),
        "seed": spec.tuner.seed,
    }
    if spec.limits.max_failed_trials is not None:
        # The job's own limit counts failed trials: keras-tuner's consecutive-failure rule must not fire.
        common["max_consecutive_failed_trials"] = spec.tuner.max_trials + 1
    algorithm = spec.tuner.algorithm
    oracle: Any
    if algorithm == "hyperband":
        oracle = HyperbandOracle(
            max_epochs=spec.tuner.max_epochs or spec.training.epochs,
            factor=spec.tuner.factor,
            hyperband_iterations=spec.tuner.hyperband_iterations,
            **common,
        )
        oracle.max_trials = spec.tuner.max_trials
    elif algorithm == "bayesian":
        oracle = BayesianOracle(max_trials=spec.tuner.max_trials, **common)
    elif algorithm == "grid":
        oracle = GridOracle(max_trials=spec.tuner.max_trials, **common)
    else:
        oracle = RandomOracle(max_trials=spec.tuner.max_trials, **common)
    oracle.verbose = 0
    return oracle


def _linked_items(linked: LinkedList) -> list[Any]:
    items, index = [], linked._next_index[None]
    while index is not None:
        items.append(linked._memory[index])
        index = linked._next_index[index]
    return items


def _trial_state(trial: Any) -> dict[str, Any]:
    """What a trial adds to the search: keras-tuner's `Trial.get_state` less the search space it copies."""
    return {
        "values": trial.hyperparameters.values,
        "metrics": trial.metrics.get_config(),
        "score": trial.score,
        "best_step": trial.best_step,
        "status": trial.status,
        "message": trial.message,
    }


def _trial_from_state(trial_id: str, state: dict[str, Any], space: kt.HyperParameters) -> Any:
    """A trial as keras-tuner's `create_trial` makes it: a copy of the oracle's space with its own values."""
    hyperparameters = space.copy()
    hyperparameters.values = dict(state["values"])
    trial = trial_module.Trial(
        hyperparameters, trial_id=trial_id, status=state["status"], message=state["message"]
    )
    trial.metrics = MetricsTracker.from_config(state["metrics"])
    trial.score = state["score"]
    trial.best_step = state["best_step"]
    return trial


def dump_oracle(oracle: Any) -> dict[str, Any]:
    """The oracle's whole state as JSON-ready data; each trial by its values, the search space once."""
    state: dict[str, Any] = {
        "oracle": oracle.get_state(),
        "trials": {trial_id: _trial_state(trial) for trial_id, trial in oracle.trials.items()},
    }
    if isinstance(oracle, GridOracle):
        # GridSearchOracle.get_state leaves out where the grid walk stands.
        state["grid"] = {
            "ordered_ids": _linked_items(oracle._ordered_ids),
            "populate_next": oracle._populate_next,
        }
    return state


def load_oracle(spec: JobSpec, state: dict[str, Any] | None) -> Any:
    """The job's oracle as it was stored, or a fresh one for a job that has not started its search.

    Raises ValueError for a state stored by an older ktune, whose trials each held the whole space.
    """
    oracle = new_oracle(spec)
    if state is None:
        return oracle
    if any("values" not in trial for trial in state["trials"].values()):
        raise ValueError("the job's search state was stored by an older ktune version and cannot be read")
    # The trials first: the oracle's own state refers to them (ongoing trials) by id.
    # (keras-tuner's from_config rewrites the config it reads: set_state must get an untouched one.)
    space = kt.HyperParameters.from_config(copy.deepcopy(state["oracle"]["hyperparameters"]))
    oracle.trials = {tid: _trial_from_state(tid, s, space) for tid, s in state["trials"].items()}
    oracle.set_state(state["oracle"])
    if isinstance(oracle, GridOracle):
        oracle._ordered_ids = LinkedList()
        for trial_id in state["grid"]["ordered_ids"]:
            oracle._ordered_ids.insert(trial_id)
        oracle._populate_next = list(state["grid"]["populate_next"])
    oracle.verbose = 0
    return oracle
