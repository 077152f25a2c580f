"""Payload codec: every datatype round-trips, signed integers both ways, malformed input -> PayloadError."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapline.domain.model import DataType, Quality
from tapline.sparkplug import sparkplug_b_pb2 as pb
from tapline.sparkplug.codec import (
    DOMAIN_TO_SPARKPLUG,
    Metric,
    MetricValue,
    Payload,
    SpDataType,
    coerce,
    decode_payload,
    domain_datatype,
    encode_payload,
    quality_from_properties,
    quality_properties,
)
from tapline.sparkplug.errors import PayloadError

text = st.text(st.characters(exclude_categories=["Cs"]))


def _int(bits: int, signed: bool) -> st.SearchStrategy[int]:
    if signed:
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


VALUES: dict[SpDataType, st.SearchStrategy[MetricValue]] = {
    SpDataType.Int8: _int(8, True),
    SpDataType.Int16: _int(16, True),
    SpDataType.Int32: _int(32, True),
    SpDataType.Int64: _int(64, True),
    SpDataType.UInt8: _int(8, False),
    SpDataType.UInt16: _int(16, False),
    SpDataType.UInt32: _int(32, False),
    SpDataType.UInt64: _int(64, False),
    SpDataType.Float: st.floats(width=32, allow_nan=False),
    SpDataType.Double: st.floats(allow_nan=False),
    SpDataType.Boolean: st.booleans(),
    SpDataType.String: text,
    SpDataType.DateTime: _int(64, False),
    SpDataType.Text: text,
    SpDataType.UUID: st.uuids().map(str),
    SpDataType.Bytes: st.binary(),
    SpDataType.File: st.binary(),
}

property_values = st.one_of(
    st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1), st.floats(allow_nan=False), text
)


@st.composite
def metrics(draw: st.DrawFn) -> Metric:
    datatype = draw(st.sampled_from(list(SpDataType)))
    is_null = draw(st.booleans())
    return Metric(
        name=draw(st.none() | text),
        alias=draw(st.none() | st.integers(0, (1 << 64) - 1)),
        timestamp=draw(st.none() | st.integers(0, (1 << 64) - 1)),
        datatype=datatype,
        value=None if is_null else draw(VALUES[datatype]),
        is_historical=draw(st.booleans()),
        is_transient=draw(st.booleans()),
        is_null=is_null,
        properties=tuple(draw(st.lists(st.tuples(text, property_values), max_size=3))),
    )


payloads = st.builds(
    Payload,
    timestamp=st.none() | st.integers(0, (1 << 64) - 1),
    seq=st.none() | st.integers(0, 255),
    metrics=st.lists(metrics(), max_size=5).map(tuple),
    uuid=st.none() | text,
    body=st.none() | st.binary(),
)


@given(payloads)
def test_payload_round_trip_every_datatype(payload: Payload) -> None:
    assert decode_payload(encode_payload(payload)) == payload


@pytest.mark.parametrize("datatype", list(SpDataType))
def test_tck_id_payloads_metric_datatype_value_each_datatype(datatype: SpDataType) -> None:
    @given(VALUES[datatype])
    @settings(max_examples=30)
    def check(value: MetricValue) -> None:
        metric = Metric(name="m", timestamp=1, datatype=datatype, value=value)
        decoded = decode_payload(encode_payload(Payload(1, 0, (metric,)))).metrics[0]
        assert decoded.datatype is datatype
        assert decoded.value == value
        assert type(decoded.value) is type(value)

    check()


@pytest.mark.parametrize(
    ("datatype", "value", "tahu_python_wire", "tahu_java_wire"),
    [
        (SpDataType.Int8, -1, 0xFF, 0xFFFF_FFFF),
        (SpDataType.Int8, -128, 0x80, 0xFFFF_FF80),
        (SpDataType.Int16, -2, 0xFFFE, 0xFFFF_FFFE),
        (SpDataType.Int32, -(1 << 31), 0x8000_0000, 0x8000_0000),
    ],
)
def test_signed_integers_accept_own_width_and_sign_extended(
    datatype: SpDataType, value: int, tahu_python_wire: int, tahu_java_wire: int
) -> None:
    for wire in (tahu_python_wire, tahu_java_wire):
        message = pb.Payload(seq=0, metrics=[pb.Payload.Metric(name="m", datatype=datatype, int_value=wire)])
        assert decode_payload(message.SerializeToString()).metrics[0].value == value
    encoded = pb.Payload.FromString(
        encode_payload(Payload(None, 0, (Metric("m", None, None, datatype, value),)))
    )
    assert encoded.metrics[0].int_value == tahu_python_wire


def test_int64_negative_is_twos_complement_in_long_value() -> None:
    encoded = encode_payload(Payload(None, 0, (Metric("m", datatype=SpDataType.Int64, value=-5),)))
    assert pb.Payload.FromString(encoded).metrics[0].long_value == (1 << 64) - 5
    assert decode_payload(encoded).metrics[0].value == -5


def test_integer_datatypes_accept_either_integer_field() -> None:
    message = pb.Payload(
        seq=0, metrics=[pb.Payload.Metric(name="m", datatype=SpDataType.UInt32, long_value=7)]
    )
    assert decode_payload(message.SerializeToString()).metrics[0].value == 7


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (SpDataType.Int8, 128),
        (SpDataType.Int8, -129),
        (SpDataType.UInt8, -1),
        (SpDataType.UInt16, 1 << 16),
        (SpDataType.Int64, 1 << 63),
        (SpDataType.UInt64, 1 << 64),
        (SpDataType.Int32, True),
        (SpDataType.Int64, 1.0),
        (SpDataType.Boolean, 1),
        (SpDataType.Double, "1.0"),
        (SpDataType.Float, 1e39),
        (SpDataType.String, b"x"),
        (SpDataType.Bytes, "x"),
    ],
)
def test_encode_rejects_wrong_type_or_range(datatype: SpDataType, value: object) -> None:
    with pytest.raises(PayloadError):
        encode_payload(Payload(None, 0, (Metric("m", datatype=datatype, value=value),)))  # type: ignore[arg-type]


def test_encode_widens_int_to_float_for_double() -> None:
    payload = Payload(None, 0, (Metric("m", datatype=SpDataType.Double, value=3),))
    value = decode_payload(encode_payload(payload)).metrics[0].value
    assert value == 3.0
    assert type(value) is float


def test_encode_rejects_seq_out_of_range() -> None:
    with pytest.raises(PayloadError):
        encode_payload(Payload(None, 256, ()))


def test_encode_rejects_unencodable_string() -> None:
    with pytest.raises(PayloadError):
        encode_payload(Payload(None, 0, (Metric("\udc80", datatype=SpDataType.Boolean, value=True),)))


def test_tck_id_payloads_metric_datatype_not_req_inferred_from_value() -> None:
    payload = Payload(
        1,
        3,
        (
            Metric(alias=1, timestamp=1, value=True),
            Metric(alias=2, timestamp=1, value=-7),
            Metric(alias=3, timestamp=1, value=0.25),
            Metric(alias=4, timestamp=1, value="x"),
            Metric(alias=5, timestamp=1, value=b"\x00"),
        ),
    )
    raw = pb.Payload.FromString(encode_payload(payload))
    assert not any(metric.HasField("datatype") for metric in raw.metrics)
    decoded = decode_payload(encode_payload(payload)).metrics
    assert [m.value for m in decoded] == [True, (1 << 64) - 7, 0.25, "x", b"\x00"]
    assert coerce(decoded[1].value, SpDataType.Int64) == -7  # type: ignore[arg-type]
    assert coerce(decoded[1].value, SpDataType.Int8) == -7  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "datatype"),
    [(1.0, SpDataType.Int64), (300, SpDataType.UInt8), (True, SpDataType.Double), ("1", SpDataType.Boolean)],
)
def test_coerce_rejects_mismatch(value: MetricValue, datatype: SpDataType) -> None:
    with pytest.raises(PayloadError):
        coerce(value, datatype)


def test_tck_id_operational_behavior_data_publish_nbirth_values_null() -> None:
    payload = Payload(1, 0, (Metric("m", alias=4, timestamp=1, datatype=SpDataType.Double, is_null=True),))
    raw = pb.Payload.FromString(encode_payload(payload))
    assert raw.metrics[0].is_null
    assert raw.metrics[0].WhichOneof("value") is None
    assert decode_payload(encode_payload(payload)) == payload


def test_metric_without_value_and_not_null_is_malformed() -> None:
    message = pb.Payload(seq=0, metrics=[pb.Payload.Metric(name="m", datatype=SpDataType.Int32)])
    with pytest.raises(PayloadError, match="no value"):
        decode_payload(message.SerializeToString())


def test_value_field_must_match_datatype() -> None:
    message = pb.Payload(
        seq=0, metrics=[pb.Payload.Metric(name="m", datatype=SpDataType.Int32, string_value="1")]
    )
    with pytest.raises(PayloadError):
        decode_payload(message.SerializeToString())


@pytest.mark.parametrize("datatype", [0, 16, 19, 22, 99])
def test_tck_id_payloads_metric_datatype_value_unsupported(datatype: int) -> None:
    message = pb.Payload(seq=0, metrics=[pb.Payload.Metric(name="m", datatype=datatype, int_value=1)])
    with pytest.raises(PayloadError, match="datatype"):
        decode_payload(message.SerializeToString())


def test_decode_rejects_seq_above_255() -> None:
    with pytest.raises(PayloadError, match="seq"):
        decode_payload(pb.Payload(seq=256).SerializeToString())


def test_decode_rejects_oversize_before_parsing() -> None:
    data = encode_payload(Payload(1, 0, (Metric("m", datatype=SpDataType.String, value="x" * 100),)))
    with pytest.raises(PayloadError, match="exceeds"):
        decode_payload(data, max_size=50)
    assert decode_payload(data, max_size=len(data)).metrics[0].value == "x" * 100


def test_decode_rejects_invalid_utf8() -> None:
    # Metric (field 2) containing name (field 1) = b"\xff"; proto2 + upb hands back bytes for it.
    data = bytes([0x12, 0x03, 0x0A, 0x01, 0xFF])
    with pytest.raises(PayloadError, match="UTF-8"):
        decode_payload(data)


def test_tck_id_payloads_propertyset_keys_array_size() -> None:
    properties = pb.Payload.PropertySet(
        keys=["a", "b"], values=[pb.Payload.PropertyValue(type=11, boolean_value=True)]
    )
    metric = pb.Payload.Metric(
        name="m", datatype=SpDataType.Boolean, boolean_value=True, properties=properties
    )
    with pytest.raises(PayloadError, match="keys"):
        decode_payload(pb.Payload(seq=0, metrics=[metric]).SerializeToString())


def test_properties_round_trip_with_engineering_range() -> None:
    metric = Metric(
        "OutletPressure",
        1,
        5,
        SpDataType.Double,
        0.42,
        properties=(("engUnit", "MPa"), ("engLow", 0.0), ("engHigh", 1.6), ("big", 1 << 40), ("ro", True)),
    )
    decoded = decode_payload(encode_payload(Payload(5, 1, (metric,)))).metrics[0]
    assert decoded == metric
    assert decoded.property("engUnit") == "MPa"
    assert decoded.property("missing") is None


@pytest.mark.parametrize("quality", list(Quality))
def test_tck_id_payloads_propertyset_quality_value_type_and_value(quality: Quality) -> None:
    metric = Metric(alias=1, timestamp=1, value=1.0, properties=quality_properties(quality))
    raw = pb.Payload.FromString(encode_payload(Payload(1, 0, (metric,))))
    props = raw.metrics[0].properties
    if quality is Quality.GOOD:
        assert not raw.metrics[0].HasField("properties")
    else:
        index = list(props.keys).index("Quality")
        assert props.values[index].type == SpDataType.Int32
        assert props.values[index].WhichOneof("value") == "int_value"
        assert props.values[index].int_value in (0, 192, 500)
    decoded = decode_payload(encode_payload(Payload(1, 0, (metric,)))).metrics[0]
    assert quality_from_properties(decoded.properties) is quality


def test_null_property_is_skipped() -> None:
    properties = pb.Payload.PropertySet(keys=["x"], values=[pb.Payload.PropertyValue(type=12, is_null=True)])
    metric = pb.Payload.Metric(
        name="m", datatype=SpDataType.Boolean, boolean_value=True, properties=properties
    )
    assert decode_payload(pb.Payload(seq=0, metrics=[metric]).SerializeToString()).metrics[0].properties == ()


def test_domain_datatype_mapping() -> None:
    for domain, sparkplug in DOMAIN_TO_SPARKPLUG.items():
        assert domain_datatype(sparkplug) is domain
    assert domain_datatype(SpDataType.Int8) is DataType.INT
    assert domain_datatype(SpDataType.Float) is DataType.FLOAT
    assert domain_datatype(SpDataType.Bytes) is None


def test_float_special_values_survive() -> None:
    payload = Payload(None, 0, (Metric("a", datatype=SpDataType.Double, value=math.inf),))
    assert decode_payload(encode_payload(payload)).metrics[0].value == math.inf
    nan = Payload(None, 0, (Metric("b", datatype=SpDataType.Float, value=math.nan),))
    value = decode_payload(encode_payload(nan)).metrics[0].value
    assert isinstance(value, float)
    assert math.isnan(value)


@given(st.binary(max_size=512))
@settings(max_examples=2000)
def test_decode_fuzz_random_bytes_raise_only_payload_error(data: bytes) -> None:
    with contextlib.suppress(PayloadError):
        decode_payload(data)


@given(payloads, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6))
@settings(max_examples=1000)
def test_decode_fuzz_mutated_payloads_raise_only_payload_error(
    payload: Payload, mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(encode_payload(payload))
    if not data:
        return
    for position, byte in mutations:
        data[position % len(data)] = byte
    with contextlib.suppress(PayloadError):
        decode_payload(bytes(data))
