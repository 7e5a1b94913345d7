"""keras-tuner's search algorithms with their state kept in the job store instead of files: the one module
that touches keras-tuner's internals (its oracles' state, trials and the grid's walk).

Any worker can take any step of a search. A job's stored search state is a log of entries: the first a
whole state (`dump_oracle`), each later one the changes a step made (`Watch.changes`). A worker keeps the
oracles it used in memory and brings one up to date by applying the entries logged since (`replay`), so a
step costs the same at the 1,000th trial as at the 10th; a worker that has none replays the whole log.
"""

from __future__ import annotations

import collections
import copy
import itertools
import json
from collections import OrderedDict
from typing import Any

import keras_tuner as kt
import numpy as np
from keras_tuner.src.engine import trial as trial_module
from keras_tuner.src.engine.metrics_tracking import MetricsTracker
from keras_tuner.src.engine.trial import TrialStatus as KtStatus
from keras_tuner.src.tuners.gridsearch import LinkedList

from service.core.spec import JobSpec
from service.core.warm_start_spec import SeedTrial
from worker.initial_points import initial_points
from worker.space import search_space

__all__ = ["KtStatus"]  # keras-tuner's trial statuses, for the search steps


class SharedSpace(kt.HyperParameters):  # type: ignore[misc]
    """keras-tuner's search space whose copies (one per trial, made by `create_trial`) share its
    hyperparameter definitions, which nothing changes once made, instead of rebuilding each one from its
    config through Keras' deserialization (milliseconds a trial for the seed's space)."""

    def copy(self) -> SharedSpace:
        hps = SharedSpace()
        hps._hps = collections.defaultdict(list, {name: list(same) for name, same in self._hps.items()})
        hps._space = list(self._space)
        hps.values = dict(self.values)
        return hps

    def _register(self, hyperparameter: Any, overwrite: bool = False) -> Any:
        """keras-tuner's `_register`, keeping the definition itself, not a copy rebuilt from its config:
        sampling a trial's values registers every hyperparameter of the space (about 1 ms of Keras
        deserialization a trial for the seed's space)."""
        hp = hyperparameter
        self._validate_name(hp.name)
        self._hps[hp.name].append(hp)
        self._space.append(hp)
        if self.is_active(hp):
            if overwrite or hp.name not in self.values:
                self.values[hp.name] = hp.default
            return self.values[hp.name]
        return None


_SPACES: OrderedDict[str, SharedSpace] = OrderedDict()


def _space(config: dict[str, Any]) -> SharedSpace:
    """The space of a `HyperParameters.get_config()`, built once per process for each distinct space."""
    key = json.dumps(config["space"], sort_keys=True)
    space = _SPACES.get(key)
    if space is None:
        # keras-tuner's from_config rewrites the config it reads: give it a copy.
        space = _SPACES[key] = SharedSpace.from_config(
            {"space": copy.deepcopy(config["space"]), "values": {}}
        )
        while len(_SPACES) > 16:
            _SPACES.popitem(last=False)
    _SPACES.move_to_end(key)
    copied = space.copy()
    copied.values = dict(config.get("values", {}))
    return copied


