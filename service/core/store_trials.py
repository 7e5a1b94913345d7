"""Trials in the store: their records, statuses and counts, their per-epoch histories, the results handed
in for the job's next search step, and the job's search log (the search algorithm's state)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

import redis

from service.core.records import ExecutionRecord, TrialRecord, utcnow
from service.core.states import TrialStatus
from service.core.store_base import StoreBase
from service.core.store_keys import StoreKeys

# Stores a trial record only when the stored status may move to the new one (TRIAL_TRANSITIONS), and only
# while its job exists; optionally replaces the trial's history list. Finished trials are never rewritten.
_TRIAL_TRANSITION = """
if redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
local current = redis.call('HGET', KEYS[2], ARGV[1]) or 'new'
if not string.find(',' .. ARGV[2] .. ',', ',' .. current .. ',', 1, true) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if current ~= ARGV[3] then
  redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
  if current ~= 'new' then redis.call('HINCRBY', KEYS[5], current, -1) end
end
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[3])
  for i = 6, #ARGV, 1000 do redis.call('RPUSH', KEYS[3], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
end
return 1
"""

# Appends epochs to a trial's history while the trial is running.
_APPEND_HISTORY = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'running' then return 0 end
for i = 2, #ARGV, 1000 do redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
return 1
"""

# Appends a step's entry to the search log only for the holder of the job's step lock, and only onto the
# entries the step started from: a step whose lock lapsed cannot add to a log a later step wrote. Notes
# the time of the step on the job.
_APPEND_SEARCH_LOG = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[4] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[4]) end
redis.call('HSET', KEYS[3], 'last_step_at', ARGV[3])
return 1
"""


# Hands in a finished trial's result (ARGV[2]) for the job's next search step, while the job exists, and
# takes the job's step lock for ARGV[3] (for ARGV[4] ms) if no one holds it: 'acquired', 'busy' or 'gone'.
_HAND_IN_RESULT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then return 'acquired' end
return 'busy'
"""

