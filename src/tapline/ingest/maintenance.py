"""Scheduled store maintenance: rollups (1-minute and 1-hour), compaction and retention.

Rules:
- The store never reads the clock for these (``rollup``, ``compact``, ``apply_retention``: ``now_ms``); this
  scheduler is the one place that does, so tests drive ``rollup_once`` with any time.
- A failing run (``StoreError``: database down, lock timeout) is logged and counted and tried again at
  the next period; rollups catch up by themselves (the store keeps its own marks). Anything else is a
  bug and propagates to the task supervisor.
- Compaction runs right after a rollup (it packs only rolled-up hours) every ``compact_interval_s``: an
  hour becomes due once per hour, so a run every few minutes keeps at most ``compact_after_ms`` plus
  that of raw rows unpacked.
- ``rolled_up_to`` is the clock value of the last successful rollup: rollup buckets that closed before
  it are complete, so the history service reads rollups up to there and raw samples after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tapline.ingest.metrics import Exposition, Histogram
from tapline.logs import get_logger
from tapline.store.errors import StoreError
from tapline.store.telemetry import TelemetryStore

__all__ = ["Maintenance", "MaintenanceCounters"]

log = get_logger(__name__)


@dataclass
class MaintenanceCounters:
    rollups: int = 0
    rollup_rows: int = 0
    rollup_failures: int = 0
    retention_runs: int = 0
    retention_removed: int = 0
    retention_failures: int = 0
    compactions: int = 0
    compacted_blocks: int = 0
    compaction_failures: int = 0
    rollup_seconds: Histogram = field(default_factory=Histogram)
    compaction_seconds: Histogram = field(default_factory=Histogram)


class Maintenance:
    """Runs rollups every ``rollup_interval_s``, compaction every ``compact_interval_s`` and retention
    every ``retention_interval_s``."""

    def __init__(
        self,
        store: TelemetryStore,
        clock_ms: Callable[[], int],
        *,
        rollup_interval_s: float = 30.0,
        retention_interval_s: float = 3_600.0,
        compact_interval_s: float = 300.0,
    ) -> None:
        self.store = store
        self.clock_ms = clock_ms
        self.rollup_interval_s = rollup_interval_s
        self.retention_interval_s = retention_interval_s
        self.compact_interval_s = compact_interval_s
        self.counters = MaintenanceCounters()
        self.rolled_up_to: int | None = None

    async def rollup_once(self, now_ms: int | None = None) -> int | None:
        """One rollup; the rows written, or None if it failed (logged and counted)."""
        now = self.clock_ms() if now_ms is None else now_ms
        started = time.perf_counter()
        rows = await self._attempt("rollup", self.store.rollup, now)
        if rows is None:
            self.counters.rollup_failures += 1
            return None
        self.counters.rollup_seconds.observe(time.perf_counter() - started)
        self.counters.rollups += 1
        self.counters.rollup_rows += rows
        self.rolled_up_to = now if self.rolled_up_to is None else max(self.rolled_up_to, now)
        return rows

    async def compact_once(self, now_ms: int | None = None) -> int | None:
        """One compaction; the blocks written, or None if it failed (logged and counted)."""
        started = time.perf_counter()
        blocks = await self._attempt("compaction", self.store.compact, now_ms)
        if blocks is None:
            self.counters.compaction_failures += 1
            return None
        self.counters.compaction_seconds.observe(time.perf_counter() - started)
        self.counters.compactions += 1
        self.counters.compacted_blocks += blocks
        return blocks

    async def retention_once(self, now_ms: int | None = None) -> int | None:
        """One retention pass; what was removed, or None if it failed (logged and counted)."""
        removed = await self._attempt("retention", self.store.apply_retention, now_ms)
        if removed is None:
            self.counters.retention_failures += 1
            return None
        self.counters.retention_runs += 1
        self.counters.retention_removed += removed
        if removed:
            log.info("retention_applied", removed=removed)
        return removed

    async def _attempt(
        self, job: str, call: Callable[[int], Awaitable[int]], now_ms: int | None
    ) -> int | None:
        """``call(now)``, or None (logged) when the store fails; a bug propagates."""
        try:
            return await call(self.clock_ms() if now_ms is None else now_ms)
        except StoreError as exc:
            log.warning(f"{job}_failed", error=str(exc))
            return None

    async def run(self) -> None:
        """Forever: a rollup now and every period, compaction and retention at start and every period."""
        loop = asyncio.get_running_loop()
        next_retention = next_compaction = loop.time()
        while True:
            rolled = await self.rollup_once()
            if rolled is not None and loop.time() >= next_compaction:
                await self.compact_once()
                next_compaction = loop.time() + self.compact_interval_s
            if loop.time() >= next_retention:
                await self.retention_once()
                next_retention = loop.time() + self.retention_interval_s
            await asyncio.sleep(self.rollup_interval_s)

    def collect(self, out: Exposition) -> None:
        c, p = self.counters, "tapline_store_"
        out.counter(p + "rollups_total", "Successful rollup runs.", c.rollups)
        out.counter(p + "rollup_rows_total", "Rollup rows written.", c.rollup_rows)
        out.counter(p + "rollup_failures_total", "Rollup runs that failed.", c.rollup_failures)
        out.histogram(p + "rollup_seconds", "Duration of rollup runs.", c.rollup_seconds)
        out.counter(p + "compactions_total", "Successful compaction runs.", c.compactions)
        out.counter(p + "compacted_blocks_total", "Blocks written by compaction.", c.compacted_blocks)
        out.counter(p + "compaction_failures_total", "Compaction runs that failed.", c.compaction_failures)
        out.histogram(p + "compaction_seconds", "Duration of compaction runs.", c.compaction_seconds)
        out.counter(p + "retention_runs_total", "Successful retention runs.", c.retention_runs)
        out.counter(
            p + "retention_removed_total", "Partitions or rows removed by retention.", c.retention_removed
        )
        out.counter(p + "retention_failures_total", "Retention runs that failed.", c.retention_failures)
        if self.rolled_up_to is not None:
            out.gauge(p + "rolled_up_to_ms", "Clock of the last successful rollup (ms).", self.rolled_up_to)
