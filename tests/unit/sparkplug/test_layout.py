"""``layout.read`` against ``decode_data``: the same payload, or None — never a different reading."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tapline.domain.model import DataType
from tapline.sim.fleet_codec import DeviceEncoder
from tapline.sparkplug.codec import Metric, MetricValue, Payload, decode_data, encode_payload
from tapline.sparkplug.layout import DataColumns, layout_of, read

STAMP = st.integers(1 << 35, (1 << 42) - 1)  # 6-byte varints: every ms timestamp from 1971 to 2109


@st.composite
def kinds(draw: st.DrawFn) -> list[tuple[int, str]]:
    """(alias, value kind) per metric of one gateway message."""
    count = draw(st.integers(1, 12))
    aliases = draw(st.lists(st.integers(0, 1 << 20), min_size=count, max_size=count))
    return [(a, draw(st.sampled_from(["double", "bool", "long"]))) for a in aliases]


def _value(draw: st.DrawFn, kind: str, small: bool) -> MetricValue:
    if kind == "double":
        return draw(st.floats(allow_nan=False))
    if kind == "bool":
        return draw(st.booleans())
    return draw(st.integers(0, 127) if small else st.integers(-(1 << 63), (1 << 63) - 1))


@st.composite
def messages(draw: st.DrawFn, shape: list[tuple[int, str]], stamped: bool, small: bool) -> bytes:
    """One message of ``shape``: new values (one-byte longs if ``small``), new timestamps."""
    ts = draw(STAMP)
    metrics = tuple(
        Metric(alias=a, timestamp=ts if stamped else None, value=_value(draw, kind, small))
        for a, kind in shape
    )
    return encode_payload(Payload(timestamp=draw(STAMP), seq=draw(st.integers(0, 255)), metrics=metrics))


def _as_columns(data: bytes) -> DataColumns | None:
    lean = decode_data(data)
    if lean is None:
        return None
    aliases, stamps, values, _, _ = zip(*lean.metrics, strict=True)
    return DataColumns(lean.timestamp, lean.seq, aliases, stamps, list(values))


@settings(max_examples=300)
@given(st.data(), kinds(), st.booleans())
def test_a_message_of_the_same_layout_reads_as_decode_data_reads_it(
    data: st.DataObject, shape: list[tuple[int, str]], stamped: bool
) -> None:
    first = data.draw(messages(shape, stamped, small=True))
    layout = layout_of(first)
    assert layout is not None
    following = data.draw(messages(shape, stamped, small=True))
    columns = read(layout, following)
    if len(following) == len(first):  # the seq went from one byte to two, or back: another layout
        assert columns is not None
    assert columns is None or columns == _as_columns(following)
    if columns is not None:
        assert columns.as_payload() == decode_data(following)


@settings(max_examples=300)
@given(st.data(), kinds(), st.booleans(), st.booleans())
def test_any_other_message_or_a_damaged_one_is_never_misread(
    data: st.DataObject, shape: list[tuple[int, str]], stamped: bool, small: bool
) -> None:
    layout = layout_of(data.draw(messages(shape, stamped, small=True)))
    assert layout is not None
    other = data.draw(messages(data.draw(kinds()), data.draw(st.booleans()), small))
    following = data.draw(messages(shape, stamped, small))
    damaged = bytearray(following)
    at = data.draw(st.integers(0, len(damaged) - 1))
    damaged[at] = data.draw(st.integers(0, 255))
    for message in (other, following, bytes(damaged)):
        columns = read(layout, message)
        assert columns is None or repr(columns) == repr(_as_columns(message))  # a damaged double: NaN


def test_a_value_field_that_changes_length_is_not_read_as_a_shifted_layout() -> None:
    # Two longs whose varints swap lengths (1+2 bytes, then 2+1): same size, every tag in place
    # except the metric lengths, which the layout compares.
    shape = (Metric(alias=1, timestamp=1 << 40, value=5), Metric(alias=2, timestamp=1 << 40, value=300))
    swapped = (Metric(alias=1, timestamp=1 << 40, value=300), Metric(alias=2, timestamp=1 << 40, value=5))
    layout = layout_of(encode_payload(Payload(timestamp=1 << 40, seq=1, metrics=shape)))
    assert layout is not None
    message = encode_payload(Payload(timestamp=1 << 40, seq=2, metrics=swapped))
    assert read(layout, message) is None
    assert decode_data(message) is not None  # the usual way reads it


def test_only_plain_layouts_are_recorded() -> None:
    historical = Metric(alias=1, timestamp=1 << 40, value=0.5, is_historical=True)
    mixed = (Metric(alias=1, timestamp=1 << 40, value=0.5), Metric(alias=2, value=0.5))
    assert layout_of(encode_payload(Payload(timestamp=1, seq=0, metrics=(historical,)))) is None
    assert layout_of(encode_payload(Payload(timestamp=1, seq=0, metrics=mixed))) is None
    assert layout_of(encode_payload(Payload(timestamp=1, seq=0, metrics=()))) is None
    assert layout_of(b"\x08\x01") is None


def test_the_fleet_gateway_messages_share_one_layout() -> None:
    encoder = DeviceEncoder([3, 4, 5], [DataType.FLOAT, DataType.BOOL, DataType.INT])
    first = encoder.encode(1_767_225_600_000, 7, [0, 1, 2], [0.42, True, 2])
    layout = layout_of(first)
    assert layout is not None
    second = encoder.encode(1_767_225_601_000, 8, [0, 1, 2], [0.5, False, 3])
    columns = read(layout, second)
    assert columns == DataColumns(1_767_225_601_000, 8, (3, 4, 5), (1_767_225_601_000,) * 3, [0.5, False, 3])


def test_rooms_of_one_gateway_type_share_one_layout() -> None:
    encoder = DeviceEncoder([3, 4, 5], [DataType.FLOAT, DataType.BOOL, DataType.INT])
    one = layout_of(encoder.encode(1_767_225_600_000, 7, [0, 1, 2], [0.42, True, 2]))
    other = layout_of(encoder.encode(1_767_225_605_000, 9, [0, 1, 2], [0.1, False, 7]))  # another room
    assert one is not None
    assert other is one
    different = DeviceEncoder([3, 4, 6], [DataType.FLOAT, DataType.BOOL, DataType.INT])
    assert layout_of(different.encode(1_767_225_600_000, 7, [0, 1, 2], [0.42, True, 2])) is not one
