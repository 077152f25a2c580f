"""The host tracker's columnar path (``ReadingBlock``) against its per-metric loop: same events, always.

The loop is the reference: it names unknown aliases and mistyped values exactly. The columnar path
may only decline (then the loop runs); whatever it accepts must give the very events the loop gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tapline.domain.model import Reading, ReadingBlock
from tapline.sparkplug import host_session
from tapline.sparkplug.codec import Metric, decode_data
from tapline.sparkplug.edge_session import EdgeNodeSession
from tapline.sparkplug.host_session import Data, DeviceOnline, Event, HostTracker, PointInfo, Rejected
from tapline.sparkplug.layout import DataColumns, Layout, read

from .helpers import GROUP, NODE, UPTIME, payload, plc_points, topic, vfd_points

NOW = 10_000
UNKNOWN_ALIAS = 999


def _online() -> tuple[HostTracker, EdgeNodeSession, list[PointInfo]]:
    """A node with devices ``plc`` (Double, Int64, Double) and ``vfd1`` (Boolean, String), born."""
    edge = EdgeNodeSession(GROUP, NODE, 3)
    host = HostTracker()
    points: list[PointInfo] = []
    for message_topic, data in (
        edge.nbirth([(UPTIME, 7, 900)], 1_000),
        edge.dbirth("plc", plc_points(), 1_000),
        edge.dbirth("vfd1", vfd_points(), 1_000),
    ):
        for born in host.on_message(message_topic, data, NOW):
            if isinstance(born, DeviceOnline):
                points += born.points
    return host, edge, points


POINTS = _online()[2]


@contextmanager
def _loop_only() -> Iterator[None]:
    """The tracker with its columnar path and its layouts switched off (the reference)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HostTracker, "_block", staticmethod(lambda *args: None))
        patch.setattr(host_session, "_read_data", lambda node, device, data: decode_data(data))
        yield


any_value = st.one_of(
    st.floats(allow_nan=False, width=64),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 63) - 1),
)
# What each declared point's gateway sends: mostly the declared type, sometimes anything.
DECLARED = {
    "plc/OutletPressure": st.floats(allow_nan=False, width=64),
    "plc/Mode": st.integers(-(1 << 63), (1 << 63) - 1),
    "plc/OutletPressureSP": st.floats(allow_nan=False, width=64),
    "vfd1/Running": st.booleans(),
    "vfd1/FaultText": any_value,  # a string point: never columnar
}


@st.composite
def ddata(draw: st.DrawFn) -> tuple[str, list[tuple[int, int | None, object, bool]]]:
    """A DDATA of ``plc`` or ``vfd1``: mostly the device's own points with values of their declared
    type; sometimes another device's alias, an unknown alias, a value of another type, a historical
    metric; metric timestamps or not."""
    device = draw(st.sampled_from(["plc", "vfd1"]))
    own = [p for p in POINTS if p.point.startswith(device + "/")]
    aliases = {p.point: p.alias or 0 for p in POINTS}  # every point of the births has one
    metrics: list[tuple[int, int | None, object, bool]] = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.integers(0, 9)) == 0:
            alias = draw(st.sampled_from([UNKNOWN_ALIAS, *aliases.values()]))
            value = draw(any_value)
        else:
            point = draw(st.sampled_from(own))
            alias = aliases[point.point]
            value = draw(DECLARED[point.point] if draw(st.integers(0, 9)) else any_value)
        stamp = draw(st.none() | st.integers(0, 1 << 45))
        metrics.append((alias, stamp, value, draw(st.integers(0, 19)) == 0))
    return device, metrics


def _feed(
    message: tuple[str, list[tuple[int, int | None, object, bool]]], timestamp: int | None
) -> list[Event]:
    host, edge, _ = _online()
    device, metrics = message
    events: list[Event] = []
    for seq in ((edge.seq or 0) + 1, (edge.seq or 0) + 2):  # the second is read by the first's layout
        data = payload(
            seq,
            *(Metric(alias=a, timestamp=ts, value=v, is_historical=h) for a, ts, v, h in metrics),  # type: ignore[arg-type]
            timestamp=timestamp,
        )
        events += host.on_message(topic("DDATA", device), data, NOW + 1)
    return events


@settings(max_examples=300, deadline=None)
@given(ddata(), st.none() | st.integers(0, 1 << 45))
def test_the_columnar_path_gives_the_loops_events(
    message: tuple[str, list[tuple[int, int | None, object, bool]]], timestamp: int | None
) -> None:
    reads: list[bool] = []  # whether each recorded layout read its message
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(host_session, "read", lambda layout, data: _noted(reads, layout, data))
        fast = _feed(message, timestamp)
    with _loop_only():
        reference = _feed(message, timestamp)
    assert fast == reference
    assert [type(e) for e in fast] == [type(e) for e in reference]
    blocks = [e for e in fast if isinstance(e, Data) and type(e.readings) is ReadingBlock]
    event("columnar" if blocks else "loop")
    event("read by layout" if any(reads) else "decoded")


