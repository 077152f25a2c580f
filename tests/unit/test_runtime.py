"""GC tuning of the cloud process: thresholds raised, start-up objects frozen, and undone on request."""

from __future__ import annotations

import gc

from tapline.runtime import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_and_raises_thresholds_then_restores() -> None:
    before = gc.get_threshold()
    survivor = [object() for _ in range(10)]  # exists before the freeze: frozen with everything else

    restore = tune_gc()
    try:
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > len(survivor)
    finally:
        restore()

    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
