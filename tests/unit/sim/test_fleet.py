"""The fleet's edge nodes, without a broker: births, aliases, seq, report by exception, commands."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from tapline.domain.model import DataType, Quality
from tapline.sim.district import DistrictSupply
from tapline.sim.faults import Fault, FaultKind
from tapline.sim.fleet import DROP_ORDER, FleetSpec, RoomFeed, plan_rooms, select_points
from tapline.sim.points import room_points
from tapline.sparkplug.codec import decode_payload
from tapline.sparkplug.edge_session import Message
from tapline.sparkplug.host_session import (
    Data,
    Event,
    HostTracker,
    NodeOnline,
    Rejected,
    ReplayDone,
    RequestRebirth,
    rebirth_command,
    replay_command,
)
from tapline.sparkplug.topics import MessageType, Topic

T0 = 1_700_000_000_000


def _feeds(spec: FleetSpec, sink: object = None) -> list[RoomFeed]:
    supplies: dict[str, DistrictSupply] = {}
    feeds = []
    for plan in plan_rooms(spec):
        supply = supplies.setdefault(plan.district, DistrictSupply(plan.district, spec.seed))
        feeds.append(RoomFeed(plan, spec, supply, spec.offset_ms(plan.index, spec.sites), sink))  # type: ignore[arg-type]
    return feeds


def _run(feeds: list[RoomFeed], periods: int, interval_ms: int, start: int = 0) -> list[Message]:
    """Sample every feed ``periods`` times (births at the first sample), as the publisher does."""
    out: list[Message] = []
    for period in range(start, start + periods):
        for feed in feeds:
            if feed.session is None:
                feed.new_session()
            ts = T0 + feed.offset_ms + period * interval_ms
            feed.sample(ts, step=period > 0)
            out += feed.report() if feed.born else feed.births(ts)
    return out


def _host(messages: list[Message], host: HostTracker | None = None) -> list[Event]:
    tracker = host or HostTracker()
    events: list[Event] = []
    for topic, payload in messages:
        events += tracker.on_message(topic, payload, T0)
    return events


def _problems(events: list[Event]) -> list[Event]:
    return [event for event in events if isinstance(event, Rejected | RequestRebirth)]


def _values(events: list[Event]) -> int:
    return sum(len(event.readings) for event in events if isinstance(event, Data))


@pytest.mark.parametrize("pumps", [2, 3, 4])
@pytest.mark.parametrize("count", [30, 49, 60, 80])
def test_every_room_publishes_exactly_the_points_asked_for(pumps: int, count: int) -> None:
    points = select_points(pumps, count)
    standard = room_points(pumps)
    paths = [point.path for point in points]
    assert len(paths) == count == len(set(paths))
    if count >= len(standard):
        assert paths[: len(standard)] == standard
        aux = paths[len(standard) :]
        assert aux == [f"aux/AI{k:02d}" for k in range(1, count - len(standard) + 1)]
        assert all(p.datatype is DataType.FLOAT for p in points[len(standard) :])
    else:
        kept = set(paths)
        assert kept < set(standard)
        assert "plc/OutletPressure" in kept
        assert "wq/Chlorine" in kept
        dropped = [p for p in standard if p not in kept]
        assert any(p.endswith("/Reset") for p in dropped)  # DROP_ORDER's first name goes first
        assert DROP_ORDER[0] == "Reset"


def test_rooms_are_dealt_over_districts_with_the_group_prefix() -> None:
    plans = plan_rooms(FleetSpec(sites=5, districts=2, group_prefix="bench-"))
    assert [p.site for p in plans] == ["PR-0001", "PR-0002", "PR-0003", "PR-0004", "PR-0005"]
    assert [p.district for p in plans] == ["jianghan", "qiaokou", "jianghan", "qiaokou", "jianghan"]
    assert plans[1].group == "bench-qiaokou"


@pytest.mark.parametrize(
    "bad",
    [
        {"sites": 0},
        {"sites": 1, "points": 0},
        {"sites": 1, "interval_s": 0},
        {"sites": 1, "districts": 9},
        {"sites": 1, "group_prefix": "a/b"},
        {"sites": 1, "report": "sometimes"},
    ],
)
def test_a_spec_that_cannot_work_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must|invalid"):
        FleetSpec(**bad)  # type: ignore[arg-type]


def test_births_aliases_and_seq_are_what_a_host_accepts_across_the_seq_wrap() -> None:
    spec = FleetSpec(sites=3, points=60, interval_s=1.0, districts=2)
    feeds = _feeds(spec)
    messages = _run(feeds, 90, spec.interval_ms)
    events = _host(messages)
    assert _problems(events) == []
    online = [e for e in events if isinstance(e, NodeOnline)]
    assert [(e.node, e.bd_seq) for e in online] == [("PR-0001", 0), ("PR-0002", 0), ("PR-0003", 0)]
    node_seqs = Counter(Topic.parse(t).node for t, _ in messages)
    assert max(node_seqs.values()) > 256  # the seq wrapped at least once without a gap
    births = [decode_payload(p) for t, p in messages if "/NBIRTH/" in t]
    names = {m.name for m in births[0].metrics}
    assert {"bdSeq", "Node Control/Rebirth", "Node Control/Replay"} <= names
    dbirths = [decode_payload(p) for t, p in messages if "/DBIRTH/PR-0001/" in t]
    declared = [m.alias for payload in dbirths for m in payload.metrics]
    assert len(declared) == 60 == len(set(declared))  # every point once, each with its own alias
    ddata = [decode_payload(p) for t, p in messages if "/DDATA/" in t]
    assert all(
        m.name is None and m.alias is not None and m.datatype is None for d in ddata for m in d.metrics
    )


def test_report_by_exception_sends_far_fewer_values_than_full_reports_and_refreshes_all() -> None:
    base = {"sites": 4, "points": 60, "interval_s": 5.0, "districts": 2, "full_refresh_s": 60.0}
    periods = 30  # 150 s: every point is due for a refresh twice
    by_exception = _values(_host(_run(_feeds(FleetSpec(**base)), periods, 5000)))  # type: ignore[arg-type]
    every = _values(_host(_run(_feeds(FleetSpec(**base, report="all")), periods, 5000)))  # type: ignore[arg-type]
    assert every == 4 * 60 * periods
    assert by_exception < every / 3
    seen: dict[tuple[str, str], list[int]] = {}
    for event in _host(_run(_feeds(FleetSpec(**base)), periods, 5000)):  # type: ignore[arg-type]
        if isinstance(event, Data):
            for reading in event.readings:
                seen.setdefault((event.node, reading.point), []).append(reading.ts)
    assert len(seen) == 4 * 60
    for times in seen.values():  # no point goes unreported for longer than the refresh period
        gaps = [later - earlier for earlier, later in pairwise(times)]
        assert max(gaps, default=0) <= 60_000


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    spec = FleetSpec(sites=3, points=70, interval_s=2.0, seed=7)
    first = _run(_feeds(spec), 8, spec.interval_ms)
    assert _run(_feeds(spec), 8, spec.interval_ms) == first
    other = _run(_feeds(FleetSpec(sites=3, points=70, interval_s=2.0, seed=8)), 8, spec.interval_ms)
    assert other != first


def test_a_room_publishes_the_same_whichever_rooms_share_its_process() -> None:
    spec = FleetSpec(sites=6, points=60, interval_s=1.0, districts=3)
    together = [m for m in _run(_feeds(spec), 5, 1000) if "/PR-0005" in m[0]]
    alone = [f for f in _feeds(spec) if f.site == "PR-0005"]
    assert _run(alone, 5, 1000) == together


def test_rebirth_repeats_the_births_with_the_same_bdseq_and_aliases() -> None:
    spec = FleetSpec(sites=1, points=60, interval_s=1.0)
    feed = _feeds(spec)[0]
    host = HostTracker()
    _host(_run([feed], 3, 1000), host)
    topic, payload = rebirth_command(feed.group, feed.site, T0 + 5000)
    answer = feed.command(topic, payload, T0 + 5000)
    types = [Topic.parse(t).type for t, _ in answer]
    assert types[0] is MessageType.NBIRTH
    assert types.count(MessageType.DBIRTH) == len(feed.devices)  # plc, vfd1..N, wq, env, power, aux
    events = _host(answer + _run([feed], 2, 1000, start=3), host)
    assert _problems(events) == []
    assert [e.bd_seq for e in events if isinstance(e, NodeOnline)] == [0]
    assert feed.counters.rebirths == 1


def test_replay_answers_from_the_history_held_then_confirms() -> None:
    spec = FleetSpec(sites=1, points=40, interval_s=1.0, history_s=10.0, report="all")
    feed = _feeds(spec)[0]
    host = HostTracker()
    _host(_run([feed], 20, 1000), host)
    topic, payload = replay_command(feed.group, feed.site, T0 + 15_000, T0 + 30_000)
    events = _host(feed.command(topic, payload, T0 + 30_000), host)
    historical = [e for e in events if isinstance(e, Data) and e.historical]
    assert sorted({r.ts for e in historical for r in e.readings}) == [T0 + k * 1000 for k in range(15, 20)]
    assert sum(len(e.readings) for e in historical) == 5 * 40
    assert [e for e in events if isinstance(e, ReplayDone)]
    assert _problems(events) == []
    old = replay_command(feed.group, feed.site, T0, T0 + 31_000)
    _host(feed.command(*old, T0 + 31_000), host)
    assert feed.counters.replay_gaps == 1  # older than the 10 s held: counted, not invented


def test_without_history_a_replay_is_confirmed_and_counted_as_a_gap() -> None:
    feed = _feeds(FleetSpec(sites=1, points=40, interval_s=1.0))[0]
    host = HostTracker()
    _host(_run([feed], 3, 1000), host)
    events = _host(feed.command(*replay_command(feed.group, feed.site, T0, T0 + 9000), T0 + 9000), host)
    assert [type(e) for e in events] == [ReplayDone]
    assert feed.counters.replay_gaps == 1


def test_commands_the_fleet_cannot_obey_are_counted_not_fatal() -> None:
    feed = _feeds(FleetSpec(sites=1, points=40, interval_s=1.0))[0]
    _run([feed], 1, 1000)
    assert feed.command(f"spBv1.0/{feed.group}/NCMD/{feed.site}", b"\x00garbage", T0) == []
    assert feed.counters.malformed == 1


def test_a_broken_transmitter_is_reported_uncertain_as_the_gateway_marks_it() -> None:
    spec = FleetSpec(sites=1, points=60, interval_s=1.0)
    feed = _feeds(spec)[0]
    host = HostTracker()
    _host(_run([feed], 2, 1000), host)
    plan = feed.plan
    fault = Fault(
        "F1", FaultKind.SENSOR_BROKEN_WIRE, plan.site, plan.district, params={"point": "wq/Chlorine"}
    )
    feed.physics.inject(fault)
    events = _host(_run([feed], 2, 1000, start=2), host)
    chlorine = [r for e in events if isinstance(e, Data) for r in e.readings if r.point == "wq/Chlorine"]
    assert chlorine
    assert isinstance(chlorine[0].value, float)
    assert chlorine[0].value < 0
    assert chlorine[0].quality is Quality.UNCERTAIN


def test_every_published_value_reaches_the_sink_once_with_its_timestamp() -> None:
    recorded: list[tuple[int, int, int, object]] = []

    def sink(site: int, ts: int, indices: object, values: object) -> None:
        recorded.extend((site, ts, i, v) for i, v in zip(indices, values, strict=True))  # type: ignore[call-overload]

    spec = FleetSpec(sites=2, points=60, interval_s=1.0)
    feeds = _feeds(spec, sink)
    events = _host(_run(feeds, 5, 1000))
    received = {(e.node, r.point, r.ts, r.value) for e in events if isinstance(e, Data) for r in e.readings}
    names = {feed.plan.index: (feed.site, [p.path for p in feed.points]) for feed in feeds}
    as_recorded = {(names[s][0], names[s][1][i], ts, v) for s, ts, i, v in recorded}
    assert as_recorded == received
    assert len(recorded) == sum(feed.published_values for feed in feeds)


@pytest.mark.parametrize("report", ["all", "exception"])
def test_a_replayed_cycle_is_a_valid_stream_repeating_the_first_k_samples(report: str) -> None:
    live_spec = FleetSpec(sites=2, points=70, interval_s=1.0, report=report)  # type: ignore[arg-type]
    cycled_spec = FleetSpec(sites=2, points=70, interval_s=1.0, report=report, cycle=4)  # type: ignore[arg-type]
    recorded: list[tuple[int, int, tuple[int, ...], tuple[object, ...]]] = []
    cycled = _feeds(cycled_spec, lambda s, ts, i, v: recorded.append((s, ts, tuple(i), tuple(v))))
    messages = _run(cycled, 13, 1000)
    events = _host(messages)
    assert _problems(events) == []
    # the first K+1 samples are exactly what live physics publishes
    live = _run(_feeds(live_spec), 5, 1000)
    assert messages[: len(live)] == live
    # then the values repeat with period K, under new timestamps and a continuing seq
    by_ts: dict[int, list[tuple[int, tuple[int, ...], tuple[object, ...]]]] = {}
    for site, ts, indices, values in recorded:
        by_ts.setdefault(ts, []).append((site, indices, values))
    stamps = sorted(by_ts)
    assert len(stamps) == 13 * 2
    for later, earlier in ((5, 1), (9, 5), (12, 4)):
        ts_later = [t for t in stamps if (t - T0) // 1000 == later]
        ts_earlier = [t for t in stamps if (t - T0) // 1000 == earlier]
        assert [by_ts[t] for t in ts_later] == [by_ts[t] for t in ts_earlier]
    assert sum(len(i) for _, _, i, _ in recorded) == sum(feed.published_values for feed in cycled)


def test_a_replayed_cycle_answers_a_rebirth_with_the_values_last_sent() -> None:
    spec = FleetSpec(sites=1, points=50, interval_s=1.0, report="all", cycle=3)
    feed = _feeds(spec)[0]
    host = HostTracker()
    _host(_run([feed], 6, 1000), host)
    answer = feed.command(*rebirth_command(feed.group, feed.site, T0 + 9000), T0 + 9000)
    rebirth = _host(answer, host)
    born = [r for e in rebirth if isinstance(e, Data) for r in e.readings]
    assert len(born) == 50
    assert {r.ts for r in born} == {T0 + 5000}  # the births carry the last sample sent (period 5)
    assert _problems(rebirth + _host(_run([feed], 3, 1000, start=6), host)) == []