# For a worker waiting on its handed-in result: 'taken' once a step took it in (or the job is gone), else
# the step lock for ARGV[2] if it is free ('acquired'), else 'busy'.
_STEP_OR_TAKEN_IN = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 'taken' end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 'acquired' end
return 'busy'
"""


class HandIn(StrEnum):
    """Where a worker stands with a result it handed in (`hand_in_result`, `step_or_taken_in`)."""

    ACQUIRED = "acquired"  # it holds the job's step lock: its step takes in every handed-in result
    BUSY = "busy"  # another step holds the lock; the result waits
    TAKEN = "taken"  # a step took the result in (or the job is gone): nothing left to do
    GONE = "gone"  # the job is gone; nothing was handed in


class TrialRecords(StoreBase):
    """A job's trials and search log. A finished trial is never rewritten."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        super().__init__(client, prefix, binary)
        self._trial_transition = client.register_script(_TRIAL_TRANSITION)
        self._append_history = client.register_script(_APPEND_HISTORY)
        self._append_search_log = client.register_script(_APPEND_SEARCH_LOG)
        self._hand_in_result = client.register_script(_HAND_IN_RESULT)
        self._step_or_taken_in = client.register_script(_STEP_OR_TAKEN_IN)

    def transition_trial(
        self,
        job_id: str,
        trial: TrialRecord,
        allowed_from: Iterable[TrialStatus | None],
        replace_history: bool = False,
    ) -> bool:
        """Store `trial` if the stored status is in `allowed_from` (None: no trial yet) and not final.

        With `replace_history`, the trial's stored history becomes the one `trial` holds. Only `lifecycle`
        calls this.
        """
        return self.transition_trials(job_id, [trial], allowed_from, replace_history)[0]

    def transition_trials(
        self,
        job_id: str,
        trials: list[TrialRecord],
        allowed_from: Iterable[TrialStatus | None],
        replace_history: bool = False,
    ) -> list[bool]:
        """`transition_trial` for each of `trials`, in one round trip: whether each was stored."""
        # A finished trial is never rewritten, whatever the caller allows.
        sources = ",".join(
            "new" if status is None else status.value
            for status in allowed_from
            if status is None or not status.is_final()
        )
        calls: list[tuple[list[str], list[str]]] = []
        for trial in trials:
            args: list[str] = [trial.id, sources, trial.status.value, stored_trial(trial)]
            args.append("1" if replace_history else "0")
            if replace_history:
                args += history_entries(trial.executions)
            keys = [
                self.keys.job_trials(job_id),
                self.keys.trial_status(job_id),
                self.keys.trial_history(job_id, trial.id),
                self.keys.job(job_id),
                self.keys.trial_counts(job_id),
            ]
            calls.append((keys, args))
        return [int(moved) == 1 for moved in self.script_calls(self._trial_transition, calls)]

    def append_history(self, job_id: str, trial_id: str, entries: list[str]) -> bool:
        """Append epochs (from `history_entries`) to a running trial's history; False if it is not running."""
        if not entries:
            return True
        keys = [self.keys.trial_status(job_id), self.keys.trial_history(job_id, trial_id)]
        return int(self._append_history(keys=keys, args=[trial_id, *entries])) == 1

    def get_trial(self, job_id: str, trial_id: str) -> TrialRecord | None:
        """A trial without its per-epoch history."""
        raw = self.redis.hget(self.keys.job_trials(job_id), trial_id)
        return TrialRecord.model_validate_json(raw) if raw else None

    def get_trials(self, job_id: str, history: bool = True) -> list[TrialRecord]:
        """Every trial of a job by id, with its per-epoch history unless `history` is False."""
        raw = self.redis.hgetall(self.keys.job_trials(job_id))
        trials = sorted((TrialRecord.model_validate_json(v) for v in raw.values()), key=lambda t: t.id)
        if history and trials:
            pipe = self.redis.pipeline(transaction=False)
            for trial in trials:
                pipe.lrange(self.keys.trial_history(job_id, trial.id), 0, -1)
            for trial, entries in zip(trials, pipe.execute(), strict=True):
                _fill_history(trial, entries)
        return trials

    def trial_status_counts(self, job_id: str) -> Counter[TrialStatus]:
        """How many of the job's trials have each status (statuses none has are left out)."""
        pipe = self.redis.pipeline(transaction=False)
        queue_trial_counts(pipe, self.keys, [job_id])
        return trial_counts(self.redis, self.keys, job_id, *pipe.execute())

    # results handed in for the job's next search step
    def hand_in_result(self, job_id: str, trial_id: str, result: str, owner: str, seconds: float) -> HandIn:
        """Store a finished trial's result (replacing one handed in before) for the job's next search step,
        and take the job's step lock for `owner` if it is free: ACQUIRED, BUSY, or GONE (no such job)."""
        keys = [self.keys.job(job_id), self.keys.trial_results(job_id), self.keys.step_lock(job_id)]
        args = [trial_id, result, owner, str(int(seconds * 1000))]
        return HandIn(_text(self._hand_in_result(keys=keys, args=args)))

    def step_or_taken_in(self, job_id: str, trial_id: str, owner: str, seconds: float) -> HandIn:
        """TAKEN once a step took in the trial's handed-in result, else the step lock for `owner` if it is
        free (ACQUIRED), else BUSY."""
        keys = [self.keys.trial_results(job_id), self.keys.step_lock(job_id)]
        return HandIn(_text(self._step_or_taken_in(keys=keys, args=[trial_id, owner, int(seconds * 1000)])))

    def wait_taken_in(self, job_id: str, trial_id: str, seconds: float) -> bool:
        """Wait until a step took in the trial's result or released the step lock (or `seconds` pass); True
        when the step's token says the result was taken in."""
        taken = self.keys.result_taken_in(job_id, trial_id)
        popped = self.redis.blpop([taken, self.keys.step_lock_wake(job_id)], timeout=seconds)
        return popped is not None and popped[0] == taken

    def result_handed_in(self, job_id: str, trial_id: str) -> bool:
        """Whether the trial's result waits for a search step."""
        return bool(self.redis.hexists(self.keys.trial_results(job_id), trial_id))

    def handed_in_results(self, job_id: str) -> dict[str, str]:
        """The results waiting for the job's next search step, by trial id."""
        return {str(k): str(v) for k, v in self.redis.hgetall(self.keys.trial_results(job_id)).items()}

    def results_taken_in(self, job_id: str, trial_ids: list[str], tell: list[str]) -> None:
        """Remove results a step took in (and recorded), and leave a token for each of `tell`'s waiting
        workers (`wait_taken_in`)."""
        if not trial_ids:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.keys.trial_results(job_id), *trial_ids)
        for trial_id in tell:
            pipe.rpush(self.keys.result_taken_in(job_id, trial_id), "1")
            pipe.pexpire(self.keys.result_taken_in(job_id, trial_id), 60_000)
        pipe.execute()

    # search state
    def search_log(self, job_id: str, start: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """How many entries the job's search log holds, and those from position `start` on."""
        length, entries, _ = self.search_log_and_results(job_id, start, results=False)
        return length, entries

    def search_log_and_results(
        self, job_id: str, start: int = 0, results: bool = True
    ) -> tuple[int, list[dict[str, Any]], dict[str, str]]:
        """`search_log`, and the results handed in for the job's next step (`handed_in_results`), in one
        round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.keys.search_log(job_id))
        pipe.lrange(self.keys.search_log(job_id), start, -1)
        if results:
            pipe.hgetall(self.keys.trial_results(job_id))
        length, entries, *handed_in = pipe.execute()
        waiting = {str(k): str(v) for k, v in handed_in[0].items()} if handed_in else {}
        return int(length), [json.loads(entry) for entry in entries], waiting

    def append_search_log(self, job_id: str, entry: dict[str, Any] | None, owner: str, logged: int) -> bool:
        """Append `entry` (None: nothing, the step changed nothing) to the job's search log and note the time
        of the step, if `owner` still holds the job's step lock and the log holds `logged` entries (the step
        started from all of them); False, writing nothing, otherwise."""
        keys = [self.keys.step_lock(job_id), self.keys.search_log(job_id), self.keys.job(job_id)]
        args = [owner, str(logged), utcnow().isoformat(), json.dumps(entry) if entry is not None else ""]
        return int(self._append_search_log(keys=keys, args=args)) == 1

    def legacy_oracle_state(self, job_id: str) -> dict[str, Any] | None:
        """The whole search state of a job whose search began before the log was kept, if any."""
        raw = self.redis.get(self.keys.legacy_oracle(job_id))
        return json.loads(raw) if raw else None


def queue_trial_counts(pipe: Any, keys: StoreKeys, job_ids: list[str]) -> None:
    """Queue on `pipe` what `trial_counts` reads of each job: two replies per job."""
    for job_id in job_ids:
        pipe.hgetall(keys.trial_counts(job_id))
        pipe.hlen(keys.trial_status(job_id))


def trial_counts(
    client: Any, keys: StoreKeys, job_id: str, stored: dict[str, str], trials: int
) -> Counter[TrialStatus]:
    """How many of the job's trials have each status, from `queue_trial_counts`' two replies."""
    counts = Counter({TrialStatus(s): int(n) for s, n in stored.items() if int(n) > 0})
    if counts.total() == trials:
        return counts
    # A job whose trials were stored before the counts were kept: count them one by one.
    return Counter(TrialStatus(s) for s in client.hvals(keys.trial_status(job_id)))


def history_entries(executions: list[ExecutionRecord]) -> list[str]:
    """Executions' per-epoch histories as the store keeps them: one JSON `[execution, values]` per epoch."""
    entries: list[str] = []
    for index, execution in enumerate(executions):
        names = list(execution.history)
        epochs = len(execution.history[names[0]]) if names else 0
        for epoch in range(epochs):
            values = {name: execution.history[name][epoch] for name in names}
            entries.append(json.dumps([index, values], separators=(",", ":")))
    return entries


def _fill_history(trial: TrialRecord, entries: list[str]) -> None:
    for entry in entries:
        index, values = json.loads(entry)
        while len(trial.executions) <= index:
            trial.executions.append(ExecutionRecord())
        history = trial.executions[index].history
        for name, value in values.items():
            history.setdefault(name, []).append(value)


def stored_trial(trial: TrialRecord) -> str:
    """A trial record as stored: its history lives in its own list."""
    executions = [e.model_copy(update={"history": {}}) for e in trial.executions]
    return trial.model_copy(update={"executions": executions}).model_dump_json()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
