"""Sparkplug B payload codec: frozen dataclasses <-> protobuf bytes.

Rules (Sparkplug B 3.0, Payloads chapter):
- A metric's value lives in the protobuf field its datatype names: Int8/16/32 and UInt8/16/32 in
  ``int_value`` (uint32), Int64/UInt64/DateTime in ``long_value`` (uint64), Float in ``float_value``,
  Double in ``double_value``, Boolean, String/Text/UUID in ``string_value``, Bytes/File in ``bytes_value``.
- Signed integers travel as two's complement in those unsigned fields. We write them at their own width
  (Int8 -1 -> 255, as Eclipse Tahu's Python does); we read that, and also the 32- and 64-bit
  sign-extended forms other implementations write (Tahu Java: Int8 -1 -> 0xFFFFFFFF), and either integer
  field for any integer datatype. Anything out of the datatype's range is a ``PayloadError``.
- ``datatype`` MUST be in NBIRTH/DBIRTH metrics and SHOULD NOT be in NDATA/DDATA/NCMD/DCMD
  (tck-id-payloads-metric-datatype-req / -not-req). So a ``Metric`` with ``datatype=None`` is encoded by
  its Python type (bool -> boolean, int -> long two's complement, float -> double, str -> string,
  bytes -> bytes) and decoded to the raw wire value (integers unsigned); the receiver applies the
  datatype declared in the birth with ``coerce``. With tapline's datatypes (Boolean, Int64, Double,
  String) the inferred field is exactly the declared one.
- A null metric (``is_null``) carries no value; a non-null metric without a value is malformed.
- ``seq`` is 0..255. Data sets, templates and array datatypes are not used by tapline and are rejected.
- Metric properties (a flat PropertySet: engUnit, engLow, engHigh, Quality) are scalars; a Python int
  property is written as Int32 when it fits (the spec's Quality property must be Int32), else Int64.
- ``decode_payload`` raises ``PayloadError`` and nothing else, whatever the bytes (it is fuzzed), and
  refuses payloads above ``max_size`` before parsing them.

Quality travels as the spec's ``Quality`` property (Int32: 0 BAD, 192 GOOD, 500 STALE); GOOD is the
default and is not sent. UNCERTAIN has no Sparkplug code: it is sent as 192 plus the tapline property
``tapline.uncertain`` = true, which other hosts ignore.

The codec is pure and linear in the number of metrics; nothing here does IO.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from google.protobuf.message import DecodeError

from tapline.domain.model import DataType, Quality
from tapline.sparkplug import sparkplug_b_pb2 as pb
from tapline.sparkplug.errors import PayloadError

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "DOMAIN_TO_SPARKPLUG",
    "QUALITY_PROPERTY",
    "DataPayload",
    "Metric",
    "MetricValue",
    "Payload",
    "PropertyValue",
    "SpDataType",
    "check_value",
    "coerce",
    "decode_birth",
    "decode_data",
    "decode_payload",
    "domain_datatype",
    "encode_payload",
    "quality_from_properties",
    "quality_properties",
]

MetricValue = bool | int | float | str | bytes
PropertyValue = bool | int | float | str

DEFAULT_MAX_PAYLOAD: Final = 4 * 1024 * 1024
"""Largest payload ``decode_payload`` parses by default (a replay batch of ~100k metrics fits)."""

QUALITY_PROPERTY: Final = "Quality"
_UNCERTAIN_PROPERTY: Final = "tapline.uncertain"


class SpDataType(IntEnum):
    """Sparkplug B datatype codes (the subset tapline supports; names as in the spec)."""

    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    Bytes = 17
    File = 18


DOMAIN_TO_SPARKPLUG: Final[dict[DataType, SpDataType]] = {
    DataType.BOOL: SpDataType.Boolean,
    DataType.INT: SpDataType.Int64,
    DataType.FLOAT: SpDataType.Double,
    DataType.STRING: SpDataType.String,
}

_TO_DOMAIN: Final[dict[SpDataType, DataType]] = {
    **{t: DataType.INT for t in SpDataType if t <= SpDataType.UInt64 or t is SpDataType.DateTime},
    SpDataType.Float: DataType.FLOAT,
    SpDataType.Double: DataType.FLOAT,
    SpDataType.Boolean: DataType.BOOL,
    SpDataType.String: DataType.STRING,
    SpDataType.Text: DataType.STRING,
    SpDataType.UUID: DataType.STRING,
}

# Integer datatypes: (bits, signed, protobuf field written).
_INTEGERS: Final[dict[SpDataType, tuple[int, bool, str]]] = {
    SpDataType.Int8: (8, True, "int_value"),
    SpDataType.Int16: (16, True, "int_value"),
    SpDataType.Int32: (32, True, "int_value"),
    SpDataType.Int64: (64, True, "long_value"),
    SpDataType.UInt8: (8, False, "int_value"),
    SpDataType.UInt16: (16, False, "int_value"),
    SpDataType.UInt32: (32, False, "int_value"),
    SpDataType.UInt64: (64, False, "long_value"),
    SpDataType.DateTime: (64, False, "long_value"),
}
# Every other datatype: (Python type of the value, protobuf field written).
_SCALARS: Final[dict[SpDataType, tuple[type, str]]] = {
    SpDataType.Float: (float, "float_value"),
    SpDataType.Double: (float, "double_value"),
    SpDataType.Boolean: (bool, "boolean_value"),
    SpDataType.String: (str, "string_value"),
    SpDataType.Text: (str, "string_value"),
    SpDataType.UUID: (str, "string_value"),
    SpDataType.Bytes: (bytes, "bytes_value"),
    SpDataType.File: (bytes, "bytes_value"),
}
_FLOAT32_MAX: Final = 3.4028234663852886e38
_BY_CODE: Final[dict[int, SpDataType]] = {t.value: t for t in SpDataType}
_QUALITY_TO_CODE: Final = {Quality.GOOD: 192, Quality.UNCERTAIN: 192, Quality.BAD: 0, Quality.STALE: 500}
_CODE_TO_QUALITY: Final = {192: Quality.GOOD, 0: Quality.BAD, 500: Quality.STALE}


@dataclass(frozen=True, slots=True)
class Metric:
    """One Sparkplug metric. In data messages name or alias identifies it (tapline sends aliases)."""

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: SpDataType | None = None
    value: MetricValue | None = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    properties: tuple[tuple[str, PropertyValue], ...] = ()

    def property(self, key: str) -> PropertyValue | None:
        """The value of property ``key``, or None when absent."""
        for name, value in self.properties:
            if name == key:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Payload:
    """One Sparkplug B payload. ``seq`` is absent only in NDEATH."""

    timestamp: int | None
    seq: int | None
    metrics: tuple[Metric, ...]
    uuid: str | None = None
    body: bytes | None = None


def domain_datatype(datatype: SpDataType) -> DataType | None:
    """The domain type a Sparkplug datatype's values map to (None for Bytes/File)."""
    return _TO_DOMAIN.get(datatype)


