"""``decode_data`` (the plain-data fast path) against ``decode_payload``: same meaning, or None."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tapline.domain.model import DataType, Quality
from tapline.sim.fleet_codec import DeviceEncoder
from tapline.sparkplug import sparkplug_b_pb2 as pb
from tapline.sparkplug.codec import (
    DataPayload,
    Metric,
    Payload,
    SpDataType,
    decode_data,
    decode_payload,
    encode_payload,
    quality_properties,
)
from tapline.sparkplug.errors import PayloadError

U64 = st.integers(0, (1 << 64) - 1)
plain_values = st.one_of(st.floats(allow_nan=False), st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1))


@st.composite
def plain_metrics(draw: st.DrawFn) -> Metric:
    """Data metrics a gateway sends: by alias, no datatype, optionally historical."""
    return Metric(
        alias=draw(U64),
        timestamp=draw(st.none() | U64),
        value=draw(plain_values),
        is_historical=draw(st.booleans()),
    )


plain_payloads = st.builds(
    Payload,
    timestamp=st.none() | U64,
    seq=st.integers(0, 255),
    metrics=st.lists(plain_metrics(), max_size=12).map(tuple),
)


def _as_lean(payload: Payload) -> DataPayload:
    """What ``decode_data`` must return for a payload ``decode_payload`` reads as ``payload``."""
    return DataPayload(
        payload.timestamp,
        payload.seq if payload.seq is not None else -1,
        [(m.alias or 0, m.timestamp, m.value, m.datatype, m.is_historical) for m in payload.metrics],  # type: ignore[misc]
    )


@given(plain_payloads)
def test_plain_payloads_take_the_fast_path_with_the_same_meaning(payload: Payload) -> None:
    data = encode_payload(payload)
    lean = decode_data(data)
    assert lean is not None
    assert lean == _as_lean(decode_payload(data))


def test_fleet_encoder_output_takes_the_fast_path() -> None:
    encoder = DeviceEncoder([3, 4, 5, 200], [DataType.FLOAT, DataType.BOOL, DataType.INT, DataType.INT])
    data = encoder.encode(1_767_225_600_123, 7, [0, 1, 2, 3], [0.42, True, -5, 1 << 40])
    lean = decode_data(data)
    assert lean is not None
    assert lean.seq == 7
    assert lean.timestamp == 1_767_225_600_123
    assert [m[:3] for m in lean.metrics] == [
        (3, 1_767_225_600_123, 0.42),
        (4, 1_767_225_600_123, True),
        (5, 1_767_225_600_123, (-5) & ((1 << 64) - 1)),  # raw wire value: the birth's datatype applies
        (200, 1_767_225_600_123, 1 << 40),
    ]


def test_a_declared_datatype_is_applied_as_the_general_decoder_does() -> None:
    payload = Payload(5, 1, (Metric(alias=1, datatype=SpDataType.Int64, value=-3),))
    lean = decode_data(encode_payload(payload))
    assert lean is not None
    assert lean.metrics == [(1, None, -3, SpDataType.Int64, False)]


@given(
    st.sampled_from(
        [
            Metric(name="plc/Flow", value=1.0),  # by name
            Metric(alias=1, value=1.0, properties=quality_properties(Quality.BAD)),
            Metric(alias=1, is_null=True, datatype=SpDataType.Double),
            Metric(alias=1, value="text"),
            Metric(alias=1, value=b"raw"),
            Metric(alias=1, datatype=SpDataType.Float, value=1.5),  # float_value
            Metric(alias=1, value=1.0, is_transient=True),
        ]
    ),
    st.none() | st.text(max_size=3),
)
def test_anything_else_is_left_to_the_general_decoder(metric: Metric, uuid: str | None) -> None:
    assert decode_data(encode_payload(Payload(1, 2, (metric,), uuid=uuid))) is None


def test_no_seq_or_seq_above_255_is_left_to_the_general_decoder() -> None:
    assert decode_data(encode_payload(Payload(1, None, (Metric(alias=1, value=1.0),)))) is None
    raw = pb.Payload(timestamp=1, seq=300).SerializeToString()
    assert decode_data(raw) is None


@settings(max_examples=300)
@given(plain_payloads, st.data())
def test_mutated_bytes_never_decode_differently(payload: Payload, data: st.DataObject) -> None:
    raw = bytearray(encode_payload(payload))
    for _ in range(data.draw(st.integers(1, 3))):
        if not raw:
            break
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()) and raw:
        del raw[data.draw(st.integers(0, len(raw) - 1))]
    lean = decode_data(bytes(raw))
    if lean is None:
        return
    try:
        general = decode_payload(bytes(raw))
    except PayloadError as exc:
        raise AssertionError(f"fast path accepted bytes the general decoder rejects: {raw.hex()}") from exc
    assert repr(lean) == repr(_as_lean(general))  # repr: a mutated double may be NaN (NaN != NaN)


@given(st.binary(max_size=200))
def test_random_bytes_never_decode_differently(raw: bytes) -> None:
    lean = decode_data(raw)
    if lean is not None:
        assert repr(lean) == repr(_as_lean(decode_payload(raw)))
