"""Host tracker: sessions, bdSeq matching, reordering, STALE marking, rebirth and replay requests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tapline.domain.model import Quality, Reading
from tapline.sparkplug.codec import Metric, SpDataType
from tapline.sparkplug.edge_session import EdgeNodeSession, Message
from tapline.sparkplug.host_session import (
    Data,
    DeviceOffline,
    DeviceOnline,
    DeviceStatus,
    Event,
    HostTracker,
    NodeOffline,
    NodeOnline,
    OwnStateOffline,
    PointInfo,
    Rejected,
    RequestRebirth,
    RequestReplay,
    rebirth_command,
)
from tapline.sparkplug.topics import state_payload, state_topic

from .helpers import (
    GROUP,
    NODE,
    UPTIME,
    nbirth_payload,
    ndeath_payload,
    payload,
    plc_points,
    topic,
    vfd_points,
)

TIMEOUT = 2_000


def kinds(events: list[Event]) -> list[type]:
    return [type(e) for e in events]


def feed(host: HostTracker, messages: list[Message], now_ms: int = 10_000) -> list[Event]:
    events: list[Event] = []
    for message_topic, data in messages:
        events += host.on_message(message_topic, data, now_ms)
    return events


def readings(events: list[Event]) -> list[Reading]:
    return [r for e in events if isinstance(e, Data) for r in e.readings]


def online_pair(bd_seq: int = 3) -> tuple[EdgeNodeSession, HostTracker, list[Event]]:
    edge = EdgeNodeSession(GROUP, NODE, bd_seq)
    host = HostTracker(reorder_timeout_ms=TIMEOUT)
    events = feed(
        host,
        [
            edge.nbirth([(UPTIME, 7, 900)], 1_000),
            edge.dbirth("plc", plc_points(), 1_000),
            edge.dbirth("vfd1", vfd_points(), 1_000),
        ],
    )
    return edge, host, events


def mode(edge: EdgeNodeSession, value: int, ts: int) -> Message:
    return edge.ddata("plc", [Reading("plc/Mode", ts, value)], ts)


# --- births -------------------------------------------------------------------------------------------


def test_tck_id_host_births_emit_online_points_and_birth_values() -> None:
    edge, _, events = online_pair()
    assert kinds(events) == [NodeOnline, Data, RequestReplay, DeviceOnline, Data, DeviceOnline, Data]
    node_online = events[0]
    assert isinstance(node_online, NodeOnline)
    assert node_online.bd_seq == 3
    assert [p.point for p in node_online.metrics] == ["edge/Uptime"]  # bdSeq, Node Control/* are not points
    assert events[2] == RequestReplay(GROUP, NODE, None)  # first sight since host start: the store decides
    plc_online = events[3]
    assert isinstance(plc_online, DeviceOnline)
    assert plc_online.points[0] == PointInfo(
        "plc/OutletPressure", edge.alias_of("plc", "OutletPressure"), SpDataType.Double, "MPa", 0.0, 1.6
    )
    assert Reading("plc/OutletPressure", 1_000, 0.45) in readings(events)
    assert Reading("edge/Uptime", 900, 7) in readings(events)
    assert not any(r.point == "vfd1/FaultText" for r in readings(events))  # null: no reading


def test_ddata_readings_named_device_slash_name_with_declared_types() -> None:
    edge, host, _ = online_pair()
    events = feed(
        host,
        [
            edge.ddata(
                "plc",
                [
                    Reading("plc/Mode", 2_000, -2),
                    Reading("plc/OutletPressure", 2_001, 0.5, Quality.UNCERTAIN),
                ],
                2_002,
            )
        ],
    )
    assert events == [
        Data(
            GROUP,
            NODE,
            "plc",
            (Reading("plc/Mode", 2_000, -2), Reading("plc/OutletPressure", 2_001, 0.5, Quality.UNCERTAIN)),
            historical=False,
        )
    ]


def test_ndata_readings_use_metric_name() -> None:
    edge, host, _ = online_pair()
    assert readings(feed(host, [edge.ndata([Reading("edge/Uptime", 3_000, 60)], 3_000)])) == [
        Reading("edge/Uptime", 3_000, 60)
    ]


def test_historical_metrics_give_historical_data() -> None:
    edge, host, _ = online_pair()
    (event,) = feed(host, [edge.ddata("plc", [Reading("plc/Mode", 5, 1)], 3_000, historical=True)])
    assert isinstance(event, Data)
    assert event.historical
    assert event.readings == (Reading("plc/Mode", 5, 1),)


def test_null_metric_gives_no_reading() -> None:
    _, host, _ = online_pair()
    alias_payload = payload(3, Metric("Mode", timestamp=5, datatype=SpDataType.Int64, is_null=True))
    assert host.on_message(topic("DDATA", "plc"), alias_payload, 10_000) == []


def test_mixed_payload_splits_historical_before_live() -> None:
    edge, host, _ = online_pair()
    alias = edge.alias_of("plc", "Mode")
    data = payload(
        3,
        Metric(alias=alias, timestamp=5, value=1, is_historical=True),
        Metric(alias=alias, timestamp=6, value=2),
    )
    events = host.on_message(topic("DDATA", "plc"), data, 10_000)
    assert [(e.historical, e.readings[0].value) for e in events if isinstance(e, Data)] == [
        (True, 1),
        (False, 2),
    ]


# --- deaths -------------------------------------------------------------------------------------------


def test_tck_id_operational_behavior_edge_node_termination_host_action_ndeath_node_offline() -> None:
    edge, host, _ = online_pair(bd_seq=3)
    events = host.on_message(*edge.will(), 55_555)
    assert events == [NodeOffline(GROUP, NODE, 55_555)]  # the host's receive time, not the Will's
    status = host.node(GROUP, NODE)
    assert status is not None
    assert not status.online
    # tck-id-…-ndeath-devices-offline
    assert status.devices == (DeviceStatus("plc", False), DeviceStatus("vfd1", False))


def test_tck_id_operational_behavior_edge_node_intentional_disconnect_duplicate_will_ignored() -> None:
    edge, host, _ = online_pair()
    assert host.on_message(*edge.ndeath(5_000), 5_001) == [NodeOffline(GROUP, NODE, 5_001)]
    assert host.on_message(*edge.will(), 5_002) == []


def test_late_ndeath_of_older_session_is_ignored() -> None:
    """NDEATH(bdSeq=k) arriving after NBIRTH(bdSeq=k+1) must not kill the newer session."""
    old = EdgeNodeSession(GROUP, NODE, 4)
    host = HostTracker(reorder_timeout_ms=TIMEOUT)
    feed(host, [old.nbirth([], 1_000)])
    new = EdgeNodeSession(GROUP, NODE, 5)
    events = host.on_message(*new.nbirth([], 2_000), 2_000)
    assert isinstance(events[0], NodeOnline)
    assert events[0].bd_seq == 5
    assert host.on_message(*old.will(), 2_100) == []
    status = host.node(GROUP, NODE)
    assert status is not None
    assert status.online
    assert status.bd_seq == 5
    # …and the matching NDEATH still works
    assert host.on_message(*new.will(), 3_000) == [NodeOffline(GROUP, NODE, 3_000)]


def test_will_overtaking_nbirth_of_same_bdseq_is_rejected_then_rebirth_requested() -> None:
    _, host, _ = online_pair(bd_seq=8)
    assert host.on_message(topic("NDEATH"), ndeath_payload(8), 20_000) == [NodeOffline(GROUP, NODE, 20_000)]
    late_birth = host.on_message(topic("NBIRTH"), nbirth_payload(8), 20_100)
    assert kinds(late_birth) == [Rejected, RequestRebirth]
    assert not host.nodes()[0].online
    # past the window a birth with that bdSeq is believed (an edge that lost its persisted bdSeq)
    assert kinds(host.on_message(topic("NBIRTH"), nbirth_payload(8), 20_000 + TIMEOUT))[0] is NodeOnline


def test_new_birth_after_death_requests_replay_from_last_contiguous_timestamp() -> None:
    edge, host, _ = online_pair(bd_seq=1)
    feed(host, [mode(edge, 1, 4_000)])
    feed(host, [edge.will()])
    again = EdgeNodeSession(GROUP, NODE, 2)
    events = host.on_message(*again.nbirth([], 9_000), 9_500)
    assert events[-1] == RequestReplay(GROUP, NODE, 4_000)


def test_rebirth_in_same_session_does_not_request_replay() -> None:
    edge, host, _ = online_pair()
    edge.rebirth()
    events = feed(host, [edge.nbirth([], 5_000)])
    assert not any(isinstance(e, RequestReplay) for e in events)


def test_tck_id_operational_behavior_edge_node_termination_host_action_ddeath_devices_offline() -> None:
    edge, host, _ = online_pair()
    assert host.on_message(*edge.ddeath("vfd1", 7_000), 7_050) == [DeviceOffline(GROUP, NODE, "vfd1", 7_000)]
    assert host.nodes()[0].devices == (DeviceStatus("plc", True), DeviceStatus("vfd1", False))


def test_ddata_after_ddeath_is_rejected_with_one_rebirth_request() -> None:
    edge, host, _ = online_pair()
    feed(host, [edge.ddeath("vfd1", 7_000)])
    alias = edge.alias_of("vfd1", "Running")
    events = host.on_message(
        topic("DDATA", "vfd1"), payload(4, Metric(alias=alias, timestamp=1, value=True)), 8_000
    )
    assert kinds(events) == [Rejected, RequestRebirth]


def test_mark_all_stale_takes_every_online_node_offline() -> None:
    edge, host, _ = online_pair()
    other = EdgeNodeSession(GROUP, "PR-0002", 0)
    feed(host, [other.nbirth([], 1_000), other.will()])  # already offline
    assert host.mark_all_stale(9_000) == [NodeOffline(GROUP, NODE, 9_000)]
    assert not any(status.online for status in host.nodes())
    # data after the host reconnects, without a new birth, is data before birth
    assert kinds(feed(host, [mode(edge, 1, 9_500)])) == [Rejected, RequestRebirth]


# --- data before birth, malformed, unknown ------------------------------------------------------------


def test_data_before_birth_requests_one_rebirth() -> None:
    edge = EdgeNodeSession(GROUP, NODE, 0)
    edge.nbirth([], 1_000)
    edge.dbirth("plc", plc_points(), 1_000)
    host = HostTracker(reorder_timeout_ms=TIMEOUT, rebirth_retry_ms=30_000)
    events: list[Event] = []
    for i in range(10):
        events += host.on_message(*mode(edge, i, 2_000 + i), 2_000 + i)
    assert kinds(events).count(Rejected) == 10
    assert [e for e in events if isinstance(e, RequestRebirth)] == [
        RequestRebirth(GROUP, NODE, "DDATA before NBIRTH")
    ]
    # still unanswered after the retry interval: ask again (the NCMD is QoS 0 and may be lost)
    assert kinds(host.on_message(*mode(edge, 1, 40_000), 40_000)) == [Rejected, RequestRebirth]
    # a birth resets it
    edge.rebirth()
    feed(host, [edge.nbirth([], 41_000)], now_ms=41_000)
    assert RequestRebirth in kinds(host.on_message(topic("NDATA", node=NODE), b"\xff", 41_001))


def test_malformed_payload_is_rejected() -> None:
    host = HostTracker()
    (event,) = host.on_message(topic("DDATA", "plc"), b"\x0a\xff\xff", 1)
    assert isinstance(event, Rejected)
    assert event.topic == topic("DDATA", "plc")


def test_malformed_payload_of_online_node_requests_rebirth_and_later_replay() -> None:
    edge, host, _ = online_pair()
    assert kinds(host.on_message(topic("DDATA", "plc"), b"\xff", 5_000)) == [Rejected, RequestRebirth]
    edge.rebirth()
    assert RequestReplay in kinds(feed(host, [edge.nbirth([], 6_000)]))


def test_unknown_topic_is_rejected() -> None:
    host = HostTracker()
    assert kinds(host.on_message("spBv1.0/g/NOPE/n", b"", 1)) == [Rejected]
    assert kinds(host.on_message("other/topic", b"", 1)) == [Rejected]


def test_unknown_alias_is_rejected_and_rebirth_requested() -> None:
    edge, host, _ = online_pair()
    events = host.on_message(
        topic("DDATA", "plc"),
        payload(
            3,
            Metric(alias=999, timestamp=1, value=1),
            Metric(alias=edge.alias_of("plc", "Mode"), timestamp=1, value=4),
        ),
        5_000,
    )
    assert kinds(events) == [Data, Rejected, RequestRebirth]
    assert readings(events) == [Reading("plc/Mode", 1, 4)]  # the known metric is kept


def test_alias_of_another_device_is_unknown() -> None:
    edge, host, _ = online_pair()
    foreign = edge.alias_of("vfd1", "Running")
    events = host.on_message(
        topic("DDATA", "plc"), payload(3, Metric(alias=foreign, timestamp=1, value=True)), 5_000
    )
    assert kinds(events) == [Rejected, RequestRebirth]


def test_mistyped_value_is_rejected() -> None:
    edge, host, _ = online_pair()
    events = host.on_message(
        topic("DDATA", "plc"),
        payload(3, Metric(alias=edge.alias_of("plc", "Mode"), timestamp=1, value="x")),
        5_000,
    )
    assert kinds(events) == [Rejected, RequestRebirth]


def test_birth_without_bdseq_or_with_duplicate_alias_is_rejected() -> None:
    host = HostTracker()
    no_bd_seq = payload(0, Metric("x", alias=1, timestamp=1, datatype=SpDataType.Boolean, value=True))
    assert kinds(host.on_message(topic("NBIRTH"), no_bd_seq, 1)) == [Rejected, RequestRebirth]
    host.on_message(topic("NBIRTH"), nbirth_payload(0), 2)
    twice = payload(
        1,
        Metric("a", alias=1, timestamp=1, datatype=SpDataType.Boolean, value=True),
        Metric("b", alias=1, timestamp=1, datatype=SpDataType.Boolean, value=True),
    )
    assert kinds(host.on_message(topic("DBIRTH", "plc"), twice, 3)) == [Rejected, RequestRebirth]


def test_commands_and_other_hosts_state_are_ignored() -> None:
    host = HostTracker(host_id="tapline")
    assert host.on_message(*rebirth_command(GROUP, NODE, 1), 1) == []
    assert host.on_message(state_topic("other"), state_payload(False, 5), 1) == []
    assert host.on_message(state_topic("tapline"), state_payload(True, 5), 1) == []


def test_tck_id_message_flow_hid_sparkplug_state_message_delivered_own_offline() -> None:
    host = HostTracker(host_id="tapline")
    assert host.on_message(state_topic("tapline"), state_payload(False, 5), 1) == [OwnStateOffline(5)]
    assert kinds(host.on_message(state_topic("tapline"), b"{", 1)) == [Rejected]


# --- sequencing ---------------------------------------------------------------------------------------


def test_duplicate_seq_is_passed_on_flagged() -> None:
    edge, host, _ = online_pair()
    message = mode(edge, 1, 3_000)
    (first,) = host.on_message(*message, 3_000)
    (again,) = host.on_message(*message, 3_001)
    assert isinstance(first, Data)
    assert isinstance(again, Data)
    assert not first.duplicate
    assert again.duplicate
    assert again.readings == first.readings


def test_tck_id_operational_behavior_host_reordering_success() -> None:
    edge, host, _ = online_pair()
    first, second, third = (mode(edge, i, 3_000 + i) for i in range(3))
    assert host.on_message(*second, 3_010) == []  # buffered: seq ahead of a gap
    assert host.on_message(*third, 3_020) == []
    assert host.next_deadline() == 3_010 + TIMEOUT
    events = host.on_message(*first, 3_500)  # gap filled in time
    assert [r.value for r in readings(events)] == [0, 1, 2]  # released in seq order
    assert host.next_deadline() is None
    assert host.on_tick(10_000) == []
    assert not any(isinstance(e, RequestRebirth) for e in events)


def test_tck_id_operational_behavior_host_reordering_rebirth() -> None:
    edge, host, _ = online_pair()
    feed(host, [mode(edge, 0, 3_000)], now_ms=3_000)  # last contiguous: ts 3000
    edge.ddata("plc", [Reading("plc/Mode", 3_001, 1)], 3_001)  # lost
    later = mode(edge, 2, 3_002)
    assert host.on_message(*later, 3_010) == []
    assert host.on_tick(3_010 + TIMEOUT - 1) == []
    events = host.on_tick(3_010 + TIMEOUT)
    assert events[:2] == [
        RequestReplay(GROUP, NODE, 3_000),
        RequestRebirth(GROUP, NODE, f"seq 4 missing for {TIMEOUT} ms"),
    ]
    assert readings(events) == [Reading("plc/Mode", 3_002, 2)]  # the buffered message is not lost
    assert host.next_deadline() is None
    status = host.node(GROUP, NODE)
    assert status is not None
    assert status.last_seq == 5


def test_reorder_timeout_also_fires_on_next_message() -> None:
    edge, host, _ = online_pair()
    edge.ddata("plc", [Reading("plc/Mode", 1, 1)], 1)  # lost
    host.on_message(*mode(edge, 2, 3_000), 3_000)
    events = host.on_message(*mode(edge, 3, 3_000 + TIMEOUT), 3_000 + TIMEOUT)
    assert kinds(events)[:2] == [RequestReplay, RequestRebirth]
    assert [r.value for r in readings(events)] == [2, 3]


def test_late_message_after_timeout_is_passed_on_as_duplicate() -> None:
    edge, host, _ = online_pair()
    lost = mode(edge, 1, 3_001)
    host.on_message(*mode(edge, 2, 3_002), 3_010)
    host.on_tick(3_010 + TIMEOUT)
    (event,) = host.on_message(*lost, 6_000)
    assert isinstance(event, Data)
    assert event.duplicate
    assert event.readings == (Reading("plc/Mode", 3_001, 1),)


def test_seq_wrap_255_to_0_is_not_a_gap() -> None:
    edge, host, _ = online_pair()
    events = feed(host, [mode(edge, i, 3_000 + i) for i in range(600)])
    assert not any(isinstance(e, RequestRebirth | Rejected) for e in events)
    assert [r.value for r in readings(events)] == list(range(600))


def test_ndeath_flushes_buffered_messages_before_going_offline() -> None:
    edge, host, _ = online_pair()
    edge.ddata("plc", [Reading("plc/Mode", 1, 1)], 1)  # lost
    host.on_message(*mode(edge, 2, 3_000), 3_000)
    events = host.on_message(*edge.will(), 3_100)
    assert kinds(events) == [RequestReplay, Data, NodeOffline]  # the gap is asked for, not skipped
    assert events[0] == RequestReplay(GROUP, NODE, 1_000)
    assert host.next_deadline() is None


@st.composite
def bounded_shuffle(draw: st.DrawFn) -> list[int]:
    """A permutation of 0..n-1 where no message is displaced by more than a few places."""
    n = draw(st.integers(1, 60))
    order = list(range(n))
    for _ in range(draw(st.integers(0, 40))):
        i = draw(st.integers(0, n - 1))
        j = min(n - 1, i + draw(st.integers(1, 5)))
        order[i], order[j] = order[j], order[i]
    return order


@given(bounded_shuffle())
@settings(max_examples=200)
def test_reordered_delivery_within_timeout_is_released_in_seq_order(order: list[int]) -> None:
    edge, host, _ = online_pair()
    messages = [mode(edge, i, 3_000 + i) for i in range(len(order))]
    events: list[Event] = []
    for position, index in enumerate(order):
        events += host.on_message(*messages[index], 3_000 + position)
    assert not any(isinstance(e, RequestRebirth | Rejected) for e in events)
    assert [r.value for r in readings(events)] == list(range(len(order)))
    assert host.next_deadline() is None


def test_nodes_view() -> None:
    _, host, _ = online_pair(bd_seq=6)
    (status,) = host.nodes()
    assert (status.group, status.node, status.online, status.bd_seq, status.last_seq) == (
        GROUP,
        NODE,
        True,
        6,
        2,
    )
    assert host.node(GROUP, "nope") is None
