"""Optuna's TPE and CMA-ES samplers as ktune search algorithms (`tuner.algorithm` "tpe", "cmaes"): the one
module that touches Optuna's study, trials and samplers.

`OptunaOracle` has the shape of a keras-tuner oracle that `worker.search` steps use (`create_trial`,
`update_trial`, `end_trial`, `trials`, `ongoing_trials`), so a search step runs the same way whatever the
algorithm. Its state is kept as keras-tuner's is (`worker.oracles`): a log of entries, first the whole state
(`dump`), then the trials each step created or ended (`Watch.changes`), replayed into an in-memory Optuna
study that a worker keeps between steps (`replay`). Each trial is stored with what Optuna sampled, its
state and Optuna's system attributes (where CMA-ES keeps its optimizer and TPE its multivariate draws), so
a study replayed from the log holds the same trials as one kept in memory.

Optuna's samplers also keep random generators of their own. Every trial is therefore sampled by a new
sampler seeded from the job's seed and the trial's number: which worker hands out a trial, and whether it
kept the study or replayed it, does not change the values it gets. Trials handed out and not yet ended are
RUNNING in the study, which TPE's constant liar takes into account when trials run in parallel.
"""

from __future__ import annotations

import copy
import itertools
import math
import secrets
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, CmaEsSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from service.core.spec import OPTUNA_ALGORITHMS, JobSpec
from service.core.warm_start_spec import SeedTrial
from worker.optuna_space import Param, active, optuna_space
from worker.oracles import KtStatus

optuna.logging.set_verbosity(optuna.logging.WARNING)

ALGORITHMS = OPTUNA_ALGORITHMS
_CONSECUTIVE_FAILURES = 3  # keras-tuner's default rule when limits.max_failed_trials is unset