def _noted(reads: list[bool], layout: Layout, data: bytes) -> DataColumns | None:
    columns = read(layout, data)
    reads.append(columns is not None)
    return columns


def test_a_plain_message_is_one_block_with_declared_names_and_coerced_integers() -> None:
    host, edge, points = _online()
    alias = {p.point: p.alias for p in points}
    metrics = (
        Metric(alias=alias["plc/OutletPressure"], timestamp=5_000, value=0.47),
        Metric(alias=alias["plc/Mode"], value=-2),  # Int64 on the wire as two's complement
        Metric(alias=alias["plc/OutletPressureSP"], timestamp=5_000, value=0.5),
    )
    events = host.on_message(
        topic("DDATA", "plc"), payload((edge.seq or 0) + 1, *metrics, timestamp=4_000), NOW
    )
    (data,) = events
    assert isinstance(data, Data)
    assert not data.historical
    assert type(data.readings) is ReadingBlock
    assert list(data.readings) == [
        Reading("plc/OutletPressure", 5_000, 0.47),
        Reading("plc/Mode", 4_000, -2),  # no metric timestamp: the payload's
        Reading("plc/OutletPressureSP", 5_000, 0.5),
    ]
    # The next message of the same shape shares the names: nothing per point is built again.
    again = host.on_message(
        topic("DDATA", "plc"), payload((edge.seq or 0) + 2, *metrics, timestamp=4_000), NOW
    )
    assert isinstance(again[0], Data)
    assert isinstance(again[0].readings, ReadingBlock)
    assert again[0].readings.points is data.readings.points


def test_a_rebirth_that_moves_an_alias_is_not_read_with_the_old_names() -> None:
    host, edge, points = _online()
    alias = {p.point: p.alias for p in points}["plc/OutletPressure"]
    first = host.on_message(
        topic("DDATA", "plc"), payload((edge.seq or 0) + 1, Metric(alias=alias, value=0.4)), NOW
    )
    assert [r.point for r in first[0].readings] == ["plc/OutletPressure"]  # type: ignore[union-attr]
    # The node is born again and declares that alias for nothing now: the cached shape must go.
    reborn = EdgeNodeSession(GROUP, NODE, 4)
    host.on_message(*reborn.nbirth([(UPTIME, 8, 2_000)], 2_000), NOW + 10)
    events = host.on_message(topic("DDATA", "plc"), payload(1, Metric(alias=alias, value=0.4)), NOW + 20)
    assert any(isinstance(e, Rejected) for e in events)
    assert not any(isinstance(e, Data) for e in events)


def test_a_full_refresh_room_records_each_layout_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fleet rooms (7–9 devices, every point every second) re-use their layouts: once the seq has been
    through 0..255 (one-byte and two-byte varints: every message size twice), no message needs a
    layout recorded again. With too small a table per node (16 was: a 4-pump room needs 18) the
    layouts thrash and every few seconds a message is decoded twice."""
    from tapline.sim.district import DistrictSupply
    from tapline.sim.fleet import FleetSpec, RoomFeed, plan_rooms
    from tapline.sparkplug.layout import layout_of

    recorded: list[int] = []

    def counting(data: bytes) -> Layout | None:
        recorded.append(period)
        return layout_of(data)

    monkeypatch.setattr(host_session, "layout_of", counting)
    spec = FleetSpec(sites=20, points=80, report="all", cycle=10)  # PR-0014: 4 pumps
    feeds = [
        RoomFeed(p, spec, DistrictSupply(p.district, spec.seed), spec.offset_ms(p.index, spec.sites))
        for p in plan_rooms(spec)
    ]
    host = HostTracker()
    data = 0
    for period in range(100):
        for feed in feeds:
            if feed.session is None:
                feed.new_session()
            at = 1_767_225_600_000 + feed.offset_ms + period * 1000
            feed.sample(at, step=period > 0)
            for name, body in feed.report() if feed.born else feed.births(at):
                data += sum(isinstance(e, Data) for e in host.on_message(name, body, at))
    assert data >= 20 * 7 * 99  # every device's message (7–9 a room) every period was data
    assert recorded, "the layouts were recorded at first sight"
    assert max(recorded) < 50, f"layouts recorded again in periods {sorted(set(recorded))[-5:]}"
