"""``decode_birth`` (the births fast path) against ``decode_payload``: the same payload, or None."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tapline.bench.births import BirthsBench, encode_births
from tapline.sparkplug import sparkplug_b_pb2 as pb
from tapline.sparkplug.codec import Metric, Payload, SpDataType, decode_birth, decode_payload, encode_payload
from tapline.sparkplug.errors import PayloadError
from tests.unit.sparkplug.test_codec import VALUES, metrics, payloads, property_values, text

U64 = st.integers(0, (1 << 64) - 1)
SCALARS = [t for t in SpDataType if t not in (SpDataType.Bytes, SpDataType.File)]


@st.composite
def birth_metrics(draw: st.DrawFn) -> Metric:
    """Birth metrics as gateways write them: named, aliased, typed, engineering properties."""
    datatype = draw(st.sampled_from(SCALARS))
    is_null = draw(st.booleans())
    return Metric(
        name=draw(text),
        alias=draw(st.none() | U64),
        timestamp=draw(st.none() | U64),
        datatype=datatype,
        value=None if is_null else draw(VALUES[datatype]),
        is_null=is_null,
        is_historical=draw(st.booleans()),
        is_transient=draw(st.booleans()),
        properties=tuple(draw(st.lists(st.tuples(text, property_values), max_size=3))),
    )


births = st.builds(
    Payload,
    timestamp=st.none() | U64,
    seq=st.none() | st.integers(0, 255),
    metrics=st.lists(birth_metrics(), max_size=6).map(tuple),
)


def _same(fast: Payload | None, raw: bytes) -> None:
    """``fast`` (not None) is exactly what the general decoder reads from ``raw``."""
    assert fast is not None
    try:
        general = decode_payload(raw)
    except PayloadError as exc:
        raise AssertionError(f"fast path accepted bytes the general decoder rejects: {raw.hex()}") from exc
    assert repr(fast) == repr(general)  # repr: a mutated double may be NaN (NaN != NaN)


@given(births)
def test_plain_births_take_the_fast_path_with_the_same_meaning(payload: Payload) -> None:
    raw = encode_payload(payload)
    _same(decode_birth(raw), raw)


def test_the_fleet_births_take_the_fast_path() -> None:
    messages = encode_births(BirthsBench(db="none", rooms=3, points=80), 1_767_225_600_000)
    assert len(messages) > 3
    for _topic, raw in messages:
        _same(decode_birth(raw), raw)


@given(payloads)
def test_any_payload_decodes_the_same_or_is_left_to_the_general_decoder(payload: Payload) -> None:
    raw = encode_payload(payload)
    fast = decode_birth(raw)
    if fast is not None:
        _same(fast, raw)


def test_what_is_not_a_plain_birth_is_left_to_the_general_decoder() -> None:
    named = Metric(name="Flow", alias=1, datatype=SpDataType.Double, value=1.0)
    assert decode_birth(encode_payload(Payload(1, 0, (named,), uuid="u"))) is None
    assert decode_birth(encode_payload(Payload(1, 0, (Metric(alias=1, value=1.0),)))) is None  # no name
    assert decode_birth(encode_payload(Payload(1, 0, (Metric(name="b", value=b"x"),)))) is None
    assert decode_birth(pb.Payload(timestamp=1, seq=300).SerializeToString()) is None
    no_value = pb.Payload(seq=0)
    no_value.metrics.add(name="Flow", datatype=SpDataType.Double)
    assert decode_birth(no_value.SerializeToString()) is None  # malformed: the general decoder says why
    wrong = pb.Payload(seq=0)
    wrong.metrics.add(name="Flow", datatype=SpDataType.Double, string_value="x")
    assert decode_birth(wrong.SerializeToString()) is None


@settings(max_examples=300)
@given(
    st.one_of(births, st.builds(Payload, st.none(), st.just(0), st.lists(metrics(), max_size=3).map(tuple))),
    st.data(),
)
def test_mutated_bytes_never_decode_differently(payload: Payload, data: st.DataObject) -> None:
    raw = bytearray(encode_payload(payload))
    for _ in range(data.draw(st.integers(1, 3))):
        if not raw:
            break
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()) and raw:
        del raw[data.draw(st.integers(0, len(raw) - 1))]
    fast = decode_birth(bytes(raw))
    if fast is not None:
        _same(fast, bytes(raw))


@given(st.binary(max_size=200))
def test_random_bytes_never_decode_differently(raw: bytes) -> None:
    fast = decode_birth(raw)
    if fast is not None:
        _same(fast, raw)
