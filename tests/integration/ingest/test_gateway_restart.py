"""The real gateway (simulated Modbus room -> pymodbus -> edge history -> Sparkplug) against a host that is
killed between receive and write and restarted: every value in the gateway's history ends up stored once.

The gateway does not confirm replays (yet), so the restarted host asks a bounded number of times and then
closes the hole unconfirmed — this test also shows that path ends without loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from tapline.bootstrap import room_config
from tapline.edge.app import Gateway, GatewaySettings
from tapline.ingest.host import IngestSettings
from tapline.mqtt import BrokerUrl
from tapline.sim.runner import SimulatedCity
from tapline.store.telemetry import SeriesKey
from tests.helpers import eventually

from .broker_kit import RunningHost, running_host
from .stores import NeverWrites

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def history_points(path: Path) -> set[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT point, ts, value FROM history").fetchall()
    return {(point, ts) for point, ts, value in rows if not isinstance(value, str)}


async def stored_points(host: RunningHost, site: str, points: set[str]) -> set[tuple[str, int]]:
    ids = await host.store.ensure_series([SeriesKey(site, p) for p in sorted(points)])
    out: set[tuple[str, int]] = set()
    for key, series_id in ids.items():
        out |= {(key.point, r.ts) for r in await host.store.history(series_id, 0, 2**62)}
    return out


async def test_gateway_history_survives_a_host_killed_mid_batch(
    tmp_path: Path, mqtt_url: str, unique_group: str
) -> None:
    broker = BrokerUrl.parse(mqtt_url)
    options = IngestSettings(
        host_id=f"h{unique_group}",
        groups=(unique_group,),
        reorder_timeout_ms=500,
        batch_age_s=0.05,
        rebirth_retry_ms=500,
        replay_confirm_timeout_ms=1_000,
        replay_max_attempts=2,
    )
    city = SimulatedCity.build(1, district_names=[unique_group])
    await city.start()
    [room] = city.rooms.values()
    site = room.spec.site_id
    gateway = Gateway(
        room_config(room, room.server.port, 0.1, 0.3),
        {slot.name: slot.register_map for slot in room.layout},
        GatewaySettings(broker=broker, data_dir=tmp_path / "edge", primary_host=options.host_id),
    )
    tasks = [asyncio.create_task(city.run()), asyncio.create_task(gateway.run())]
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    try:
        async with running_host(url, broker, options) as first:
            await eventually(lambda: _stored_some(first), timeout=20, what="first values stored")
            first.service.writer.store = NeverWrites(first.store)  # type: ignore[assignment]
            seen = first.service.counters.readings
            await eventually(lambda: _received(first, seen + 20), timeout=20, what="more values received")
        async with running_host(url, broker, options) as second:
            await eventually(lambda: _replayed(second), timeout=20, what="replay after restart")
            await asyncio.sleep(0.5)  # a few more live values after the replay
            tasks[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[1]
            expected = history_points(tmp_path / "edge" / f"{site}.history.db")
            points = {p for p, _ in expected}

            async def complete() -> bool:
                await second.service.flush()
                return await stored_points(second, site, points) >= expected

            await eventually(complete, timeout=20, what="every gateway history row stored")
            assert second.service.counters.replays_requested >= 1
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await city.stop()


async def _stored_some(host: RunningHost) -> bool:
    return host.service.counters.stored > 50


async def _received(host: RunningHost, count: int) -> bool:
    return host.service.counters.readings >= count


async def _replayed(host: RunningHost) -> bool:
    return host.service.counters.historical > 0