# --- values ------------------------------------------------------------------------------------------


def check_value(value: object, datatype: SpDataType) -> MetricValue:
    """Validate a native Python value for ``datatype`` and return it normalised (int -> float for
    Float/Double); raise ``PayloadError`` naming the problem (wrong type, out of range)."""
    integer = _INTEGERS.get(datatype)
    if integer is not None:
        bits, signed, _ = integer
        if type(value) is not int:
            raise PayloadError(f"{datatype.name} needs an int, got {type(value).__name__} {value!r}")
        low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
        if not low <= value < high:
            raise PayloadError(f"{value} is out of range for {datatype.name} [{low}, {high - 1}]")
        return value
    expected, _ = _SCALARS[datatype]
    if expected is float:
        if type(value) is int:
            value = float(value)
        if type(value) is not float:
            raise PayloadError(f"{datatype.name} needs a float, got {type(value).__name__} {value!r}")
        if datatype is SpDataType.Float and math.isfinite(value) and abs(value) > _FLOAT32_MAX:
            raise PayloadError(f"{value} does not fit a 32-bit Float")
        return value
    if type(value) is not expected:
        raise PayloadError(f"{datatype.name} needs {expected.__name__}, got {type(value).__name__} {value!r}")
    return value  # type: ignore[return-value]  # the type check above narrows to one of MetricValue


