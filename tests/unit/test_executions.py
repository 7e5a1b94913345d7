"""A trial's executions: their seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.core.spec import JobCreate
from worker.executions import execution_seed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# --- execution_seed -----------------------------------------------------------------------------------


def spec_with_seed(seed: int | None) -> JobCreate:
    body: dict[str, Any] = json.loads((EXAMPLES / "xor-seed.json").read_text())
    body["tuner"]["seed"] = seed
    return JobCreate.model_validate(body)


def test_execution_seed_is_reproducible_with_a_job_seed() -> None:
    spec = spec_with_seed(1)
    seeds = {
        (trial, execution): execution_seed(spec, trial, execution)
        for trial in ("00", "01", "17")
        for execution in range(3)
    }
    assert seeds == {key: execution_seed(spec_with_seed(1), *key) for key in seeds}
    assert len(set(seeds.values())) == len(seeds), "each trial and execution should get its own seed"
    assert all(0 <= seed < 2**31 for seed in seeds.values())


def test_execution_seed_depends_on_the_job_seed() -> None:
    assert execution_seed(spec_with_seed(1), "03", 0) != execution_seed(spec_with_seed(2), "03", 0)


def test_execution_seed_stays_in_range_for_the_largest_job_seed() -> None:
    seed = execution_seed(spec_with_seed(2**31 - 1), "999", 9)
    assert 0 <= seed < 2**31


def test_execution_seed_without_a_job_seed_is_random() -> None:
    spec = spec_with_seed(None)
    seeds = [execution_seed(spec, "00", 0) for _ in range(8)]
    assert all(0 <= seed < 2**31 for seed in seeds)
    assert len(set(seeds)) > 1
