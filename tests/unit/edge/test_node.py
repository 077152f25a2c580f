"""The edge node through its seams (a fake uplink, a fake bus, a real history file).

Covers the Sparkplug duties (births, seq, bdSeq, rebirth), history first and the resume mark across
disconnects and restarts, replay, commands and bad input. Against real Mosquitto and the simulator:
tests/integration/edge.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tapline.domain.model import Value
from tapline.edge.config import InterlockConfig, InterlockRule, Threshold, WriteStep
from tapline.edge.history import History
from tapline.edge.interlocks import Interlocks
from tapline.edge.modbus_io import ExclusiveBus
from tapline.edge.node import DevicePoints, EdgeNode
from tapline.edge.poller import DeviceFound, DeviceLost, Sample
from tapline.mqtt import BrokerUnavailable, Message
from tapline.registers.layout import standard_layout
from tapline.registers.maps import Table
from tapline.sparkplug.codec import Metric, Payload, decode_payload, encode_payload
from tapline.sparkplug.host_session import rebirth_command, replay_command, write_command
from tapline.sparkplug.topics import state_payload
from tests.helpers import eventually
from tests.unit.edge.fakes import FakeBus, FakeUplink

GROUP, NODE = "tdistrict", "PR-0009"
T0 = 1_700_000_000_000


@dataclass
class Clock:
    """Wall ms and monotonic s, advanced by hand."""

    ms: int = T0
    mono: float = 1000.0

    def wall(self) -> int:
        return self.ms

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)
        self.mono += seconds


@dataclass
class Room:
    path: Path
    clock: Clock = field(default_factory=Clock)
    bus: FakeBus = field(default_factory=FakeBus)
    interlocks: InterlockConfig | None = None

    def __post_init__(self) -> None:
        for slot in standard_layout(2):
            values: dict[str, bool | int | float] = {"Mode": 0, "OutletPressureSP": 0.45, "RunCommand": True}
            self.bus.load(slot.unit, slot.register_map, values)

    def node(self, primary_host: str | None = None) -> EdgeNode:
        exclusive = ExclusiveBus(self.bus)
        devices = [DevicePoints(s.name, s.unit, exclusive, s.register_map) for s in standard_layout(2)]
        return EdgeNode(
            group=GROUP,
            node=NODE,
            devices=devices,
            history=History(self.path / "h.db", max_rows=100_000, max_age_ms=86_400_000),
            full_refresh_ms=600_000,
            primary_host=primary_host,
            keepalive_s=2,  # detection window 3 × 2 + 2 = 8 s
            clock_ms=self.clock.wall,
            monotonic=self.clock.monotonic,
            interlocks=Interlocks(self.interlocks) if self.interlocks else None,
            backfill_rate_msgs=10_000.0,
        )


@pytest.fixture
def room(tmp_path: Path) -> Room:
    return Room(tmp_path)


async def connect(node: EdgeNode) -> FakeUplink:
    uplink = FakeUplink()
    node.will()
    await node.on_connect(uplink)
    return uplink


async def poll(node: EdgeNode, clock: Clock, device: str, **values: Value) -> None:
    clock.advance(1.0)
    if device not in node.online_devices:
        await node.handle(DeviceFound(device, clock.wall()))
    await node.handle(Sample(device, clock.wall(), dict(values), "fast"))


def _type(topic: str) -> str:
    return topic.split("/")[2]


def historical(uplink: FakeUplink) -> list[tuple[str, int, object]]:
    """The is_historical metrics published, in order: (topic, ts, value)."""
    out: list[tuple[str, int, object]] = []
    for topic, payload in uplink.messages():
        out += [(topic, m.timestamp or 0, m.value) for m in payload.metrics if m.is_historical]
    return out


async def drain(node: EdgeNode) -> None:
    """Let the backfill task work through its queue."""
    for _ in range(50):
        await asyncio.sleep(0)
    await eventually(lambda: _idle(node), timeout=5, what="backfill idle")


async def _idle(node: EdgeNode) -> bool:
    return node.backfill_idle()


def assert_seq_continuous(uplink: FakeUplink) -> None:
    """Every message after an NBIRTH is +1 mod 256 (NDEATH carries no seq)."""
    previous: int | None = None
    for topic, payload in uplink.messages():
        kind = _type(topic)
        if kind == "NDEATH":
            continue
        if kind == "NBIRTH":
            assert payload.seq == 0
        else:
            assert previous is not None
            assert payload.seq == (previous + 1) % 256, (topic, payload.seq)
        previous = payload.seq


async def test_births_then_data_with_continuous_seq_and_aliases(room: Room) -> None:
    node = room.node()
    await poll(node, room.clock, "plc", InletPressure=0.2, OutletPressure=0.45)
    uplink = await connect(node)
    nbirth = uplink.messages("NBIRTH")[0][1]
    names = {m.name for m in nbirth.metrics}
    assert {"bdSeq", "Node Control/Rebirth", "Node Control/Replay", "Gateway/CommandsRefused"} <= names
    assert [m.value for m in nbirth.metrics if m.name == "bdSeq"] == [0]
    assert [t for t, _ in uplink.messages("DBIRTH")] == [f"spBv1.0/{GROUP}/DBIRTH/{NODE}/plc"]
    for index in range(300):  # past the 255 -> 0 wrap
        await poll(node, room.clock, "plc", InletPressure=0.2 + (index % 7) / 100, OutletPressure=0.45)
    await poll(node, room.clock, "vfd1", Running=True, Frequency=42.0)
    ddata = uplink.messages("DDATA")
    assert len(ddata) >= 300
    assert all(m.alias is not None and m.name is None for _, p in ddata for m in p.metrics)
    assert uplink.messages("DBIRTH")[-1][0].endswith("/vfd1")  # first data of a device is its DBIRTH
    assert_seq_continuous(uplink)


async def test_rebirth_request_resends_births_with_the_same_bd_seq(room: Room) -> None:
    node = room.node()
    uplink = await connect(node)
    await poll(node, room.clock, "plc", InletPressure=0.2)
    await poll(node, room.clock, "env", Flood=False)
    topic, body = rebirth_command(GROUP, NODE, room.clock.wall())
    await node.on_message(Message(topic, body))
    births = [(t, p) for t, p in uplink.messages() if _type(t) in ("NBIRTH", "DBIRTH")]
    assert [_type(t) for t, _ in births] == ["NBIRTH", "DBIRTH", "DBIRTH", "NBIRTH", "DBIRTH", "DBIRTH"]
    bd_seqs = [m.value for t, p in births if _type(t) == "NBIRTH" for m in p.metrics if m.name == "bdSeq"]
    assert bd_seqs == [0, 0]
    await poll(node, room.clock, "plc", InletPressure=0.3)
    assert_seq_continuous(uplink)


async def test_values_recorded_while_offline_are_backfilled_in_order_as_historical(room: Room) -> None:
    node = room.node()
    for index in range(30):
        await poll(node, room.clock, "plc", InletPressure=0.2 + index / 100)  # above the deadband
    uplink = await connect(node)
    await drain(node)
    sent = [(ts, v) for _, ts, v in historical(uplink)]
    assert [v for _, v in sent] == [pytest.approx(0.2 + i / 100) for i in range(30)]
    assert [ts for ts, _ in sent] == sorted(ts for ts, _ in sent)
    assert_seq_continuous(uplink)


async def test_a_dead_link_resends_what_was_published_inside_the_detection_window(room: Room) -> None:
    node = room.node()
    uplink = await connect(node)
    for index in range(10):
        await poll(node, room.clock, "plc", InletPressure=0.1 + index / 100)  # 1 s apart
    room.clock.advance(10.0)  # these are safely out now
    for index in range(3):
        await poll(node, room.clock, "plc", InletPressure=0.5 + index / 100)
    await node.on_disconnect("keepalive timeout")  # the last 3 s may have gone nowhere
    mark = node.resume_mark()
    assert node.history.meta("resume_id") == mark
    uplink = await connect(node)
    await drain(node)
    assert [v for _, _, v in historical(uplink)] == pytest.approx([0.5, 0.51, 0.52])


async def test_a_failed_publish_is_resent_even_if_older_than_the_window(room: Room) -> None:
    node = room.node()
    uplink = await connect(node)
    await poll(node, room.clock, "plc", InletPressure=0.1)
    uplink.down = True
    await poll(node, room.clock, "plc", InletPressure=0.2)  # publish raises: not out
    uplink.down = False
    room.clock.advance(60.0)
    await poll(node, room.clock, "plc", InletPressure=0.3)
    await node.on_disconnect("closed")
    uplink = await connect(node)
    await drain(node)
    assert [v for _, _, v in historical(uplink)] == pytest.approx([0.2, 0.3])
    assert node.counters.publish_failures == 1


async def test_a_restarted_gateway_resumes_from_the_persisted_mark_with_a_new_bd_seq(room: Room) -> None:
    node = room.node()
    await connect(node)
    for index in range(5):
        await poll(node, room.clock, "plc", InletPressure=0.1 + index / 100)
    room.clock.advance(30.0)
    node.persist_mark()
    for index in range(4):  # recorded after the last persisted mark, then the process dies
        await poll(node, room.clock, "plc", InletPressure=0.3 + index / 100)
    node.history.close()

    restarted = room.node()
    uplink = await connect(restarted)
    nbirth = uplink.messages("NBIRTH")[0][1]
    assert [m.value for m in nbirth.metrics if m.name == "bdSeq"] == [1]
    await poll(restarted, room.clock, "plc", InletPressure=0.33)  # its DBIRTH lets its rows go out
    await drain(restarted)
    assert [v for _, _, v in historical(uplink)] == pytest.approx([0.3, 0.31, 0.32, 0.33])


async def test_rows_of_a_dead_device_wait_for_its_dbirth(room: Room) -> None:
    node = room.node()
    await poll(node, room.clock, "vfd1", Frequency=40.0)
    await poll(node, room.clock, "plc", InletPressure=0.2)
    await node.handle(DeviceLost("vfd1", room.clock.wall(), "timeout"))
    uplink = await connect(node)
    await drain(node)
    assert [v for t, _, v in historical(uplink) if t.endswith("/plc")] == [0.2]
    assert not [t for t, _, _ in historical(uplink) if t.endswith("/vfd1")]
    assert node.resume_mark() < 2  # vfd1's row (id 1) holds the mark back
    await poll(node, room.clock, "vfd1", Frequency=41.0)  # back: DBIRTH, then its deferred rows
    await drain(node)
    assert [v for t, _, v in historical(uplink) if t.endswith("/vfd1")] == [40.0]
    assert_seq_continuous(uplink)


async def test_replay_request_is_answered_from_history_and_confirmed(room: Room) -> None:
    node = room.node()
    uplink = await connect(node)
    for index in range(6):
        await poll(node, room.clock, "plc", InletPressure=0.1 + index / 100)
    await drain(node)
    uplink.published.clear()
    from_ms = T0 + 4000  # the 4th poll onwards
    topic, body = replay_command(GROUP, NODE, from_ms, room.clock.wall())
    await node.on_message(Message(topic, body))
    await drain(node)
    assert [v for _, _, v in historical(uplink)] == pytest.approx([0.13, 0.14, 0.15])
    last = uplink.messages()[-1]
    assert _type(last[0]) == "NDATA"
    assert last[1].metrics[0].name == "Node Control/Replay"
    assert last[1].metrics[0].value == from_ms


async def test_dcmd_writes_whitelisted_points_and_reports_the_read_back(room: Room) -> None:
    node = room.node()
    uplink = await connect(node)
    await poll(node, room.clock, "plc", OutletPressureSP=0.45, Mode=0)
    topic, body = write_command(GROUP, NODE, "plc", "OutletPressureSP", 0.5, room.clock.wall())
    await node.on_message(Message(topic, body))
    assert node.counters.commands_ok == 1
    assert ("write", 1, Table.HOLDING, 0, 1) in room.bus.requests
    alias = node.session.alias_of("plc", "OutletPressureSP") if node.session else None
    last = uplink.messages("DDATA")[-1][1]
    assert [(m.alias, m.value) for m in last.metrics] == [(alias, 0.5)]  # the value read back


@pytest.mark.parametrize(
    ("device", "point", "value", "reason"),
    [
        ("plc", "InletPressure", 0.3, "not writable"),
        ("plc", "OutletPressureSP", 5.0, "must be within"),
        ("plc", "Mode", 7, "must be within"),
        ("vfd2", "RunCommand", True, "not answering"),
    ],
)
async def test_dcmd_refusals_are_counted_and_nothing_is_written(
    room: Room, device: str, point: str, value: Value, reason: str
) -> None:
    node = room.node()
    await connect(node)
    await poll(node, room.clock, "plc", OutletPressureSP=0.45, Mode=0, InletPressure=0.2)
    await poll(node, room.clock, "vfd2", Running=False)
    await node.handle(DeviceLost("vfd2", room.clock.wall(), "timeout"))
    topic, body = write_command(GROUP, NODE, device, point, value, room.clock.wall())
    await node.on_message(Message(topic, body))
    assert node.counters.commands_refused == 1
    assert node.counters.commands_ok == 0
    assert not [r for r in room.bus.requests if r[0] == "write"]


async def test_bad_input_is_counted_and_ignored(room: Room) -> None:
    node = room.node()
    uplink = await connect(node)
    await poll(node, room.clock, "plc", InletPressure=0.2)
    ncmd = f"spBv1.0/{GROUP}/NCMD/{NODE}"
    bad_metric = encode_payload(Payload(T0, 0, (Metric(name="Nope", value=1),)))
    for message in (
        Message(ncmd, b"\xff\x00garbage"),
        Message(ncmd, encode_payload(Payload(T0, 0, ()))),  # no metric
        Message(ncmd, bad_metric),  # unknown node metric
        Message(f"spBv1.0/{GROUP}/DCMD/{NODE}/plc", bad_metric),  # unknown device metric
        Message(f"spBv1.0/{GROUP}/DCMD/{NODE}/pump7", bad_metric),  # unknown device
        Message("not/sparkplug", b""),
        Message("spBv1.0/STATE/tapline", b"{not json"),
    ):
        await node.on_message(message)
    assert node.counters.commands_malformed == 5
    assert node.counters.bad_messages == 2
    await poll(node, room.clock, "plc", InletPressure=0.3)  # still working
    assert decode_payload(uplink.published[-1][1]).metrics[0].value == 0.3


async def test_waits_for_the_primary_host_and_leaves_when_it_goes_offline(room: Room) -> None:
    node = room.node(primary_host="hostx")
    uplink = await connect(node)
    assert "spBv1.0/STATE/hostx" in uplink.subscribed
    assert not uplink.published
    await node.on_message(Message("spBv1.0/STATE/hostx", state_payload(True, 2000)))
    assert _type(uplink.published[0][0]) == "NBIRTH"
    await node.on_message(Message("spBv1.0/STATE/hostx", state_payload(False, 1000)))  # an old will
    assert node.live
    with pytest.raises(BrokerUnavailable):
        await node.on_message(Message("spBv1.0/STATE/hostx", state_payload(False, 3000)))
    death = uplink.messages()[-1]
    assert _type(death[0]) == "NDEATH"
    assert death[1].metrics[0].value == 0
    assert not node.live


async def test_interlock_stops_pumps_reports_it_and_refuses_a_remote_start(room: Room) -> None:
    room.interlocks = InterlockConfig(
        stop=(WriteStep(point="plc/Mode", value=2), WriteStep(point="vfd1/RunCommand", value=False)),
        rules=(InterlockRule(name="Flood", point="env/Flood", trip=Threshold(equals=True)),),
    )
    node = room.node()  # no uplink at all: protection does not need the cloud
    await poll(node, room.clock, "plc", Mode=0)
    await poll(node, room.clock, "vfd1", RunCommand=True)
    await poll(node, room.clock, "env", Flood=True)
    writes = [r for r in room.bus.requests if r[0] == "write"]
    assert [(unit, table) for _, unit, table, _, _ in writes] == [(1, Table.HOLDING), (11, Table.COIL)]
    assert room.bus.tables[1][Table.HOLDING][1] == 2
    assert room.bus.tables[11][Table.COIL][0] == 0
    assert node.counters.interlock_writes == 2
    events = await node.history.after_id(0, 100)
    recorded = {r.reading.point: r.reading.value for r in events if r.reading.point.startswith("Interlock/")}
    assert recorded == {"Interlock/PumpsInhibited": 1, "Interlock/Trips": 1, "Interlock/Flood/Active": 1}
    uplink = await connect(node)
    await drain(node)
    backfilled = {m.value for t, p in uplink.messages("NDATA") for m in p.metrics if m.is_historical}
    assert True in backfilled  # the interlock events reach the cloud once it is back
    topic, body = write_command(GROUP, NODE, "vfd1", "RunCommand", True, room.clock.wall())
    await node.on_message(Message(topic, body))
    assert node.counters.commands_refused == 1