def coerce(value: MetricValue, datatype: SpDataType) -> MetricValue:
    """Interpret a raw wire value (as decoded without a datatype) as ``datatype``.

    Integers come off the wire unsigned; for signed datatypes this undoes the two's complement at the
    datatype's own width or sign-extended to 32 or 64 bits. Raises ``PayloadError`` when the value
    cannot be of that datatype.
    """
    integer = _INTEGERS.get(datatype)
    if integer is None:
        expected, _ = _SCALARS[datatype]
        if type(value) is not expected:
            raise PayloadError(
                f"{datatype.name} value must be {expected.__name__}, got {type(value).__name__}"
            )
        return value
    if type(value) is not int:
        raise PayloadError(f"{datatype.name} value must be an integer, got {type(value).__name__}")
    bits, signed, _ = integer
    half = 1 << (bits - 1)
    if (-half <= value < half) if signed else (0 <= value < (1 << bits)):
        return value
    if signed and value > 0:
        for width in (bits, 32, 64):  # own width (Tahu Python), then sign-extended (Tahu Java, varint)
            if width >= bits and (1 << width) - half <= value < (1 << width):
                return value - (1 << width)
    raise PayloadError(f"wire value {value} is out of range for {datatype.name}")


def _wire(value: MetricValue, datatype: SpDataType | None) -> tuple[str, MetricValue]:
    """The protobuf field and wire value for one value; see the module rules."""
    if datatype is None:
        if isinstance(value, bool):
            return "boolean_value", value
        if isinstance(value, int):
            if not -(1 << 63) <= value < (1 << 64):
                raise PayloadError(f"integer {value} does not fit 64 bits")
            return "long_value", value & 0xFFFF_FFFF_FFFF_FFFF
        if isinstance(value, float):
            return "double_value", value
        if isinstance(value, str):
            return "string_value", value
        if isinstance(value, bytes):
            return "bytes_value", value
        raise PayloadError(f"unsupported value type {type(value).__name__}: {value!r}")
    value = check_value(value, datatype)
    integer = _INTEGERS.get(datatype)
    if integer is not None:
        bits, _, field = integer
        assert isinstance(value, int)
        return field, value & ((1 << bits) - 1)
    return _SCALARS[datatype][1], value


# --- properties --------------------------------------------------------------------------------------


def quality_properties(quality: Quality) -> tuple[tuple[str, PropertyValue], ...]:
    """The properties that carry ``quality`` on a data metric (none for GOOD)."""
    if quality is Quality.GOOD:
        return ()
    code = _QUALITY_TO_CODE[quality]
    if quality is Quality.UNCERTAIN:
        return ((QUALITY_PROPERTY, code), (_UNCERTAIN_PROPERTY, True))
    return ((QUALITY_PROPERTY, code),)


def quality_from_properties(properties: tuple[tuple[str, PropertyValue], ...]) -> Quality:
    """The quality a metric's properties declare (GOOD when they say nothing we understand)."""
    quality = Quality.GOOD
    for key, value in properties:
        if key == QUALITY_PROPERTY and type(value) is int:
            quality = _CODE_TO_QUALITY.get(value, Quality.BAD)
        elif key == _UNCERTAIN_PROPERTY and value is True:
            return Quality.UNCERTAIN
    return quality


def _encode_properties(
    target: pb.Payload.PropertySet, properties: Iterable[tuple[str, PropertyValue]]
) -> None:
    for key, value in properties:
        target.keys.append(key)
        item = target.values.add()
        if isinstance(value, bool):
            datatype = SpDataType.Boolean
        elif isinstance(value, int):
            datatype = SpDataType.Int32 if -(1 << 31) <= value < (1 << 31) else SpDataType.Int64
        elif isinstance(value, float):
            datatype = SpDataType.Double
        elif isinstance(value, str):
            datatype = SpDataType.String
        else:
            raise PayloadError(
                f"property {key!r} must be bool, int, float or str, got {type(value).__name__}"
            )
        item.type = datatype
        field, wire = _wire(value, datatype)
        setattr(item, field, wire)


