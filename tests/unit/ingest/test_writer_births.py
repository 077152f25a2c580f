"""``BatchWriter`` keeps births metadata per device; the newest declaration of each point wins."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from tapline.ingest.marks import CommitMarks
from tapline.ingest.metrics import IngestCounters
from tapline.ingest.writer import BatchWriter
from tapline.store.errors import StoreUnavailable
from tapline.store.relational import DeviceRow, PointRow, RelationalStore, SiteRow
from tapline.store.telemetry import TelemetryStore


class Relational:
    """Records what ``record_births`` was given; fails while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.points: list[PointRow] = []
        self.meanwhile: list[Callable[[], None]] = []  # births arriving while a write is under way

    async def record_births(
        self, sites: Sequence[SiteRow], devices: Sequence[DeviceRow], points: Sequence[PointRow]
    ) -> None:
        while self.meanwhile:
            self.meanwhile.pop()()
        if self.down:
            raise StoreUnavailable("down")
        self.points += points


def point(device: str, name: str, unit: str, at: int) -> PointRow:
    return PointRow("PR-0001", f"{device}/{name}", device, "Double", unit, None, None, at)


def writer(relational: Relational) -> BatchWriter:
    store = cast(TelemetryStore, object())  # no telemetry is written in these tests
    return BatchWriter(store, cast(RelationalStore, relational), CommitMarks(), IngestCounters())


def _by_point(rows: list[PointRow]) -> dict[str, Any]:
    return {row.point: row.unit for row in rows}


async def test_a_device_born_twice_between_flushes_keeps_each_points_newest_declaration() -> None:
    relational = Relational()
    batch = writer(relational)
    batch.device_born(
        DeviceRow("PR-0001", "plc", 1), [point("plc", "Flow", "m3/h", 1), point("plc", "Old", "m", 1)]
    )
    batch.device_born(DeviceRow("PR-0001", "vfd1", 1), [point("vfd1", "Hz", "Hz", 1)])
    batch.device_born(DeviceRow("PR-0001", "plc", 2), [point("plc", "Flow", "L/s", 2)])
    await batch.flush()
    assert len(relational.points) == 3
    assert _by_point(relational.points) == {"plc/Flow": "L/s", "plc/Old": "m", "vfd1/Hz": "Hz"}


async def test_births_kept_after_a_failed_write_stay_behind_newer_ones() -> None:
    relational = Relational()
    batch = writer(relational)
    batch.device_born(
        DeviceRow("PR-0001", "plc", 1), [point("plc", "Flow", "m3/h", 1), point("plc", "Old", "m", 1)]
    )
    relational.down = True
    await batch.flush()
    assert relational.points == []
    batch.device_born(DeviceRow("PR-0001", "plc", 2), [point("plc", "Flow", "L/s", 2)])
    relational.down = False
    await batch.flush()
    assert _by_point(relational.points) == {"plc/Flow": "L/s", "plc/Old": "m"}
    assert not batch.has_work


async def test_births_arriving_during_a_failed_write_win_over_the_kept_ones() -> None:
    relational = Relational()
    batch = writer(relational)
    batch.device_born(
        DeviceRow("PR-0001", "plc", 1), [point("plc", "Flow", "m3/h", 1), point("plc", "Old", "m", 1)]
    )
    relational.down = True
    relational.meanwhile.append(
        lambda: batch.device_born(DeviceRow("PR-0001", "plc", 2), [point("plc", "Flow", "L/s", 2)])
    )
    await batch.flush()
    relational.down = False
    await batch.flush()
    assert _by_point(relational.points) == {"plc/Flow": "L/s", "plc/Old": "m"}
