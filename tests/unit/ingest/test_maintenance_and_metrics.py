"""Scheduled rollups/retention (failures logged and counted, bugs not swallowed) and the /metrics format."""

from __future__ import annotations

import asyncio
import math

import pytest

from tapline.ingest.history import aggregate
from tapline.ingest.maintenance import Maintenance
from tapline.ingest.metrics import Exposition, Histogram
from tapline.store.errors import StoreUnavailable
from tapline.store.telemetry import HistoryPoint
from tests.helpers import eventually

from .kit import MemoryStore


async def _at_least(items: list[int], count: int) -> bool:
    return len(items) >= count


class FlakyStore(MemoryStore):
    def __init__(self, error: Exception | None) -> None:
        super().__init__()
        self.error = error
        self.rollups: list[int] = []
        self.compactions: list[int] = []

    async def rollup(self, now_ms: int) -> int:
        if self.error is not None:
            raise self.error
        self.rollups.append(now_ms)
        return 7

    async def apply_retention(self, now_ms: int) -> int:
        if self.error is not None:
            raise self.error
        return 2

    async def compact(self, now_ms: int) -> int:
        if self.error is not None:
            raise self.error
        self.compactions.append(now_ms)
        return 3


async def test_rollup_failure_is_counted_and_the_next_run_catches_up() -> None:
    store = FlakyStore(StoreUnavailable("database restarting"))
    maintenance = Maintenance(store, lambda: 120_000)
    assert await maintenance.rollup_once() is None
    assert await maintenance.retention_once() is None
    assert await maintenance.compact_once() is None
    counters = maintenance.counters
    assert (counters.rollup_failures, counters.retention_failures, counters.compaction_failures) == (1, 1, 1)
    assert maintenance.rolled_up_to is None
    store.error = None
    assert await maintenance.rollup_once(180_000) == 7
    assert maintenance.rolled_up_to == 180_000
    assert await maintenance.retention_once() == 2
    assert await maintenance.compact_once() == 3
    out = Exposition()
    maintenance.collect(out)
    assert "tapline_store_rollup_failures_total 1\n" in out.text()
    assert "tapline_store_rolled_up_to_ms 180000\n" in out.text()
    assert "tapline_store_compacted_blocks_total 3\n" in out.text()
    assert "tapline_store_compaction_failures_total 1\n" in out.text()


async def test_a_bug_in_a_rollup_is_not_swallowed() -> None:
    maintenance = Maintenance(FlakyStore(ZeroDivisionError("bug")), lambda: 0, rollup_interval_s=0.01)
    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(maintenance.run(), 1)


async def test_the_schedule_runs_rollups_every_period() -> None:
    store = FlakyStore(None)
    clock = iter(range(60_000, 10**9, 60_000))  # every clock read is a minute later
    maintenance = Maintenance(store, lambda: next(clock), rollup_interval_s=0.001)
    task = asyncio.create_task(maintenance.run())
    await eventually(lambda: _at_least(store.rollups, 3), timeout=5, interval=0.001, what="3 rollups")
    task.cancel()
    assert store.rollups == sorted(set(store.rollups))
    assert maintenance.rolled_up_to == store.rollups[-1]
    assert maintenance.counters.retention_runs == 1  # retention has its own, longer period
    assert len(store.compactions) == 1  # right after the first rollup, then every 300 s


def test_exposition_text_format() -> None:
    out = Exposition()
    out.counter("x_total", "Things.", 3)
    out.counter("x_total", "Things.", 4, {"reason": 'a"b\\c\nd'})
    out.gauge("g", "A gauge.", 0.25)
    out.gauge("nan", "Not a number.", math.nan)
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 0.5, 3.0):
        histogram.observe(value)
    out.histogram("h_seconds", "Durations.", histogram)
    assert out.text() == (
        "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n"
        'x_total{reason="a\\"b\\\\c\\nd"} 4\n'
        "# HELP g A gauge.\n# TYPE g gauge\ng 0.25\n"
        "# HELP nan Not a number.\n# TYPE nan gauge\nnan NaN\n"
        "# HELP h_seconds Durations.\n# TYPE h_seconds histogram\n"
        'h_seconds_bucket{le="0.1"} 1\nh_seconds_bucket{le="1"} 3\nh_seconds_bucket{le="+Inf"} 4\n'
        "h_seconds_sum 4.05\nh_seconds_count 4\n"
    )


def test_aggregate_groups_raw_points_like_the_store() -> None:
    raw = [HistoryPoint(ts, v, v, v, v, 1, q) for ts, v, q in [(0, 1.0, 0), (500, 3.0, 3), (1000, 2.0, 0)]]
    assert aggregate(raw, 1000) == [
        HistoryPoint(0, 1.0, 3.0, 2.0, 3.0, 2, 3),
        HistoryPoint(1000, 2.0, 2.0, 2.0, 2.0, 1, 0),
    ]
    assert aggregate([], 1000) == []
