"""Fakes for the gateway's two seams: a Modbus bus (``BusClient``) and an MQTT connection (``Uplink``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from tapline.edge.modbus_io import DeviceException, DeviceTimeout
from tapline.mqtt import BrokerUnavailable
from tapline.registers.codec import encode_bit, encode_registers
from tapline.registers.maps import RegisterMap, Table
from tapline.sparkplug.codec import Payload, decode_payload


@dataclass
class FakeBus:
    """An in-memory bus: register tables per unit, with programmable silence and exceptions.

    It records every request and how many were in flight at once (it does not serialise anything
    itself, so an overlap is the caller's doing).
    """

    name: str = "lan"
    delay_s: float = 0.0
    tables: dict[int, dict[Table, list[int]]] = field(default_factory=dict)
    silent: set[int] = field(default_factory=set)
    exceptions: dict[tuple[int, Table], int] = field(default_factory=dict)
    requests: list[tuple[str, int, Table, int, int]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def load(self, unit: int, register_map: RegisterMap, values: dict[str, bool | int | float]) -> None:
        """Give ``unit`` the registers of ``register_map`` holding ``values`` (others 0)."""
        tables = self.tables.setdefault(unit, {})
        for point in register_map.points:
            table = tables.setdefault(point.table, [])
            end = point.address + point.words
            table.extend([0] * max(0, end - len(table)))
            value = values.get(point.name, False if point.table.is_bit else 0)
            if point.table.is_bit:
                table[point.address] = int(encode_bit(point, value))
            else:
                table[point.address : end] = encode_registers(point, value)

    async def _enter(self, op: str, unit: int, table: Table, address: int, count: int) -> None:
        self.requests.append((op, unit, table, address, count))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if unit in self.silent:
            raise DeviceTimeout(f"unit {unit}: no response")
        code = self.exceptions.get((unit, table))
        if code is not None:
            raise DeviceException(code, f"unit {unit}: exception code {code}")

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int] | list[bool]:
        await self._enter("read", unit, table, address, count)
        data = self.tables.get(unit, {}).get(table, [])
        if address + count > len(data):
            raise DeviceException(2, f"unit {unit}: illegal address {address}+{count}")
        words = data[address : address + count]
        return [bool(w) for w in words] if table.is_bit else list(words)

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int] | Sequence[bool]
    ) -> None:
        await self._enter("write", unit, table, address, len(values))
        data = self.tables[unit][table]
        for offset, value in enumerate(values):
            data[address + offset] = int(value)

    async def close(self) -> None:
        return None


@dataclass
class FakeUplink:
    """Records what the node publishes; ``down`` makes publishing fail like a dead link."""

    published: list[tuple[str, bytes, int]] = field(default_factory=list)
    subscribed: list[str] = field(default_factory=list)
    down: bool = False

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if self.down:
            raise BrokerUnavailable("link down")
        self.published.append((topic, payload, qos))

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscribed.append(topic)

    def messages(self, kind: str | None = None) -> list[tuple[str, Payload]]:
        """Decoded messages, optionally only one Sparkplug type (``DDATA`` …)."""
        out = []
        for topic, payload, _ in self.published:
            if kind is None or topic.split("/")[2] == kind:
                out.append((topic, decode_payload(payload)))
        return out
