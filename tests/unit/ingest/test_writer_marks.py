"""Background flushes save commit marks at most every ``marks_every_s``, but never hold back a room's
first mark; an explicit flush saves whatever is pending."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

from tapline.ingest.marks import CommitMarks
from tapline.ingest.metrics import IngestCounters
from tapline.ingest.writer import BatchWriter
from tapline.store.relational import NodeMark, RelationalStore
from tapline.store.telemetry import TelemetryStore

A, B = ("jianghan", "PR-0001"), ("jianghan", "PR-0002")


class Relational:
    """Records every ``save_marks`` call."""

    def __init__(self) -> None:
        self.saved: list[list[tuple[str, int]]] = []

    async def save_marks(self, marks: Sequence[NodeMark], now_ms: int) -> None:
        self.saved.append(sorted((m.site, m.committed_ms) for m in marks))


async def _background_flush(batch: BatchWriter) -> None:
    await batch.flush(background=True)
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t.get_name() == "ingest-relational-writes"))


async def test_marks_wait_for_the_interval_but_a_rooms_first_mark_does_not() -> None:
    relational, marks = Relational(), CommitMarks()
    store = cast(TelemetryStore, object())  # no telemetry in these flushes
    batch = BatchWriter(store, cast(RelationalStore, relational), marks, IngestCounters(), marks_every_s=3600)
    marks.live(A, 1_000)
    await _background_flush(batch)
    assert relational.saved == [[("PR-0001", 1_000)]]  # the first ever: at once

    marks.live(A, 2_000)
    await _background_flush(batch)
    assert len(relational.saved) == 1  # held: the interval has not passed

    marks.live(B, 2_000)
    await _background_flush(batch)  # a room's first mark goes at once, with what was held
    assert relational.saved[-1] == [("PR-0001", 2_000), ("PR-0002", 2_000)]

    marks.live(A, 3_000)
    await _background_flush(batch)
    assert len(relational.saved) == 2
    await batch.flush()  # explicit (shutdown): everything pending
    assert relational.saved[-1] == [("PR-0001", 3_000)]


async def test_without_an_interval_every_flush_saves() -> None:
    relational, marks = Relational(), CommitMarks()
    store = cast(TelemetryStore, object())
    batch = BatchWriter(store, cast(RelationalStore, relational), marks, IngestCounters(), marks_every_s=0)
    for ts in (1_000, 2_000, 3_000):
        marks.live(A, ts)
        await _background_flush(batch)
    assert relational.saved == [[("PR-0001", 1_000)], [("PR-0001", 2_000)], [("PR-0001", 3_000)]]
