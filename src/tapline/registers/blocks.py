"""Plan block reads: merge a device's points into as few Modbus requests as possible.

Rules:
- One block covers one table and at most ``max_registers`` words (125 for registers, the Modbus
  limit) or ``max_bits`` bits (2000).
- Points are merged when the gap between them is at most ``max_gap`` words: reading a few unused
  registers is cheaper than another round trip (a request costs ~1 ms on loopback, tens of ms on a
  serial line, a register costs 2 bytes).
- A plan is computed once per (device, poll class) at start-up; polling just walks it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tapline.domain.model import Value
from tapline.registers.codec import decode_registers
from tapline.registers.maps import RegisterPoint, Table

MAX_REGISTERS = 125
MAX_BITS = 2000


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: a table, a start address, a count, and the points it carries."""

    table: Table
    address: int
    count: int
    points: tuple[RegisterPoint, ...]

    def decode(self, data: Sequence[int] | Sequence[bool]) -> dict[str, Value]:
        """Decode every point of this block from the request's response data."""
        if len(data) < self.count:
            raise ValueError(f"block {self.table.value}@{self.address}: {len(data)} of {self.count} values")
        values: dict[str, Value] = {}
        for point in self.points:
            start = point.address - self.address
            if self.table.is_bit:
                values[point.name] = bool(data[start])
            else:
                words = [int(word) for word in data[start : start + point.words]]
                values[point.name] = decode_registers(point, words)
        return values


def plan_blocks(
    points: Iterable[RegisterPoint],
    *,
    max_gap: int = 8,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
) -> list[Block]:
    """Group points into the fewest block reads, per table, honouring size limits and gaps."""
    by_table: dict[Table, list[RegisterPoint]] = {}
    for point in points:
        by_table.setdefault(point.table, []).append(point)
    blocks: list[Block] = []
    for table in Table:
        members = sorted(by_table.get(table, []), key=lambda p: p.address)
        limit = max_bits if table.is_bit else max_registers
        current: list[RegisterPoint] = []
        start = end = 0
        for point in members:
            point_end = point.address + point.words
            if point.words > limit:
                raise ValueError(f"{point.name} is larger than one request")
            if current and point.address - end <= max_gap and point_end - start <= limit:
                current.append(point)
                end = max(end, point_end)
                continue
            if current:
                blocks.append(Block(table, start, end - start, tuple(current)))
            current, start, end = [point], point.address, point_end
        if current:
            blocks.append(Block(table, start, end - start, tuple(current)))
    return blocks