def _decode_properties(source: pb.Payload.PropertySet) -> tuple[tuple[str, PropertyValue], ...]:
    keys, values = source.keys, source.values
    if len(keys) != len(values):
        raise PayloadError(f"property set has {len(keys)} keys but {len(values)} values")
    result: list[tuple[str, PropertyValue]] = []
    for key, item in zip(keys, values, strict=True):
        if not isinstance(key, str):
            raise PayloadError("property key is not valid UTF-8")
        if item.is_null:
            continue
        datatype = _BY_CODE.get(item.type)
        if datatype is None or datatype in (SpDataType.Bytes, SpDataType.File):
            raise PayloadError(f"property {key!r} has unsupported type {item.type}")
        field = item.WhichOneof("value")
        if field is None:
            raise PayloadError(f"property {key!r} has no value and is not null")
        value = coerce(getattr(item, field), datatype)
        assert not isinstance(value, bytes)  # excluded above: PropertyValue has no bytes field
        result.append((key, value))
    return tuple(result)


# --- payloads ----------------------------------------------------------------------------------------


def encode_payload(payload: Payload) -> bytes:
    """Serialise ``payload``; raise ``PayloadError`` for a value its datatype does not allow."""
    try:
        return _build(payload).SerializeToString()
    except (ValueError, TypeError) as exc:  # e.g. a str with lone surrogates, an alias that is not an int
        raise PayloadError(f"payload cannot be serialised: {exc}") from exc


def _build(payload: Payload) -> pb.Payload:
    message = pb.Payload()
    if payload.timestamp is not None:
        message.timestamp = payload.timestamp
    if payload.seq is not None:
        if not 0 <= payload.seq <= 255:
            raise PayloadError(f"seq must be 0..255, got {payload.seq}")
        message.seq = payload.seq
    if payload.uuid is not None:
        message.uuid = payload.uuid
    if payload.body is not None:
        message.body = payload.body
    for metric in payload.metrics:
        target = message.metrics.add()
        if metric.name is not None:
            target.name = metric.name
        if metric.alias is not None:
            target.alias = metric.alias
        if metric.timestamp is not None:
            target.timestamp = metric.timestamp
        if metric.datatype is not None:
            target.datatype = metric.datatype
        if metric.is_historical:
            target.is_historical = True
        if metric.is_transient:
            target.is_transient = True
        if metric.is_null or metric.value is None:
            target.is_null = True
        else:
            field, wire = _wire(metric.value, metric.datatype)
            setattr(target, field, wire)
        if metric.properties:
            _encode_properties(target.properties, metric.properties)
    return message


def decode_payload(data: bytes, max_size: int = DEFAULT_MAX_PAYLOAD) -> Payload:
    """Parse a Sparkplug B payload; raise ``PayloadError`` (only) if it is oversize or malformed."""
    if len(data) > max_size:
        raise PayloadError(f"payload of {len(data)} bytes exceeds the limit of {max_size}")
    try:
        message = pb.Payload.FromString(data)
        metrics = tuple(_decode_metric(item) for item in message.metrics)
        uuid = message.uuid if message.HasField("uuid") else None
        if uuid is not None and not isinstance(uuid, str):
            raise PayloadError("payload uuid is not valid UTF-8")
        seq = message.seq if message.HasField("seq") else None
        if seq is not None and seq > 255:
            raise PayloadError(f"seq must be 0..255, got {seq}")
        return Payload(
            timestamp=message.timestamp if message.HasField("timestamp") else None,
            seq=seq,
            metrics=metrics,
            uuid=uuid,
            body=message.body if message.HasField("body") else None,
        )
    except (DecodeError, ValueError) as exc:  # ValueError covers UnicodeDecodeError from upb
        raise PayloadError(f"malformed Sparkplug payload: {exc}") from exc


# --- the plain-data fast path -------------------------------------------------------------------------

LeanMetric = tuple[int, int | None, MetricValue, "SpDataType | None", bool]
"""(alias, timestamp or None, value, declared datatype or None, is_historical) of one data metric."""


@dataclass(frozen=True, slots=True)
class DataPayload:
    """A plain NDATA/DDATA payload as ``decode_data`` reads it: every metric by alias, no properties.

    Same meaning as ``Payload`` (values raw off the wire unless a datatype came with them, which is
    then already applied), one tuple per metric instead of a ``Metric`` object.
    """

    timestamp: int | None
    seq: int
    metrics: list[LeanMetric]


