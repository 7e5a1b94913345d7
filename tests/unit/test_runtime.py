"""Releasing memory after a trial: what outlives it is frozen out of later collections, and unfrozen once a
few kept models have left."""

from __future__ import annotations

import gc
import weakref

from worker.model_cache import TRACED
from worker.runtime import DROPS_PER_COLLECTION, release_memory


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_what_outlives_a_trial_is_frozen_and_unfrozen_once_a_few_kept_models_left() -> None:
    TRACED.drops = 0
    survivor = _Cycle()
    release_memory()
    frozen = gc.get_freeze_count()
    assert frozen > 0 and gc.is_tracked(survivor)

    gone = weakref.ref(survivor)
    del survivor  # cyclic garbage among the frozen objects: only a collection after unfreezing frees it
    release_memory()
    assert gone() is not None, "frozen: no collection sees it"
    TRACED.drops = DROPS_PER_COLLECTION - 1
    release_memory()
    assert gone() is not None, "too few models left to collect for"
    TRACED.drops += 1
    release_memory()
    assert TRACED.drops == 0
    assert gone() is None, "unfrozen and collected"
    gc.unfreeze()
