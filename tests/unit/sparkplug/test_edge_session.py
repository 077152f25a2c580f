"""Edge-node session: bdSeq, seq, aliases, births, data, deaths and inbound commands."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapline.domain.model import Quality, Reading
from tapline.sparkplug import sparkplug_b_pb2 as pb
from tapline.sparkplug.codec import Metric, Payload, SpDataType, decode_payload, encode_payload
from tapline.sparkplug.edge_session import EdgeNodeSession, Rebirth, Replay, WritePoint
from tapline.sparkplug.errors import PayloadError, SessionError, TopicError
from tapline.sparkplug.host_session import rebirth_command, replay_command, write_command
from tapline.sparkplug.topics import MessageType, Topic

from .helpers import GROUP, NODE, UPTIME, plc_points, topic, vfd_points


def born(bd_seq: int = 3) -> EdgeNodeSession:
    session = EdgeNodeSession(GROUP, NODE, bd_seq)
    session.nbirth([(UPTIME, 12, 1_000)], 1_000)
    session.dbirth("plc", plc_points(), 1_000)
    session.dbirth("vfd1", vfd_points(), 1_000)
    return session


def metric_named(data: bytes, name: str) -> Metric:
    return next(m for m in decode_payload(data).metrics if m.name == name)


def test_tck_id_payloads_ndeath_will_message_bdseq_int64() -> None:
    session = EdgeNodeSession(GROUP, NODE, 7)
    will_topic, will = session.will()
    assert will_topic == topic("NDEATH")
    decoded = decode_payload(will)
    assert decoded.seq is None  # tck-id-payloads-ndeath-seq
    (bd_seq,) = decoded.metrics
    assert (bd_seq.name, bd_seq.datatype, bd_seq.value) == ("bdSeq", SpDataType.Int64, 7)


def test_tck_id_payloads_nbirth_bdseq_equals_will_bdseq() -> None:
    session = EdgeNodeSession(GROUP, NODE, 42)
    _, will = session.will()
    _, birth = session.nbirth([], 1_000)
    assert metric_named(will, "bdSeq").value == metric_named(birth, "bdSeq").value == 42


def test_tck_id_payloads_sequence_num_zero_nbirth_and_nbirth_contents() -> None:
    session = EdgeNodeSession(GROUP, NODE, 1)
    birth_topic, birth = session.nbirth([(UPTIME, 5, 900)], 1_000)
    decoded = decode_payload(birth)
    assert birth_topic == topic("NBIRTH")
    assert decoded.seq == 0
    assert decoded.timestamp == 1_000
    rebirth = metric_named(birth, "Node Control/Rebirth")
    assert (rebirth.datatype, rebirth.value, rebirth.alias) == (SpDataType.Boolean, False, None)
    replay = metric_named(birth, "Node Control/Replay")
    assert (replay.datatype, replay.alias) == (SpDataType.Int64, None)
    uptime = metric_named(birth, "edge/Uptime")
    assert uptime.alias is not None
    assert (uptime.datatype, uptime.value, uptime.timestamp) == (SpDataType.Int64, 5, 900)
    assert all(
        m.timestamp is not None for m in decoded.metrics
    )  # tck-id-payloads-name-birth-data-requirement


def test_tck_id_payloads_sequence_num_incrementing() -> None:
    session = born()
    seqs = [
        decode_payload(session.ddata("plc", [Reading("plc/Mode", 2_000, 1)], 2_000)[1]).seq for _ in range(3)
    ]
    assert seqs == [3, 4, 5]  # NBIRTH 0, DBIRTH plc 1, DBIRTH vfd1 2


def test_seq_wraps_255_to_0() -> None:
    session = born()
    seqs = [
        decode_payload(session.ddata("plc", [Reading("plc/Mode", 2_000, i)], 2_000)[1]).seq
        for i in range(300)
    ]
    assert seqs[252:255] == [255, 0, 1]
    assert all(0 <= s <= 255 for s in seqs if s is not None)


def test_tck_id_payloads_dbirth_seq_inc_and_contents() -> None:
    session = EdgeNodeSession(GROUP, NODE, 0)
    session.nbirth([], 1_000)
    birth_topic, birth = session.dbirth("plc", plc_points(900), 1_000)
    decoded = decode_payload(birth)
    assert birth_topic == topic("DBIRTH", "plc")
    assert decoded.seq == 1
    outlet = metric_named(birth, "OutletPressure")
    assert outlet.datatype is SpDataType.Double
    assert outlet.value == 0.45
    assert outlet.properties == (("engUnit", "MPa"), ("engLow", 0.0), ("engHigh", 1.6))
    assert metric_named(birth, "Mode").datatype is SpDataType.Int64


def test_tck_id_operational_behavior_data_publish_dbirth_values_null() -> None:
    session = EdgeNodeSession(GROUP, NODE, 0)
    session.nbirth([], 1_000)
    _, birth = session.dbirth("vfd1", vfd_points(), 1_000)
    text = metric_named(birth, "FaultText")
    assert text.is_null
    assert text.value is None
    assert text.datatype is SpDataType.String


def test_aliases_unique_across_node_and_stable_across_rebirth() -> None:
    session = born()
    first = {
        (d, n): session.alias_of(d, n)
        for d, n in [(None, "edge/Uptime"), ("plc", "OutletPressure"), ("plc", "Mode"), ("vfd1", "Running")]
    }
    assert None not in first.values()
    assert len(set(first.values())) == len(first)
    session.rebirth()
    session.nbirth([(UPTIME, 13, 2_000)], 2_000)
    session.dbirth("vfd1", vfd_points(), 2_000)  # other order this time
    session.dbirth("plc", plc_points(), 2_000)
    assert {key: session.alias_of(*key) for key in first} == first


def test_tck_id_payloads_alias_data_cmd_requirement_ddata_by_alias_only() -> None:
    session = born()
    data_topic, data = session.ddata(
        "plc", [Reading("plc/OutletPressure", 2_001, 0.5), Reading("plc/Mode", 2_000, 2)], 2_005
    )
    assert data_topic == topic("DDATA", "plc")
    raw = pb.Payload.FromString(data)
    assert all(not m.HasField("name") for m in raw.metrics)
    assert all(not m.HasField("datatype") for m in raw.metrics)  # tck-id-payloads-metric-datatype-not-req
    decoded = decode_payload(data)
    # chronological order (tck-id-operational-behavior-data-publish-dbirth-order)
    assert [m.timestamp for m in decoded.metrics] == [2_000, 2_001]
    assert [m.alias for m in decoded.metrics] == [
        session.alias_of("plc", "Mode"),
        session.alias_of("plc", "OutletPressure"),
    ]


def test_ddata_historical_and_quality() -> None:
    session = born()
    _, data = session.ddata(
        "plc", [Reading("plc/OutletPressure", 5, 0.1, Quality.BAD)], 2_000, historical=True
    )
    (metric,) = decode_payload(data).metrics
    assert metric.is_historical
    assert ("Quality", 0) in metric.properties


def test_ddata_int_value_for_float_point_is_widened() -> None:
    session = born()
    _, data = session.ddata("plc", [Reading("plc/OutletPressure", 5, 1)], 2_000)
    assert pb.Payload.FromString(data).metrics[0].double_value == 1.0


def test_ddata_wrong_type_raises_payload_error() -> None:
    session = born()
    with pytest.raises(PayloadError):
        session.ddata("plc", [Reading("plc/Mode", 5, 1.5)], 2_000)


def test_ndata_by_alias() -> None:
    session = born()
    data_topic, data = session.ndata([Reading("edge/Uptime", 2_000, 99)], 2_000)
    assert data_topic == topic("NDATA")
    (metric,) = decode_payload(data).metrics
    assert (metric.alias, metric.value) == (session.alias_of(None, "edge/Uptime"), 99)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.ddata("plc", [Reading("plc/Unknown", 1, 1)], 1),
        lambda s: s.ddata("plc", [Reading("vfd1/Running", 1, True)], 1),
        lambda s: s.ddata("plc", [Reading("noslash", 1, True)], 1),
        lambda s: s.ddata("wq", [Reading("wq/PH", 1, 7.0)], 1),
        lambda s: s.ndata([Reading("edge/Unknown", 1, 1)], 1),
        lambda s: s.ddeath("wq", 1),
        lambda s: s.dbirth("wq", plc_points(), 1),
    ],
)
def test_misuse_raises_session_error(call: object) -> None:
    session = born()
    with pytest.raises(SessionError):
        call(session)  # type: ignore[operator]


def test_tck_id_message_flow_device_birth_publish_nbirth_wait() -> None:
    session = EdgeNodeSession(GROUP, NODE, 0)
    with pytest.raises(SessionError):
        session.dbirth("plc", plc_points(), 1)
    with pytest.raises(SessionError):
        session.ndata([], 1)


def test_tck_id_operational_behavior_data_commands_rebirth_action_1_2_3() -> None:
    session = born(bd_seq=9)
    session.rebirth()
    assert not session.born
    assert session.devices == frozenset()
    with pytest.raises(SessionError):  # action-1: stop sending DATA
        session.ddata("plc", [Reading("plc/Mode", 1, 1)], 1)
    _, birth = session.nbirth([], 2_000)
    assert decode_payload(birth).seq == 0
    assert metric_named(birth, "bdSeq").value == 9  # action-3: same bdSeq
    with pytest.raises(SessionError):  # devices must be born again (action-2)
        session.ddata("plc", [Reading("plc/Mode", 1, 1)], 1)
    session.dbirth("plc", plc_points(), 2_000)
    session.ddata("plc", [Reading("plc/Mode", 1, 1)], 2_001)


def test_ddeath_then_ddata_refused_until_dbirth() -> None:
    session = born()
    death_topic, death = session.ddeath("vfd1", 3_000)
    assert death_topic == topic("DDEATH", "vfd1")
    assert decode_payload(death).seq == 3
    assert decode_payload(death).timestamp == 3_000
    assert session.devices == frozenset({"plc"})
    with pytest.raises(SessionError):
        session.ddata("vfd1", [Reading("vfd1/Running", 1, True)], 1)


def test_tck_id_operational_behavior_edge_node_intentional_disconnect_ndeath() -> None:
    session = born(bd_seq=4)
    death_topic, death = session.ndeath(5_000)
    assert death_topic == topic("NDEATH")
    decoded = decode_payload(death)
    assert decoded.seq is None
    assert metric_named(death, "bdSeq").value == 4
    with pytest.raises(SessionError):
        session.nbirth([], 6_000)
    assert session.will()[1] == session.will()[1]  # the Will stays registrable


@pytest.mark.parametrize("bd_seq", [-1, 256])
def test_bd_seq_range(bd_seq: int) -> None:
    with pytest.raises(SessionError):
        EdgeNodeSession(GROUP, NODE, bd_seq)


def test_invalid_ids_raise_topic_error() -> None:
    with pytest.raises(TopicError):
        EdgeNodeSession("a/b", NODE, 0)


# --- commands -----------------------------------------------------------------------------------------


def test_tck_id_operational_behavior_data_commands_ncmd_rebirth_verb_name_value() -> None:
    command_topic, command = rebirth_command(GROUP, NODE, 5)
    assert Topic.parse(command_topic).type is MessageType.NCMD
    (metric,) = decode_payload(command).metrics
    assert (metric.name, metric.value) == ("Node Control/Rebirth", True)
    assert born().parse_command(command_topic, command) == Rebirth()


def test_parse_replay_command() -> None:
    session = born()
    assert session.parse_command(*replay_command(GROUP, NODE, 1_000, 5)) == Replay(1_000, None)
    assert session.parse_command(*replay_command(GROUP, NODE, 1_000, 5, to_ms=2_000)) == Replay(1_000, 2_000)
    with pytest.raises(PayloadError):
        session.parse_command(*replay_command(GROUP, NODE, 3_000, 5, to_ms=2_000))


def test_tck_id_operational_behavior_data_commands_dcmd_metric_name_and_value() -> None:
    session = born()
    assert session.parse_command(
        *write_command(GROUP, NODE, "plc", "OutletPressureSP", 0.55, 5)
    ) == WritePoint("plc", "OutletPressureSP", 0.55)
    assert session.parse_command(*write_command(GROUP, NODE, "plc", "Mode", -1, 5)) == WritePoint(
        "plc", "Mode", -1
    )
    assert session.parse_command(*write_command(GROUP, NODE, None, "edge/Uptime", 0, 5)) == WritePoint(
        None, "edge/Uptime", 0
    )


def test_dcmd_resolved_by_alias() -> None:
    session = born()
    alias = session.alias_of("vfd1", "Running")
    command = encode_payload(Payload(5, 0, (Metric(alias=alias, timestamp=5, value=False),)))
    assert session.parse_command(topic("DCMD", "vfd1"), command) == WritePoint("vfd1", "Running", False)


@pytest.mark.parametrize(
    ("command_topic", "metric", "error"),
    [
        (topic("DCMD", "plc"), Metric("Nope", value=1), PayloadError),
        (topic("DCMD", "plc"), Metric(alias=9_999, value=1), PayloadError),
        (topic("DCMD", "plc"), Metric("Mode", value=1.5), PayloadError),
        (topic("DCMD", "plc"), Metric("Mode", value=1, datatype=SpDataType.Int32), PayloadError),
        (topic("DCMD", "plc"), Metric("Mode", is_null=True), PayloadError),
        (topic("DCMD", "vfd1"), Metric("Mode", value=1), PayloadError),  # Mode is plc's, not vfd1's
        (topic("DCMD", "wq"), Metric("PH", value=7.0), TopicError),
        (topic("NCMD"), Metric("Node Control/Rebirth", value=False), PayloadError),
        (topic("NCMD"), Metric("Node Control/Rebirth", value=1), PayloadError),
        (topic("NCMD"), Metric("Node Control/Replay", value="yesterday"), PayloadError),
        (topic("DDATA", "plc"), Metric("Mode", value=1), TopicError),
        (topic("DCMD", "plc", node="PR-0002"), Metric("Mode", value=1), TopicError),
        ("not/a/topic", Metric("Mode", value=1), TopicError),
    ],
)
def test_parse_command_rejects_malformed_or_unknown(
    command_topic: str, metric: Metric, error: type[Exception]
) -> None:
    session = born()
    with pytest.raises(error):
        session.parse_command(command_topic, encode_payload(Payload(5, 0, (metric,))))


def test_parse_command_needs_exactly_one_metric() -> None:
    session = born()
    two = encode_payload(Payload(5, 0, (Metric("Mode", value=1), Metric("Mode", value=2))))
    with pytest.raises(PayloadError):
        session.parse_command(topic("DCMD", "plc"), two)
    with pytest.raises(PayloadError):
        session.parse_command(topic("DCMD", "plc"), b"\xff\xff")


@given(st.binary(max_size=200))
def test_parse_command_fuzz_raises_only_sparkplug_errors(data: bytes) -> None:
    session = born()
    with contextlib.suppress(PayloadError, TopicError):
        session.parse_command(topic("DCMD", "plc"), data)