def startup_trials(max_trials: int) -> int:
    """Trials TPE samples at random before it models the results: Optuna's 10, but at most a quarter of a
    small budget (at least 2), so that most of it is guided."""
    return max(2, min(10, max_trials // 4))


@dataclass
class Values:
    """A trial's hyperparameter values where keras-tuner keeps them (`trial.hyperparameters.values`)."""

    values: dict[str, Any]


@dataclass
class Trial:
    """A trial as `worker.search` reads keras-tuner's: its id, values, status, score and best step; with
    what Optuna sampled for it (`params`) and Optuna's system attributes."""

    trial_id: str
    number: int
    hyperparameters: Values
    params: dict[str, Any]
    system_attrs: dict[str, Any]
    status: str = KtStatus.RUNNING
    score: float | None = None
    best_step: int = 0
    message: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        """The trial as JSON-ready data (its log entry)."""
        return {
            "id": self.trial_id,
            "number": self.number,
            "values": self.hyperparameters.values,
            "params": self.params,
            "system_attrs": self.system_attrs,
            "status": self.status,
            "score": self.score,
            "best_step": self.best_step,
            "message": self.message,
            "metrics": self.metrics,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Trial:
        return cls(
            state["id"],
            state["number"],
            Values(dict(state["values"])),
            dict(state["params"]),
            copy.deepcopy(state["system_attrs"]),
            state["status"],
            state["score"],
            state["best_step"],
            state["message"],
            dict(state["metrics"]),
        )

    def mark(self) -> tuple[Any, ...]:
        return (self.status, self.score, self.best_step, self.message)


def trial_seed(seed: int, number: int) -> int:
    """The seed of the sampler that samples trial `number` of a job seeded with `seed`."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _sampler(algorithm: str, seed: int, max_trials: int) -> BaseSampler:
    with warnings.catch_warnings():
        # `group` (conditional units per layer) is marked experimental in Optuna.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if algorithm == "cmaes":
            return CmaEsSampler(seed=seed, warn_independent_sampling=False)
        return TPESampler(
            seed=seed,
            n_startup_trials=startup_trials(max_trials),
            multivariate=True,
            group=True,
            constant_liar=True,
        )


class OptunaOracle:
    """An Optuna study behind keras-tuner's oracle interface, for one job's search."""

    def __init__(self, spec: JobSpec, seed: int, seeds: list[SeedTrial] | None = None) -> None:
        self.algorithm = spec.tuner.algorithm
        self.seed = seed
        self.max_trials = spec.tuner.max_trials
        self.objective = spec.objective_name
        self.space = optuna_space(spec)
        self.max_consecutive_failed = _CONSECUTIVE_FAILURES if spec.limits.max_failed_trials is None else None
        direction = StudyDirection.MINIMIZE if spec.objective_direction == "min" else StudyDirection.MAXIMIZE
        self.study = optuna.create_study(direction=direction, sampler=self._sampler_for(0))
        self.trials: dict[str, Trial] = {}
        self.ongoing_trials: dict[str, Trial] = {}  # by the tuner id that created it (keras-tuner's key)
        self.end_order: list[str] = []
        self.enqueued = list(spec.tuner.enqueue or [])
        self.ktune: dict[str, Any] = {}  # ktune's own part of the state (`worker.oracles.ktune_state`)
        # tuner.warm_start's trials: the study's first, completed, so the sampler takes them in (TPE counts
        # them toward its startup trials); not among `trials`, so they count toward no budget or result.
        self.warm_start = list(seeds or [])
        for warm in self.warm_start:
            self.study.add_trial(self._seed_trial(warm))

    def watch(self) -> Watch:
        """What the next step changes (`worker.search_state` asks the oracle, keras-tuner's or this)."""
        return Watch(self)

    def _seed_trial(self, warm: SeedTrial) -> optuna.trial.FrozenTrial:
        params = {
            param.name: param.sampled_for(warm.values[param.name])
            for param in self.space
            if param.distribution is not None and param.name in warm.values
        }
        distributions = {
            param.name: param.distribution
            for param in self.space
            if param.name in params and param.distribution is not None
        }
        return create_trial(
            state=TrialState.COMPLETE,
            value=warm.objective_value,
            params=params,
            distributions=distributions,
            user_attrs={"warm_start": f"{warm.job_id}/{warm.trial_id}"},
        )

    def _sampler_for(self, number: int) -> BaseSampler:
        return _sampler(self.algorithm, trial_seed(self.seed, number), self.max_trials)

    def _trial_id(self, number: int) -> str:
        return f"{number:0{len(str(self.max_trials))}d}"  # keras-tuner's ids: "00", "01", ...

    def create_trial(self, tuner_id: str) -> Trial:
        """A new trial with sampled values, RUNNING; STOPPED (and not kept) once max_trials were made."""
        if tuner_id in self.ongoing_trials:
            return self.ongoing_trials[tuner_id]
        index = len(self.trials)
        number = len(self.warm_start) + index  # the trial's number in the study
        if index >= self.max_trials:
            return Trial(self._trial_id(index), number, Values({}), {}, {}, KtStatus.STOPPED)
        self.study.sampler = self._sampler_for(number)
        self._enqueue_next()
        asked = self.study.ask()
        values: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for param in active(self.space, values):
            sampled = _suggest(asked, param) if param.distribution is not None else None
            if param.distribution is not None:
                params[param.name] = sampled
            values[param.name] = param.value(sampled)
        trial = Trial(self._trial_id(index), number, Values(values), params, self._system_attrs(asked))
        self.trials[trial.trial_id] = trial
        self.ongoing_trials[tuner_id] = trial
        return trial

    def _enqueue_next(self) -> None:
        """The next unused entry of tuner.enqueue, if any, as Optuna's enqueued trial (its values fixed, the
        names it leaves out sampled), counted in ktune's state so a replayed search does not use it again."""
        used = int(self.ktune.get("enqueued", 0))
        if used >= len(self.enqueued):
            return
        self.ktune["enqueued"] = used + 1
        given = self.enqueued[used]
        fixed = {
            param.name: param.sampled_for(given[param.name])
            for param in self.space
            if param.distribution is not None and param.name in given
        }
        self.study.enqueue_trial(fixed, skip_if_exists=False)

    def _system_attrs(self, asked: optuna.Trial) -> dict[str, Any]:
        # What the sampler stored on the trial (CMA-ES' optimizer, TPE's multivariate draws).
        frozen = self.study._storage.get_trial(asked._trial_id)
        return copy.deepcopy(dict(frozen.system_attrs))

    def update_trial(self, trial_id: str, metrics: dict[str, float], step: int = 0) -> Trial:
        """Record a trial's metrics at its best step (what keras-tuner scores it by when it ends)."""
        trial = self.trials[trial_id]
        trial.metrics = dict(metrics)
        trial.best_step = step
        return trial

    def end_trial(self, trial: Trial) -> None:
        """Tell the study the trial's result: COMPLETED with its objective as score (FAILED when that is
        missing, NaN or infinite, as keras-tuner does), or FAILED.

        Raises RuntimeError after too many failed trials in a row (keras-tuner's rule), the trial ended.
        """
        kept = self.trials[trial.trial_id]
        kept.status, kept.message = trial.status, trial.message
        if kept.status == KtStatus.COMPLETED:
            score = kept.metrics.get(self.objective, math.nan)
            if math.isfinite(score):
                kept.score = float(score)
            else:
                kept.status = KtStatus.FAILED
        self._tell(kept)
        self.end_order.append(kept.trial_id)
        for tuner_id, ongoing in list(self.ongoing_trials.items()):
            if ongoing.trial_id == kept.trial_id:
                del self.ongoing_trials[tuner_id]
        self._check_consecutive_failures(kept)

    def _tell(self, trial: Trial) -> None:
        if trial.status == KtStatus.COMPLETED:
            self.study.tell(trial.number, trial.score)
        else:
            self.study.tell(trial.number, state=TrialState.FAIL)

    def _check_consecutive_failures(self, last: Trial) -> None:
        limit = self.max_consecutive_failed
        if limit is None or len(self.end_order) < limit:
            return
        if all(self.trials[tid].status == KtStatus.FAILED for tid in self.end_order[-limit:]):
            raise RuntimeError(
                f"Number of consecutive failures exceeded the limit of {limit}.\n" + (last.message or "")
            )

    # --- stored state -----------------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """The whole state as JSON-ready data."""
        return {
            "optuna": {
                "algorithm": self.algorithm,
                "seed": self.seed,
                "trials": [trial.state() for trial in self.trials.values()],
                "ongoing": {tuner_id: trial.trial_id for tuner_id, trial in self.ongoing_trials.items()},
                "end_order": list(self.end_order),
                "ktune": copy.deepcopy(self.ktune),
                "warm_start": [warm.model_dump(mode="json") for warm in self.warm_start],
            }
        }

    def apply(self, changes: dict[str, Any]) -> None:
        """Take in one step's changes (`Watch.changes`) or a whole state (`dump`)."""
        for state in changes["trials"]:
            self._take_in(Trial.from_state(state))
        self.ongoing_trials = {tuner_id: self.trials[tid] for tuner_id, tid in changes["ongoing"].items()}
        self.end_order.extend(changes["end_order"])
        if "ktune" in changes:
            self.ktune = copy.deepcopy(changes["ktune"])

    def _take_in(self, trial: Trial) -> None:
        """A trial another step created or ended, into the trials and the study."""
        known = self.trials.get(trial.trial_id)
        self.trials[trial.trial_id] = trial
        if known is None:
            self.study.add_trial(self._frozen(trial))  # trials come in the order they were created
        elif known.status == KtStatus.RUNNING and trial.status != KtStatus.RUNNING:
            self._tell(trial)

    def _frozen(self, trial: Trial) -> optuna.trial.FrozenTrial:
        distributions = {
            param.name: param.distribution
            for param in self.space
            if param.name in trial.params and param.distribution is not None
        }
        if trial.status == KtStatus.RUNNING:
            state, value = TrialState.RUNNING, None
        elif trial.status == KtStatus.COMPLETED:
            state, value = TrialState.COMPLETE, trial.score
        else:
            state, value = TrialState.FAIL, None
        return create_trial(
            state=state,
            value=value,
            params=trial.params,
            distributions=distributions,
            system_attrs=copy.deepcopy(trial.system_attrs),
        )


def _suggest(asked: optuna.Trial, param: Param) -> Any:
    distribution = param.distribution
    if isinstance(distribution, IntDistribution):
        return asked.suggest_int(
            param.name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, FloatDistribution):
        return asked.suggest_float(
            param.name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    assert isinstance(distribution, CategoricalDistribution)
    return asked.suggest_categorical(param.name, distribution.choices)


def new_oracle(spec: JobSpec) -> OptunaOracle:
    """A fresh search for the job: seeded by tuner.seed, else by a seed drawn now (and stored with it)."""
    seed = spec.tuner.seed if spec.tuner.seed is not None else secrets.randbelow(2**31)
    warm = spec.tuner.warm_start
    return OptunaOracle(spec, seed, list(warm.trials or []) if warm is not None else [])


def load(spec: JobSpec, state: dict[str, Any]) -> OptunaOracle:
    """The search as a whole state (`OptunaOracle.dump`) has it."""
    own = state["optuna"]
    seeds = [SeedTrial.model_validate(warm) for warm in own.get("warm_start", [])]
    oracle = OptunaOracle(spec, own["seed"], seeds)
    oracle.apply(own)
    return oracle


class Watch:
    """What one step changes in an OptunaOracle: made before the step, asked after it (`changes`)."""

    def __init__(self, oracle: OptunaOracle) -> None:
        self.oracle = oracle
        self.known = len(oracle.trials)
        self.ended = len(oracle.end_order)
        self.ongoing = {tuner_id: trial.trial_id for tuner_id, trial in oracle.ongoing_trials.items()}
        self.marks = {trial.trial_id: trial.mark() for trial in oracle.ongoing_trials.values()}
        self.ktune = copy.deepcopy(oracle.ktune)

    def changes(self, touched: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The step's changes as JSON-ready data (None: it changed nothing): trials created or changed,
        which trials are ongoing (a few ids), the trials ended since."""
        oracle = self.oracle
        created = list(itertools.islice(oracle.trials, self.known, None))  # dicts keep insertion order
        changed = [
            tid
            for tid in dict.fromkeys([*self.marks, *touched])
            if tid in oracle.trials
            and tid not in created
            and (tid in touched or self.marks.get(tid) != oracle.trials[tid].mark())
        ]
        ongoing = {tuner_id: trial.trial_id for tuner_id, trial in oracle.ongoing_trials.items()}
        ended = oracle.end_order[self.ended :]
        ktune_changed = oracle.ktune != self.ktune
        if not created and not changed and ongoing == self.ongoing and not ended and not ktune_changed:
            return None
        changes: dict[str, Any] = {
            "trials": [oracle.trials[tid].state() for tid in [*changed, *created]],
            "ongoing": ongoing,
            "end_order": ended,
        }
        if ktune_changed:
            changes["ktune"] = copy.deepcopy(oracle.ktune)
        return {"optuna": changes}


def log_entry(watch: Watch, logged: int, touched: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The entry a step adds to a log of `logged` entries: the whole state when it is the first, else the
    step's changes; None when the step changed nothing."""
    if logged == 0:
        return {"state": watch.oracle.dump()}
    changes = watch.changes(touched)
    return None if changes is None else {"changes": changes}


def replay(spec: JobSpec, entries: list[dict[str, Any]], oracle: OptunaOracle | None = None) -> OptunaOracle:
    """`oracle` (None: a fresh one) brought up to date by log entries (`log_entry`'s)."""
    for entry in entries:
        if "state" in entry:
            oracle = load(spec, entry["state"])
        else:
            if oracle is None:
                oracle = new_oracle(spec)
            oracle.apply(entry["changes"]["optuna"])
    return oracle if oracle is not None else new_oracle(spec)
