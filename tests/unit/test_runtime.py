"""Releasing memory after a trial: what outlives it is frozen out of later collections, and unfrozen once a
kept model has left."""

from __future__ import annotations

import gc
import weakref

from worker.model_cache import TRACED
from worker.runtime import release_memory


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_what_outlives_a_trial_is_frozen_and_unfrozen_once_a_kept_model_left() -> None:
    TRACED.dropped = False
    survivor = _Cycle()
    release_memory()
    frozen = gc.get_freeze_count()
    assert frozen > 0 and gc.is_tracked(survivor)

    gone = weakref.ref(survivor)
    del survivor  # cyclic garbage among the frozen objects: only a collection after unfreezing frees it
    release_memory()
    assert gone() is not None, "frozen: no collection sees it"
    TRACED.dropped = True
    release_memory()
    assert not TRACED.dropped
    assert gone() is None, "unfrozen and collected"
    gc.unfreeze()
