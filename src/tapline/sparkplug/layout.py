"""Plain data payloads read by their byte layout: one ``struct`` call for all values of a message.

Why: a gateway publishes one device's points in the same order, with the same aliases and value
types, message after message; only the timestamps, the values and the seq change. ``decode_data``
still spends about 1.3 µs a metric matching a regular expression per metric. Once one message of a
device is read that way, ``layout_of`` records where its variable bytes are; the next message of the
same layout is checked (every byte that is not a value, a timestamp or the seq must be the same) and
read with one ``struct.unpack_from`` for the values.

Rules:
- ``read`` returns exactly what ``decode_data`` would return for the same bytes, or None (then the
  caller decodes the usual way). Every varint it takes is checked to be one (continuation bits), and
  booleans to be 0 or 1, so a message whose variable fields changed length cannot be misread as a
  shifted copy of the layout (``tests/unit/sparkplug/test_layout.py`` checks it, property-based).
- Only layouts without declared datatypes, historical flags or a mix of metrics with and without a
  timestamp are recorded (what gateways send); anything else stays with ``decode_data``.
- Pure: no IO, no clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import repeat
from typing import Final, NamedTuple

from tapline.sparkplug.codec import (
    _HEAD_RE,
    _METRIC_RE,
    _SEQ_RE,
    DataPayload,
    MetricValue,
    SpDataType,
    _varint,
)

__all__ = ["DataColumns", "Layout", "layout_of", "read"]


class DataColumns(NamedTuple):
    """A plain data payload as columns (what ``DataPayload`` says, one tuple per field). A named tuple:
    one is made per message, and a frozen dataclass costs five times as much to build."""

    timestamp: int | None
    seq: int
    aliases: tuple[int, ...]
    stamps: tuple[int | None, ...]
    values: list[MetricValue]

    def as_payload(self) -> DataPayload:
        """The same payload as ``decode_data`` returns it (for the per-metric path)."""
        count = len(self.aliases)
        nothing: repeat[SpDataType | None] = repeat(None, count)
        plain = repeat(False, count)
        metrics = list(zip(self.aliases, self.stamps, self.values, nothing, plain, strict=True))
        return DataPayload(self.timestamp, self.seq, metrics)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the variable bytes of one message layout are (see the module docstring)."""

    size: int  # bytes before the seq field
    fixed: struct.Struct  # unpacks every byte that must be the same, in segments
    parts: tuple[bytes, ...]  # ... and what they must be
    head: tuple[int, int] | None  # span of the payload timestamp's varint
    stamps: struct.Struct | None  # unpacks each metric's timestamp varint (all metrics have one)
    values: struct.Struct  # unpacks every value: doubles as floats, booleans and longs as raw fields
    booleans: tuple[int, ...]  # indices of boolean values (one byte, must be 0 or 1)
    longs: tuple[int, ...]  # indices of long values (varints)
    aliases: tuple[int, ...]


def layout_of(data: bytes) -> Layout | None:
    """The layout of a plain data payload ``decode_data`` reads, or None if it is not one to record."""
    end = len(data)
    pos = 0
    variable: list[tuple[int, int]] = []  # spans of bytes that may change
    head_span: tuple[int, int] | None = None
    head = _HEAD_RE.match(data)
    if head is not None:
        head_span = head.span(1)
        variable.append(head_span)
        pos = head.end()
    tail = _SEQ_RE.search(data, max(pos, end - 11))
    if tail is None:
        return None
    size = tail.start()
    aliases: list[int] = []
    booleans: list[int] = []
    longs: list[int] = []
    with_stamp = 0
    stamp_format = ["<"]
    value_format = ["<"]
    stamp_cursor = value_cursor = 0
    while pos < size:
        m = _METRIC_RE.match(data, pos)
        if m is None or m.end() - pos - 2 != data[pos + 1] or m.end() > size:
            return None
        alias_raw, ts_raw, type_raw, historical, double, boolean, _long = m.groups()
        if type_raw is not None or historical is not None:
            return None
        aliases.append(_varint(alias_raw))
        if ts_raw is not None:
            with_stamp += 1
            start, stop = m.span(2)
            variable.append((start, stop))
            stamp_format.append(f"{start - stamp_cursor}x{stop - start}s")
            stamp_cursor = stop
        group = 5 if double is not None else 6 if boolean is not None else 7
        start, stop = m.span(group)
        variable.append((start, stop))
        index = len(aliases) - 1
        if double is not None:
            value_format.append(f"{start - value_cursor}xd")
        elif boolean is not None:
            value_format.append(f"{start - value_cursor}xB")
            booleans.append(index)
        else:
            value_format.append(f"{start - value_cursor}x{stop - start}s")
            longs.append(index)
        value_cursor = stop
        pos = m.end()
    if pos != size or not aliases or with_stamp not in (0, len(aliases)):
        return None
    fixed_format = ["<"]
    parts: list[bytes] = []
    at = 0
    for start, stop in variable:
        if start > at:
            fixed_format.append(f"{start - at}s")
            parts.append(data[at:start])
        fixed_format.append(f"{stop - start}x")
        at = stop
    if size > at:
        fixed_format.append(f"{size - at}s")
        parts.append(data[at:size])
    stamps = "".join(stamp_format) if with_stamp else None
    key = (size, tuple(parts), head_span, "".join(fixed_format), stamps, "".join(value_format))
    known = _SHARED.get(key)
    if known is not None:  # the same device type in another room: one layout for all of them
        return known
    if len(_SHARED) >= _MAX_SHARED:
        _SHARED.clear()
    layout = _SHARED[key] = Layout(
        size=size,
        fixed=struct.Struct(key[3]),
        parts=key[1],
        head=head_span,
        stamps=None if stamps is None else struct.Struct(stamps),
        values=struct.Struct(key[5]),
        booleans=tuple(booleans),
        longs=tuple(longs),
        aliases=tuple(aliases),
    )
    return layout


