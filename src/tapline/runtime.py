"""Process-wide tuning of the long-running cloud process (``tapline serve``, ``tapline demo``).

Why the garbage collector is tuned: the ingest allocates a few objects per value (a ``Reading``, a row
tuple, list cells) at hundreds of thousands of values a second, and many of them live for a flush
period (the pending batch), so they survive the young collections and are promoted. CPython then runs
a *full* collection whenever the promoted objects exceed a quarter of the old generation, and a full
collection walks every tracked object of the process — at city scale the alarm engine's and the
latest-value cache's per-point state, hundreds of thousands of objects. Measured with the direct feed
(``tests/bench/ingest_direct.py``, 1,000 rooms × 10 points × 60 messages, a ``gc.callbacks`` probe):
16 full collections took 1.5–1.8 s of 9–13 s of CPU, i.e. 15–20 % of the ingest; with the thresholds
below, 0 full collections and 0.06 s in young ones. The ingest's data creates no reference cycles
(readings, rows and events are tuples of numbers and strings), so collecting rarely loses nothing:
memory stays bounded by what is referenced, and the occasional cycle (an exception's traceback, a
cancelled task) is still collected, later.

``gc.freeze()`` after start-up moves everything built so far (modules, the warm cache, the rule plans)
out of the collector's sight for good: those objects live as long as the process.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from tapline.logs import get_logger

__all__ = ["GC_THRESHOLDS", "tune_gc"]

log = get_logger(__name__)

GC_THRESHOLDS = (50_000, 20, 100)
"""Young collection every 50,000 net allocations (CPython's default: 700); a middle one every 20 young
ones; a full one every 100 middle ones (CPython additionally waits for 25 % growth of the old ones)."""


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> Callable[[], None]:
    """Freeze what exists now and raise the collection thresholds; returns a function that undoes it
    (for an in-process benchmark or a test that must leave the interpreter as it found it)."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    log.info("gc_tuned", thresholds=list(thresholds), frozen=gc.get_freeze_count())

    def restore() -> None:
        gc.set_threshold(*previous)
        gc.unfreeze()

    return restore
