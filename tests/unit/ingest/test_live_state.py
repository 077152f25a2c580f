"""The latest-value cache behind GET /sites/{id}: sessions -> room status, STALE marking, warm start,
historical data never overwriting live values. Test names carry the TCK ids they cover."""

from __future__ import annotations

from pathlib import Path

from tapline.domain.model import Quality, Reading
from tapline.ingest.host import IngestService
from tapline.ingest.live import LiveState, PointInfo
from tapline.mqtt import Message

from .kit import Clock, EdgeDouble, deliver, open_host, sqlite_url
from .test_exactly_once import memory_host

GROUP, NODE = "jianghan", "PR-0001"


async def born(clock: Clock) -> tuple[IngestService, EdgeDouble]:
    host, _, _ = await memory_host(clock)
    edge = EdgeDouble(GROUP, NODE)
    await deliver(host, edge.births(clock.now))
    await deliver(host, edge.record(clock.now + 1_000))
    return host, edge


async def test_room_is_online_when_node_and_every_device_are_born() -> None:
    clock = Clock()
    host, _ = await born(clock)
    room = host.live.sites[NODE]
    assert room.status == "online"
    assert {name: d.online for name, d in room.devices.items()} == {"plc": True, "vfd1": True}
    assert room.points["plc/OutletPressure"].quality is Quality.GOOD


async def test_tck_id_operational_behavior_edge_node_termination_host_action_ddeath_devices_tags_stale() -> (
    None
):
    clock = Clock()
    host, edge = await born(clock)
    await deliver(host, [edge.session.ddeath("vfd1", clock.now + 2_000)])
    room = host.live.sites[NODE]
    assert room.status == "degraded"
    assert room.devices["vfd1"].online is False
    assert room.devices["vfd1"].since == clock.now + 2_000
    assert {p: s.quality for p, s in room.points.items() if p.startswith("vfd1/")} == {
        "vfd1/Running": Quality.STALE,
        "vfd1/Frequency": Quality.STALE,
    }
    assert room.points["plc/Flow"].quality is Quality.GOOD


async def test_tck_id_operational_behavior_edge_node_termination_host_action_ndeath_node_tags_stale() -> None:
    """NDEATH: node and devices offline, every point STALE, at the host's receive time (not the will's)."""
    clock = Clock()
    host, edge = await born(clock)
    clock.now += 7_000
    await deliver(host, [edge.will()])
    room = host.live.sites[NODE]
    assert room.status == "offline"
    assert room.since == clock.now
    assert not any(d.online for d in room.devices.values())
    assert {s.quality for s in room.points.values()} == {Quality.STALE}
    assert room.points["plc/Flow"].value == 0.101  # the last known value is kept, marked STALE


async def test_host_losing_the_broker_marks_everything_stale() -> None:
    clock = Clock()
    host, _ = await born(clock)
    await host.on_disconnect("broker gone")
    room = host.live.sites[NODE]
    assert room.status == "offline"
    assert {s.quality for s in room.points.values()} == {Quality.STALE}


async def test_historical_values_are_stored_but_never_overwrite_live_values() -> None:
    clock = Clock()
    host, _, store = await memory_host(clock)
    edge = EdgeDouble(GROUP, NODE)
    await deliver(host, edge.births(clock.now))
    await deliver(host, edge.record(clock.now + 5_000))
    old = [Reading("plc/Flow", clock.now + 1_000, 9.5), Reading("plc/Flow", clock.now + 9_000, 7.5)]
    await host.on_message(Message(*edge.session.ddata("plc", old, clock.now + 6_000, historical=True)))
    await host.flush()
    live = host.live.sites[NODE].points["plc/Flow"]
    assert (live.value, live.ts) == (0.101, clock.now + 5_000)  # even the newer historical one is not live
    assert {("plc/Flow", clock.now + 1_000), ("plc/Flow", clock.now + 9_000)} <= set(store.points())
    assert host.counters.historical == 2


def test_live_cache_ignores_older_values_and_warm_values_are_stale() -> None:
    live = LiveState()
    live.register(NODE, GROUP, "江汉一号泵房")
    assert live.sites[NODE].status == "offline"
    live.warm(NODE, GROUP, [("plc/Flow", 3.0, 100)])
    assert live.sites[NODE].points["plc/Flow"].quality is Quality.STALE
    assert (
        live.update(NODE, GROUP, [Reading("plc/Flow", 200, 4.0), Reading("plc/Flow", 150, 5.0)], 201) == 200
    )
    assert live.sites[NODE].points["plc/Flow"].value == 4.0
    live.warm(NODE, GROUP, [("plc/Flow", 1.0, 50)])  # older than the cache: ignored
    assert live.sites[NODE].points["plc/Flow"].value == 4.0
    live.declare(NODE, GROUP, "plc", {"Flow": PointInfo("Double", "m3/h")})
    live.node_online(NODE, GROUP, 1, 300)
    assert live.sites[NODE].status == "degraded"  # the plc is known but not born in this session
    assert live.counts() == {"online": 0, "degraded": 1, "offline": 0}


async def test_restarted_host_shows_last_known_values_as_stale_until_births(tmp_path: Path) -> None:
    clock = Clock()
    url = sqlite_url(tmp_path)
    first = await open_host(url, clock)
    edge = EdgeDouble(GROUP, NODE)
    await deliver(first.service, edge.births(clock.now))
    await deliver(first.service, edge.record(clock.now + 1_000))
    await first.service.flush()
    await first.close()

    second = await open_host(url, clock)
    room = second.service.live.sites[NODE]
    assert room.status == "offline"
    assert room.devices["plc"].points["OutletPressure"].unit == "MPa"
    point = room.points["vfd1/Running"]
    assert (point.value, point.ts, point.quality) == (False, clock.now + 1_000, Quality.STALE)
    assert room.points["plc/Mode"].value == 1
    assert isinstance(room.points["plc/Mode"].value, int)
    await deliver(second.service, edge.births(clock.now + 2_000))
    assert room.status == "online"
    assert room.points["vfd1/Running"].quality is Quality.GOOD
    await second.close()
