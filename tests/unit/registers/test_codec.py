"""Register decoding and encoding, with byte-level expectations taken from the Modbus conventions."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapline.domain.model import DataType
from tapline.registers.codec import EncodeError, decode_registers, encode_bit, encode_registers
from tapline.registers.maps import RegisterPoint, Table, WireType


def point(type_: str, **kw: object) -> RegisterPoint:
    table = "coil" if type_ == "bool" else "holding"
    return RegisterPoint.model_validate({"name": "P", "table": table, "address": 0, "type": type_, **kw})


def test_uint16_scaled_kpa_reads_as_mpa() -> None:
    # 451 kPa on the wire (0x01C3) is 0.451 MPa.
    assert decode_registers(point("uint16", scale=0.001), [0x01C3]) == pytest.approx(0.451)


def test_int16_negative_temperature() -> None:
    # -5.3 °C in 0.1 units is -53 = 0xFFCB.
    assert decode_registers(point("int16", scale=0.1), [0xFFCB]) == pytest.approx(-5.3)


def test_float32_big_endian_words_abcd() -> None:
    high, low = struct.unpack(">HH", struct.pack(">f", 123.5))
    assert decode_registers(point("float32", word_order="big"), [high, low]) == 123.5


def test_float32_little_word_order_cdab() -> None:
    high, low = struct.unpack(">HH", struct.pack(">f", 98765.25))
    assert decode_registers(point("float32", word_order="little"), [low, high]) == 98765.25


def test_uint32_counter_high_word_first() -> None:
    # 70,000 starts = 0x0001_1170.
    assert decode_registers(point("uint32", datatype="int"), [0x0001, 0x1170]) == 70_000


def test_int32_little_word_order() -> None:
    words = encode_registers(point("int32", word_order="little"), -2)
    assert words == [0xFFFE, 0xFFFF]
    assert decode_registers(point("int32", word_order="little"), words) == -2


def test_integer_points_decode_to_int_and_scaled_to_float() -> None:
    assert point("uint16").engineering_type is DataType.INT
    assert point("uint16", scale=0.01).engineering_type is DataType.FLOAT
    assert isinstance(decode_registers(point("uint16"), [7]), int)


def test_encode_refuses_values_outside_the_wire_type() -> None:
    with pytest.raises(EncodeError, match="outside"):
        encode_registers(point("uint16", scale=0.001), 70.0)  # 70,000 > 65,535
    with pytest.raises(EncodeError, match="outside"):
        encode_registers(point("uint16"), -1)
    with pytest.raises(EncodeError, match="finite"):
        encode_registers(point("float32"), math.nan)
    with pytest.raises(EncodeError, match="text"):
        encode_registers(point("uint16"), "high")


def test_bits() -> None:
    assert encode_bit(point("bool"), True) is True
    assert encode_bit(point("bool"), 0) is False
    with pytest.raises(EncodeError):
        encode_bit(point("bool"), 0.5)
    with pytest.raises(EncodeError):
        encode_bit(point("uint16"), True)


@given(st.integers(0, 0xFFFF))
def test_uint16_round_trip(raw: int) -> None:
    p = point("uint16")
    assert encode_registers(p, decode_registers(p, [raw])) == [raw]


@given(st.integers(-0x8000_0000, 0x7FFF_FFFF), st.sampled_from(["big", "little"]))
def test_int32_round_trip(value: int, order: str) -> None:
    p = point("int32", word_order=order)
    assert decode_registers(p, encode_registers(p, value)) == value


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), st.sampled_from(["big", "little"]))
def test_float32_round_trip(value: float, order: str) -> None:
    p = point("float32", word_order=order)
    assert decode_registers(p, encode_registers(p, value)) == pytest.approx(value, rel=1e-6)


@given(st.integers(0, 65535))
def test_scaled_round_trip_is_exact_on_the_wire(raw: int) -> None:
    p = point("uint16", scale=0.001)
    assert encode_registers(p, decode_registers(p, [raw])) == [raw]


def test_wire_type_words() -> None:
    assert WireType.FLOAT32.words == 2
    assert WireType.UINT16.words == 1
    assert Table.COIL.is_bit
    assert not Table.HOLDING.is_bit
