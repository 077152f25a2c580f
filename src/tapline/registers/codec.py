"""Pure conversion between engineering values and Modbus registers or bits.

Rules:
- 32-bit types span two 16-bit words; ``word_order: big`` puts the high word first ("ABCD"),
  ``little`` the low word first ("CDAB"). Bytes inside a word are always big-endian (Modbus).
- Decoding never raises on a well-sized block: any 16/32-bit pattern is a number. Encoding raises
  ``EncodeError`` for values that do not fit the wire type after scaling — a write is refused,
  never truncated or wrapped silently.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from tapline.domain.model import DataType, Value
from tapline.registers.maps import RegisterPoint, WireType

_RANGES = {
    WireType.INT16: (-0x8000, 0x7FFF),
    WireType.UINT16: (0, 0xFFFF),
    WireType.INT32: (-0x8000_0000, 0x7FFF_FFFF),
    WireType.UINT32: (0, 0xFFFF_FFFF),
}


class EncodeError(ValueError):
    """A value cannot be represented in a point's registers."""


def _words_to_raw(point: RegisterPoint, words: Sequence[int]) -> int | float:
    if point.type is WireType.UINT16:
        return words[0] & 0xFFFF
    if point.type is WireType.INT16:
        word = words[0] & 0xFFFF
        return word - 0x10000 if word & 0x8000 else word
    high, low = (words[0], words[1]) if point.word_order == "big" else (words[1], words[0])
    data = struct.pack(">HH", high & 0xFFFF, low & 0xFFFF)
    if point.type is WireType.FLOAT32:
        value: float = struct.unpack(">f", data)[0]
        return value
    fmt = ">i" if point.type is WireType.INT32 else ">I"
    integer: int = struct.unpack(fmt, data)[0]
    return integer


def to_engineering(point: RegisterPoint, raw: int | float | bool) -> Value:
    """Apply scale/offset and the point's engineering datatype to a raw wire value."""
    if point.type is WireType.BOOL:
        return bool(raw)
    value = raw * point.scale + point.offset if (point.scale != 1.0 or point.offset != 0.0) else raw
    kind = point.engineering_type
    if kind is DataType.INT:
        return round(value)
    if kind is DataType.BOOL:
        return bool(value)
    if point.type is WireType.FLOAT32:
        # A float32 carries ~7 significant digits; drop the binary tail (123.4 -> 123.40000152…).
        return float(f"{float(value):.7g}")
    # A scaled integer has a known resolution; round away the binary noise of the multiplication
    # (451 * 0.001 = 0.45100000000000001) one digit below it.
    return round(float(value), _decimals(point.scale))


def _decimals(scale: float) -> int:
    magnitude = abs(scale)
    return max(0, math.ceil(-math.log10(magnitude))) + 1 if magnitude < 1 else 1


def decode_registers(point: RegisterPoint, words: Sequence[int]) -> Value:
    """Decode a register point from exactly its words."""
    if len(words) < point.words:
        raise ValueError(f"{point.name}: need {point.words} words, got {len(words)}")
    return to_engineering(point, _words_to_raw(point, words))


def encode_registers(point: RegisterPoint, value: Value) -> list[int]:
    """Encode an engineering value into the point's words (for writes and for simulated devices)."""
    if point.type is WireType.BOOL:
        raise EncodeError(f"{point.name} is a bit, not a register")
    if isinstance(value, str):
        raise EncodeError(f"{point.name}: expected a number, got text {value!r}")
    raw = (float(value) - point.offset) / point.scale
    if point.type is WireType.FLOAT32:
        if not math.isfinite(raw):
            raise EncodeError(f"{point.name}: {value!r} is not a finite number")
        data = struct.pack(">f", raw)
    else:
        if not math.isfinite(raw):
            raise EncodeError(f"{point.name}: {value!r} is not a finite number")
        integer = round(raw)
        low, high = _RANGES[point.type]
        if not low <= integer <= high:
            raise EncodeError(f"{point.name}: {value!r} is outside what {point.type.value} can hold")
        if point.type is WireType.INT16:
            return [integer & 0xFFFF]
        if point.type is WireType.UINT16:
            return [integer]
        data = struct.pack(">i" if point.type is WireType.INT32 else ">I", integer)
    high_word, low_word = struct.unpack(">HH", data)
    return [high_word, low_word] if point.word_order == "big" else [low_word, high_word]


def encode_bit(point: RegisterPoint, value: Value) -> bool:
    """Encode an engineering value for a coil or discrete input."""
    if point.type is not WireType.BOOL:
        raise EncodeError(f"{point.name} is a register, not a bit")
    if isinstance(value, str):
        raise EncodeError(f"{point.name}: expected true/false, got text {value!r}")
    if isinstance(value, float) and value not in (0.0, 1.0):
        raise EncodeError(f"{point.name}: expected true/false, got {value!r}")
    return bool(value)
