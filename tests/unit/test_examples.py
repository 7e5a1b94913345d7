"""The project's copy of the contract's example requests stays identical to ../shared/examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.core.spec import JobCreate

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "examples"
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


def test_the_contract_examples_are_all_here() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"xor-seed.json", "xor-classifier.json"} <= names


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/examples exists only beside a checkout")
def test_examples_match_shared_examples() -> None:
    shared = {path.name: json.loads(path.read_text()) for path in SHARED.glob("*.json")}
    ours = {path.name: json.loads(path.read_text()) for path in EXAMPLES}
    assert ours == shared


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_verbatim(path: Path) -> None:
    JobCreate.model_validate(json.loads(path.read_text()))