class _NoFiles:
    """keras-tuner oracles write JSON files on every change; the job store keeps their state instead. Their
    search space is a `SharedSpace`."""

    def save(self) -> None:
        pass

    def _save_trial(self, trial: Any) -> None:
        pass

    def set_state(self, state: dict[str, Any]) -> None:
        """keras-tuner's `set_state`; a state without `hyperparameters` keeps the space as it is."""
        kept = self.hyperparameters  # type: ignore[has-type]
        super().set_state({**state, "hyperparameters": {"space": [], "values": {}}})  # type: ignore[misc]
        config = state.get("hyperparameters")
        self.hyperparameters = kept if config is None else _space(config)

    def _random_values(self) -> dict[str, Any] | None:
        """keras-tuner's `Oracle._random_values` (the same draws from the same seed state), sampling into a
        `SharedSpace` so that no definition is rebuilt."""
        collisions = 0
        while True:
            hps = SharedSpace()
            for hp in self.hyperparameters.space:
                hps.merge([hp])
                if hps.is_active(hp):
                    hps.values[hp.name] = hp.random_sample(self._seed_state)  # type: ignore[attr-defined]
                    self._seed_state += 1  # type: ignore[attr-defined]
            if not self._duplicate(hps.values):  # type: ignore[attr-defined]
                return dict(hps.values)
            collisions += 1
            if collisions > self._max_collisions:  # type: ignore[attr-defined]
                return None

    def _check_consecutive_failures(self) -> None:
        """keras-tuner's check, on the trials that ended last only (it walks every ended trial): it runs after
        each trial ends, so an earlier run of failures long enough would have raised then."""
        ended = reversed(self.end_order)  # type: ignore[attr-defined]
        for failures, trial_id in enumerate(ended, start=1):
            trial = self.trials[trial_id]  # type: ignore[attr-defined]
            if trial.status != KtStatus.FAILED:
                return
            if failures == self.max_consecutive_failed_trials:  # type: ignore[attr-defined]
                raise RuntimeError(
                    f"Number of consecutive failures exceeded the limit of {failures}.\n"
                    + (trial.message or "")
                )

    # tuner.enqueue: entries tried first. `ktune["enqueued"]` (in the stored state, logged with the step that
    # created the trial) counts those used, so a search resumed from its log neither repeats nor skips one.

    def _take_enqueued(self) -> dict[str, Any] | None:
        """The values of the next unused entry of tuner.enqueue, its left-out names drawn as `_random_values`
        draws them; None once every entry is used."""
        used = self.ktune.get("enqueued", 0)  # type: ignore[attr-defined]
        entries = self.enqueued  # type: ignore[attr-defined]
        if used >= len(entries):
            return None
        self.ktune["enqueued"] = used + 1  # type: ignore[attr-defined]
        given = entries[used]
        hps = SharedSpace()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if not hps.is_active(hp):
                continue
            if hp.name in given:
                hps.values[hp.name] = given[hp.name]
            else:
                hps.values[hp.name] = hp.random_sample(self._seed_state)  # type: ignore[attr-defined]
                self._seed_state += 1  # type: ignore[attr-defined]
        return dict(hps.values)


class _EnqueuedFirst:
    """Trials of tuner.enqueue before any the algorithm picks (with their results, a Bayesian search's model
    is fitted on them like on any completed trial)."""

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        values = self._take_enqueued()  # type: ignore[attr-defined]
        if values is not None:
            return {"status": KtStatus.RUNNING, "values": values}
        return super().populate_space(trial_id)  # type: ignore[misc,no-any-return]


class RandomOracle(_EnqueuedFirst, _NoFiles, kt.oracles.RandomSearchOracle):  # type: ignore[misc]
    pass


class GridOracle(_EnqueuedFirst, _NoFiles, kt.oracles.GridSearchOracle):  # type: ignore[misc]
    """The grid walks every combination after the enqueued trials, which stay out of its walk (their values
    need not be on the grid; one that is may be tried again by the walk)."""

    start_order: list[str]  # keras-tuner's: the ids of the trials in the order they started

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if self._ordered_ids._memory or self.enqueued_left():
            return super().populate_space(trial_id)
        # keras-tuner starts the walk (at the default values) when no trial has started: enqueued ones have.
        started, self.start_order = self.start_order, []
        try:
            return super().populate_space(trial_id)
        finally:
            self.start_order = started + self.start_order

    def enqueued_left(self) -> bool:
        return int(self.ktune.get("enqueued", 0)) < len(self.enqueued)

    def end_trial(self, trial: Any) -> None:
        try:
            super().end_trial(trial)
        finally:
            # keras-tuner continues the walk from every ended trial: not from an enqueued one, off the walk.
            trial_id = trial.trial_id
            if trial_id not in self._ordered_ids._data_to_index and trial_id in self._populate_next:
                self._populate_next.remove(trial_id)


class BayesianOracle(_EnqueuedFirst, _NoFiles, kt.oracles.BayesianOptimizationOracle):  # type: ignore[misc]
    pass


class HyperbandOracle(_NoFiles, kt.oracles.HyperbandOracle):  # type: ignore[misc]
    """Enqueued trials are the first random ones, round 0 of the first brackets: each trains for that
    bracket's epochs, and the best go on to its next rounds as any trial does."""

    def _random_values(self) -> dict[str, Any] | None:
        values = self._take_enqueued()
        return values if values is not None else super()._random_values()