_VARINT: Final = rb"[\x80-\xff]{0,9}[\x00-\x7f]"
# One metric in canonical field order: tag 2 with a one-byte length, alias (2), optional timestamp (3),
# datatype (4) and is_historical (5), then exactly one value: long (11), double (13) or boolean (14).
# Names, properties, is_null, other value fields or any other order do not match: the general decoder
# takes the payload then.
_METRIC_RE: Final = re.compile(
    rb"\x12[\x00-\x7f]\x10(" + _VARINT + rb")(?:\x18(" + _VARINT + rb"))?(?:\x20(" + _VARINT
    + rb"))?(?:\x28([\x00\x01]))?(?:i(.{8})|p([\x00\x01])|X(" + _VARINT + rb"))",
    re.DOTALL,
)  # fmt: skip
_HEAD_RE: Final = re.compile(rb"\x08(" + _VARINT + rb")", re.DOTALL)
_SEQ_RE: Final = re.compile(rb"\x18(" + _VARINT + rb")\Z", re.DOTALL)
_DOUBLE: Final = struct.Struct("<d").unpack
_U64: Final = (1 << 64) - 1


def _varint(raw: bytes) -> int:
    """A protobuf varint (already delimited by the pattern), truncated to 64 bits as upb does."""
    if len(raw) == 1:
        return raw[0]
    result = 0
    for shift, byte in enumerate(raw):
        result |= (byte & 0x7F) << (7 * shift)
    return result & _U64


def decode_data(data: bytes) -> DataPayload | None:
    """Read a plain data payload without building protobuf or ``Metric`` objects; None if it is not one.

    Why: a city's ingest reads hundreds of thousands of metrics a second, and the general path costs
    about 6 µs a metric on the benchmark box (upb field access, ``HasField``, one frozen ``Metric``).
    Gateways (tapline's edge and fleet, Tahu) write data payloads in field-number order with aliases,
    so one regular expression per metric recognises them. Anything else — a name, properties, a null,
    another value field, fields out of order, a multi-byte metric length — returns None and the caller
    uses ``decode_payload``, so the result never differs from it (``tests/unit/sparkplug`` checks this
    against the general decoder, property-based).
    """
    pos, end = 0, len(data)
    timestamp: int | None = None
    head = _HEAD_RE.match(data)
    if head is not None:
        timestamp = _varint(head.group(1))
        pos = head.end()
    tail = _SEQ_RE.search(data, max(pos, end - 11))  # tag + at most 10 varint bytes
    if tail is None:
        return None
    seq = _varint(tail.group(1))
    if seq > 255:
        return None
    end = tail.start()
    metrics: list[LeanMetric] = []
    append = metrics.append
    match = _METRIC_RE.match
    last_ts_raw: bytes | None = None
    last_ts: int | None = None
    while pos < end:
        m = match(data, pos)
        if m is None:
            return None
        stop = m.end()
        if stop - pos - 2 != data[pos + 1] or stop > end:
            return None
        pos = stop
        alias_raw, ts_raw, type_raw, historical, double, boolean, long = m.groups()
        if ts_raw is not last_ts_raw and ts_raw != last_ts_raw:
            last_ts_raw, last_ts = ts_raw, None if ts_raw is None else _varint(ts_raw)
        value: MetricValue
        if double is not None:
            value = _DOUBLE(double)[0]
        elif boolean is not None:
            value = boolean == b"\x01"
        else:
            value = _varint(long)
        datatype: SpDataType | None = None
        if type_raw is not None:
            datatype = _BY_CODE.get(_varint(type_raw) & 0xFFFF_FFFF)
            if datatype is None:
                return None
            try:
                value = coerce(value, datatype)
            except PayloadError:
                return None
        alias = alias_raw[0] if len(alias_raw) == 1 else _varint(alias_raw)
        append((alias, last_ts, value, datatype, historical == b"\x01"))
    if pos != end:
        return None
    return DataPayload(timestamp, seq, metrics)


# --- the births fast path -----------------------------------------------------------------------------

_FLOAT: Final = struct.Struct("<f").unpack
_PROPERTY_CACHE_SIZE: Final = 4_096
_properties_cache: dict[bytes, tuple[tuple[str, PropertyValue], ...]] = {}


