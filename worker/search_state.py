"""A job's search state as a worker process holds it between steps.

The store keeps each job's search as a log (`JobStore.search_log`): a whole state, then the changes of
each step (`worker.oracles`; `worker.optuna_search` for Optuna's samplers). A process keeps the oracles of
its last few jobs with the number of entries each has taken in; a step takes one out (`checkout`), applies
what other workers logged since, and after its changes are logged under the job's step lock puts it back
(`commit`). A step that fails in between
leaves nothing kept, so the next one starts from the log, never from an oracle the log does not hold.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from service.core.spec import OPTUNA_ALGORITHMS, JobSpec
from service.core.store import JobStore
from worker import oracles
from worker.oracles import Watch, as_reloaded, load_oracle, replay
from worker.transient import StepLockLost

KEPT_JOBS = 8  # oracles kept per process: a worker runs trials of a few jobs at a time


@dataclass
class SearchState:
    """A job's oracle for one step: the log entries it has taken in, and what the step changes."""

    oracle: Any
    logged: int
    watch: Any = field(init=False)

    def __post_init__(self) -> None:
        own_watch = getattr(self.oracle, "watch", None)  # Optuna's samplers (worker.optuna_search)
        self.watch = own_watch() if own_watch is not None else Watch(self.oracle)


_KEPT: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()


def checkout(store: JobStore, spec: JobSpec, job_id: str) -> SearchState:
    """The job's oracle as its log has it now: the one this process kept, brought up to date, else one
    built from the whole log (or from the single state an older ktune stored). Raises ValueError for a
    state stored by a ktune too old to read."""
    return _checkout(store, spec, job_id, False)[0]


def checkout_with_results(store: JobStore, spec: JobSpec, job_id: str) -> tuple[SearchState, dict[str, str]]:
    """`checkout`, and the results handed in for the job's next step (read with the log, in one round
    trip)."""
    return _checkout(store, spec, job_id, True)


def _checkout(
    store: JobStore, spec: JobSpec, job_id: str, results: bool
) -> tuple[SearchState, dict[str, str]]:
    oracle, logged = _KEPT.pop((store.prefix, job_id), (None, 0))
    length, entries, handed_in = store.search_log_and_results(job_id, logged, results)
    if length < logged:  # not the log this oracle came from (cannot happen while job ids are unique)
        oracle, logged = None, 0
        length, entries = store.search_log(job_id, 0)
    if spec.tuner.algorithm in OPTUNA_ALGORITHMS:
        # Imported for such jobs only: a worker that never runs one never loads Optuna.
        from worker import optuna_search

        return SearchState(optuna_search.replay(spec, entries, oracle), length), handed_in
    if oracle is None and length == 0:
        legacy = store.legacy_oracle_state(job_id)
        # Its first step logs the whole state, and the job goes on from the log.
        return SearchState(as_reloaded(load_oracle(spec, legacy)), 0), handed_in
    return SearchState(replay(spec, entries, oracle), length), handed_in


def log_entry(watch: Any, logged: int, touched: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The entry a step adds to the job's log of `logged` entries (None: the step changed nothing)."""
    if isinstance(watch, Watch):
        return oracles.log_entry(watch, logged, touched)
    from worker import optuna_search

    return optuna_search.log_entry(watch, logged, touched)


def commit(
    store: JobStore, job_id: str, state: SearchState, owner: str, touched: tuple[str, ...] = ()
) -> None:
    """Log what the step changed, if `owner` still holds the job's step lock and no other step has logged
    since this one's checkout; then keep the oracle for the job's next step in this process. Raises
    StepLockLost, keeping nothing, when the lock was lost."""
    entry = log_entry(state.watch, state.logged, touched)
    if not store.append_search_log(job_id, entry, owner, state.logged):
        raise StepLockLost(f"the search step of job {job_id} lost its lock before storing its result")
    _KEPT[(store.prefix, job_id)] = (state.oracle, state.logged + (entry is not None))
    while len(_KEPT) > KEPT_JOBS:
        _KEPT.popitem(last=False)


def resume(store: JobStore, job_id: str) -> SearchState | None:
    """The oracle this process just committed, for more changes in the same step (which still holds the lock,
    so nothing else has logged since: the next commit checks it); None if it is not kept."""
    kept = _KEPT.pop((store.prefix, job_id), None)
    return None if kept is None else SearchState(*kept)


def forget(store: JobStore, job_id: str) -> None:
    """Drop the job's kept oracle, if any (its next step reads the whole log)."""
    _KEPT.pop((store.prefix, job_id), None)