def new_oracle(spec: JobSpec) -> Any:
    """A fresh oracle for the job's algorithm, objective, space, budget and seed, seeded with
    tuner.warm_start's trials (`seed_warm_start`)."""
    oracle = _new_oracle(spec)
    seed_warm_start(oracle, seed_trials(spec))
    return oracle


# tuner.warm_start: earlier jobs' completed trials, COMPLETED trials of the oracle before any of its own, so
# that its algorithm takes them in like its own results (a Bayesian search fits its model on them, and counts
# them toward its initial points) and random sampling does not draw their values again. They are in the
# whole state the search logs first: a replayed search holds them without seeding again. keras-tuner stops at
# `max_trials` trials, counting all it holds: the oracle's budget is the job's plus the seeded trials.

WARM_START_PREFIX = "warm-"


def is_seeded(trial_id: str) -> bool:
    """Whether the trial is one of tuner.warm_start's, not one the job trained."""
    return trial_id.startswith(WARM_START_PREFIX)


def seed_trials(spec: JobSpec) -> list[SeedTrial]:
    warm = spec.tuner.warm_start
    return list(warm.trials or []) if warm is not None else []


def seed_warm_start(oracle: Any, seeds: list[SeedTrial]) -> None:
    """Add `seeds` to a fresh oracle as completed trials (ids `warm-0`, `warm-1` ...), each with the values
    of its space's hyperparameters (an earlier job's constants that are not are left out)."""
    names = {hp.name for hp in oracle.hyperparameters.space}
    for index, seed in enumerate(seeds):
        hyperparameters = oracle.hyperparameters.copy()
        hyperparameters.values = {name: value for name, value in seed.values.items() if name in names}
        trial = trial_module.Trial(
            hyperparameters, trial_id=f"{WARM_START_PREFIX}{index}", status=KtStatus.COMPLETED
        )
        trial.score = seed.objective_value
        oracle._record_values(trial)
        oracle.trials[trial.trial_id] = trial
    if seeds:
        oracle.ktune["warm_start"] = len(seeds)