class _NotPlain(Exception):
    """The bytes are not a plain birth: ``decode_birth`` returns None and the general decoder decides."""


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A protobuf varint at ``pos`` (before ``end``), truncated to 64 bits as upb does; and the next pos."""
    result = shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _U64, pos
        shift += 7
    raise _NotPlain


def _read_length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A length-delimited field's (start, stop) at ``pos``, the length varint included."""
    size, start = _read_varint(data, pos, end)
    if start + size > end:
        raise _NotPlain
    return start, start + size


def decode_birth(data: bytes) -> Payload | None:
    """Read a plain NBIRTH/DBIRTH payload without building protobuf objects; None if it is not one.

    Why: a city coming online sends ~45,000 births of ~80 metrics each, and the general path costs
    ~20 µs a birth metric (upb attribute and ``HasField`` calls, properties one ``PropertyValue`` at a
    time, ``WhichOneof``). Gateways write births in field-number order, every metric a name, alias,
    timestamp, datatype, properties (the same few engineering ones per point template) and one scalar
    value or is_null; so this reads fields by hand and decodes each distinct properties blob once
    (a bounded cache of ``_decode_properties`` by its bytes: the result is a function of them).
    Anything else — unknown or repeated fields, fields out of order, two values, uuid/body, a value
    the datatype refuses, bad UTF-8 — returns None and the caller uses ``decode_payload``, so the
    result never differs from it (``tests/unit/sparkplug`` checks this, property-based).
    """
    try:
        return _decode_birth(data)
    except (_NotPlain, IndexError):
        return None


def _decode_birth(data: bytes) -> Payload | None:
    pos, end = 0, len(data)
    timestamp: int | None = None
    seq: int | None = None
    if pos < end and data[pos] == 0x08:
        timestamp, pos = _read_varint(data, pos + 1, end)
    metrics: list[Metric] = []
    append = metrics.append
    while pos < end and data[pos] == 0x12:
        start, stop = _read_length(data, pos + 1, end)
        append(_birth_metric(data, start, stop))
        pos = stop
    if pos < end and data[pos] == 0x18:
        seq, pos = _read_varint(data, pos + 1, end)
        if seq > 255:
            return None
    if pos != end:
        return None
    return Payload(timestamp=timestamp, seq=seq, metrics=tuple(metrics))


_BIRTH_FIELDS: Final = re.compile(
    rb"(?:\x10(" + _VARINT + rb"))?(?:\x18(" + _VARINT + rb"))?(?:\x20(" + _VARINT + rb"))?"
    rb"(?:\x28([\x00\x01]))?(?:\x30([\x00\x01]))?(?:\x38([\x00\x01]))?(?:\x4a([\x00-\x7f]))?",
    re.DOTALL,
)  # fmt: skip
"""After a birth metric's name: alias (2), timestamp (3), datatype (4), is_historical (5), is_transient
(6), is_null (7) as plain 0/1, and the one-byte length of its properties (9), each optional, in order."""
_BIRTH_VALUE: Final = re.compile(
    rb"P(" + _VARINT + rb")|X(" + _VARINT + rb")|e(.{4})|i(.{8})|p([\x00\x01])", re.DOTALL
)  # fmt: skip
"""A scalar value: int (10), long (11), float (12), double (13), boolean (14) as plain 0/1."""


