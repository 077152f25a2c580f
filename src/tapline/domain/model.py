"""Core value types shared by every area (edge, sim, ingest, store, alarms, api).

Rules:
- A point is named ``device/Name`` inside its room (DESIGN §5); the room is the Sparkplug edge node,
  the device the Sparkplug device, so the name maps one-to-one onto the wire.
- Time is an ``int`` of milliseconds since the Unix epoch (UTC) everywhere, as in Sparkplug.
- Quality travels with every value; consumers (alarms, API) never guess it from the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from itertools import repeat
from typing import NamedTuple, overload

Value = bool | int | float | str


class Quality(IntEnum):
    """Quality of a value, stored as a small integer.

    GOOD: read from a healthy device. UNCERTAIN: read, but the device says it may be wrong (e.g. outside
    its engineering range). BAD: the instrument is known broken (e.g. below 4 mA). STALE: the last value
    known before the device, gateway or link died (Sparkplug: marked at the host's receive time).
    """

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2
    STALE = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class DataType(StrEnum):
    """The value types a point can carry; mapped to Sparkplug datatypes by the codec."""

    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class PointSpec:
    """Static description of one point of a device: what it is, its unit and engineering range."""

    device: str
    name: str
    datatype: DataType
    unit: str = ""
    low: float | None = None
    high: float | None = None
    writable: bool = False
    description: str = ""

    @property
    def path(self) -> str:
        return f"{self.device}/{self.name}"


class Reading(NamedTuple):
    """One observed value of one point at one time.

    A NamedTuple, not a frozen dataclass: the ingest makes one per value received (tens of thousands a
    second) and a frozen dataclass's ``__init__`` costs twice as much (1.3 vs 0.67 µs, measured).
    Immutable and hashable all the same.
    """

    point: str  # "device/Name"
    ts: int  # ms since epoch, UTC
    value: Value
    quality: Quality = Quality.GOOD


class ReadingBlock(Sequence[Reading]):
    """The readings of one message as columns: point names, timestamps, values, one quality for all.

    Why: the ingest's hot path reads 80 values per message, hundreds of thousands a second, and a
    ``Reading`` per value was the largest single cost after decoding. A gateway publishes the same
    points message after message, so ``points`` is usually one shared tuple (cached per alias list by
    the host tracker) and nothing here is per value. Consumers on the hot path read the columns
    (``rows_of``, ``points``); everything else sees an ordinary immutable sequence of ``Reading``,
    equal to the tuple of the same readings. Values are numbers and booleans only (the tracker makes
    blocks of those alone): the writer stores a block without a per-value type check, so a text value
    travels as a ``Reading``.
    """

    __slots__ = ("points", "quality", "ts", "values")

    def __init__(
        self, points: Sequence[str], ts: Sequence[int], values: Sequence[Value], quality: Quality
    ) -> None:
        if not len(points) == len(ts) == len(values):
            raise ValueError(f"columns of unequal length: {len(points)}, {len(ts)}, {len(values)}")
        self.points = points
        self.ts = ts
        self.values = values
        self.quality = quality

    def __len__(self) -> int:
        return len(self.points)

    @overload
    def __getitem__(self, index: int) -> Reading: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Reading, ...]: ...
    def __getitem__(self, index: int | slice) -> Reading | tuple[Reading, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        return Reading(self.points[index], self.ts[index], self.values[index], self.quality)

    def __iter__(self) -> Iterator[Reading]:
        return map(Reading, self.points, self.ts, self.values, repeat(self.quality))

    def rows(self) -> Iterator[tuple[str, int, Value, Quality]]:
        """(point, ts, value, quality) per reading, as plain tuples built in C (a ``Reading`` unpacks
        the same way)."""
        return zip(self.points, self.ts, self.values, repeat(self.quality))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ReadingBlock | tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"ReadingBlock({tuple(self)!r})"


def rows_of(readings: Iterable[Reading]) -> Iterable[tuple[str, int, Value, Quality]]:
    """(point, ts, value, quality) for each reading: a block's columns zipped, other readings as they
    are (``Reading`` is that tuple)."""
    return readings.rows() if type(readings) is ReadingBlock else readings


def split_point(path: str) -> tuple[str, str]:
    """Split ``device/Name`` into its parts; raise ValueError with the offending text otherwise."""
    device, sep, name = path.partition("/")
    if not sep or not device or not name or "/" in name:
        raise ValueError(f"point must be 'device/Name', got {path!r}")
    return device, name