def _new_oracle(spec: JobSpec) -> Any:
    """`new_oracle` without the seeded trials, which a stored state holds itself."""
    space = search_space(spec)
    common: dict[str, Any] = {
        "objective": kt.Objective(spec.objective_name, spec.objective_direction),
        "hyperparameters": space,
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
        # A search stored before this was set keeps its own (None: keras-tuner's 3 x dimensions) when loaded.
        dimensions = sum(1 for hp in space.space if not isinstance(hp, kt.engine.hyperparameters.Fixed))
        oracle = BayesianOracle(
            max_trials=spec.tuner.max_trials,
            num_initial_points=initial_points(spec.tuner, dimensions),
            **common,
        )
    elif algorithm == "grid":
        oracle = GridOracle(max_trials=spec.tuner.max_trials, **common)
    else:
        oracle = RandomOracle(max_trials=spec.tuner.max_trials, **common)
    oracle.hyperparameters = _space(oracle.hyperparameters.get_config())
    oracle.verbose = 0
    oracle.enqueued = list(spec.tuner.enqueue or [])
    oracle.ktune = {}  # ktune's own part of the search state (enqueued entries used, completion standing)
    oracle.max_trials += len(seed_trials(spec))
    return oracle


def ktune_state(oracle: Any) -> dict[str, Any]:
    """ktune's own part of the oracle's stored state, to change in a step (logged with the step's changes)."""
    state: dict[str, Any] = oracle.ktune
    return state


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
    own = _oracle_state(oracle)
    state: dict[str, Any] = {
        "oracle": own,
        "trials": {trial_id: _trial_state(trial) for trial_id, trial in oracle.trials.items()},
    }
    if "grid" in own:
        state["grid"] = own.pop("grid")
    return state


def load_oracle(spec: JobSpec, state: dict[str, Any] | None) -> Any:
    """The job's oracle as it was stored, or a fresh one for a job that has not started its search.

    Raises ValueError for a state stored by an older ktune, whose trials each held the whole space.
    """
    if state is None:
        return new_oracle(spec)
    oracle = _new_oracle(spec)
    if any("values" not in trial for trial in state["trials"].values()):
        raise ValueError("the job's search state was stored by an older ktune version and cannot be read")
    # The trials first: the oracle's own state refers to them (ongoing trials) by id.
    space = _space(state["oracle"]["hyperparameters"])
    oracle.trials = {tid: _trial_from_state(tid, s, space) for tid, s in state["trials"].items()}
    _set_oracle_state(oracle, {**state["oracle"], **({"grid": state["grid"]} if "grid" in state else {})})
    oracle.verbose = 0
    return oracle


# --- the changes of one step ------------------------------------------------------------------------------

# Keys of the oracle's state that grow with the trials, flat (lists of ids and hashes, dicts of id -> id,
# hash or count): copied shallowly before a step and logged by what was added or changed. Any other key is
# copied deeply and logged whole when it changes (they are small: a bracket, the space, a seed).
_FLAT_KEYS = frozenset(
    {"ongoing_trials", "start_order", "end_order", "run_times", "retry_queue", "tried_so_far", "id_to_hash"}
)
_SET_KEYS = frozenset({"tried_so_far"})  # a set that get_state lists in no fixed order


class _SpaceLeftOut:
    """Stands in for the search space while `get_state` runs without it."""

    @staticmethod
    def get_config() -> None:
        return None


def _oracle_state(oracle: Any, space: bool = True) -> dict[str, Any]:
    """`oracle.get_state()`, with ktune's own part (`ktune_state`) and where a grid walk stands (which
    GridSearchOracle leaves out). Without `space`, the state has no `hyperparameters`: keras-tuner makes
    the space's config anew on each call (a millisecond for the seed's), and a step seldom changes it."""
    if space:
        state: dict[str, Any] = oracle.get_state()
    else:
        kept, oracle.hyperparameters = oracle.hyperparameters, _SpaceLeftOut()
        try:
            state = oracle.get_state()
        finally:
            oracle.hyperparameters = kept
        del state["hyperparameters"]
    state["ktune"] = oracle.ktune
    if isinstance(oracle, GridOracle):
        state["grid"] = {
            "ordered_ids": _linked_items(oracle._ordered_ids),
            "populate_next": list(oracle._populate_next),
        }
    return state


def _set_oracle_state(oracle: Any, state: dict[str, Any]) -> None:
    oracle.set_state({key: value for key, value in state.items() if key not in ("grid", "ktune")})
    oracle.ktune = copy.deepcopy(state.get("ktune", {}))
    if isinstance(oracle, GridOracle):
        oracle._ordered_ids = LinkedList()
        for trial_id in state["grid"]["ordered_ids"]:
            oracle._ordered_ids.insert(trial_id)
        oracle._populate_next = list(state["grid"]["populate_next"])


def _copied(state: dict[str, Any]) -> dict[str, Any]:
    # get_state makes the space's config anew each time: nothing of the oracle's is in it.
    return {
        key: value
        if key == "hyperparameters"
        else copy.copy(value)
        if key in _FLAT_KEYS
        else copy.deepcopy(value)
        for key, value in state.items()
    }


def _space_mark(oracle: Any) -> tuple[int, dict[str, Any]]:
    """What tells whether a step changed the search space: keras-tuner only adds to it (a hyperparameter
    registered for the first time) and sets the values of the ones it has."""
    hyperparameters = oracle.hyperparameters
    return len(hyperparameters.space), dict(hyperparameters.values)


def _trial_mark(trial: Any) -> tuple[Any, ...]:
    return (trial.status, trial.score, trial.best_step, trial.message)


class Watch:
    """What one step changes in an oracle: made before the step, asked after it (`changes`)."""

    def __init__(self, oracle: Any) -> None:
        self.oracle = oracle
        self.space = _space_mark(oracle)
        self.before = _copied(_oracle_state(oracle, space=False))
        self.known = len(oracle.trials)
        # A step changes only trials it creates, ongoing ones (it ends them) and ones it retries; the rest
        # are not looked at, so that a step costs the same however many trials have ended.
        changeable = [trial.trial_id for trial in oracle.ongoing_trials.values()]
        changeable += [trial_id for trial_id in oracle._retry_queue if trial_id in oracle.trials]
        self.marks = {trial_id: _trial_mark(oracle.trials[trial_id]) for trial_id in changeable}

    def changes(self, touched: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The step's changes as JSON-ready data (None: it changed nothing). `touched`: trials whose metrics
        the step reported (a status, score or new trial is found without being named)."""
        oracle, marks = self.oracle, self.marks
        created = list(itertools.islice(oracle.trials, self.known, None))  # dicts keep insertion order
        trials = {
            trial_id: _trial_state(oracle.trials[trial_id])
            for trial_id in dict.fromkeys([*created, *touched, *marks])
            if trial_id in oracle.trials
            and (
                trial_id not in marks
                or trial_id in touched
                or marks[trial_id] != _trial_mark(oracle.trials[trial_id])
            )
        }
        # A space that changed is logged whole ("set": the state before has none to compare with).
        state = _state_changes(self.before, _oracle_state(oracle, space=_space_mark(oracle) != self.space))
        if not trials and not state:
            return None
        return {"trials": trials, "state": state}


def _state_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, new in after.items():
        old = before.get(key)
        if key in _SET_KEYS:
            added, removed = set(new) - set(old or ()), set(old or ()) - set(new)
            if added or removed:
                changes[key] = {"add": sorted(added), "remove": sorted(removed)}
        elif old == new:
            continue
        elif key in _FLAT_KEYS and isinstance(old, list) and new[: len(old)] == old:
            changes[key] = {"extend": new[len(old) :]}
        elif key in _FLAT_KEYS and isinstance(old, dict):
            changes[key] = _dict_changes(old, new)
        else:
            changes[key] = {"set": new}
    return changes


def _dict_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What turned `old` into `new`: entries added or changed, keys removed. A step usually only adds
    entries, which a dict keeps at its end: that case is found without a Python loop over every trial's."""
    if old.items() <= new.items():
        added = dict(itertools.islice(new.items(), len(old), None))
        if len(added) == len(new) - len(old) and not added.keys() & old.keys():
            return {"update": added, "remove": []}
    return {
        "update": {k: v for k, v in new.items() if k not in old or old[k] != v},
        "remove": [k for k in old if k not in new],
    }


def _apply_state_changes(state: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, change in changes.items():
        if "set" in change:
            state[key] = change["set"]
        elif "extend" in change:
            state[key] = [*state[key], *change["extend"]]
        elif key in _SET_KEYS:
            state[key] = list((set(state[key]) | set(change["add"])) - set(change["remove"]))
        else:
            merged = dict(state[key])
            merged.update(change["update"])
            for name in change["remove"]:
                merged.pop(name, None)
            state[key] = merged


def replay(spec: JobSpec, entries: list[dict[str, Any]], oracle: Any | None = None) -> Any:
    """`oracle` (None: a fresh one) brought up to date by log entries: whole states (`{"state": ...}`, as
    `dump_oracle` makes) and one step's changes each (`{"changes": ...}`, as `Watch.changes` makes)."""
    pending: list[dict[str, Any]] = []
    for entry in entries:
        if "state" in entry:
            oracle, pending = load_oracle(spec, entry["state"]), []
        else:
            pending.append(entry["changes"])
    if oracle is None:
        oracle = new_oracle(spec)
    if pending:
        _apply_changes(oracle, pending)
    return as_reloaded(oracle)


def _apply_changes(oracle: Any, changes: list[dict[str, Any]]) -> None:
    space_changed = any("hyperparameters" in change["state"] for change in changes)
    state = _oracle_state(oracle, space=space_changed)
    trials: dict[str, dict[str, Any]] = {}
    for change in changes:
        _apply_state_changes(state, change["state"])
        trials.update(change["trials"])
    space = _space(state["hyperparameters"]) if space_changed else oracle.hyperparameters
    for trial_id, trial_state in trials.items():
        oracle.trials[trial_id] = _trial_from_state(trial_id, trial_state, space)
    _set_oracle_state(oracle, state)


def as_reloaded(oracle: Any) -> Any:
    """The oracle as `load_oracle` would make it from its state: what keras-tuner keeps outside its state
    (Bayesian's random generator and its last Gaussian-process fit) is reset, so a step hands out the same
    trials on a worker that kept the oracle as on one that loads it."""
    if isinstance(oracle, BayesianOracle):
        oracle._random_state = np.random.RandomState(oracle.seed)
        oracle.gpr = oracle._make_gpr()
    oracle.verbose = 0
    return oracle


def log_entry(watch: Watch, logged: int, touched: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The entry a step adds to a log of `logged` entries: the whole state when it is the first (so the
    seed and space are logged once), else the step's changes; None when the step changed nothing."""
    if logged == 0:
        return {"state": dump_oracle(watch.oracle)}
    changes = watch.changes(touched)
    return None if changes is None else {"changes": changes}
