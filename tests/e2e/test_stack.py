"""End to end: simulated Modbus rooms → gateways → MQTT (Sparkplug B) → ingest → store → API.

Every hop is real: pymodbus TCP servers on loopback, the gateways' pymodbus clients, a real MQTT broker
(the embedded amqtt broker, or the Mosquitto server), the SQLite telemetry store and the FastAPI app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tapline.api.app import create_app
from tapline.bootstrap import Stack, build_stack, demo_users
from tapline.broker import EmbeddedBroker
from tapline.domain.model import Quality
from tapline.mqtt import BrokerUrl
from tapline.registers.layout import layout_points
from tapline.store.telemetry import SeriesKey
from tests.helpers import eventually, free_port

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def running(stack: Stack) -> AsyncIterator[Stack]:
    task = asyncio.create_task(stack.run(), name="stack")
    try:
        yield stack
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def expected_keys(stack: Stack) -> list[SeriesKey]:
    return [
        SeriesKey(site, spec.path)
        for site, room in stack.city.rooms.items()
        for spec in layout_points(room.layout)
    ]


async def assert_every_point_stored_good(stack: Stack) -> None:
    keys = expected_keys(stack)
    store = stack.cloud.store

    async def all_stored() -> bool:
        await stack.cloud.ingest.flush()
        ids = await store.ensure_series(keys)
        latest = await store.latest(list(ids.values()))
        return all(ids[k] in latest for k in keys)

    await eventually(all_stored, timeout=60, what="every point of every room in the store")
    ids = await store.ensure_series(keys)
    latest = await store.latest(list(ids.values()))
    bad = [k for k in keys if latest[ids[k]].quality != Quality.GOOD]
    assert bad == [], f"points stored without good quality: {bad[:10]}"
    assert len(keys) >= 3 * 39  # the smallest room: PLC 7, two drives 2 × 10, wq 3, env 5, power 4


async def make_stack(broker_url: str, tmp_path: Path, districts: list[str]) -> Stack:
    return await build_stack(
        broker=BrokerUrl.parse(broker_url),
        store_url=f"sqlite:///{tmp_path / 'telemetry.db'}",
        data_dir=tmp_path,
        sites=3,
        district_names=districts,
        fast_poll_s=0.2,
        slow_poll_s=0.5,
    )


async def test_demo_stack_embedded_broker_every_point_arrives(tmp_path: Path) -> None:
    broker = EmbeddedBroker("127.0.0.1", free_port())
    await broker.start()
    try:
        stack = await make_stack(broker.url, tmp_path, ["jianghan", "qiaokou"])
        async with running(stack):
            await assert_every_point_stored_good(stack)

            # The same picture through the REST API, as a user sees it.
            app = create_app(stack.cloud.services, demo_users("demo"), public_read=True)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                sites = (await client.get("/api/v1/sites")).json()
                assert [s["id"] for s in sites] == ["PR-0001", "PR-0003", "PR-0002"]
                assert {s["status"] for s in sites} == {"online"}
                detail = (await client.get("/api/v1/sites/PR-0001")).json()
                assert detail["points"]["plc/OutletPressure"]["quality"] == "good"
                assert 0.2 < detail["points"]["plc/OutletPressure"]["value"] < 0.8
                assert {d["status"] for d in detail["devices"]} == {"online"}
                missing = await client.get("/api/v1/sites/PR-9999")
                assert missing.status_code == 404
                assert missing.json()["error"]["code"] == "site_not_found"
    finally:
        await broker.stop()


@pytest.mark.mosquitto
async def test_stack_through_mosquitto_every_point_arrives(
    tmp_path: Path, mqtt_url: str, unique_group: str
) -> None:
    stack = await make_stack(mqtt_url, tmp_path, [f"{unique_group}a", f"{unique_group}b"])
    async with running(stack):
        await assert_every_point_stored_good(stack)
        assert {s.status for s in stack.cloud.live.sites.values()} == {"online"}


async def test_pump_trip_becomes_one_drive_fault_incident_end_to_end(tmp_path: Path) -> None:
    """Fault in the simulated drive → Modbus → gateway → MQTT → ingest → alarm engine → incident."""
    broker = EmbeddedBroker("127.0.0.1", free_port())
    await broker.start()
    try:
        stack = await make_stack(broker.url, tmp_path, ["jianghan", "qiaokou"])
        async with running(stack):
            await assert_every_point_stored_good(stack)
            engine = stack.cloud.services.extras["alarms"]
            correlator = stack.cloud.services.extras["incidents"]
            assert engine.active("PR-0001") == []
            stack.city.inject("pump_trip", site="PR-0001", device="vfd1")

            async def drive_fault_incident() -> bool:
                return any(
                    i.as_dict()["root_cause"]["kind"] == "drive_fault" and "PR-0001" in i.as_dict()["sites"]
                    for i in correlator.incidents()
                )

            await eventually(drive_fault_incident, timeout=30, what="a drive-fault incident for PR-0001")
            incident = next(i.as_dict() for i in correlator.incidents() if "PR-0001" in i.as_dict()["sites"])
            assert incident["devices"][0] == "vfd1"
            assert engine.active_counts("PR-0001")["high"] + engine.active_counts("PR-0001")["critical"] >= 1
            assert all(not engine.active(site) for site in ("PR-0002", "PR-0003"))
            service = stack.cloud.services.extras["alarm_service"]

            async def journaled() -> bool:  # the cloud's journal writer put it in the relational store
                rows = await service.history(0, 2**62, site="PR-0001")
                return any(r["rule"] == "drive_fault" and r["device"] == "vfd1" for r in rows)

            await eventually(journaled, timeout=10, what="the drive fault in the persisted alarm journal")
    finally:
        await broker.stop()
