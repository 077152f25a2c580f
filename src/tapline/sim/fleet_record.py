"""The fleet simulator's record of every value it published, so that loss can be counted exactly.

Format (``TLREC1``): a gzip file, possibly several gzip members back to back (one per fleet process,
concatenated; any gzip reader reads them as one stream). The decompressed stream is a sequence of
little-endian records, each starting with a one-byte tag:

- ``N`` node:   u32 site index, u16 length + UTF-8 site id, u16 length + UTF-8 group id
- ``P`` point:  u32 site index, u16 point index, u8 datatype (0 bool, 1 int, 2 float),
                u16 length + UTF-8 point name (``device/Name``)
- ``V`` values: u32 site index, i64 ts (ms since epoch), u16 count, count × u16 point index,
                count × f64 value

A node and its points are declared before its first values in every member; declarations may repeat
(each process declares what it owns). Values are those of births and live data as published, once
each; a rebirth re-publishes values already recorded and records them again (same key and value), a
replay's historical re-sends are not recorded. Integers travel as f64, exact below 2**53.

Why binary: 10 bytes a value before compression and one ``struct``/``array`` call per message, so the
record costs little beside publishing (CSV would cost a formatted line per value).
"""

from __future__ import annotations

import gzip
import struct
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, cast

from tapline.domain.model import DataType, Value

__all__ = ["RecordReader", "RecordWriter", "RecordedValue", "merge_parts", "read_record"]

MAGIC: Final = b"TLREC1\n"
_NODE: Final = struct.Struct("<cIH")
_POINT: Final = struct.Struct("<cIHBH")
_VALUES: Final = struct.Struct("<cIqH")
_U16: Final = struct.Struct("<H")
_TYPE_CODES: Final = {DataType.BOOL: 0, DataType.INT: 1, DataType.FLOAT: 2}
_FLUSH_BYTES: Final = 1 << 18


class RecordError(ValueError):
    """A record file that is not in the TLREC1 format."""


@dataclass(frozen=True, slots=True)
class RecordedValue:
    site: str
    group: str
    point: str
    ts: int
    value: Value


class RecordWriter:
    """Appends declarations and values to a TLREC1 file (one gzip member)."""

    def __init__(self, path: Path, compresslevel: int = 1) -> None:
        self.path = path
        self._raw: BinaryIO = path.open("wb")
        self._gzip = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=compresslevel)
        self._buffer = bytearray(MAGIC)
        self.values = 0

    def node(self, site_index: int, site: str, group: str) -> None:
        encoded_site, encoded_group = site.encode(), group.encode()
        self._buffer += _NODE.pack(b"N", site_index, len(encoded_site))
        self._buffer += encoded_site + _U16.pack(len(encoded_group)) + encoded_group

    def point(self, site_index: int, point_index: int, name: str, datatype: DataType) -> None:
        encoded = name.encode()
        self._buffer += _POINT.pack(b"P", site_index, point_index, _TYPE_CODES[datatype], len(encoded))
        self._buffer += encoded

    def values_at(self, site_index: int, ts: int, indices: Sequence[int], values: Sequence[Value]) -> None:
        """Record ``values[i]`` of point ``indices[i]`` of a site, all read at ``ts``."""
        buffer = self._buffer
        buffer += _VALUES.pack(b"V", site_index, ts, len(indices))
        buffer += array("H", indices).tobytes()
        buffer += array("d", cast("Sequence[float]", values)).tobytes()  # bools and ints are numbers
        self.values += len(indices)
        if len(buffer) >= _FLUSH_BYTES:
            self._gzip.write(buffer)
            buffer.clear()

    def close(self) -> None:
        if self._buffer:
            self._gzip.write(self._buffer)
            self._buffer.clear()
        self._gzip.close()
        self._raw.close()


class RecordReader:
    """Reads a TLREC1 stream; ``values()`` yields every recorded value with its names resolved."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.nodes: dict[int, tuple[str, str]] = {}
        self.points: dict[tuple[int, int], tuple[str, DataType]] = {}

    def _read(self, size: int) -> bytes:
        data = self._stream.read(size)
        if len(data) != size:
            raise RecordError(f"truncated record: wanted {size} bytes, got {len(data)}")
        return data

    def _text(self) -> str:
        (length,) = _U16.unpack(self._read(2))
        return self._read(length).decode()

    def values(self) -> Iterator[RecordedValue]:
        types = {code: datatype for datatype, code in _TYPE_CODES.items()}
        while True:
            tag = self._stream.read(1)
            if not tag:
                return
            if tag == MAGIC[:1]:
                if self._read(len(MAGIC) - 1) != MAGIC[1:]:
                    raise RecordError("bad magic: not a TLREC1 record")
            elif tag == b"N":
                (site_index,) = struct.unpack("<I", self._read(4))
                site = self._text()
                self.nodes[site_index] = (site, self._text())
            elif tag == b"P":
                site_index, point_index, code = struct.unpack("<IHB", self._read(7))
                if code not in types:
                    raise RecordError(f"unknown datatype code {code}")
                self.points[(site_index, point_index)] = (self._text(), types[code])
            elif tag == b"V":
                site_index, ts, count = struct.unpack("<IqH", self._read(14))
                indices = array("H")
                indices.frombytes(self._read(2 * count))
                numbers = array("d")
                numbers.frombytes(self._read(8 * count))
                site, group = self.nodes[site_index]
                for index, number in zip(indices, numbers, strict=True):
                    name, datatype = self.points[(site_index, index)]
                    yield RecordedValue(site, group, name, ts, _typed(number, datatype))
            else:
                raise RecordError(f"unknown record tag {tag!r}")


def _typed(number: float, datatype: DataType) -> Value:
    if datatype is DataType.BOOL:
        return number != 0.0
    if datatype is DataType.INT:
        return int(number)
    return number


def read_record(path: Path) -> Iterator[RecordedValue]:
    """Every value recorded in ``path`` (all gzip members), in the order it was written per member."""
    with gzip.open(path, "rb") as stream:
        yield from RecordReader(stream).values()  # type: ignore[arg-type]  # GzipFile is a binary stream


def merge_parts(parts: Sequence[Path], target: Path) -> None:
    """Concatenate per-process record files into ``target`` (gzip members concatenate) and delete them."""
    with target.open("wb") as out:
        for part in parts:
            if part.exists():
                with part.open("rb") as source:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                part.unlink()