def _birth_metric(data: bytes, pos: int, end: int) -> Metric:
    """One metric of a plain birth (see ``decode_birth``); raise ``_NotPlain`` for anything else.

    One regular expression for the fixed fields (the varints delimited in C), slices for the rest."""
    if pos + 1 >= end or data[pos] != 0x0A:
        raise _NotPlain  # births name every metric
    size = data[pos + 1]
    if size < 0x80:
        start, pos = pos + 2, pos + 2 + size
        if pos > end:
            raise _NotPlain
    else:
        start, pos = _read_length(data, pos + 1, end)
    try:
        name = data[start:pos].decode()
    except UnicodeDecodeError:
        raise _NotPlain from None
    fields = _BIRTH_FIELDS.match(data, pos, end)
    assert fields is not None  # every part is optional: it matches, possibly nothing
    alias_raw, ts_raw, code_raw, historical, transient, null, properties_size = fields.groups()
    pos = fields.end()
    properties: tuple[tuple[str, PropertyValue], ...] = ()
    if properties_size is not None:
        stop = pos + properties_size[0]
        if stop > end:
            raise _NotPlain
        properties = _cached_properties(data[pos:stop])
        pos = stop
    elif pos < end and data[pos] == 0x4A:
        start, pos = _read_length(data, pos + 1, end)  # properties of 128 bytes or more
        properties = _cached_properties(data[start:pos])
    value: MetricValue | None = None
    has_value = pos < end
    if has_value:
        found = _BIRTH_VALUE.match(data, pos, end)
        if found is not None:
            int_raw, long_raw, float_raw, double_raw, boolean = found.groups()
            if double_raw is not None:
                value = _DOUBLE(double_raw)[0]
            elif long_raw is not None:
                value = _varint(long_raw)
            elif boolean is not None:
                value = boolean == b"\x01"
            elif int_raw is not None:
                value = _varint(int_raw) & 0xFFFF_FFFF
            else:
                value = _FLOAT(float_raw)[0]
            pos = found.end()
        elif data[pos] == 0x7A:  # string_value
            start, pos = _read_length(data, pos + 1, end)
            try:
                value = data[start:pos].decode()
            except UnicodeDecodeError:
                raise _NotPlain from None
        else:
            raise _NotPlain
    if pos != end:
        raise _NotPlain
    datatype: SpDataType | None = None
    if code_raw is not None:
        datatype = _BY_CODE.get(_varint(code_raw) & 0xFFFF_FFFF)
        if datatype is None:
            raise _NotPlain
    is_null = null == b"\x01"
    if is_null:
        value = None
    elif not has_value:
        raise _NotPlain
    elif datatype is not None:
        assert value is not None
        try:
            value = coerce(value, datatype)
        except PayloadError:
            raise _NotPlain from None
    alias = None if alias_raw is None else (alias_raw[0] if len(alias_raw) == 1 else _varint(alias_raw))
    timestamp = None if ts_raw is None else _varint(ts_raw)
    # positional: a keyword call costs ~15 % more, and this runs once per point of every birth
    return Metric(
        name,
        alias,
        timestamp,
        datatype,
        value,
        historical == b"\x01",
        transient == b"\x01",
        is_null,
        properties,
    )


def _cached_properties(raw: bytes) -> tuple[tuple[str, PropertyValue], ...]:
    """``_decode_properties`` of a serialised PropertySet, memoised by its bytes (bounded)."""
    cached = _properties_cache.get(raw)
    if cached is not None:
        return cached
    try:
        decoded = _decode_properties(pb.Payload.PropertySet.FromString(raw))
    except (DecodeError, ValueError, PayloadError):
        raise _NotPlain from None
    if len(_properties_cache) >= _PROPERTY_CACHE_SIZE:
        _properties_cache.clear()
    _properties_cache[raw] = decoded
    return decoded


def _decode_metric(item: pb.Payload.Metric) -> Metric:
    name: str | None = None
    if item.HasField("name"):
        name = item.name
        if not isinstance(name, str):
            raise PayloadError("metric name is not valid UTF-8")
    datatype: SpDataType | None = None
    if item.HasField("datatype"):
        datatype = _BY_CODE.get(item.datatype)
        if datatype is None:
            raise PayloadError(f"metric {name!r}: unsupported datatype {item.datatype}")
    field = item.WhichOneof("value")
    value: MetricValue | None = None
    if item.is_null:
        pass
    elif field is None:
        raise PayloadError(f"metric {name!r} (alias {item.alias}) has no value and is not null")
    else:
        value = getattr(item, field)
        if field == "string_value" and not isinstance(value, str):
            raise PayloadError(f"metric {name!r}: string value is not valid UTF-8")
        if datatype is not None:
            value = coerce(value, datatype)
    return Metric(
        name=name,
        alias=item.alias if item.HasField("alias") else None,
        timestamp=item.timestamp if item.HasField("timestamp") else None,
        datatype=datatype,
        value=value,
        is_historical=item.is_historical,
        is_transient=item.is_transient,
        is_null=item.is_null,
        properties=_decode_properties(item.properties) if item.HasField("properties") else (),
    )