_SHARED: dict[tuple[object, ...], Layout] = {}
_MAX_SHARED: Final = 4_096
"""Distinct layouts kept for sharing. Gateways of one type send byte-identical layouts (same aliases,
same value types), so 5,000 rooms × 8 devices need a handful of ``Layout``s, not 40,000 × 2.9 kB."""


def read(layout: Layout, data: bytes) -> DataColumns | None:
    """``data`` read with ``layout``: what ``decode_data`` returns for it, as columns; or None.

    No regular expression and no per-metric Python: the seq is the field right after the layout's
    bytes (``decode_data`` finds it there too: a match starting earlier would have to run through the
    seq tag, which has no continuation bit), and timestamps, which every room repeats within a
    second, are decoded through a small memo."""
    size = layout.size
    seq_raw = data[size + 1 :]
    if len(data) <= size + 1 or data[size] != 0x18 or len(seq_raw) > 2 or not _is_varint(seq_raw):
        return None
    seq = seq_raw[0] if len(seq_raw) == 1 else (seq_raw[0] & 0x7F) | (seq_raw[1] << 7)
    if seq > 255 or layout.fixed.unpack_from(data) != layout.parts:
        return None
    timestamp: int | None = None
    if layout.head is not None:
        timestamp = _stamp(data[layout.head[0] : layout.head[1]])
        if timestamp is None:
            return None
    values: list[MetricValue] = list(layout.values.unpack_from(data))
    for index in layout.booleans:
        flag = values[index]
        if flag not in (0, 1):
            return None
        values[index] = flag == 1
    for index in layout.longs:
        field = values[index]
        assert isinstance(field, bytes)
        if not _is_varint(field):
            return None
        values[index] = _varint(field)
    count = len(layout.aliases)
    stamps: tuple[int | None, ...]
    if layout.stamps is None:
        stamps = (None,) * count
    else:
        raws: tuple[bytes, ...] = layout.stamps.unpack_from(data)
        first = raws[0]
        if raws.count(first) == count:  # one timestamp for all: the usual gateway message
            stamp = _stamp(first)
            if stamp is None:
                return None
            stamps = (stamp,) * count
        else:
            if not all(map(_is_varint, raws)):
                return None
            stamps = tuple(map(_varint, raws))
    return DataColumns(timestamp, seq, layout.aliases, stamps, values)


_STAMPS: dict[bytes, int] = {}
_MAX_STAMPS: Final = 4_096


def _stamp(raw: bytes) -> int | None:
    """A timestamp varint's value (None if ``raw`` is not exactly one varint), memoised."""
    known = _STAMPS.get(raw)
    if known is not None:
        return known
    if not _is_varint(raw):
        return None
    if len(_STAMPS) >= _MAX_STAMPS:
        _STAMPS.clear()
    value = _STAMPS[raw] = _varint(raw)
    return value


def _is_varint(raw: bytes) -> bool:
    """Whether ``raw`` is exactly one varint: continuation bits on every byte but the last."""
    return raw[-1] < 0x80 and (len(raw) == 1 or min(raw[:-1]) >= 0x80)


MAX_LAYOUTS: Final = 32
"""Layouts remembered per edge node (a report-by-exception gateway varies them). Every device needs
at least two: the seq is one varint byte below 128 and two from 128, so each message size comes
twice: the fleet's rooms of 7–9 devices keep 14–18. A cap of 16 emptied a 4-pump room's table every
few seconds, and 3 % of all messages were decoded twice to record their layouts again (3.6 % of the
ingest's profile at 1,000 rooms). The entries point at shared layouts: 32 cost about 3 kB a node."""
