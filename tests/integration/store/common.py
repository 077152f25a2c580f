"""Constants and helpers shared by the telemetry store suites (fixtures are in ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from tapline.store.telemetry import HistoryPoint, SeriesKey, TelemetryStore

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
