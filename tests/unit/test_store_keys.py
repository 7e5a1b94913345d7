"""The store's key names: every name under the prefix, and every key of a job one that deleting it removes."""

from __future__ import annotations

import inspect

import pytest

from service.core.states import JobStatus
from service.core.store_keys import TENANT_JOBS, TENANT_STATUS, JobPart, StoreKeys, TrialPart, broker_lists

KEYS = StoreKeys("p")
JOB = "0b7c5a52-2f0d-4c53-9a53-6c3f6f0e7a11"


def _job_scoped_names() -> dict[str, str]:
    """What each method naming a key of one job (or of one of its trials) names, by method."""
    names = {}
    for name, method in inspect.getmembers(KEYS, inspect.ismethod):
        parameters = list(inspect.signature(method).parameters)
        if name in {"job_part", "trial_part"} or not parameters or parameters[0] != "job_id":
            continue
        names[name] = method(JOB, "t7") if parameters == ["job_id", "trial_id"] else method(JOB)
    return names


def test_every_key_of_a_job_is_one_its_deletion_names() -> None:
    names = _job_scoped_names()
    assert len(names) >= 13, names  # the job's hash and every key below were found
    deleted = {KEYS.job(JOB)} | {KEYS.job_part(JOB, part) for part in JobPart}
    deleted |= {KEYS.trial_part(JOB, part, "t7") for part in TrialPart}
    assert set(names.values()) <= deleted, set(names.values()) - deleted


def test_each_part_of_a_job_has_a_name_of_its_own() -> None:
    names = _job_scoped_names()
    assert len(set(names.values())) == len(names)
    for part in JobPart:
        assert KEYS.job_part(JOB, part) in names.values(), part
    for trial_part in TrialPart:
        assert KEYS.trial_part(JOB, trial_part, "t7") in names.values(), trial_part


def test_the_layout_is_the_documented_one() -> None:
    assert KEYS.job(JOB) == f"p:job:{JOB}"
    assert KEYS.trial_lease(JOB, "t7") == f"p:job:{JOB}:lease:t7"
    assert KEYS.trial_history(JOB, "t7") == f"p:job:{JOB}:history:t7"
    assert KEYS.step_lock(JOB) == f"p:job:{JOB}:lock"
    assert KEYS.jobs() == "p:jobs" and KEYS.jobs(JobStatus.RUNNING) == "p:jobs:status:running"
    assert KEYS.tenant_jobs("acme") == "p:tenant:acme:jobs"
    assert KEYS.tenant_jobs("acme", JobStatus.QUEUED) == "p:tenant:acme:jobs:status:queued"
    assert KEYS.tenant_trials("acme", "2026-12-04") == "p:tenant:acme:trials:2026-12-04"
    assert KEYS.worker_heartbeat("n1") == "p:worker:n1:heartbeat"
    assert KEYS.queue_served_at("gpu") == "p:queue:gpu:served-at"
    assert KEYS.idempotency("jobs", "acme", "ab") == "p:idempotency:jobs:acme:ab"


@pytest.mark.parametrize("status", list(JobStatus))
def test_names_lua_scripts_build_from_prefixes_are_the_methods_names(status: JobStatus) -> None:
    assert KEYS.jobs_status_prefix + status.value == KEYS.jobs(status)
    assert KEYS.tenant_prefix + "acme" + TENANT_STATUS + status.value == KEYS.tenant_jobs("acme", status)
    assert KEYS.tenant_prefix + "acme" + TENANT_JOBS == KEYS.tenant_jobs("acme")


def test_every_name_is_under_the_prefix() -> None:
    for name, member in inspect.getmembers(KEYS):
        if name.startswith("_") or name == "prefix":
            continue
        if inspect.ismethod(member):
            parameters = inspect.signature(member).parameters.values()
            arguments = ["x"] * sum(p.default is inspect.Parameter.empty for p in parameters)
            if name in {"job_part", "trial_part"}:
                arguments[1] = JobPart.DATA if name == "job_part" else TrialPart.LEASE
            member = member(*arguments)
        assert isinstance(member, str) and member.startswith("p:"), name


def test_a_queue_has_one_broker_list_per_priority_step_the_first_named_after_it() -> None:
    lists = broker_lists("cpu")
    assert lists[0] == "cpu" and len(lists) == len(set(lists)) > 1


def test_the_broker_lists_are_the_ones_kombu_writes() -> None:
    """The names are written out (so the API starts without kombu): they must stay kombu's."""
    from kombu.transport.redis import Channel

    expected = [f"cpu{Channel.sep}{step}" if step else "cpu" for step in Channel.priority_steps]
    assert broker_lists("cpu") == expected
