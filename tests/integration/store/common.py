"""Constants and helpers shared by the telemetry store suites (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from tapline.store.telemetry import HistoryPoint, Sample, SeriesKey, TelemetryStore

NOW = int(datetime(2025, 3, 10, 12, 0, tzinfo=UTC).timestamp() * 1000)  # hour-aligned
PRESSURE = SeriesKey("PR-0001", "plc/OutletPressure")
LEVEL = SeriesKey("PR-0001", "plc/TankLevel")
OTHER_ROOM = SeriesKey("PR-0002", "plc/OutletPressure")

MakeStore = Callable[..., TelemetryStore]


async def series_ids(store: TelemetryStore, *keys: SeriesKey) -> list[int]:
    ids = await store.ensure_series(keys)
    return [ids[k] for k in keys]


def point(ts: int, value: float, count: int = 1, quality: int = 0) -> HistoryPoint:
    return HistoryPoint(ts, value, value, value, value, count, quality)


async def race_compactions_with_late_writes(
    a: TelemetryStore,
    b: TelemetryStore,
    c: TelemetryStore,
    ids: list[int],
    hours: list[int],
    minutes: int,
    chunk: int,
    now: int,
) -> tuple[list[Sample], list[Sample], int, int, int]:
    """The race of the compaction suites: every even minute of ``hours`` written and rolled up at
    ``now``, then ``a`` and ``c`` compact while ``b`` writes every odd minute (new values, into the very
    hours being packed) mixed with replays of even ones, ``chunk`` values a write. Returns (even, odd,
    blocks of ``a``, values ``b`` found new, blocks of ``c``)."""
    even = [
        Sample(sid, h + i * 60_000, float(i), 0) for sid in ids for h in hours for i in range(0, minutes, 2)
    ]
    await a.write(even)
    await a.rollup(now)
    odd = [
        Sample(sid, h + i * 60_000, float(i), 0) for sid in ids for h in hours for i in range(1, minutes, 2)
    ]
    replay = even[::7]

    async def late_writes() -> int:
        new = 0
        for k in range(0, len(odd), chunk):
            new += await b.write(odd[k : k + chunk] + replay[k // 10 : k // 10 + chunk // 10])
            await asyncio.sleep(0)
        return new

    blocks_a, new, blocks_c = await asyncio.gather(a.compact(now), late_writes(), c.compact(now))
    return even, odd, blocks_a, new, blocks_c
